r"""Local response normalization across channels (Krizhevsky et al. 2012).

NAP: a window of neighbouring channels at each (sample, position);
NOP: divide by a power of the local energy; NRR: none.
"""
from __future__ import annotations

import math
import numbers
from fractions import Fraction

import numpy as np

from ..kernels import lrn as K
from ..numerics import as_float64, check_choice, check_finite_scalar
from ..layer_call import LayerCall, REQUIRED
from ..registry import Case, Plan, Spec, register
from ..taxonomy import Area, AreaKind as A, Operation, OpKind as O, Recovery, RecoveryKind as R
from .. import reference as _reference
from ..catalogue import Catalogue

__all__ = ["local_response_norm"]

CONVENTIONS = ("torch", "onnx", "caffe", "tf")


def _window(size, convention):
    """``(lo, hi, divide)``: window ``[c - lo, c + hi]``, alpha divided by size?"""
    n = size
    if convention == "torch":
        return n // 2, (n - 1) // 2, True
    if convention == "onnx":
        return (n - 1) // 2, n // 2, True
    # caffe and tf: symmetric, odd sizes only (checked by the caller)
    r = (n - 1) // 2
    return r, r, convention == "caffe"


def _pair(q):
    """``(m, e, f)``: a nonzero rational ``q = m 2**e`` rounded once to 53 bits
    (``m`` in ``[0.5, 1)``, any integer ``e``) and ``f`` its float value where
    that is a normal float64 (else 0.0); ``(0.0, 0, 0.0)`` for zero."""
    if q == 0:
        return 0.0, 0, 0.0
    num, den = abs(q.numerator), q.denominator
    e = num.bit_length() - den.bit_length()
    # |q| 2**-e in (1/2, 2): one correctly rounded int division
    m = (num << max(-e, 0)) / (den << max(e, 0))
    m, e2 = math.frexp(m)
    e += e2
    m = -m if q < 0 else m
    f = math.ldexp(m, e) if -1021 <= e <= 1024 else 0.0
    return m, e, f


#: hyper-parameter ranges of the plain path (see normref.kernels.lrn)
_AK_LO, _AK_HI = 2.0 ** -100, 2.0 ** 100
_B_LO, _B_HI = 2.0 ** -60, 2.0 ** 20


class LocalResponseNormPlan(Plan):
    """Residuals: y, ``r = s^-beta = Rr 2^Ir`` and ``s = Ss 2^Es``, per-element flags."""

    name = "local_response_norm"
    params = ("input",)

    def __init__(self, x, size, alpha, beta, k, convention):
        self._values = {"input": x}
        self._shape = x.shape
        N, C = x.shape[0], x.shape[1]
        L = int(np.prod(x.shape[2:], dtype=np.int64))
        self._x3 = None if x.size == 0 else np.ascontiguousarray(x).reshape(N, C, L)
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.convention = convention
        lo, hi, divide = _window(size, convention)
        # the window is clipped to [0, C-1]: larger offsets change nothing, and
        # clamping keeps any Python int size out of numba's int64
        self._lo, self._hi = min(lo, max(C - 1, 0)), min(hi, max(C - 1, 0))
        # a = alpha / size exactly rounded, as a pair (a float where that is normal)
        q = Fraction(alpha) / size if divide else Fraction(alpha)
        self._am, self._ea, a = _pair(q)
        self._a = a
        self._km, self._ek = math.frexp(k)
        self._bm, self._eb = math.frexp(beta)
        self._fast = bool(
            (q == 0 or _AK_LO <= abs(a) <= _AK_HI)
            and (k == 0.0 or _AK_LO <= abs(k) <= _AK_HI)
            and (beta == 0.0 or _B_LO <= abs(beta) <= _B_HI)
        )
        self._two_ab = 2.0 * a * beta if self._fast else 0.0

    def _where(self, idx3):
        n, c, l = (int(i) for i in idx3)
        pos = np.unravel_index(l, self._shape[2:]) if len(self._shape) > 2 else ()
        return (n, c) + tuple(int(i) for i in pos)

    def _hyper(self):
        return (f"k={self.k}, alpha={self.alpha}, beta={self.beta}, size={self.size}, "
                f"convention={self.convention!r}; input shape {self._shape}")

    def _forward(self):
        x3 = self._x3
        if x3 is None:
            self._res = None
            return np.empty(self._shape)
        y, Rr, Ir, Ss, Es, F, status = K.lrn_forward(
            x3, self._lo, self._hi, self._a, self.k, self.beta,
            self._am, self._ea, self._km, self._ek, self._fast)
        if status.any():
            if (status & 2).any():
                bad = np.argwhere(np.logical_and(F == 0, Ss <= 0.0))[0]
                raise ValueError(
                    "local_response_norm: the denominator base s = k + a * sum(x^2) must be "
                    f"positive, got s <= 0 at input index {self._where(bad)} ({self._hyper()})"
                )
            bad = np.argwhere(np.isinf(y))[0]
            raise ValueError(
                "local_response_norm: the exact output y = x * s^-beta overflows float64 at "
                f"input index {self._where(bad)} ({self._hyper()}); it is not representable"
            )
        self._res = (y, Rr, Ir, Ss, Es, F)
        return y.reshape(self._shape)

    def _check(self, name, arr):
        arr = np.asarray(arr, dtype=np.float64)
        if arr.shape != self._shape:
            raise ValueError(f"{name} has shape {arr.shape}, expected the input shape {self._shape}")
        if self._x3 is None:
            return None
        return np.ascontiguousarray(arr).reshape(self._x3.shape)

    def _overflow(self, what, out, given):
        if not np.isfinite(given).all():
            return
        bad = np.argwhere(np.isinf(out))[0]
        raise ValueError(
            f"local_response_norm: the exact {what} overflows float64 at input index "
            f"{self._where(bad)} ({self._hyper()}); it is not representable"
        )

    def _coefs(self):
        return self._lo, self._hi, self._two_ab, self._am, self._ea, self._bm, self._eb

    def vjp(self, cotangent):
        self.forward()
        dy = self._check("cotangent", cotangent)
        if self._res is None:
            return {"input": np.empty(self._shape)}
        dx, status = K.lrn_vjp(self._x3, *self._res, dy, *self._coefs())
        if status.any():
            self._overflow("input gradient (VJP)", dx, dy)
        return {"input": dx.reshape(self._shape)}

    def jvp(self, tangents):
        self.forward()
        t = tangents.get("input")
        if t is None:
            return np.zeros(self._shape)
        t = self._check("tangent of input", t)
        if self._res is None:
            return np.empty(self._shape)
        ty, status = K.lrn_jvp(self._x3, *self._res, t, *self._coefs())
        if status.any():
            self._overflow("output tangent (JVP)", ty, t)
        return ty.reshape(self._shape)


def _bind(input, size, alpha=1e-4, beta=0.75, k=1.0, *, convention="torch"):
    x = as_float64("input", input)
    if x.ndim < 3:
        raise ValueError(
            "local_response_norm: input must have rank >= 3 (N, C, *spatial), "
            f"got shape {x.shape}"
        )
    if isinstance(size, (bool, np.bool_)) or not isinstance(size, numbers.Integral):
        raise TypeError(f"local_response_norm: size must be an int, got {size!r}")
    size = int(size)
    if size <= 0:
        raise ValueError(f"local_response_norm: size must be a positive int, got {size}")
    check_choice("convention", convention, CONVENTIONS)
    if convention in ("caffe", "tf") and size % 2 == 0:
        hint = (
            "Caffe's LRN layer only supports odd local_size"
            if convention == "caffe"
            else "the tf window has 2 * depth_radius + 1 channels: size = 2r + 1"
        )
        raise ValueError(
            f"local_response_norm: size must be odd for convention={convention!r} "
            f"({hint}), got size={size}"
        )
    alpha = check_finite_scalar("alpha", alpha)
    beta = check_finite_scalar("beta", beta)
    k = check_finite_scalar("k", k)
    return LocalResponseNormPlan(x, size, alpha, beta, k, convention)


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0, *, convention="torch"):
    r"""Local response normalization across channels (``F.local_response_norm``).

    Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep
    Convolutional Neural Networks", NeurIPS 2012, section 3.3.

    ``input`` has shape ``(N, C, *spatial)`` (rank >= 3), channels on axis 1.
    For channel :math:`c` at a fixed sample and position, with the window
    :math:`W(c) = [c - l, c + h] \cap [0, C-1]` (channels outside the range
    count as zeros):

    .. math::

        s_c = k + a \sum_{j \in W(c)} x_j^2, \qquad y_c = x_c\, s_c^{-\beta}

    and the exact input gradient (note the *transposed* window
    :math:`\{c : j \in W(c)\} = [j - h, j + l]`, which differs from
    :math:`W(j)` when the window is asymmetric):

    .. math::

        \bar x_j = \bar y_j\, s_j^{-\beta}
            - 2 a \beta\, x_j \sum_{c:\, j \in W(c)} \bar y_c\, x_c\, s_c^{-\beta-1}.

    Conventions (``convention=``; ``n = size``), checked against each
    framework's documentation, and the torch one numerically against
    ``torch.nn.functional.local_response_norm`` (float64) for n = 1..6:

    * ``"torch"`` (default): :math:`l = \lfloor n/2 \rfloor`,
      :math:`h = \lfloor (n-1)/2 \rfloor`, :math:`a = \alpha / n` (PyTorch pads
      ``n//2`` zeros before and ``(n-1)//2`` after and average-pools, zeros
      included, so the divisor is always n, also at the borders).
    * ``"onnx"``: :math:`l = \lfloor (n-1)/2 \rfloor`,
      :math:`h = \lceil (n-1)/2 \rceil`, :math:`a = \alpha / n` (ONNX LRN-13).
      For even n the extra channel lies after c, where torch puts it before.
    * ``"caffe"``: symmetric :math:`l = h = (n-1)/2`, :math:`a = \alpha/n`;
      Caffe's LRN layer rejects even ``local_size``, and so does this one
      (ValueError).
    * ``"tf"``: ``tf.nn.local_response_normalization(x, depth_radius=r,
      bias=k, alpha=alpha, beta=beta)`` with ``size = 2r + 1`` (so
      :math:`l = h = r`) and :math:`a = \alpha`, **not** divided by the
      window size.  Even ``size`` is a ValueError.  (TF keeps channels last;
      here they are on axis 1 for every convention.)

    Numerical choices (details in :mod:`normref.kernels.lrn`).  For finite
    input and hyper-parameters every output and derivative is finite and exact
    to float64 precision, or a ValueError says why not: ``s <= 0`` (possible
    only with ``k <= 0`` or ``alpha < 0``; it names the index), or an exact
    result that overflows float64 (e.g. ``beta < 0`` with 1e300 inputs).  With
    :math:`a = a_m 2^{e_a}` (``alpha / size`` rounded once, kept as mantissa
    and exponent, so any positive int ``size`` works: the window is clipped to
    the channels and ``alpha / 10**400`` is not flushed), :math:`k = k_m
    2^{e_k}` and :math:`2^{e_x}` the binade of the window's largest
    :math:`|x|`, the denominator is held as

    .. math::

        s = 2^{E} u, \quad
        u = a_m \Big(\sum_{j} (x_j 2^{-e_x})^2\Big) 2^{e_a + 2 e_x - E}
            + k_m 2^{e_k - E}, \quad E = \max(e_a + 2 e_x, e_k),

    (power-of-two scalings are exact), :math:`s^{-\beta}` as mantissa and
    integer exponent (:math:`-\beta E` split exactly into integer and
    fraction), and :math:`y` and each derivative term
    :math:`2 a \beta\, x_j\, \bar y_c\, x_c\, s_c^{-\beta-1}` (and their sums
    over the window) are formed from mantissas and exponents with one final
    ``ldexp``.  Where ``a``, ``k`` lie in :math:`[2^{-100}, 2^{100}]` (or are
    0), :math:`|\beta|` in :math:`[2^{-60}, 2^{20}]`, the window's nonzero
    :math:`|x|` and :math:`s, s^{-\beta}` in :math:`[2^{-100}, 2^{100}]` and
    the cotangents in :math:`[2^{-364}, 2^{64})`, the plain float64 formulas
    are used instead (every intermediate is then a normal number): ``s = k + a
    * sum(x**2)``, ``pow(s, -beta)``.  The sums run over the window in
    ascending channel order.  Work is :math:`O(N C \min(n, C) L)`.  NaN input
    propagates only to the channels whose window contains it; an input without
    elements returns an empty output.
    """
    return _bind(input, size, alpha, beta, k, convention=convention).forward()


#: the layer fact: across the features (channels) at one position, a window of ``size``
#: (3 in the table), torch's alpha, beta, k
_LAYER = LayerCall(lambda x, w, b, o: (x, o["size"]), view=lambda N, F, o: (N, F, 1),
                   options={"size": REQUIRED}, table={"size": 3})


def _strategy(draw, h):
    """Hypothesis draw of a call (``Spec.strategy``): windows up to C + 1, centred data."""
    st = h.st
    shape = draw(h.shapes(3, 4, max_side=5))
    C = shape[1]
    size = draw(st.integers(1, C + 1))
    x = draw(h.float_arrays(shape, scale=h.scales()))
    kwargs = {
        "alpha": draw(st.sampled_from([1e-4, 1e-2, 0.5])),
        "beta": draw(st.sampled_from([0.75, 0.5, 1.0])),
        "k": draw(st.sampled_from([1.0, 2.0, 0.5])),
    }
    return (x, size), kwargs


def _examples(rng):
    cases = []
    x = rng.standard_normal((2, 6, 3))
    for conv in CONVENTIONS:
        for n in (1, 2, 3, 4, 5, 6):
            if conv in ("caffe", "tf") and n % 2 == 0:
                continue
            cases.append(Case(f"{conv} size={n} C=6", (x, n), {"convention": conv,
                                                                    "alpha": 0.7, "beta": 0.75, "k": 1.3}))
    cases.append(Case("torch size=4 C=5 4-D defaults", (rng.standard_normal((2, 5, 2, 3)), 4), {}))
    cases.append(Case("onnx size=2 C=7 odd channels", (rng.standard_normal((1, 7, 4)), 2),
                      {"convention": "onnx", "alpha": 2.0, "beta": 0.5, "k": 2.0}))
    cases.append(Case("torch size=8 > C=5", (rng.standard_normal((1, 5, 3)), 8),
                      {"alpha": 1.0, "beta": 1.2, "k": 0.5}))
    cases.append(Case("offset 1e3 data", (1e3 + rng.standard_normal((1, 4, 3)), 3),
                      {"alpha": 1e-4, "beta": 0.75, "k": 2.0}))
    cases.append(Case("tf size=3 (depth_radius 1) 5-D", (rng.standard_normal((1, 4, 2, 2, 1)), 3),
                      {"convention": "tf", "alpha": 0.3, "beta": 0.6, "k": 1.0}))
    return cases


def _conformance_base(rng, o, h):
    """Conformance case: (N, C, *spatial); option ``size`` (else 1, 3 or 5)."""
    N = int(rng.integers(1, 3)) if o.get("n") is None else o["n"]
    C = int(rng.integers(2, 8))
    sp = h.spatial(rng, 1, 2)
    x = h.data(rng, (N, C) + sp)
    size = o.get("size") or int(rng.choice([1, 3, 5]))
    alpha = float(np.round(rng.uniform(1e-4, 1.0), 4))
    beta = float(np.round(rng.uniform(0.5, 1.5), 3))
    k = float(np.round(rng.uniform(0.5, 2.0), 3))
    return [x, size, alpha, beta, k], {}, (), (0,)


register(Spec(
    name="local_response_norm",
    function=local_response_norm,
    bind=_bind,
    reference=_reference.local_response_norm,
    family="activations",
    nap=Area(A.CHANNEL_WINDOW, "channel window at each (sample, position)"),
    nop=Operation(O.SCALE, "scale: divide by (k + a * local energy)^beta", centres=False),
    nrr=Recovery((R.NONE,), "none"),
    citation=(
        "Krizhevsky, Sutskever & Hinton, ImageNet Classification with Deep "
        "Convolutional Neural Networks, NeurIPS 2012"
    ),
    examples=_examples,
    strategy=_strategy,
    layer=_LAYER,
    convention_options={"convention": ("torch", "onnx", "caffe", "tf")},
    conventions={
        "convention": (
            "'torch' window [c-n//2, c+(n-1)//2], alpha/n; 'onnx' [c-(n-1)//2, c+n//2], "
            "alpha/n; 'caffe' symmetric, odd n only, alpha/n; 'tf' depth_radius "
            "r=(n-1)//2, odd n only, alpha not divided by n"
        ),
    },
    differentiable=("input",),
    catalogue=Catalogue(
        base=_conformance_base,
        variants={"random": {}},
        exclude={
            "const_group": "no statistics group: each output mixes a window of channels, so a "
                           "constant block is an ordinary input",
            "tiny1e-30": "k dominates (k + alpha mean(x^2))^beta for tiny inputs: the output is "
                         "x / k^beta, a plain scaling (the subnormal rows keep the underflow)",
        },
        only={"lrn_size2": ("20", {"size": 2}), "lrn_size4": ("20", {"size": 4}),
              "lrn_size6": ("20", {"size": 6})},
    ),
))
