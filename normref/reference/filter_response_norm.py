"""Filter response normalization and the TLU as their textbook formula in autograd.numpy.

Written from the paper (Singh & Krishnan 2020, arXiv:1911.09737, Eq. 1-3);
``anp.maximum``'s gradient is split half and half at a tie, as torch.maximum's.
"""
from __future__ import annotations

import autograd.numpy as anp

from .activations import _affine, _f64

__all__ = ["filter_response_norm"]


def filter_response_norm(input, weight=None, bias=None, tau=None, eps=1e-6):
    r"""FRN + TLU.

    .. math::

        \nu^2 = \mathrm{mean}_{spatial}(x^2), \quad
        y = \gamma \frac{x}{\sqrt{\nu^2 + \epsilon}} + \beta, \quad z = \max(y, \tau)
    """
    x = _f64(input)
    C = x.shape[1]
    bshape = (1, C) + (1,) * (x.ndim - 2)
    sp = tuple(range(2, x.ndim))
    nu2 = anp.mean(x * x, axis=sp, keepdims=True) if sp else x * x
    y = _affine(x / anp.sqrt(nu2 + eps), weight, bias, bshape)
    if tau is not None:
        y = anp.maximum(y, anp.reshape(_f64(tau), bshape))
    return y
