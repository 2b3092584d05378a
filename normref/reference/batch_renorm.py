"""Batch renormalization as its textbook formula in autograd.numpy (the oracle).

Written from the paper (Ioffe 2017, arXiv:1702.03275, Algorithm 1), with
``r`` and ``d`` computed from un-boxed values (autograd's ``getval``): the
paper's stop-gradient, so autograd's derivatives treat them as constants.
"""
from __future__ import annotations

import numpy as np
import autograd.numpy as anp
from autograd.tracer import getval

from .activations import _affine, _f64, _update_running, batch_norm

__all__ = ["batch_renorm"]


def batch_renorm(input, running_mean, running_var, weight=None, bias=None, training=False,
                 momentum=0.1, eps=1e-5, rmax=3.0, dmax=5.0, *, channel_axis=1,
                 momentum_convention="torch", running_var_unbiased=True,
                 num_batches_tracked=None, running_std=False, renorm_moments=None,
                 renorm_momentum=0.99):
    r"""Batch renormalization.

    .. math::

        \hat x = \frac{x - \mu_B}{\sqrt{\sigma_B^2 + \epsilon}}\, r + d, \quad
        r = \mathrm{sg}\Big(\mathrm{clip}_{[1/r_{max}, r_{max}]}
            \frac{\sqrt{\sigma_B^2 + \epsilon}}{\sqrt{\hat\sigma^2 + \epsilon}}\Big), \quad
        d = \mathrm{sg}\Big(\mathrm{clip}_{[-d_{max}, d_{max}]}
            \frac{\mu_B - \hat\mu}{\sqrt{\hat\sigma^2 + \epsilon}}\Big)

    then :math:`y = \gamma \hat x + \beta` and the running statistics updated in
    place as batch norm's (after ``r, d`` are computed).  Eval: batch norm's eval.

    Keras: ``running_std`` (``running_var`` holds a standard deviation s, the
    correction uses :math:`\max(s, \sqrt\epsilon)`, it is blended towards
    :math:`\sqrt{\sigma_B^2 + \epsilon}`, eval uses :math:`\max(s^2 - \epsilon, 0)`);
    ``renorm_moments=(mean, std)`` separate buffers for r, d, blended with
    ``renorm_momentum`` as ``m old + (1 - m) batch``.
    """
    if not training and running_std:
        s = _f64(running_var)
        veff = anp.where(s * s > eps, s * s - eps, 0.0)
        return batch_norm(input, running_mean, veff, weight, bias, False, momentum, eps,
                          channel_axis=channel_axis)
    if not training:
        return batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps,
                          channel_axis=channel_axis)
    x = _f64(input)
    ax = channel_axis % x.ndim
    C = x.shape[ax]
    bshape = tuple(C if i == ax else 1 for i in range(x.ndim))
    axes = tuple(i for i in range(x.ndim) if i != ax)
    n = x.size // C if C else 0
    mean = anp.mean(x, axis=axes, keepdims=True)
    var = anp.mean((x - mean) ** 2, axis=axes, keepdims=True)
    sigma_b = anp.sqrt(var + eps)
    src = (running_mean, running_var) if renorm_moments is None else renorm_moments
    rm = np.reshape(np.array(getval(src[0]), dtype=np.float64), bshape)
    rv = np.reshape(np.array(getval(src[1]), dtype=np.float64), bshape)
    std_like = running_std or renorm_moments is not None
    sigma = np.maximum(rv, np.sqrt(eps)) if std_like else np.sqrt(rv + eps)
    r = getval(sigma_b) / sigma
    d = (getval(mean) - rm) / sigma
    if rmax is not None:
        r = np.clip(r, 1.0 / rmax, rmax)
    if dmax is not None:
        d = np.clip(d, -dmax, dmax)
    xhat = (x - mean) / sigma_b * r + d
    if x.size:
        bm, bv = np.reshape(getval(mean), (C,)), np.reshape(getval(var), (C,))
        sd = np.sqrt(bv + eps)
        if renorm_moments is not None:
            for buf, batch in zip(renorm_moments, (bm, sd)):
                buf[...] = renorm_momentum * buf + (1.0 - renorm_momentum) * batch
        if running_std:
            keep = momentum if momentum_convention == "keras" else 1.0 - momentum
            running_var[...] = keep * running_var + (1.0 - keep) * sd
        _update_running(running_mean, None if running_std else running_var, bm, bv, n,
                        momentum, momentum_convention, running_var_unbiased,
                        num_batches_tracked)
    return _affine(xhat, weight, bias, bshape)
