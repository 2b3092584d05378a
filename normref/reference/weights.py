"""Textbook normalizers of weights in autograd.numpy: the independent oracle.

Same conventions as :mod:`normref.reference.activations`: plain formulas,
float64, differentiable by autograd in every float array argument, no
import from the rest of normref.
"""
from __future__ import annotations

import numpy as np
import autograd.numpy as anp
from autograd.tracer import getval, isbox

__all__ = ["weight_norm"]


def _f64(a):
    if a is None or isbox(a):
        return a
    return np.asarray(a, dtype=np.float64)


def weight_norm(v, g, dim=0):
    r"""Weight normalization (Salimans & Kingma, NeurIPS 2016, arXiv:1602.07868).

    .. math::

        w = g \, \frac{v}{\lVert v \rVert}

    With an integer ``dim`` the Euclidean norm is taken over every axis but
    ``dim`` (one norm per slice ``v[..., i, ...]`` along ``dim``, kept as a
    size-1 axis elsewhere), and ``g`` has ``v``'s shape with every axis but
    ``dim`` set to 1 -- as ``torch._weight_norm`` expects.  ``g`` of shape
    ``(v.shape[dim],)`` is accepted too and reshaped that way.  ``dim=None``
    takes the norm of the whole tensor and ``g`` is a scalar (shape ``()``
    or any size-1 shape).

    Negative ``dim`` counts from the end as a NumPy axis, so ``dim=-1`` is
    the last axis.  This differs from PyTorch in one case: in
    ``torch._weight_norm`` / ``torch.norm_except_dim`` the value ``dim=-1``
    is the sentinel for "whole tensor" (``torch.nn.utils.weight_norm``
    translates ``dim=None`` into ``-1``), so ``torch.nn.utils.weight_norm(m,
    dim=-1)`` normalizes the whole tensor, while other negative values
    (-2, -3, ...) wrap as usual (checked with torch 2.13).  To reproduce
    torch's ``dim=-1`` here, pass ``dim=None``.
    """
    v = _f64(v)
    g = _f64(g)
    if dim is None:
        norm = anp.sqrt(anp.sum(v ** 2))
        if np.size(getval(g)) == 1:
            g = anp.reshape(g, ())
        return g * v / norm
    d = int(dim) % v.ndim
    axes = tuple(i for i in range(v.ndim) if i != d)
    norm = anp.sqrt(anp.sum(v ** 2, axis=axes, keepdims=True))
    gshape = tuple(v.shape[i] if i == d else 1 for i in range(v.ndim))
    if np.ndim(getval(g)) == 1 and np.shape(getval(g))[0] == v.shape[d]:
        g = anp.reshape(g, gshape)
    return g * v / norm
