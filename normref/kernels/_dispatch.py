"""Serial and parallel builds of one numba kernel, chosen by input size.

``parallel=True`` pays a thread launch on every call (about 10 microseconds
on an idle machine, milliseconds on a loaded one), which dominates small
inputs: the analysis modules call kernels thousands of times on a few dozen
values.  :func:`parallel_kernel` compiles the same source twice and runs the
serial build below :data:`PARALLEL_MIN_SIZE` elements (of the first
argument).  Both builds reduce every group in the same order, so their
results are bit-identical; ``prange`` runs as ``range`` in the serial one.

The milliseconds on a loaded machine were mostly self-inflicted: numba's
default threading layer is GNU OpenMP, whose idle threads spin for a while
after each parallel region (``OMP_WAIT_POLICY`` unset), competing for the
cores with OpenBLAS's own threads, so that a kernel launched after a matrix
product waited for CPU.  On the 2-core reference machine a Gauss-Newton
product of a 14,804-parameter batch-norm MLP took 0.090 s with spinning
threads and 0.033 s with passive ones.  Importing normref therefore sets
``OMP_WAIT_POLICY=PASSIVE`` unless the variable is already set (the user's
choice wins); it takes effect only if OpenMP has not been loaded yet in the
process.
"""
from __future__ import annotations

import os
import types

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from numba import njit

__all__ = ["JIT", "PARALLEL_MIN_SIZE", "Kernel", "parallel_kernel"]

#: the numba options of every kernel of normref (``njit(**JIT)``, and both builds
#: of a :class:`Kernel`): ``cache=True`` (on-disk cache, re-keyed to the package
#: sources by :func:`normref.kernels.restamp`); ``fastmath=False`` (IEEE
#: semantics: no reassociation, which would undo compensated sums and make
#: reductions depend on vectorization, no flush of subnormals, NaN and inf kept);
#: ``error_model="numpy"`` (a float division by zero gives inf / NaN as in NumPy
#: instead of raising ZeroDivisionError, and the loops carry no zero test)
JIT = dict(cache=True, fastmath=False, error_model="numpy")

#: below this many elements (of the first argument) a kernel runs serially
PARALLEL_MIN_SIZE = 1 << 15


def _renamed(f, suffix):
    """A copy of ``f`` with its own qualified name: numba's on-disk cache is
    keyed by name, so the serial and parallel builds must not share one."""
    g = types.FunctionType(f.__code__, f.__globals__, f"{f.__name__}_{suffix}",
                           f.__defaults__, f.__closure__)
    g.__qualname__ = f"{f.__qualname__}_{suffix}"
    g.__doc__ = f.__doc__
    return g


class Kernel:
    """One kernel source compiled twice with the options :data:`JIT`: ``serial``
    and ``parallel``."""

    def __init__(self, py_func):
        self.py_func = py_func
        self.__doc__ = py_func.__doc__
        self.__name__ = py_func.__name__.lstrip("_")
        self.serial = njit(**JIT)(_renamed(py_func, "serial"))
        self.parallel = njit(parallel=True, **JIT)(_renamed(py_func, "parallel"))

    def __call__(self, *args):
        big = args[0].size >= PARALLEL_MIN_SIZE
        return (self.parallel if big else self.serial)(*args)


def parallel_kernel(f):
    """Decorator: ``@parallel_kernel`` instead of ``@njit(parallel=True, **JIT)``
    (a :class:`Kernel`)."""
    return Kernel(f)
