r"""Local response normalization across channels (Krizhevsky et al. 2012).

NAP: a window of neighbouring channels at each (sample, position);
NOP: divide by a power of the local energy; NRR: none.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..kernels import lrn as K
from ..numerics import as_float64, check_finite_scalar
from ..registry import Case, Plan, Spec, register
from .. import reference as _reference

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


class LocalResponseNormPlan(Plan):
    """Residuals: y, r = s^-beta and the scaled denominator (u, e), s = 4^e u."""

    params = ("input",)

    def __init__(self, x, size, alpha, beta, k, convention):
        self._values = {"input": x}
        self._shape = x.shape
        N, C = x.shape[0], x.shape[1]
        L = int(np.prod(x.shape[2:], dtype=np.int64))
        self._x3 = np.ascontiguousarray(x).reshape(N, C, L)
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.convention = convention
        self._lo, self._hi, divide = _window(size, convention)
        self._a = alpha / size if divide else alpha

    def _forward(self):
        x3 = self._x3
        if x3.size == 0:
            self._res = None
            return np.empty(self._shape)
        y, r, u, e = K.lrn_forward(x3, self._lo, self._hi, self._a, self.k, self.beta)
        bad = u <= 0.0
        if bad.any():
            n, c, l = (int(i) for i in np.argwhere(bad)[0])
            pos = np.unravel_index(l, self._shape[2:]) if len(self._shape) > 2 else ()
            raise ValueError(
                "local_response_norm: the denominator base s = k + a * sum(x^2) must be "
                f"positive, got s <= 0 at input index {(n, c) + tuple(int(i) for i in pos)} "
                f"(k={self.k}, alpha={self.alpha}, size={self.size}, "
                f"convention={self.convention!r}; input shape {self._shape})"
            )
        self._res = (y, r, u, e)
        return y.reshape(self._shape)

    def _check(self, name, arr):
        arr = np.asarray(arr, dtype=np.float64)
        if arr.shape != self._shape:
            raise ValueError(f"{name} has shape {arr.shape}, expected the input shape {self._shape}")
        return np.ascontiguousarray(arr).reshape(self._x3.shape)

    def vjp(self, cotangent):
        self.forward()
        dy = self._check("cotangent", cotangent)
        if self._res is None:
            return {"input": np.empty(self._shape)}
        y, r, u, e = self._res
        dx = K.lrn_vjp(self._x3, y, r, u, e, dy, self._lo, self._hi, self._a, self.beta)
        return {"input": dx.reshape(self._shape)}

    def jvp(self, tangents):
        self.forward()
        t = tangents.get("input")
        if t is None or self._res is None:
            return np.zeros(self._shape)
        t = self._check("tangent of input", t)
        y, r, u, e = self._res
        ty = K.lrn_jvp(self._x3, y, r, u, e, t, self._lo, self._hi, self._a, self.beta)
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
    if convention not in CONVENTIONS:
        raise ValueError(
            f"local_response_norm: convention must be one of {CONVENTIONS}, got {convention!r}"
        )
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

    Numerical choices: float64 throughout.  ``s`` is held as
    :math:`4^{e} u` with :math:`2^{e}` the binade of the window's largest
    :math:`|x|` (or of :math:`\sqrt{|k|}`, whichever is larger) and
    :math:`u = a \sum (x_j 2^{-e})^2 + k\, 4^{-e}`: power-of-two scalings are
    exact, so in the ordinary range this is the plain float64 evaluation, and
    1e300 inputs (where ``x**2`` overflows) or k = 0 with 1e-200 inputs still
    give the correctly scaled finite answer.  :math:`s^{-\beta}` is ``pow``
    when ``s`` and the result are normal numbers, else evaluated as
    :math:`\exp(\log|x| - \beta(\log u + 2e\log 2))`.  The sums run over the
    window in ascending channel order.  A non-positive ``s`` (possible only
    with ``k <= 0`` or ``alpha < 0``) raises ValueError naming the index;
    NaN input propagates only to the channels whose window contains it.
    """
    return _bind(input, size, alpha, beta, k, convention=convention).forward()


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


register(Spec(
    name="local_response_norm",
    function=local_response_norm,
    bind=_bind,
    reference=_reference.local_response_norm,
    family="activations",
    nap="channel window at each (sample, position)",
    nop="scale: divide by (k + a * local energy)^beta",
    nrr="none",
    citation=(
        "Krizhevsky, Sutskever & Hinton, ImageNet Classification with Deep "
        "Convolutional Neural Networks, NeurIPS 2012"
    ),
    examples=_examples,
    conventions={
        "convention": (
            "'torch' window [c-n//2, c+(n-1)//2], alpha/n; 'onnx' [c-(n-1)//2, c+n//2], "
            "alpha/n; 'caffe' symmetric, odd n only, alpha/n; 'tf' depth_radius "
            "r=(n-1)//2, odd n only, alpha not divided by n"
        ),
    },
    differentiable=("input",),
))
