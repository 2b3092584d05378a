r"""Item 3: norm growth and the effective learning rate of plain SGD on a
scale-invariant loss (van Laarhoven 2017; Hoffer et al. 2018).
"""
from __future__ import annotations

import math

import numpy as np

from ..claims import Alternative, Claim
from .losses import make_problem, random_batches, subject
from .sgd import _serial, angular_updates, sgd

__all__ = ["SRC_NORM_GROWTH", "norm_growth_claim", "effective_lr_claim"]

SRC_NORM_GROWTH = ("van Laarhoven 2017 (arXiv:1706.05350); "
                   "Hoffer, Banner, Golan & Soudry 2018 (arXiv:1803.01814)")


# -- item 3 ------------------------------------------------------------------------


def _kind_problem(kind, loss_grad, w0, seed):
    """The loss of ``kind`` (unless given) and a start of unit norm (unless given):
    a small start makes the norm growth of item 3 visible."""
    default_loss, w_init = make_problem(kind, seed=seed)
    loss_grad = default_loss if loss_grad is None else loss_grad
    w0 = w_init / np.linalg.norm(w_init) if w0 is None else np.asarray(w0, dtype=np.float64)
    return loss_grad, w0


def _item3_batches(N, batch_size, steps, seed):
    return None if batch_size is None else random_batches(N, batch_size, steps, seed=seed + 3)


def _item3_alg(batch_size, N):
    return "GD" if batch_size is None else f"SGD ({batch_size}/{N} per step)"


@_serial
def norm_growth_claim(kind="batch_norm", *, loss_grad=None, w0=None, lr=0.5, steps=200,
                      batch_size=8, N=32, seed=0, tolerance=1e-12):
    r"""Item 3: :math:`\lVert w_{t+1}\rVert^2 = \lVert w_t\rVert^2 + \eta^2\lVert g_t\rVert^2`.

    Plain mini-batch SGD (no weight decay, no momentum; ``batch_size`` of
    ``N`` rows per step, ``batch_size=None``: full-batch GD) for ``steps``
    steps from a unit-norm start; measured: :math:`\max_t |\lVert w_{t+1}\rVert^2 - \lVert w_t\rVert^2 -
    \eta^2 \lVert g_t\rVert^2| / \lVert w_{t+1}\rVert^2`, predicted 0 (exact
    because :math:`\langle w_t, g_t\rangle = 0`); tolerance 1e-12 (rounding).
    ``loss_grad`` overrides the loss built from ``kind`` (the claim's id and text then
    name the user's loss, see :func:`subject`).
    """
    key, text = subject(kind, loss_grad)
    loss_grad, w0 = _kind_problem(kind, loss_grad, w0, seed)
    batches = _item3_batches(N, batch_size, steps, seed)
    tr = sgd(loss_grad, w0, lr=lr, steps=steps, batches=batches)
    n2 = np.sum(tr.w ** 2, axis=1)
    g2 = np.sum(tr.g ** 2, axis=1)
    pred = n2[:-1] + lr ** 2 * g2

    def res(p_):
        return float(np.max(np.abs(n2[1:] - p_) / n2[1:]))

    resid = res(pred)
    nrm = np.sqrt(n2)
    alts = (
        Alternative("the norm is constant: |w_t+1|^2 = |w_t|^2", 0.0, res(n2[:-1])),
        Alternative("lr for lr^2: |w_t|^2 + lr |g_t|^2", 0.0, res(n2[:-1] + lr * g2)),
        Alternative("a factor 2: |w_t|^2 + 2 lr^2 |g_t|^2", 0.0, res(n2[:-1] + 2 * lr ** 2 * g2)),
        Alternative("the norm, not its square: |w_t+1| = |w_t| + lr |g_t|", 0.0,
                    float(np.max(np.abs(nrm[1:] - nrm[:-1] - lr * np.sqrt(g2)) / nrm[1:]))),
    )
    return Claim(
        id=f"item3.norm_growth.{key}",
        claim=(f"{_item3_alg(batch_size, N)} without weight decay on {text}: "
               f"|w_t+1|^2 = |w_t|^2 + lr^2 |g_t|^2 (max relative residual over {steps} steps; "
               f"|w| grows {math.sqrt(n2[0]):.4g} -> {math.sqrt(n2[-1]):.4g})"),
        source=SRC_NORM_GROWTH, predicted=0.0, measured=resid, tolerance=tolerance,
        alternatives=alts,
    )


@_serial
def effective_lr_claim(kind="batch_norm", *, loss_grad=None, w0=None, lr=0.5, steps=200,
                       batch_size=8, N=32, seed=0, tolerance=1e-10):
    r"""Item 3: the angular step is the effective learning rate times the gradient
    on the unit sphere, :math:`\tan\Delta_t = (\eta/\lVert w_t\rVert^2)\,
    \lVert\nabla L(\hat w_t)\rVert`.

    Since :math:`w_{t+1} = w_t - \eta g_t` with :math:`g_t \perp w_t`,
    :math:`\tan\Delta_t = \eta\lVert g_t\rVert/\lVert w_t\rVert`, and
    :math:`g_t = \nabla L(\hat w_t)/\lVert w_t\rVert`.  The gradient at the
    unit vector :math:`\hat w_t` (same batch) is a separate normref
    evaluation.  Same run as :func:`norm_growth_claim`.  Measured: the max
    relative residual over the run; predicted 0; tolerance 1e-10.  The angle
    of a step is only as accurate as :math:`10^{-16}\lVert w\rVert/\lVert
    w_{t+1}-w_t\rVert` (the rounding of :math:`w_{t+1}`), which is why the run
    is stochastic: full-batch GD converges on the sphere and its vanishing
    steps would measure rounding, not the identity.
    """
    key, text = subject(kind, loss_grad)
    loss_grad, w0 = _kind_problem(kind, loss_grad, w0, seed)
    batches = _item3_batches(N, batch_size, steps, seed)
    tr = sgd(loss_grad, w0, lr=lr, steps=steps, batches=batches)
    delta = angular_updates(tr.w)
    norms = np.linalg.norm(tr.w[:-1], axis=1)
    eta_eff = lr / norms ** 2
    g_unit = np.array([
        np.linalg.norm(loss_grad(w / np.linalg.norm(w), None if batches is None else b)[1])
        for w, b in zip(tr.w[:-1], batches or [None] * steps)
    ])
    pred = eta_eff * g_unit

    def res(lhs, p_):
        return float(np.max(np.abs(lhs - p_) / np.maximum(p_, 1e-300)))

    resid = res(np.tan(delta), pred)
    alts = (
        Alternative("lr/|w_t| (exponent 1)", 0.0, res(np.tan(delta), lr / norms * g_unit)),
        Alternative("lr/|w_t|^3 (exponent 3)", 0.0, res(np.tan(delta), lr / norms ** 3 * g_unit)),
        Alternative("lr itself (no effective rate)", 0.0, res(np.tan(delta), lr * g_unit)),
        Alternative("sin(angle) for tan(angle)", 0.0, res(np.sin(delta), pred)),
        Alternative("the angle for tan(angle)", 0.0, res(delta, pred)),
    )
    return Claim(
        id=f"item3.effective_lr.{key}",
        claim=(f"{_item3_alg(batch_size, N)} on {text}: tan(angle(w_t, w_t+1)) = "
               f"lr/|w_t|^2 * |grad L(w_t/|w_t|)| (max relative residual over {steps} steps; "
               f"eta_eff {eta_eff[0]:.4g} -> {eta_eff[-1]:.4g})"),
        source=SRC_NORM_GROWTH, predicted=0.0, measured=resid, tolerance=tolerance,
        alternatives=alts,
    )
