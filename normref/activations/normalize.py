r"""Lp normalization along one axis (``torch.nn.functional.normalize``).

NAP: one axis (every other index is its own group); NOP: scale by the Lp
norm, clamped below by eps; NRR: none.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..kernels import normalize as K
from ..numerics import as_float64, check_choice, check_finite_scalar
from ..layer_call import LayerCall
from ..registry import Case, Plan, Spec, register
from ..taxonomy import Area, AreaKind as A, Operation, OpKind as O, Recovery, RecoveryKind as R
from .. import reference as _reference
from ..catalogue import Catalogue

__all__ = ["normalize", "EPS_PLACEMENTS"]

#: where eps clamps: the norm (PyTorch, the default) or the squared norm (TF's l2_normalize)
EPS_PLACEMENTS = ("norm", "squared_norm")


class NormalizePlan(Plan):
    """Rows = the 1-D fibres along ``dim``; residuals: y and the per-row norm
    ``N = Nm 2**eN`` with the binade exponent ``e`` of ``max |x|`` (see
    :mod:`normref.kernels.normalize`)."""

    name = "normalize"
    params = ("input",)

    def __init__(self, x, p, dim, eps):
        self._values = {"input": x}
        self._shape = x.shape
        self.p, self.dim, self.eps = p, dim, eps
        moved = np.moveaxis(x, dim, -1)
        self._mshape = moved.shape
        D = x.shape[dim]
        R = int(np.prod(self._mshape[:-1], dtype=np.int64))
        # an input without elements is never handed to a kernel (no per-fibre arrays)
        self._empty = x.size == 0
        self._x2 = None if self._empty else np.ascontiguousarray(moved).reshape(R, D)
        self._res = None

    def _back(self, a2):
        """(R, D) array -> the input layout (C-contiguous)."""
        return np.ascontiguousarray(np.moveaxis(a2.reshape(self._mshape), -1, self.dim))

    def _rows(self, name, arr):
        arr = np.asarray(arr, dtype=np.float64)
        if arr.shape != self._shape:
            raise ValueError(f"{name} has shape {arr.shape}, expected the input shape {self._shape}")
        if self._empty:
            return None
        return np.ascontiguousarray(np.moveaxis(arr, self.dim, -1)).reshape(self._x2.shape)

    def _fibre(self, r):
        idx = np.unravel_index(int(r), self._mshape[:-1]) if len(self._mshape) > 1 else ()
        return tuple(int(i) for i in idx)

    def _forward(self):
        if self._empty:
            return np.empty(self._shape)
        y2, res = K.normalize_forward(self._x2, self.p, self.eps)
        st = res[:, 7]
        if st.any():
            r = int(np.argmax(st != 0))
            raise ValueError(
                f"normalize: max(||x||_p, eps) is zero for the fibre of input at index "
                f"{self._fibre(r)} (all axes but dim={self.dim}) with eps={self.eps}; "
                f"the quotient x / 0 is undefined (input shape {self._shape})"
            )
        self._res = (y2, res)
        return self._back(y2)

    def _raise_overflow(self, what, st):
        r = int(np.argmax(st != 0))
        raise ValueError(
            f"normalize: the exact {what} overflows float64 in the fibre of input at index "
            f"{self._fibre(r)} (all axes but dim={self.dim}; p={self.p}, eps={self.eps}, "
            f"input shape {self._shape}); it is not representable"
        )

    def vjp(self, cotangent):
        self.forward()
        dy = self._rows("cotangent", cotangent)
        if self._empty:
            return {"input": np.empty(self._shape)}
        y2, res = self._res
        dx, st = K.normalize_vjp(self._x2, y2, res, dy, self.p, self.eps)
        if st.any() and np.isfinite(dy).all():
            self._raise_overflow("input gradient (VJP)", st)
        return {"input": self._back(dx)}

    def jvp(self, tangents):
        self.forward()
        t = tangents.get("input")
        if t is None:
            return np.zeros(self._shape)
        t = self._rows("tangent of input", t)
        if self._empty:
            return np.empty(self._shape)
        y2, res = self._res
        ty, st = K.normalize_jvp(self._x2, y2, res, t, self.p, self.eps)
        if st.any() and np.isfinite(t).all():
            self._raise_overflow("output tangent (JVP)", st)
        return self._back(ty)

    def norm_gradient(self):
        """``d||x||_p / dx`` per fibre, in the (R, D) row layout (the kernel's choice of
        subgradient), formed in scaled units (``inf`` where the exact value overflows)."""
        self.forward()
        if self._empty:
            return np.zeros((int(np.prod(self._mshape[:-1], dtype=np.int64)), self._mshape[-1]))
        return K.normalize_norm_gradient(self._x2, self._res[1], self.p)

    def jacobian(self, name):
        """Closed form, block diagonal over fibres: ``I/N - y g^T / N`` or ``I/eps`` (clamped),
        each entry formed in scaled units with one final rounding."""
        if name != "input":
            raise ValueError(f"normalize has no differentiable parameter {name!r}")
        self.forward()
        nd = len(self._shape)
        if self._empty:
            try:
                return np.zeros(self._shape + self._shape)
            except ValueError:
                raise ValueError(
                    f"normalize: the Jacobian of an input of shape {self._shape} has shape "
                    f"{self._shape + self._shape}, which NumPy cannot represent (the product "
                    f"of its nonzero axis lengths exceeds the addressable size)"
                ) from None
        R, D = self._x2.shape
        B, st = K.normalize_jacobian_blocks(self._x2, self._res[1], self.p, self.eps)
        if st.any():
            self._raise_overflow("Jacobian", st)
        J4 = np.zeros((R, D, R, D))
        rows = np.arange(R)
        J4[rows, :, rows, :] = B
        J = J4.reshape(self._mshape + self._mshape)
        return np.ascontiguousarray(np.moveaxis(J, [nd - 1, 2 * nd - 1], [self.dim, nd + self.dim]))


def _bind(input, p=2.0, dim=1, eps=1e-12, *, eps_placement="norm"):
    x = as_float64("input", input)
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
        raise TypeError(f"normalize: p must be a real number, got {p!r}")
    p = float(p)
    if not p > 0.0:
        raise ValueError(f"normalize: p must be positive (or inf), got p={p}")
    if x.ndim == 0:
        raise ValueError(f"normalize: input must have at least one axis, got shape {x.shape}")
    if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"normalize: dim must be an int, got {dim!r}")
    dim = int(dim)
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(
            f"normalize: dim={dim} is out of range for input of shape {x.shape} "
            f"(expected -{x.ndim} <= dim < {x.ndim})"
        )
    eps = check_finite_scalar("eps", eps)
    check_choice("eps_placement", eps_placement, EPS_PLACEMENTS)
    if eps_placement == "squared_norm" and eps > 0.0:
        # max(N^2, eps) = max(N, sqrt(eps))^2 for eps >= 0; for eps <= 0 neither clamp binds
        eps = math.sqrt(eps)
    return NormalizePlan(x, p, dim % x.ndim, eps)


def normalize(input, p=2.0, dim=1, eps=1e-12, *, eps_placement="norm"):
    r"""Lp normalization of ``input`` along ``dim`` (``torch.nn.functional.normalize``).

    .. math::

        y = \frac{x}{\max(\lVert x \rVert_p, \epsilon)}, \qquad
        \lVert x \rVert_p = \Big(\sum_{i \in \text{dim}} |x_i|^p\Big)^{1/p},
        \quad \lVert x \rVert_\infty = \max_i |x_i|,

    for each fibre of ``input`` along ``dim`` (any rank >= 1, negative ``dim``
    counts from the end).  ``p`` is any positive float or ``math.inf``.  The
    eps clamp is on the norm itself (PyTorch, ``eps_placement="norm"``, the
    default).

    ``eps_placement="squared_norm"`` clamps the squared norm instead, as
    ``tf.math.l2_normalize(x, axis, epsilon)`` does
    (``x * rsqrt(max(sum x^2, epsilon))``):

    .. math::

        y = \frac{x}{\sqrt{\max(\lVert x \rVert_p^2, \epsilon)}}
          = \frac{x}{\max(\lVert x \rVert_p, \sqrt{\epsilon})}
          \quad (\epsilon \ge 0),

    so it is the default computation with the clamp :math:`\sqrt\epsilon`
    (rounded once, ``math.sqrt``): TF's default ``epsilon=1e-12`` bounds the
    norm below by 1e-6, PyTorch's ``eps=1e-12`` by 1e-12.  For
    :math:`\epsilon \le 0` neither clamp ever binds and the two placements
    coincide.  The derivative is the one below with :math:`\sqrt\epsilon`
    for :math:`\epsilon`: :math:`I/\sqrt\epsilon` where the squared norm is
    below :math:`\epsilon`, the norm branch where it is at or above it (TF's
    ``maximum`` passes the gradient to its first argument, the squared sum, at
    a tie).  The branch is decided on :math:`N \ge \operatorname{fl}(\sqrt\epsilon)`,
    which differs from :math:`N^2 \ge \epsilon` only for a norm within half
    an ulp of :math:`\sqrt\epsilon`.  For p other than 2 the option still
    means "clamp :math:`\lVert x \rVert_p^2`" (no framework uses it there).

    Derivative (exact, including the clamp): with :math:`N = \lVert x\rVert_p`
    and :math:`g = \partial N / \partial x`,

    .. math::

        \frac{\partial y}{\partial x} = \frac{1}{N}\big(I - y\, g^{\mathsf T}\big)
        \ (N \ge \epsilon), \qquad
        \frac{\partial y}{\partial x} = \frac{I}{\epsilon}\ (N < \epsilon),

    :math:`g_i = \operatorname{sign}(x_i)\,(|x_i|/N)^{p-1}` (p = 2: :math:`x/N`;
    p = 1: :math:`\operatorname{sign}(x)`).  At :math:`N = \epsilon` the norm
    branch is used, as PyTorch's ``clamp_min`` backward passes the gradient
    where the value is ``>=`` the bound.  Subgradients where the norm is not
    differentiable: for ``p <= 1`` an entry :math:`x_i = 0` gets
    :math:`g_i = 0`; for ``p = inf`` the whole derivative goes to the *first*
    entry (in index order) attaining :math:`\max|x|`, with its sign (0 when the
    maximum is 0).  PyTorch may distribute it differently at ties.

    Numerical choices (details in :mod:`normref.kernels.normalize`).  For finite
    input every output and derivative is finite and exact to float64
    precision, or a ValueError says that the exact value overflows float64
    (e.g. ``dy / N`` for a fibre of subnormal entries).  With
    :math:`m = \max|x| = f\,2^{e}` (:math:`f \in [1/2, 1)`),
    :math:`\tilde x = x\,2^{-e}` (an exact scaling) and
    :math:`S = \sum |\tilde x_i|^p`, :math:`N = 2^{e} S^{1/p}`:

    .. math::

        \log_2 N = e + \frac{\operatorname{log1p}(S - 1)}{p \ln 2}, \qquad
        S - 1 = \operatorname{expm1}(p \ln f) + \sum_{i \ne \arg\max} |\tilde x_i|^p
        \quad (p < 1),

    kept as mantissa and exponent, since :math:`S^{1/p}` overflows for small
    ``p`` (:math:`5^{1000}` at p = 0.001); for :math:`1 \le p < 512`,
    :math:`S^{1/p}` by ``pow`` after a compensated left-to-right sum; for
    ``p >= 512`` the fibre is divided by :math:`m` (:math:`2^{-p}` would
    underflow).  A fibre with one nonzero entry has :math:`N = m` exactly for
    every ``p``.  :math:`y = x / \max(N, \epsilon)` is one division when ``N``
    is a normal number, else mantissa quotient and one final ``ldexp``.  The
    derivatives are formed in the same scaled units, so that
    :math:`g_i (y \cdot \bar y)`, whose factors over- and underflow separately
    (p = 1e-300, 1e300, entries of 1e-300 next to 1e300), is

    .. math::

        g_i\,(y \cdot \bar y) = \operatorname{sign}(x_i)\,|\tilde x_i|^{p-1}\,
            S^{-1} \sum_k \tilde x_k \bar y_k

    with every factor a (mantissa, exponent) pair, :math:`|\tilde x_i|^{p-1}`
    as :math:`|\tilde x_i|^{p} / |\tilde x_i|` (``p - 1`` is not rounded), and
    :math:`1/N` applied last (units of :math:`m` instead of :math:`2^e` for
    ``p >= 512``); likewise the JVP and the dense Jacobian.  Fibres whose
    nonzero entries lie in :math:`[2^{-120}, 2^{120}]` with ``p`` in
    :math:`\{1, 2, \infty\} \cup [1, 4]` and cotangents in
    :math:`[2^{-364}, 2^{64})` take the plain float64 formulas instead (every
    intermediate is then a normal number).  Accuracy: a few ulps for
    :math:`p \ge 1`; for :math:`p < 1` the relative error of :math:`N` is a few
    eps times :math:`(1 + |\ln S| + \delta_S) / p`, :math:`\delta_S` the
    rounding scale of the sum :math:`S - 1` relative to :math:`S` (the
    log-domain power amplifies it by :math:`1/p`; it vanishes when one entry
    dominates).  A zero denominator (all-zero fibre with ``eps <= 0``) raises
    ValueError.  An input without elements returns an empty output (and empty
    derivatives) without allocating per fibre.  NaN input propagates to its
    fibre only.
    """
    return _bind(input, p, dim, eps, eps_placement=eps_placement).forward()


#: the layer fact: each case scaled to unit Lp norm over its features (dim=1)
_LAYER = LayerCall(lambda x, w, b, o: (x,), table={"dim": 1})


def _strategy(draw, h):
    """Hypothesis draw of a call (``Spec.strategy``): any axis, p in {1, 2, 3}, centred data."""
    st = h.st
    shape = draw(h.shapes(1, 4, max_side=5))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    p = draw(st.sampled_from([2.0, 1.0, 3.0]))
    x = draw(h.float_arrays(shape, scale=h.scales()))
    return (x,), {"p": p, "dim": dim, "eps": 1e-12}


def _examples(rng):
    cases = []
    x = rng.standard_normal((3, 5, 2))
    for p in (1.0, 2.0, 3.0, math.inf, 0.5):
        cases.append(Case(f"p={p} dim=1 (3,5,2)", (x, p, 1), {}))
    cases.append(Case("p=2 dim=-1 (4,4)", (rng.standard_normal((4, 4)), 2.0, -1), {}))
    cases.append(Case("p=3 dim=0 odd (5,3)", (rng.standard_normal((5, 3)), 3.0, 0), {}))
    cases.append(Case("p=2 1-D dim=0", (rng.standard_normal(7), 2.0, 0), {}))
    cases.append(Case("p=2 offset 1e3", (1e3 + rng.standard_normal((2, 6)), 2.0, 1), {}))
    small = 1e-3 * rng.standard_normal((2, 3, 2))
    cases.append(Case("eps clamp branch p=2", (small, 2.0, 1, 1.0), {}))
    mixed = rng.standard_normal((2, 4))
    mixed[1] *= 1e-3
    cases.append(Case("clamp in one row p=1", (mixed, 1.0, 1), {"eps": 0.5}))
    cases.append(Case("p=inf dim=2 4-D", (rng.standard_normal((2, 2, 3, 2)), math.inf, 2), {}))
    return cases


#: why normalize takes no tiny or subnormal input (conformance catalogue)
_TINY_REASON = ("with the default eps = 1e-12 an input far below eps is divided by eps: the "
                "output is the plain scaling x / eps")


def _conformance_base(rng, o, h):
    """Conformance case: (N, C, *spatial) with options ``p``, ``dim``, ``eps``."""
    N = int(rng.integers(1, 4)) if o.get("n") is None else o["n"]
    shape = (N, int(rng.integers(2, 6))) + h.spatial(rng, 0, 1)
    x = h.data(rng, shape)
    p = o.get("p", float(rng.choice([1.0, 2.0, 3.0])))
    dim = int(rng.integers(1, len(shape))) if o.get("dim") is None else o["dim"]
    eps = o.get("eps", 1e-12)
    group0 = tuple(slice(None) if i == dim else 0 for i in range(len(shape)))
    return [x, p, dim, eps], {}, (), group0


register(Spec(
    name="normalize",
    function=normalize,
    bind=_bind,
    reference=_reference.normalize,
    family="activations",
    nap=Area(A.AXES, "one axis (dim) per fibre"),
    nop=Operation(O.SCALE, "scale only: Lp norm, clamped below by eps", centres=False),
    nrr=Recovery((R.NONE,), "none"),
    citation="PyTorch torch.nn.functional.normalize (Lp normalization; no single paper)",
    examples=_examples,
    strategy=_strategy,
    layer=_LAYER,
    conventions={
        "eps_placement": "'norm': max(||x||_p, eps) (PyTorch, default); 'squared_norm': "
                         "sqrt(max(||x||_p^2, eps)) (tf.math.l2_normalize)",
        "p=inf subgradient": "first maximal |x_i| in index order gets the derivative",
    },
    differentiable=("input",),
    catalogue=Catalogue(
        base=_conformance_base,
        variants={"p2": {"p": 2.0}, "p1": {"p": 1.0}, "p3": {"p": 3.0}, "pinf": {"p": math.inf}},
        exclude={
            "tiny1e-30": _TINY_REASON, "subnormal32": _TINY_REASON, "subnormal64": _TINY_REASON,
            "neg_eps_momentum": "eps is a floor, max(||x||_p, eps): a negative floor never "
                                "binds, so the case is an ordinary one (and there is no momentum)",
        },
    ),
))
