"""Verification harness: comparisons, derivative checks, hypothesis strategies.

* :func:`assert_conforms` -- judge a NumPy or PyTorch implementation of a
  normalizer against normref (dtype-aware ulps, forward and gradients); the
  whole conformance kit is :mod:`normref.testing.conformance`;
* :func:`assert_close` -- numpy.testing-style (or ulp) comparison whose
  failure report names the worst element, its errors and its ulp distance
  in the array's own dtype; :func:`ulp_distance` -- that distance;
* :func:`gradcheck`, :func:`gradgradcheck` -- ``torch.autograd``'s checks
  (same keywords and defaults) for normref functions;
* :func:`check_vjp`, :func:`check_jvp` -- dot-product tests in random
  directions against finite differences;
* :mod:`normref.testing.strategies` -- hypothesis strategies (shapes, groups,
  eps, offsets, valid calls of every normalizer).  Imported lazily on first
  access: hypothesis is a test extra, not a dependency of normref.
"""
from .assertions import assert_close, ulp_distance
from .conformance import assert_conforms
from .gradcheck import (
    DotTestResult,
    GradcheckError,
    check_jvp,
    check_vjp,
    gradcheck,
    gradgradcheck,
)

__all__ = [
    "assert_close",
    "ulp_distance",
    "assert_conforms",
    "gradcheck",
    "gradgradcheck",
    "GradcheckError",
    "check_vjp",
    "check_jvp",
    "DotTestResult",
    "strategies",
]


def __getattr__(name):
    if name == "strategies":
        import importlib

        return importlib.import_module(".strategies", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
