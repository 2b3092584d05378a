r"""Lp normalization along one axis (``torch.nn.functional.normalize``).

NAP: one axis (every other index is its own group); NOP: scale by the Lp
norm, clamped below by eps; NRR: none.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..kernels import lp as K
from ..numerics import as_float64, check_finite_scalar
from ..registry import Case, Plan, Spec, register
from .. import reference as _reference

__all__ = ["normalize"]


class NormalizePlan(Plan):
    """Rows = the 1-D fibres along ``dim``; residuals y, the norms, the argmax."""

    params = ("input",)

    def __init__(self, x, p, dim, eps):
        self._values = {"input": x}
        self._shape = x.shape
        self.p, self.dim, self.eps = p, dim, eps
        moved = np.moveaxis(x, dim, -1)
        self._mshape = moved.shape
        D = x.shape[dim]
        R = int(np.prod(self._mshape[:-1], dtype=np.int64))
        self._x2 = np.ascontiguousarray(moved).reshape(R, D)

    def _back(self, a2):
        """(R, D) array -> the input layout (C-contiguous)."""
        return np.ascontiguousarray(np.moveaxis(a2.reshape(self._mshape), -1, self.dim))

    def _rows(self, name, arr):
        arr = np.asarray(arr, dtype=np.float64)
        if arr.shape != self._shape:
            raise ValueError(f"{name} has shape {arr.shape}, expected the input shape {self._shape}")
        return np.ascontiguousarray(np.moveaxis(arr, self.dim, -1)).reshape(self._x2.shape)

    def _forward(self):
        if self.eps <= 0.0 and self._x2.shape[1] > 0:
            # a zero norm would divide by zero: find it before the kernel does
            nrm, _ = K.lp_norm_rows(self._x2, self.p)
            self._check_zero(nrm)
        y2, nrm, arg = K.normalize_forward(self._x2, self.p, self.eps)
        self._res = (y2, nrm, arg)
        return self._back(y2)

    def _check_zero(self, nrm):
        zero = nrm == 0.0
        if zero.any():
            r = int(np.argmax(zero))
            idx = np.unravel_index(r, self._mshape[:-1]) if len(self._mshape) > 1 else ()
            raise ValueError(
                f"normalize: max(||x||_p, eps) is zero for the fibre of input at index "
                f"{tuple(int(i) for i in idx)} (all axes but dim={self.dim}) with eps={self.eps}; "
                f"the quotient x / 0 is undefined (input shape {self._shape})"
            )

    def vjp(self, cotangent):
        self.forward()
        dy = self._rows("cotangent", cotangent)
        y2, nrm, arg = self._res
        return {"input": self._back(K.normalize_vjp(self._x2, y2, nrm, arg, dy, self.p, self.eps))}

    def jvp(self, tangents):
        self.forward()
        t = tangents.get("input")
        if t is None:
            return np.zeros(self._shape)
        t = self._rows("tangent of input", t)
        y2, nrm, arg = self._res
        return self._back(K.normalize_jvp(self._x2, y2, nrm, arg, t, self.p, self.eps))

    def norm_gradient(self):
        """``d||x||_p / dx`` per fibre, in the (R, D) row layout (the kernel's choice of subgradient)."""
        x2 = self._x2
        _, nrm, arg = self._res
        p = self.p
        sgn = np.sign(x2)
        if p == math.inf:
            g = np.zeros_like(x2)
            rows = np.arange(x2.shape[0])
            if x2.shape[1]:
                g[rows, arg] = sgn[rows, arg]
            return g
        if p == 1.0:
            return sgn
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if p == 2.0:
                g = x2 / nrm[:, None]
            else:
                g = sgn * (np.abs(x2) / nrm[:, None]) ** (p - 1.0)
        return np.where(x2 == 0.0, 0.0, g)

    def jacobian(self, name):
        """Closed form, block diagonal over fibres: ``I/N - y g^T / N`` or ``I/eps`` (clamped)."""
        if name != "input":
            raise ValueError(f"normalize has no differentiable parameter {name!r}")
        self.forward()
        y2, nrm, _ = self._res
        R, D = self._x2.shape
        g = self.norm_gradient()
        J4 = np.zeros((R, D, R, D))
        eye = np.eye(D)
        for r in range(R):
            if nrm[r] < self.eps:
                J4[r, :, r, :] = eye / self.eps
            else:
                J4[r, :, r, :] = (eye - np.outer(y2[r], g[r])) / nrm[r]
        nd = len(self._shape)
        J = J4.reshape(self._mshape + self._mshape)
        return np.ascontiguousarray(np.moveaxis(J, [nd - 1, 2 * nd - 1], [self.dim, nd + self.dim]))


def _bind(input, p=2.0, dim=1, eps=1e-12):
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
    return NormalizePlan(x, p, dim % x.ndim, eps)


def normalize(input, p=2.0, dim=1, eps=1e-12):
    r"""Lp normalization of ``input`` along ``dim`` (``torch.nn.functional.normalize``).

    .. math::

        y = \frac{x}{\max(\lVert x \rVert_p, \epsilon)}, \qquad
        \lVert x \rVert_p = \Big(\sum_{i \in \text{dim}} |x_i|^p\Big)^{1/p},
        \quad \lVert x \rVert_\infty = \max_i |x_i|,

    for each fibre of ``input`` along ``dim`` (any rank >= 1, negative ``dim``
    counts from the end).  ``p`` is any positive float or ``math.inf``.  The
    eps clamp is on the norm itself (PyTorch), not on the squared norm (TF's
    ``l2_normalize`` takes ``rsqrt(max(sum x^2, eps))``).

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

    Numerical choices: float64; the norm is computed on the fibre scaled by
    :math:`2^{-e}` (:math:`2^e` the binade bound of :math:`\max|x|`, an exact
    scaling; division by :math:`\max|x|` itself when ``p >= 512``), with a
    compensated left-to-right sum, so rows of 1e300 or 1e-300 entries give the
    correctly rounded-scale finite result; :math:`y = x / \max(N, \epsilon)` is
    one division (when :math:`N` itself overflows, e.g. 15 entries of 1.7e308,
    the scaled row is divided by the scaled norm, so y stays exact; the
    derivatives, of size :math:`1/N`, are then 0).  A zero denominator (all-zero fibre with ``eps <= 0``)
    raises ValueError.  NaN input propagates to its fibre only.
    """
    return _bind(input, p, dim, eps).forward()


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


register(Spec(
    name="normalize",
    function=normalize,
    bind=_bind,
    reference=_reference.normalize,
    family="activations",
    nap="one axis (dim) per fibre",
    nop="scale only: Lp norm, clamped below by eps",
    nrr="none",
    citation="PyTorch torch.nn.functional.normalize (Lp normalization; no single paper)",
    examples=_examples,
    conventions={
        "eps": "clamp on the norm, max(||x||_p, eps) (PyTorch); TF clamps the squared L2 norm",
        "p=inf subgradient": "first maximal |x_i| in index order gets the derivative",
    },
    differentiable=("input",),
))
