r"""SGD with PyTorch's update rules on one weight vector, the angular update
between iterates, Li & Arora's exponential learning rate, and running numba on
one thread (the runs make thousands of tiny normalizer calls).
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import numba
import numpy as np

__all__ = ["serial_numba", "Trajectory", "sgd", "angular_updates", "li_arora_schedule"]


@contextlib.contextmanager
def serial_numba():
    """Run numba kernels on one thread inside the block (the previous count is restored)."""
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _serial(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with serial_numba():
            return fn(*args, **kwargs)
    return wrapper


# -- SGD ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Trajectory:
    """``w[t]`` for t = 0..steps, and per step t < steps: ``g[t]`` the loss
    gradient at ``w[t]`` (without weight decay), ``loss[t]``, ``lr[t]``."""

    w: np.ndarray
    g: np.ndarray
    loss: np.ndarray
    lr: np.ndarray


@_serial
def sgd(loss_grad, w0, *, lr, weight_decay=0.0, momentum=0.0, steps, batches=None):
    r"""Run SGD with PyTorch's conventions (``torch.optim.SGD``, dampening 0,
    not Nesterov) and return the :class:`Trajectory`.

    .. math::

        d_t = g_t + \lambda w_t, \qquad
        v_t = \mu v_{t-1} + d_t \;(v_0 = d_0), \qquad
        w_{t+1} = w_t - \eta_t v_t,

    with :math:`g_t = \nabla L_{B_t}(w_t)` from ``loss_grad(w, batches[t])``
    (``batches=None``: full batch, ``loss_grad(w, None)``).  ``lr`` is a
    number or a function ``t -> eta_t`` (a schedule).
    """
    w = np.array(w0, dtype=np.float64, copy=True)
    if batches is not None and len(batches) < steps:
        raise ValueError(f"{len(batches)} batches for {steps} steps")
    lr_of = lr if callable(lr) else (lambda t: lr)
    W = np.empty((steps + 1,) + w.shape)
    G = np.empty((steps,) + w.shape)
    Ls = np.empty(steps)
    lrs = np.empty(steps)
    W[0] = w
    v = None
    for t in range(steps):
        L, g = loss_grad(w, None if batches is None else batches[t])
        d = g + weight_decay * w if weight_decay else g
        v = d if v is None or momentum == 0.0 else momentum * v + d
        eta = float(lr_of(t))
        w = w - eta * v
        W[t + 1], G[t], Ls[t], lrs[t] = w, g, L, eta
    return Trajectory(W, G, Ls, lrs)


def angular_updates(W):
    r""":math:`\Delta_t = \angle(w_t, w_{t+1})` for consecutive rows of ``W``,
    computed as :math:`\operatorname{atan2}(\lVert P_\perp w_{t+1}\rVert,
    \langle \hat w_t, w_{t+1}\rangle)` (accurate for small angles)."""
    W = np.asarray(W, dtype=np.float64)
    a, b = W[:-1], W[1:]
    ah = a / np.linalg.norm(a, axis=1, keepdims=True)
    along = np.sum(ah * b, axis=1)
    perp = np.linalg.norm(b - along[:, None] * ah, axis=1)
    return np.arctan2(perp, along)


def li_arora_schedule(lr, weight_decay, exponent=lambda t: -2 * t - 1):
    r"""The Li & Arora learning rate :math:`t \mapsto \eta (1-\eta\lambda)^{e(t)}`,
    :math:`e(t) = -2t - 1` by default (other exponents: the broken inputs)."""
    q = 1.0 - lr * weight_decay
    return lambda t: lr * q ** exponent(t)
