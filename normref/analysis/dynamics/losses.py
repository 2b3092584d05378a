r"""Scale-invariant losses of a weight vector with exact gradients (normref's
VJPs), the small deterministic problems built on them, and seeded mini-batches.
See :mod:`normref.analysis.dynamics` for the numerical choices (``eps = 0``).
"""
from __future__ import annotations

import math

import numpy as np

from ...activations.batch_norm import batch_norm
from ...activations.layer_norm import layer_norm
from ...autodiff import vjp
from ...weights.weight_norm import weight_norm

__all__ = ["LOSS_KINDS", "make_loss", "make_problem", "random_batches", "subject"]

#: losses :func:`make_loss` builds; all but ``"none"`` are scale-invariant in w
LOSS_KINDS = ("batch_norm", "layer_norm", "weight_norm", "angle", "none")


def make_loss(kind, X, targets, *, eps=0.0):
    r"""A loss of a weight vector and its exact gradient: ``loss_grad(w, batch=None)``.

    ``loss_grad`` returns ``(L, g)`` with ``g = dL/dw`` (float64, shape of w),
    computed by :func:`normref.vjp` of the normalizer; ``batch`` is an index
    array of rows of ``X`` (None: all rows).  With :math:`X_B` the batch rows,
    :math:`n` their number and :math:`t_B` the matching targets:

    ``"batch_norm"``
        :math:`L(w) = \frac{1}{2n}\lVert \mathrm{BN}(X_B w) - t_B\rVert^2`: the
        column :math:`X_B w` of shape ``(n, 1)`` (n samples, one channel) is
        batch-normalized in training mode, no affine, ``eps``.
    ``"layer_norm"``
        ``w`` is a matrix :math:`W \in \mathbb{R}^{k \times m}` flattened
        (``d = k m``, ``k = targets.shape[1]``, ``m = X.shape[1]``):
        :math:`L(w) = \frac{1}{2n}\lVert \mathrm{LN}(X_B W^\top) - T_B\rVert^2`,
        each sample's k pre-activations layer-normalized.
    ``"weight_norm"``
        :math:`L(w) = \frac{1}{2n}\lVert X_B\, w/\lVert w\rVert - t_B\rVert^2`
        (``weight_norm(w, 1, dim=None)``).
    ``"angle"`` (``d = 2``; X and targets unused)
        :math:`L(w) = c\,\arg(w/\lVert w\rVert)` with ``c = targets`` (a
        scalar): the gradient :math:`c\,J\hat w/\lVert w\rVert` (J the rotation
        by +90 degrees) has norm exactly :math:`c/\lVert w\rVert`, so
        :math:`\lVert\nabla L(\hat w)\rVert = c` is constant on the unit circle —
        the setting of the equilibrium-norm formula of item 5.  Its value is
        the angle (a branch of a multivalued function; the gradient is single
        valued).
    ``"none"``
        :math:`L(w) = \frac{1}{2n}\lVert X_B w - t_B\rVert^2` — no
        normalization, *not* scale-invariant (the broken input of the tests).

    ``eps > 0`` makes the normalized losses only approximately scale-invariant
    (see the module notes); keep ``eps = 0``.
    """
    X = np.asarray(X, dtype=np.float64)
    if kind == "angle":
        c = float(np.asarray(targets))
        J = np.array([[0.0, -1.0], [1.0, 0.0]])

        def loss_grad(w, batch=None):
            u, pull = vjp(weight_norm, w, np.array(1.0), None)
            (g, _, _) = pull(c * (J @ u))
            return c * math.atan2(u[1], u[0]), g

        return loss_grad

    T = np.asarray(targets, dtype=np.float64)

    def rows(batch):
        if batch is None:
            return X, T
        return X[batch], T[batch]

    if kind == "batch_norm":
        def loss_grad(w, batch=None):
            Xb, tb = rows(batch)
            n = Xb.shape[0]
            y, pull = vjp(batch_norm, (Xb @ w)[:, None], None, None, None, None,
                          True, 0.1, eps)
            r = y[:, 0] - tb
            dz = pull((r / n)[:, None])[0]
            return 0.5 * (r @ r) / n, Xb.T @ dz[:, 0]
    elif kind == "layer_norm":
        k, m = T.shape[1], X.shape[1]

        def loss_grad(w, batch=None):
            Xb, Tb = rows(batch)
            n = Xb.shape[0]
            W = np.reshape(w, (k, m))
            y, pull = vjp(layer_norm, Xb @ W.T, (k,), None, None, eps)
            r = y - Tb
            dH = pull(r / n)[0]
            return 0.5 * np.sum(r * r) / n, (dH.T @ Xb).ravel()
    elif kind == "weight_norm":
        def loss_grad(w, batch=None):
            Xb, tb = rows(batch)
            n = Xb.shape[0]
            u, pull = vjp(weight_norm, w, np.array(1.0), None)
            r = Xb @ u - tb
            return 0.5 * (r @ r) / n, pull(Xb.T @ r / n)[0]
    elif kind == "none":
        def loss_grad(w, batch=None):
            Xb, tb = rows(batch)
            n = Xb.shape[0]
            r = Xb @ w - tb
            return 0.5 * (r @ r) / n, Xb.T @ r / n
    else:
        raise ValueError(f"unknown loss kind {kind!r}; expected one of {LOSS_KINDS}")
    return loss_grad


def make_problem(kind, *, N=32, m=8, k=4, seed=0, eps=0.0, c=1.0):
    r"""``(loss_grad, w0)``: a small deterministic problem of the given kind.

    Data :math:`X \in \mathbb{R}^{N \times m}` standard normal plus a mean of
    0.5 (so re-centering matters), targets from a random teacher direction
    plus noise; ``w0`` standard normal.  ``d = m`` except ``layer_norm``
    (``d = k m``) and ``angle`` (``d = 2``, constant sphere gradient ``c``).
    """
    rng = np.random.default_rng(seed)
    if kind == "angle":
        return make_loss("angle", None, c), rng.standard_normal(2)
    X = rng.standard_normal((N, m)) + 0.5
    if kind == "layer_norm":
        teacher = rng.standard_normal((k, m))
        H = X @ teacher.T
        T = (H - H.mean(1, keepdims=True)) / H.std(1, keepdims=True)
        T = T + 0.3 * rng.standard_normal((N, k))
        return make_loss(kind, X, T, eps=eps), rng.standard_normal(k * m)
    z = X @ rng.standard_normal(m)
    t = (z - z.mean()) / z.std() + 0.3 * rng.standard_normal(N)
    return make_loss(kind, X, t, eps=eps), rng.standard_normal(m)


def random_batches(N, batch_size, steps, seed=0):
    """``steps`` index arrays, each a random ``batch_size``-subset of ``range(N)``."""
    rng = np.random.default_rng(seed)
    return [rng.choice(N, size=batch_size, replace=False) for _ in range(steps)]


def subject(kind, loss_grad):
    """``(id part, text)`` naming what a claim was computed on: normref's problem of ``kind``,
    or -- when the caller passed ``loss_grad`` -- the user's loss, labelled as such (the
    prediction then holds only if that loss is scale invariant)."""
    if loss_grad is None:
        return kind, f"a {kind} scale-invariant loss"
    name = getattr(loss_grad, "__name__", type(loss_grad).__name__)
    return f"user.{name}", f"the user's loss {name} (loss_grad given; not a normref problem)"
