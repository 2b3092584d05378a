"""The compensated hot loops of the standardization kernels compile to packed
SIMD instructions (normref.kernels.compensated, "Lane accumulators").

numba does not show the assembly of cached code, so each loop is compiled
afresh here from its Python source with the kernels' options minus the cache,
called on representative arguments, and its machine code inspected: the loop
must use packed double-precision arithmetic on vector registers (ymm / zmm)
and no gathers.  A control loop -- the same TwoSum over one scalar
accumulator, the pre-lane design -- must come out scalar, so the check can
fail.  Skipped where the CPU has neither AVX2 nor AVX-512.
"""
import re

import numpy as np
import pytest
from numba import njit

from normref.kernels import _dispatch, compensated, moments
from normref.kernels import standardize as S

try:
    import llvmlite.binding as llvm

    _FEATURES = llvm.get_host_cpu_features()
    _HAS_SIMD = bool(_FEATURES.get("avx2") or _FEATURES.get("avx512f"))
except Exception:  # noqa: BLE001
    _HAS_SIMD = False

pytestmark = pytest.mark.skipif(not _HAS_SIMD, reason="CPU without AVX2 / AVX-512")

_OPTS = {k: v for k, v in _dispatch.JIT.items() if k != "cache"}
_PACKED = re.compile(r"^\s+(v(?:add|sub|mul)pd)\s+[^\n]*%(?:y|z)mm", re.M)
_GATHER = re.compile(r"^\s+vgather", re.M)


def _asm(py_func, *args):
    f = njit(**_OPTS)(py_func)
    f(*args)
    (asm,) = f.inspect_asm().values()
    return asm


def packed_ops(asm):
    """Number of packed double add / sub / mul instructions on ymm or zmm registers."""
    return len(_PACKED.findall(asm))


def _cases():
    rng = np.random.default_rng(0)
    x, v, g = (rng.standard_normal(1000) for _ in range(3))
    acc = np.zeros(6 * compensated.LANES)
    return {
        "_acc_moments": (x, acc),
        "_acc_moments_shifted": (x, 1.0, -0.5, acc),
        "_acc_squares": (x, 1.0, acc),
        "_acc_proj": (x, v, 1.0, -0.5, 1e-17, 2.0, acc),
        "_acc_proj_vec": (x, v, g, 1.0, -0.5, 1e-17, 2.0, acc),
    }


@pytest.mark.parametrize("name", sorted(_cases()))
def test_compensated_lane_loop_is_packed(name):
    asm = _asm(getattr(moments if hasattr(moments, name) else S, name).py_func, *_cases()[name])
    # every TwoSum is 6 add / sub: a vectorized body has dozens of packed ones
    assert packed_ops(asm) >= 16, (name, packed_ops(asm))
    assert not _GATHER.search(asm), name


def _scalar_two_sum_loop(xr):
    s = 0.0
    c = 0.0
    for i in range(xr.size):
        s, t = compensated.two_sum(s, xr[i])
        c += t
    return s + c


def test_control_single_accumulator_stays_scalar():
    # the check discriminates: one accumulator is a serial chain LLVM cannot vectorize
    # without reassociating (which fastmath=False forbids)
    assert packed_ops(_asm(_scalar_two_sum_loop, np.ones(100))) == 0


def test_lanes_change_no_bits_against_a_scalar_emulation():
    # lane j receives elements j, j + LANES, ... in order: emulate it in Python
    # floats and compare bit for bit (what vectorized code computes is what the
    # scalar semantics say, whatever the vector width)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(203) * 1e3 + 1e8
    L = compensated.LANES
    acc = np.zeros(6 * L)
    moments._acc_moments(x, acc)
    want = [0.0] * (4 * L)
    for i, xi in enumerate(x.tolist()):
        j = i % L
        for q, t in ((0, xi), (2, xi * xi)):
            a = want[q * L + j]
            s = a + t
            bp = s - a
            want[(q + 1) * L + j] += (a - (s - bp)) + (t - bp)
            want[q * L + j] = s
    assert acc[: 4 * L].tolist() == want
