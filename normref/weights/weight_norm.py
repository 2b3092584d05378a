r"""Weight normalization (Salimans & Kingma 2016): ``w = g v / ||v||``.

NAP: one slice of the weight per index along ``dim`` (the whole tensor for
``dim=None``); NOP: scale by the Euclidean norm; NRR: the learned gain ``g``.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..kernels import weight_norm as K
from ..numerics import as_float64
from ..layer_call import LayerCall
from ..registry import Case, Plan, Spec, register
from ..taxonomy import Area, AreaKind as A, Operation, OpKind as O, Recovery, RecoveryKind as R
from .. import reference as _reference
from ..catalogue import Catalogue

__all__ = ["weight_norm"]


class WeightNormPlan(Plan):
    """Rows = slices of ``v`` along ``dim`` (one row for ``dim=None``)."""

    name = "weight_norm"
    params = ("v", "g")

    def __init__(self, v, g, dim):
        self._values = {"v": v, "g": g}
        self.dim = dim
        self._vshape, self._gshape = v.shape, g.shape
        if dim is None:
            self._mshape = v.shape
            self._v2 = np.ascontiguousarray(v).reshape(1, v.size)
        else:
            moved = np.moveaxis(v, dim, 0)
            self._mshape = moved.shape
            S = v.shape[dim]
            M = int(np.prod(self._mshape[1:], dtype=np.int64))
            self._v2 = np.ascontiguousarray(moved).reshape(S, M)
        # v without elements: no kernel call, and g is not copied (it may be a
        # broadcast view with one entry per empty slice)
        self._g1 = None if v.size == 0 else np.ascontiguousarray(g).reshape(self._v2.shape[0])

    def _back(self, a2):
        if self.dim is None:
            return a2.reshape(self._vshape)
        return np.ascontiguousarray(np.moveaxis(a2.reshape(self._mshape), 0, self.dim))

    def _rows(self, name, arr):
        arr = np.asarray(arr, dtype=np.float64)
        if arr.shape != self._vshape:
            raise ValueError(f"{name} has shape {arr.shape}, expected v's shape {self._vshape}")
        if self.dim is None:
            return np.ascontiguousarray(arr).reshape(self._v2.shape)
        return np.ascontiguousarray(np.moveaxis(arr, self.dim, 0)).reshape(self._v2.shape)

    def _where(self, i):
        if self.dim is None:
            return "v (the whole tensor, dim=None)"
        return (f"the slice v[{', '.join([':'] * self.dim + [str(i)])}, ...] "
                f"(index {i} along dim={self.dim})")

    def _forward(self):
        if self._v2.size == 0:
            # no element of w exists, so no 0/0 is formed: an empty w (and no
            # kernel call, hence nothing allocated per slice)
            return np.empty(self._vshape)
        w2, res = K.weight_norm_forward(self._v2, self._g1)
        st = res[:, 5].astype(np.int8)
        nv = res[:, 0]
        if (st & 2).any():
            i = int(np.argmax((st & 2) != 0))
            raise ValueError(
                f"weight_norm: {self._where(i)} has zero norm, so g * v / ||v|| is undefined "
                f"(v shape {self._vshape}); its gradient would be NaN"
            )
        if st.any():
            i = int(np.argmax(st != 0))
            raise ValueError(
                f"weight_norm: the exact w = g * v / ||v|| overflows float64 for "
                f"{self._where(i)} (g = {self._g1[i]!r}, ||v|| = {nv[i]!r}; v shape "
                f"{self._vshape}); it is not representable"
            )
        self._res = res
        return self._back(w2)

    def _raise_overflow(self, what, st):
        i = int(np.argmax(st != 0))
        raise ValueError(
            f"weight_norm: the exact {what} overflows float64 for {self._where(i)} "
            f"(g = {self._g1[i]!r}; v shape {self._vshape}); it is not representable"
        )

    def vjp(self, cotangent):
        self.forward()
        dw = self._rows("cotangent", cotangent)
        if self._v2.size == 0:
            return {"v": np.empty(self._vshape), "g": np.zeros(self._gshape)}
        dv, dg, st = K.weight_norm_vjp(self._v2, self._res, self._g1, dw)
        if st.any() and np.isfinite(dw).all():
            self._raise_overflow("gradient of v (VJP)", st)
        return {"v": self._back(dv), "g": dg.reshape(self._gshape)}

    def jvp(self, tangents):
        self.forward()
        tv = tangents.get("v")
        tg = tangents.get("g")
        if tv is not None:
            tv = self._rows("tangent of v", tv)
        if tg is not None:
            tg = np.asarray(tg, dtype=np.float64)
            if tg.shape != self._gshape:
                raise ValueError(f"tangent of g has shape {tg.shape}, expected g's shape {self._gshape}")
        if self._v2.size == 0:
            return np.empty(self._vshape)
        tv = np.zeros(self._v2.shape) if tv is None else tv
        tg = np.zeros(self._v2.shape[0]) if tg is None else np.ascontiguousarray(tg).reshape(
            self._v2.shape[0])
        tw, st = K.weight_norm_jvp(self._v2, self._res, self._g1, tv, tg)
        if st.any() and np.isfinite(tv).all() and np.isfinite(tg).all():
            self._raise_overflow("output tangent (JVP)", st)
        return self._back(tw)


def _bind(v, g, dim=0):
    v = as_float64("v", v)
    g = as_float64("g", g)
    if dim is None:
        if not (g.ndim == 0 or (g.size == 1 and g.ndim <= v.ndim)):
            raise ValueError(
                f"weight_norm: with dim=None g must be a scalar (shape () or a size-1 shape "
                f"of at most v.ndim={v.ndim} axes), got g shape {g.shape} (v shape {v.shape})"
            )
        return WeightNormPlan(v, g, None)
    if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"weight_norm: dim must be an int or None, got {dim!r}")
    dim = int(dim)
    if v.ndim == 0 or not -v.ndim <= dim < v.ndim:
        raise ValueError(
            f"weight_norm: dim={dim} is out of range for v of shape {v.shape} "
            f"(expected -{v.ndim} <= dim < {v.ndim}, or dim=None for the whole tensor)"
        )
    d = dim % v.ndim
    n = v.shape[d]
    full = tuple(n if i == d else 1 for i in range(v.ndim))
    if g.shape not in (full, (n,)):
        hint = ""
        if dim == -1 and g.size == 1 and n != 1:
            hint = (
                "; note: torch._weight_norm reads dim=-1 as 'the whole tensor', "
                "here dim=-1 is the last axis -- pass dim=None for the whole-tensor norm"
            )
        raise ValueError(
            f"weight_norm: g has shape {g.shape}, expected {full} or {(n,)} for v of shape "
            f"{v.shape} with dim={dim}{hint}"
        )
    return WeightNormPlan(v, g, d)


def weight_norm(v, g, dim=0):
    r"""Weight normalization: ``w = g * v / ||v||`` (``torch._weight_norm`` semantics).

    Salimans & Kingma, "Weight Normalization: A Simple Reparameterization to
    Accelerate Training of Deep Neural Networks", NeurIPS 2016
    (arXiv:1602.07868).

    For an integer ``dim`` there is one Euclidean norm per slice
    :math:`v_i = v[\ldots, i, \ldots]` along ``dim`` (taken over every other
    axis), and one gain :math:`g_i`; ``dim=None`` uses the norm of the whole
    tensor and a scalar ``g``:

    .. math::

        w_i = g_i \frac{v_i}{\lVert v_i \rVert}, \qquad
        u_i = \frac{v_i}{\lVert v_i \rVert},

    with the exact derivatives

    .. math::

        \bar g_i = u_i \cdot \bar w_i, \qquad
        \bar v_i = \frac{g_i}{\lVert v_i\rVert}\big(\bar w_i - u_i\,(u_i\cdot \bar w_i)\big),
        \qquad
        \dot w_i = \dot g_i\, u_i + \frac{g_i}{\lVert v_i\rVert}
            \big(\dot v_i - u_i\,(u_i \cdot \dot v_i)\big).

    Shapes: ``g`` has ``v``'s shape with every axis but ``dim`` set to 1
    (what ``torch.nn.utils.parametrizations.weight_norm`` stores as
    ``original0``), or shape ``(v.shape[dim],)``; the gradient of ``g``
    comes back in the shape given.  ``dim=None``: ``g`` of shape ``()`` or any
    size-1 shape with at most ``v.ndim`` axes.  A negative ``dim`` is a NumPy
    axis (``-1`` = last axis).  Unlike here, ``torch._weight_norm`` reads
    ``dim=-1`` as "whole tensor" (``torch.nn.utils.weight_norm(dim=None)``
    passes ``-1``); use ``dim=None`` for that.

    Numerical choices (details in :mod:`normref.kernels.weight_norm`): float64; each
    slice's norm :math:`n = r\,2^{e}` is computed on the slice scaled by
    :math:`2^{-e}` (:math:`2^e` the binade bound of :math:`\max|v|`, exact)
    with a compensated left-to-right sum, so 1e300 or 1e-300 weights give
    finite, correct results.  ``w = v * (g / n)`` (PyTorch's evaluation order)
    when ``g / n`` is a normal number, else
    :math:`w_j = (m_g m_{v_j} / r)\,2^{e_g + e_{v_j} - e}` from mantissas and
    exponents with one final rounding (``g = 1e-300`` with ``n = 1e300``:
    ``g / n`` underflows, ``w`` does not).  :math:`|w| \le |g|`, so ``w``
    itself never overflows.  The derivatives are formed the same way where a
    factor leaves :math:`[2^{-120}, 2^{120}]` (slice entries, ``g``) or a
    cotangent leaves :math:`[2^{-364}, 2^{64})`: :math:`u \cdot \bar w =
    (\sum \tilde v \bar w) / r`, :math:`\bar v = (g/r)\,2^{-e}(\bar w - u\,(u
    \cdot \bar w))` in (mantissa, exponent) pairs; where the exact derivative
    overflows float64 (:math:`g / n = 10^{608}`) a ValueError says so.  A
    slice of zero norm raises ValueError naming it (PyTorch returns NaN
    gradients there).  ``v`` without elements gives an empty ``w`` (no slice
    has an entry, so no 0/0 is formed), an empty gradient of ``v`` and a zero
    gradient of ``g``, without a kernel call.
    """
    return _bind(v, g, dim).forward()



def _layer_args(W, w, b, o):
    # one gain per output unit, fixed and away from 1: g_i in [0.5, 1.5]
    return (W, np.linspace(0.5, 1.5, W.shape[0]).reshape(-1, 1))


#: the layer fact: a weight normalizer, h = X wn(W, g)^T with one norm per row of W (dim=0)
_LAYER = LayerCall(_layer_args, form="weights", table={"dim": 0})


def _strategy(draw, h):
    """Hypothesis draw of a call (``Spec.strategy``): dim an axis or None, g around 1."""
    st = h.st
    shape = draw(h.shapes(1, 4, max_side=5))
    dim = draw(st.one_of(st.none(), st.integers(0, len(shape) - 1)))
    v = draw(h.float_arrays(shape))
    if dim is None:
        g = np.asarray(draw(st.floats(0.5, 2.0)))
    else:
        gshape = tuple(s if a == dim else 1 for a, s in enumerate(shape))
        g = draw(h.float_arrays(gshape, offset=1.0, scale=0.3))
    return (v, g), {"dim": dim}


def _examples(rng):
    cases = []
    v = rng.standard_normal((4, 3))
    cases.append(Case("dim=0 (4,3) g (4,1)", (v, rng.standard_normal((4, 1)), 0), {}))
    cases.append(Case("dim=0 (4,3) g (4,)", (v, rng.standard_normal(4), 0), {}))
    v3 = rng.standard_normal((3, 2, 2))
    cases.append(Case("dim=1 (3,2,2)", (v3, rng.standard_normal((1, 2, 1)), 1), {}))
    cases.append(Case("dim=-1 last axis (3,2,2)", (v3, rng.standard_normal((1, 1, 2)), -1), {}))
    cases.append(Case("dim=None scalar g", (v3, np.array(1.7), None), {}))
    cases.append(Case("dim=None g (1,1,1)", (v3, np.array([[[-0.6]]]), None), {}))
    cases.append(Case("conv weight (3,2,2,2) dim=0", (rng.standard_normal((3, 2, 2, 2)),
                                                       rng.standard_normal((3, 1, 1, 1)), 0), {}))
    cases.append(Case("offset 1e3 dim=0", (1e3 + rng.standard_normal((2, 5)),
                                          rng.standard_normal((2, 1)), 0), {}))
    cases.append(Case("1-D v dim=0 (5,)", (rng.standard_normal(5), rng.standard_normal(5), 0), {}))
    return cases


#: why weight norm takes no scaled-down v (conformance catalogue)
_SCALED_V_REASON = ("weight norm is invariant to the scale of v, so a scaled v is the same "
                    "forward, and for subnormal v the exact gradient (of size g / ||v||) "
                    "overflows float64")


def _conformance_base(rng, o, h):
    """Conformance case: v of 2-4 axes, g per slice along ``dim`` (option; None: a scalar g)."""
    shape = (int(rng.integers(2, 6)), int(rng.integers(2, 6))) + h.spatial(rng, 0, 2, 1, 3)
    v = h.data(rng, shape)
    dim = o.get("dim", 0)
    if dim is None:
        g = np.array(float(rng.uniform(0.5, 2.0)))
        group0 = (Ellipsis,)
    else:
        d = dim % len(shape)
        gshape = tuple(s if i == d else 1 for i, s in enumerate(shape))
        g = rng.standard_normal(gshape) + 1.5
        group0 = tuple(slice(None) if i != d else 0 for i in range(len(shape)))
    return [v, g, dim], {}, (), group0


register(Spec(
    name="weight_norm",
    function=weight_norm,
    bind=_bind,
    reference=_reference.weight_norm,
    family="weights",
    nap=Area(A.WEIGHT, "one slice per index along dim (all other axes); whole tensor for dim=None"),
    nop=Operation(O.SCALE, "scale only: L2 norm", centres=False),
    nrr=Recovery((R.SCALE,), "learned gain g"),
    citation=(
        "Salimans & Kingma, Weight Normalization: A Simple Reparameterization to "
        "Accelerate Training of Deep Neural Networks, NeurIPS 2016"
    ),
    examples=_examples,
    strategy=_strategy,
    layer=_LAYER,
    conventions={
        "dim": "int: one norm per slice along dim (torch); None: whole tensor "
               "(torch's dim=-1 sentinel); negative ints are NumPy axes",
    },
    differentiable=("v", "g"),
    catalogue=Catalogue(
        base=_conformance_base,
        variants={"dim0": {"dim": 0}, "dim1": {"dim": 1}, "dim_last": {"dim": -1},
                  "dim_none": {"dim": None}},
        exclude={
            "const_group": "a constant slice of v is an ordinary weight; the zero slice raises "
                           "ValueError by design (adversarial row 18)",
            "tiny1e-30": _SCALED_V_REASON, "subnormal32": _SCALED_V_REASON,
            "subnormal64": _SCALED_V_REASON,
            "empty_batch": "a weight has no batch axis: an empty v is not a batch of samples",
        },
    ),
))
