"""Scratch buffers for the private input copies of derivative calls, reused.

A pullback keeps a private copy of its input (:func:`normref.vjp`: the
derivatives are of the arguments as they were at the call), written by the
forward kernel while it streams through the input.  For a large input the
copy's cost is mostly not the write but the fresh allocation: the operating
system maps and zeroes every page on first touch, about one memcpy of the
input by itself.  A training loop makes the same-shaped call again and again,
so the copies of calls whose pullbacks are gone are handed to the next call
instead of new memory.

A buffer is reused only when nothing but this module refers to it: CPython's
reference count of the array (every view of it, every plan or pullback that
holds it counts) must be the pool's own.  Buffers below :data:`MIN_BYTES` are
plain ``np.empty`` (cheap); the pool keeps at most :data:`MAX_BYTES` in all,
dropping its oldest buffers beyond that (memory held by live pullbacks is
theirs, not the pool's, and is freed with them).  :func:`clear` drops every
idle buffer.  Where ``sys.getrefcount`` does not exist (other Python
implementations) nothing is pooled.
"""
from __future__ import annotations

import sys
import threading

import numpy as np

__all__ = ["scratch", "clear", "idle_bytes", "MIN_BYTES", "MAX_BYTES"]

#: buffers smaller than this are not pooled
MIN_BYTES = 1 << 22
#: the pool's total size, idle and in use, beyond which its oldest buffers are dropped
MAX_BYTES = 1 << 31

_LOCK = threading.Lock()
_POOL: list = []  # float64 1-D arrays allocated here, least recently handed out first
_COUNTS = hasattr(sys, "getrefcount")


def _idle(i):
    """Whether ``_POOL[i]`` is referenced by the pool list only (the list's
    reference and getrefcount's argument)."""
    return sys.getrefcount(_POOL[i]) == 2


def scratch(n):
    """A float64 array of ``n`` elements (1-D, C-contiguous, contents undefined) that
    nothing else refers to: a reused idle buffer of that size, or a new one."""
    if not _COUNTS or n * 8 < MIN_BYTES:
        return np.empty(n)
    with _LOCK:
        for i in range(len(_POOL)):
            if _POOL[i].size == n and _idle(i):
                buf = _POOL.pop(i)
                _POOL.append(buf)
                return buf
        buf = np.empty(n)
        _POOL.append(buf)
        total = sum(b.nbytes for b in _POOL)
        i = 0
        while total > MAX_BYTES and i < len(_POOL) - 1:
            total -= _POOL[i].nbytes  # dropped from the pool; a holder keeps its array
            del _POOL[i]
        return buf


def idle_bytes():
    """Bytes held by the pool in buffers no one else refers to."""
    with _LOCK:
        return sum(_POOL[i].nbytes for i in range(len(_POOL)) if _idle(i))


def clear():
    """Drop every buffer from the pool (buffers in use stay with their holders)."""
    with _LOCK:
        _POOL.clear()
