r"""Item 4: weight decay as an exponentially growing learning rate (Li & Arora
2020), exact by induction on a scale-invariant loss.
"""
from __future__ import annotations

import numpy as np

from ..claims import Alternative, Claim
from .losses import make_problem, random_batches, subject
from .sgd import _serial, li_arora_schedule, sgd

__all__ = ["SRC_LI_ARORA", "exponential_lr_claim"]

SRC_LI_ARORA = "Li & Arora 2020, An Exponential Learning Rate Schedule for Deep Learning (arXiv:1910.07454)"


# -- item 4 ------------------------------------------------------------------------


@_serial
def exponential_lr_claim(kind="batch_norm", *, loss_grad=None, w0=None, lr=0.1,
                         weight_decay=0.05, steps=300, batch_size=8, N=32, seed=0,
                         schedule=None, tolerance=1e-10, alternatives=True):
    r"""Item 4 (Li & Arora 2020: their equivalence of weight decay and an
    exponentially growing learning rate, in the momentum-free case).

    Run A: SGD with weight decay :math:`\lambda`, learning rate :math:`\eta`.
    Run B: SGD without weight decay, learning rate
    :math:`\tilde\eta_t = \eta (1-\eta\lambda)^{-2t-1}` (``schedule``
    overrides it), same start, same mini-batches.  If
    :math:`w_t = q^t \tilde w_t` (:math:`q = 1-\eta\lambda`), scale invariance
    gives :math:`\nabla L(w_t) = q^{-t}\nabla L(\tilde w_t)` and

    .. math::

        w_{t+1} = q\,w_t - \eta\nabla L(w_t)
        = q^{t+1}\big(\tilde w_t - \eta q^{-2t-1}\nabla L(\tilde w_t)\big)
        = q^{t+1}\tilde w_{t+1},

    so the identity is exact by induction.  Measured:
    :math:`\max_t \lVert w_t - q^t\tilde w_t\rVert / \lVert w_t\rVert`,
    predicted 0, tolerance 1e-10 (rounding, amplified by the dynamics).
    """
    key, text = subject(kind, loss_grad)
    default_loss, w_init = make_problem(kind, N=N, seed=seed)
    loss_grad = default_loss if loss_grad is None else loss_grad
    w0 = w_init if w0 is None else np.asarray(w0, dtype=np.float64)
    batches = random_batches(N, batch_size, steps, seed=seed + 1)
    a = sgd(loss_grad, w0, lr=lr, weight_decay=weight_decay, steps=steps, batches=batches)
    sched = li_arora_schedule(lr, weight_decay) if schedule is None else schedule
    b = sgd(loss_grad, w0, lr=sched, steps=steps, batches=batches)
    q = 1.0 - lr * weight_decay
    scale = q ** np.arange(steps + 1)
    na = np.linalg.norm(a.w, axis=1)

    def dist(bw, sc):
        return float(np.max(np.linalg.norm(a.w - sc[:, None] * bw, axis=1) / na))

    err = np.linalg.norm(a.w - scale[:, None] * b.w, axis=1) / na
    alts = []
    if alternatives:
        # wrong exponents of the schedule (each a run B of its own) and an off-by-one rescaling
        for label, e in (("lr (1-lr wd)^(-2t)", lambda t: -2 * t),
                         ("lr (1-lr wd)^(-2t-2)", lambda t: -2 * t - 2),
                         ("lr (1-lr wd)^(-t-1) (q for q^2)", lambda t: -t - 1)):
            bw = sgd(loss_grad, w0, lr=li_arora_schedule(lr, weight_decay, e), steps=steps,
                     batches=batches).w
            alts.append(Alternative(f"schedule {label}", 0.0,
                                    dist(bw, scale)))
        alts.append(Alternative("rescaling q^(t+1) for q^t", 0.0, dist(b.w, scale * q)))
    return Claim(
        id=f"item4.exponential_lr.{key}",
        claim=(f"SGD(lr={lr}, wd={weight_decay}) on {text} = (1-lr wd)^t x "
               f"SGD(lr_t = {'lr (1-lr wd)^(-2t-1)' if schedule is None else 'a given schedule'}, "
               f"wd=0), same {steps} batches of "
               f"{batch_size}/{N} (max relative distance; final lr_t {b.lr[-1]:.4g})"),
        source=SRC_LI_ARORA, predicted=0.0, measured=float(np.max(err)), tolerance=tolerance,
        alternatives=tuple(alts),
    )
