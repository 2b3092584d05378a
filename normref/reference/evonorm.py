"""EvoNorm-B0 and EvoNorm-S0 as their textbook formulas in autograd.numpy (the oracle).

Written from the paper (Liu, Brock, Simonyan & Le 2020, arXiv:2004.02967,
Figure 5 / Table 1): plain means and two-pass biased variances, ``anp.maximum``
(whose gradient autograd splits half and half at a tie).
"""
from __future__ import annotations

import numpy as np
import autograd.numpy as anp
from autograd.tracer import getval

from .activations import _affine, _f64, _update_running

__all__ = ["evonorm_b0", "evonorm_s0"]


def _var(x, axes):
    mean = anp.mean(x, axis=axes, keepdims=True)
    return anp.mean((x - mean) ** 2, axis=axes, keepdims=True)


def evonorm_b0(input, running_var, weight=None, bias=None, v=None, training=False,
               momentum=0.1, eps=1e-5, *, momentum_convention="torch",
               running_var_unbiased=True):
    r"""EvoNorm-B0.

    .. math::

        y = \frac{x}{\max(\sqrt{\sigma_B^2 + \epsilon},\ v x + \sqrt{\sigma_{HW}^2 + \epsilon})}
            \gamma + \beta

    (``v=None``: :math:`x / \sqrt{\sigma_B^2 + \epsilon}`).  Training: biased
    batch variance per channel over (N, spatial), ``running_var`` updated in
    place (``n/(n-1)`` if ``running_var_unbiased``); eval: ``running_var``.
    """
    x = _f64(input)
    C = x.shape[1]
    bshape = (1, C) + (1,) * (x.ndim - 2)
    if training:
        var_b = _var(x, (0,) + tuple(range(2, x.ndim)))
        if running_var is not None and x.size:
            _update_running(None, running_var, None, np.reshape(getval(var_b), (C,)),
                            x.size // C, momentum, momentum_convention, running_var_unbiased)
    else:
        var_b = anp.reshape(_f64(running_var), bshape)
    den = anp.sqrt(var_b + eps)
    if v is not None:
        sp = tuple(range(2, x.ndim))
        inst = anp.sqrt(_var(x, sp) + eps) if sp else anp.sqrt(eps) + 0.0 * x
        den = anp.maximum(den, anp.reshape(_f64(v), bshape) * x + inst)
    return _affine(x / den, weight, bias, bshape)


def _sigmoid(z):
    """The logistic function from exp(-|z|), which never overflows (nor its derivative)."""
    e = anp.exp(-anp.abs(z))
    return anp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def evonorm_s0(input, num_groups, weight=None, bias=None, v=None, eps=1e-5):
    r"""EvoNorm-S0.

    .. math::

        y = \frac{x\,\mathrm{sigmoid}(v x)}{\sqrt{\sigma_{g}^2 + \epsilon}}\gamma + \beta

    :math:`\sigma_g^2` the biased variance over (C/G, spatial) of each (n, g);
    ``v=None``: :math:`x / \sqrt{\sigma_g^2 + \epsilon}`.
    """
    x = _f64(input)
    N, C = x.shape[:2]
    G = int(num_groups)
    bshape = (1, C) + (1,) * (x.ndim - 2)
    xg = anp.reshape(x, (N, G, -1))
    std = anp.sqrt(_var(xg, (2,)) + eps)
    num = x
    if v is not None:
        num = x * _sigmoid(anp.reshape(_f64(v), bshape) * x)
    y = anp.reshape(anp.reshape(num, (N, G, -1)) / std, x.shape)
    return _affine(y, weight, bias, bshape)
