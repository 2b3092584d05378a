"""Identity: the group statistics from sums about any shift K.

For one group x in R^m and any real K, with S1 = sum (x - K) and
S2 = sum (x - K)^2:

    mean = K + S1 / m,
    m * var = S2 - S1 * (S1 / m) = sum (x - mean)^2   (biased variance),

so ``normref.kernels.moments._finalize`` may take the sums about K = 0 (one
read of the data) or about a first estimate of the mean (the second read for
data far from zero); only the rounding differs, which its double-double
arithmetic keeps below an ulp.  Proved symbolically for m = 2..5 with a
symbolic K; the scale-only statistic (mean square) is S2 / m with K = 0.
"""
import pytest
import sympy as sp


@pytest.mark.parametrize("m", [2, 3, 4, 5])
def test_mean_and_variance_from_shifted_sums(m):
    xs = sp.symbols(f"x0:{m}", real=True)
    K = sp.Symbol("K", real=True)
    S1 = sum(x - K for x in xs)
    S2 = sum((x - K) ** 2 for x in xs)
    mean = sum(xs) / m
    assert sp.simplify(K + S1 / m - mean) == 0
    assert sp.expand(S2 - S1 * (S1 / m) - sum((x - mean) ** 2 for x in xs)) == 0


def test_variance_is_shift_invariant_in_the_sums():
    # d/dK of S2 - S1^2/m is 0: the shift only moves rounding, never the value
    m = 4
    xs = sp.symbols(f"x0:{m}", real=True)
    K = sp.Symbol("K", real=True)
    S1 = sum(x - K for x in xs)
    S2 = sum((x - K) ** 2 for x in xs)
    assert sp.simplify(sp.diff(S2 - S1 ** 2 / m, K)) == 0
