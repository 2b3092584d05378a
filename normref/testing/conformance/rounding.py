"""Rounding a case to a target dtype (float16 / float32 / float64), layout kept."""
from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["DTYPES", "check_dtype", "round_to", "as_dtype", "representable"]

DTYPES = ("float16", "float32", "float64")


def check_dtype(dtype):
    d = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if d not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return d


def _same_layout(a, dtype):
    """``a`` cast to ``dtype`` in an array with a's memory layout (strides pattern).

    Keeps non-contiguous and negative-stride views non-contiguous (row 10).
    """
    target = np.dtype(dtype)
    if a.flags.c_contiguous or a.size == 0 or a.ndim == 0:
        return np.ascontiguousarray(a.astype(target))
    if a.flags.f_contiguous:
        return np.asfortranarray(a.astype(target))
    if any(s % a.itemsize for s in a.strides):
        return np.ascontiguousarray(a.astype(target))
    es = [s // a.itemsize for s in a.strides]
    span = 1 + sum(abs(s) * (n - 1) for s, n in zip(es, a.shape))
    offset = sum(abs(s) * (n - 1) for s, n in zip(es, a.shape) if s < 0)
    buf = np.zeros(span, dtype=target)
    view = np.lib.stride_tricks.as_strided(
        buf[offset:], shape=a.shape, strides=[s * target.itemsize for s in es]
    )
    view[...] = a.astype(target)
    return view


def _map_float_arrays(case, fn):
    def conv(a):
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            return fn(a)
        return a

    args = tuple(conv(a) for a in case.args)
    kwargs = {k: conv(v) for k, v in dict(case.kwargs).items()}
    return args, kwargs


def round_to(case, dtype):
    """The case with every float array argument rounded to ``dtype``.

    Each array is cast to ``dtype`` and back to float64 (same layout), so
    normref computes in float64 on exactly the values the framework sees;
    scalars (eps, momentum, alpha ...) stay Python floats.  The returned case
    records ``dtype`` (its cotangent is rounded likewise, and ``eps=None``
    of rms_norm means that dtype's machine epsilon).
    """
    dtype = check_dtype(dtype)
    args, kwargs = _map_float_arrays(
        case, lambda a: _same_layout(_same_layout(a, dtype), np.float64)
    )
    return dataclasses.replace(case, args=args, kwargs=kwargs, dtype=dtype)


def as_dtype(case, dtype):
    """The float array arguments of ``case`` as NumPy arrays of ``dtype`` (layout kept)."""
    dtype = check_dtype(dtype)
    args, kwargs = _map_float_arrays(case, lambda a: _same_layout(a, dtype))
    return dataclasses.replace(case, args=args, kwargs=kwargs, dtype=dtype)


def representable(case, dtype):
    """None, or why rounding to ``dtype`` changes the case (overflow / underflow to 0)."""
    info = np.finfo(dtype)
    for i, a in enumerate(case.args):
        if isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.size:
            a64 = a.astype(np.float64)
            fin = np.isfinite(a64)
            big = np.abs(a64[fin]).max(initial=0.0)
            if big > float(info.max):
                return f"argument {i} holds {big:.3g}, beyond the {dtype} range"
            nz = a64[fin & (a64 != 0)]
            if nz.size and np.abs(nz).min() < float(info.smallest_subnormal) / 2:
                return f"argument {i} holds values that underflow to 0 in {dtype}"
    return None
