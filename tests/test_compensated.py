"""The error-free transformations of normref.kernels.compensated are exact:
checked in exact rational arithmetic (fractions.Fraction) on random float64
operands over a wide range of magnitudes, and the lane accumulators' total
against math.fsum."""
import math
from fractions import Fraction

import numpy as np
import pytest

from normref.kernels import compensated as C


def _operands(rng, n):
    e = rng.integers(-300, 300, size=(n, 2))
    m = rng.standard_normal((n, 2))
    return np.ldexp(m, e)


def test_two_sum_is_exact():
    rng = np.random.default_rng(0)
    for a, b in _operands(rng, 2000):
        s, e = C.two_sum(float(a), float(b))
        assert Fraction(s) + Fraction(e) == Fraction(float(a)) + Fraction(float(b))
        assert s == float(a) + float(b)


def test_two_prod_is_exact_in_its_domain():
    rng = np.random.default_rng(1)
    ops = np.ldexp(rng.standard_normal((2000, 2)), rng.integers(-400, 400, size=(2000, 2)))
    for a, b in ops:
        p, e = C.two_prod(float(a), float(b))
        assert p == float(a) * float(b)
        assert Fraction(p) + Fraction(e) == Fraction(float(a)) * Fraction(float(b))


def test_fast_two_sum_is_exact_when_ordered():
    rng = np.random.default_rng(2)
    for a, b in _operands(rng, 2000):
        a, b = (float(a), float(b)) if abs(a) >= abs(b) else (float(b), float(a))
        s, e = C.fast_two_sum(a, b)
        assert Fraction(s) + Fraction(e) == Fraction(a) + Fraction(b)


@pytest.mark.parametrize("offset", [0.0, 1e8, 1e16])
def test_lanes_total_is_a_double_double_of_the_exact_sum(offset):
    # the lanes of acc[0:L] (errors in acc[L:2L]) after lane_add of every element:
    # their total as hi + lo is within a few units of 2^-106 of the exact sum
    from numba import njit

    L = C.LANES

    @njit
    def accumulate(x, acc):
        for i in range(x.size):
            C.lane_add(acc, i % L, L + i % L, x[i])

    rng = np.random.default_rng(3)
    x = rng.standard_normal(10007) + offset
    x[::7] *= -1.0  # cancellation
    acc = np.zeros(2 * L)
    accumulate(x, acc)
    hi, lo = C.lanes_total(acc, 0)
    exact = sum(Fraction(float(v)) for v in x)
    assert hi == math.fsum(x) or abs(Fraction(hi) - exact) <= abs(exact) * Fraction(1, 2 ** 52)
    scale = max(abs(exact), Fraction(1))
    assert abs(Fraction(hi) + Fraction(lo) - exact) <= scale * Fraction(1, 2 ** 100)
