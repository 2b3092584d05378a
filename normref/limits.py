"""Work limits: how much memory a call may ask for beyond its own arguments.

Some results need memory that the input's size does not imply: a dense
Jacobian (``y.size * x.size`` entries), the covariance stacks of a
whitening call (``C / group_size`` matrices of ``group_size**2``), the saved
iterates of IterNorm's Newton evaluation (``T + 1`` such stacks).  normref
checks the size of such an allocation *before* making it and raises a
ValueError naming the argument that sets it, the bytes it would need and
the limit, instead of a MemoryError (or minutes of swapping) half-way.

The limit is :func:`max_bytes`: 2 GiB by default, the environment variable
``NORMREF_MAX_BYTES`` (bytes, read at each check), or for a block of code::

    with normref.limits.allow(16 * 2**30):
        J = normref.jacobian(f, x, ...)

Arrays proportional to the input (outputs, gradients, copies) are never
counted.
"""
from __future__ import annotations

import contextlib
import os

__all__ = ["DEFAULT_MAX_BYTES", "max_bytes", "allow", "check_bytes"]

DEFAULT_MAX_BYTES = 2 ** 31

_override = []


def max_bytes():
    """The current limit in bytes (innermost :func:`allow`, else ``NORMREF_MAX_BYTES``, else 2 GiB)."""
    if _override:
        return _override[-1]
    env = os.environ.get("NORMREF_MAX_BYTES")
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise ValueError(f"NORMREF_MAX_BYTES must be a number of bytes, got {env!r}") from None
    return DEFAULT_MAX_BYTES


@contextlib.contextmanager
def allow(nbytes):
    """Raise (or lower) the limit to ``nbytes`` inside a ``with`` block."""
    _override.append(int(nbytes))
    try:
        yield
    finally:
        _override.pop()


def _fmt(n):
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def check_bytes(what, nbytes, hint=""):
    """Raise ValueError if an allocation of ``nbytes`` for ``what`` exceeds the limit."""
    limit = max_bytes()
    if nbytes > limit:
        raise ValueError(
            f"{what} would need {_fmt(int(nbytes))}, more than the limit of {_fmt(limit)}"
            f"{'; ' + hint if hint else ''} (raise it with normref.limits.allow(nbytes) or "
            f"the NORMREF_MAX_BYTES environment variable)"
        )
