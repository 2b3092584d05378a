r"""NRR, normalized representation recovery: the maps :math:`\hat x \mapsto y` after a
normalization, as :class:`~normref.compose.Piece` s that compose with any operation.

Each piece has exact VJPs and JVPs with respect to :math:`\hat x` and to its
own parameters (the parameters given: a piece built without a bias has no
bias input).  Parameters are handed in their user shapes and laid out on the
data by ``param_shape`` (any shape that broadcasts against :math:`\hat x`);
their gradients come back in the user shapes.

=========================== ============================================== =====================
piece                        map                                            inputs
=========================== ============================================== =====================
:class:`Affine`              :math:`\gamma \hat x + \beta`                   x̂, [γ], [β]
:class:`ConditionalAffine`   :math:`\gamma_{n} \hat x_{n} + \beta_{n}`       x̂, [γ (N, C)], [β]
:class:`Coloring`            :math:`W_g \hat x_g + \beta` per channel group  x̂, W (G, d, d), [β]
:class:`Renorm`              :math:`r \hat x + d`, r, d constants            x̂
:class:`Threshold`           :math:`\max(y, \tau)` (TLU)                     y, τ
=========================== ============================================== =====================

Derivatives:

.. math::

    \text{affine:}\quad \bar{\hat x} = \gamma \bar y,\
    \bar\gamma = \textstyle\sum \bar y \hat x,\ \bar\beta = \textstyle\sum \bar y;
    \qquad \text{coloring:}\quad \bar{\hat x}_g = W_g^T \bar y_g,\
    \bar W_g = \textstyle\sum \bar y_g \hat x_g^T;

    \text{renorm:}\quad \bar{\hat x} = r \bar y \ \ (\bar r = \bar d = 0:
    \text{the paper's stop-gradient});
    \qquad \text{threshold:}\quad \bar y = \bar z\,w,\ \bar\tau = \textstyle\sum \bar z (1 - w)

with the sums over the axes a parameter is broadcast along, and
:math:`w = [y > \tau] + \frac12 [y = \tau]`: at a tie the cotangent is split
half and half between :math:`y` and :math:`\tau`, the choice of
``torch.maximum`` (timm's FRN/TLU) and of autograd's ``maximum`` (the
reference), and the value central finite differences measure at the tie
(see :class:`~normref.compose.Maximum`).
"""
from __future__ import annotations

import numpy as np

from .compose import Maximum, Piece, sum_to

__all__ = ["Affine", "ConditionalAffine", "Coloring", "Renorm", "Threshold",
           "channel_shape"]


def channel_shape(ndim, C, axis=1):
    """Broadcast layout of a per-channel parameter: ``C`` on ``axis``, 1 elsewhere."""
    shape = [1] * ndim
    shape[axis] = C
    return tuple(shape)


class Affine(Piece):
    r""":math:`y = \gamma \hat x + \beta` (either parameter optional).

    ``param_shape`` lays out the weight (and the bias, unless ``bias_shape``
    gives the bias its own layout): per channel ``(1, C, 1, 1)``, per element
    of the trailing axes ``(1, H, W)``, ..."""

    name = "affine"

    def __init__(self, param_shape, weight=True, bias=True, bias_shape=None):
        self.param_shape = tuple(param_shape)
        self.bias_shape = self.param_shape if bias_shape is None else tuple(bias_shape)
        self.has_w, self.has_b = bool(weight), bool(bias)

    def forward(self, xhat, *params):
        params = list(params)
        self.xhat = xhat
        self.w = params.pop(0) if self.has_w else None
        self.b = params.pop(0) if self.has_b else None
        self.w_shape = None if self.w is None else np.shape(self.w)
        self.b_shape = None if self.b is None else np.shape(self.b)
        self.W = None if self.w is None else np.reshape(self.w, self.param_shape)
        y = xhat
        with np.errstate(over="ignore", invalid="ignore"):
            if self.W is not None:
                y = y * self.W
            if self.b is not None:
                y = y + np.reshape(self.b, self.bias_shape)
        return np.broadcast_to(y, np.shape(xhat)).copy() if y is xhat else y

    def vjp(self, g):
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            out = [g * self.W if self.W is not None else g]
            if self.has_w:
                out.append(sum_to(g * self.xhat, self.param_shape).reshape(self.w_shape))
            if self.has_b:
                out.append(sum_to(g, self.bias_shape).reshape(self.b_shape))
        return tuple(out)

    def jvp(self, tx, *tp):
        tp = list(tp)
        tw = tp.pop(0) if self.has_w else None
        tb = tp.pop(0) if self.has_b else None
        out = np.zeros(np.shape(self.xhat))
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            if tx is not None:
                out = out + (tx * self.W if self.W is not None else tx)
            if tw is not None:
                out = out + self.xhat * np.reshape(tw, self.param_shape)
            if tb is not None:
                out = out + np.reshape(tb, self.bias_shape)
        return out


class ConditionalAffine(Affine):
    r"""Per-sample affine (conditional batch norm, AdaIN): :math:`y_{nc\cdot} =
    \gamma_{nc} \hat x_{nc\cdot} + \beta_{nc}`, parameters of shape (N, C) for
    :math:`\hat x` of shape (N, C, *spatial)."""

    name = "conditional affine"

    def __init__(self, x_shape, weight=True, bias=True):
        super().__init__(tuple(x_shape[:2]) + (1,) * (len(x_shape) - 2), weight, bias)


class Coloring(Piece):
    r"""A matrix per group of channels: :math:`y_{n, g d + i, s} = \sum_j W_{g i j}
    \hat x_{n, g d + j, s} + \beta_{g d + i}` for :math:`\hat x` of shape
    (N, C, *spatial), ``W`` of shape (G, d, d) with ``C = G d`` (the coloring of
    group whitening; one group: a full C x C matrix), ``bias`` (C,) optional."""

    name = "coloring"

    def __init__(self, bias=True):
        self.has_b = bool(bias)

    def _split(self, a):
        N, C = a.shape[:2]
        return a.reshape(N, self.G, C // self.G, -1)

    def forward(self, xhat, W, *bias):
        W = np.asarray(W)
        if W.ndim != 3 or W.shape[1] != W.shape[2] or W.shape[0] * W.shape[1] != xhat.shape[1]:
            raise ValueError(f"coloring matrix has shape {W.shape}, expected (G, d, d) with "
                             f"G d = C = {xhat.shape[1]}")
        self.G = W.shape[0]
        self.xhat, self.W = xhat, W
        self.b_shape = np.shape(bias[0]) if self.has_b else None
        with np.errstate(over="ignore", invalid="ignore"):
            y = np.einsum("gij,ngjs->ngis", W, self._split(xhat)).reshape(xhat.shape)
            if self.has_b:
                y = y + np.reshape(bias[0], channel_shape(xhat.ndim, xhat.shape[1]))
        return y

    def vjp(self, g):
        gs, xs = self._split(g), self._split(self.xhat)
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            out = [np.einsum("gij,ngis->ngjs", self.W, gs).reshape(self.xhat.shape),
                   np.einsum("ngis,ngjs->gij", gs, xs)]
            if self.has_b:
                out.append(sum_to(g, channel_shape(g.ndim, g.shape[1])).reshape(self.b_shape))
        return tuple(out)

    def jvp(self, tx, tW, *tb):
        out = np.zeros(self.xhat.shape)
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            if tx is not None:
                out = out + np.einsum("gij,ngjs->ngis", self.W, self._split(tx)).reshape(out.shape)
            if tW is not None:
                out = out + np.einsum("gij,ngjs->ngis", tW, self._split(self.xhat)).reshape(out.shape)
            if self.has_b and tb and tb[0] is not None:
                out = out + np.reshape(tb[0], channel_shape(out.ndim, out.shape[1]))
        return out


class Renorm(Piece):
    r"""Batch renormalization's correction :math:`y = r \hat x + d` (Ioffe 2017).

    ``r`` and ``d`` are arrays laid out by ``param_shape`` and are *constants*
    of every derivative (the paper's stop-gradient): :math:`\bar{\hat x} = r
    \bar y`, :math:`\dot y = r \dot{\hat x}`, whatever they were computed from."""

    name = "renorm"

    def __init__(self, r, d, param_shape):
        self.r = np.reshape(np.asarray(r, dtype=np.float64), param_shape)
        self.d = np.reshape(np.asarray(d, dtype=np.float64), param_shape)

    def forward(self, xhat):
        return xhat * self.r + self.d

    def vjp(self, g):
        with np.errstate(over="ignore", under="ignore"):
            return (g * self.r,)

    def jvp(self, t):
        with np.errstate(over="ignore", under="ignore"):
            return t * self.r


class Threshold(Maximum):
    r"""The thresholded linear unit :math:`z = \max(y, \tau)` (Singh & Krishnan 2020),
    ``tau`` in its user shape laid out by ``param_shape``; at a tie the cotangent is
    split half and half (see the module docstring)."""

    name = "threshold"

    def __init__(self, param_shape):
        self.param_shape = tuple(param_shape)

    def forward(self, y, tau):
        self.tau_shape = np.shape(tau)
        return super().forward(y, np.reshape(tau, self.param_shape))

    def vjp(self, g):
        gy, gt = super().vjp(g)
        return gy, np.reshape(gt, self.tau_shape)

    def jvp(self, ty, tt):
        return super().jvp(ty, None if tt is None else np.reshape(tt, self.param_shape))
