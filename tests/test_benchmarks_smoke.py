"""Smoke tests of benchmarks/: the mpmath reference, the accuracy harness on a
tiny case, and speed.py --quick as a subprocess (no timing assertions)."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

mpmath = pytest.importorskip("mpmath")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

import _mpref  # noqa: E402
import accuracy  # noqa: E402

HAVE_TORCH = importlib.util.find_spec("torch") is not None


def _close(exact, value, tol=mpmath.mpf(10) ** -35):
    with mpmath.workdps(_mpref.DPS):
        return abs(exact - value) < tol


def test_mpref_standardizes_1234_exactly():
    # mean 5/2, biased variance 5/4, so (x - 5/2)/sqrt(5/4) = (2x - 5)/sqrt(5).
    y = _mpref.standardize_rows(np.array([[1.0, 2.0, 3.0, 4.0]]), 0.0)
    with mpmath.workdps(_mpref.DPS):
        s5 = mpmath.sqrt(5)
        expected = [-3 / s5, -1 / s5, 1 / s5, 3 / s5]
    for got, want in zip(y[0], expected):
        assert _close(want, got)
    # eps = 0.75 makes var + eps = 2: (x - 5/2)/sqrt(2)
    y = _mpref.standardize_rows(np.array([[1.0, 2.0, 3.0, 4.0]]), 0.75)
    with mpmath.workdps(_mpref.DPS):
        expected = [mpmath.mpf(k) / 2 / mpmath.sqrt(2) for k in (-3, -1, 1, 3)]
    for got, want in zip(y[0], expected):
        assert _close(want, got)


def test_mpref_affine_and_rms_exact():
    # z = (x - 5/2)/sqrt(2) with eps 0.75; then y = z * 2 + 1
    y = _mpref.standardize_rows(np.array([[1.0, 2.0, 3.0, 4.0]]), 0.75,
                                weight=np.array([2.0] * 4), bias=np.array([1.0] * 4))
    with mpmath.workdps(_mpref.DPS):
        assert _close(1 + 3 / mpmath.sqrt(2), y[0, 3])
        assert _close(1 - 3 / mpmath.sqrt(2), y[0, 0])
    # mean of squares 30/4 = 7.5, + eps 0.5 = 8: x / (2 sqrt 2)
    r = _mpref.rms_rows(np.array([[1.0, 2.0, 3.0, 4.0]]), 0.5)
    with mpmath.workdps(_mpref.DPS):
        for k in range(4):
            assert _close(mpmath.mpf(k + 1) / (2 * mpmath.sqrt(2)), r[0, k])


def test_mpref_large_offset_keeps_deviation_exact():
    # 1e12 + {-1, 0, 1}: representable; mean exactly 1e12, variance 2/3
    x = np.array([[1e12 - 1, 1e12, 1e12 + 1]])
    y = _mpref.standardize_rows(x, 0.0)
    with mpmath.workdps(_mpref.DPS):
        want = 1 / mpmath.sqrt(mpmath.mpf(2) / 3)
        assert _close(want, y[0, 2])
        assert _close(-want, y[0, 0])
        assert y[0, 1] == 0


def test_mpref_layouts_match_rows():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 3))
    # group_norm with 2 groups: group (n, g) = channels 2g, 2g+1 of sample n
    g = _mpref.group_norm(x, 2, eps=1e-5)
    rows = _mpref.standardize_rows(x.reshape(4, 6), 1e-5).reshape(x.shape)
    assert all(a == b for a, b in zip(g.ravel(), rows.ravel()))
    # batch_norm: per channel over (N, L)
    bn = _mpref.batch_norm(x, eps=1e-5)
    ch1 = _mpref.standardize_rows(x[:, 1, :].reshape(1, -1), 1e-5).reshape(2, 3)
    assert all(a == b for a, b in zip(bn[:, 1, :].ravel(), ch1.ravel()))


def test_ulp_error_measure():
    with mpmath.workdps(_mpref.DPS):
        one = mpmath.mpf(1)
        third = one / 3
    ex = np.array([one, one, third], dtype=object)
    err = _mpref.ulp_error(ex, [1.0, 1.0 + 2 ** -52 * 3, 1.0 / 3])
    assert err[0] == 0.0
    assert err[1] == pytest.approx(3.0, abs=1e-12)
    assert 0.0 < err[2] <= 0.5          # 1/3 correctly rounded
    assert np.isinf(_mpref.ulp_error(ex[:1], [np.nan])[0])


def test_numpy_one_pass_is_ruined_by_offset_two_pass_better():
    # the baselines do what their names say: at 1e8 the one-pass variance
    # loses every digit, the two-pass one keeps the data's rounding only.
    case = accuracy.make_case("layer_norm", 1e8, shape=(2, 16), seed=5)
    exact = accuracy.reference(case)
    two = accuracy.max_ulps(exact, accuracy.run_numpy_two_pass(case))
    one = accuracy.max_ulps(exact, accuracy.run_numpy_one_pass(case))
    assert one > 1e6 * max(two, 1.0) or not np.isfinite(one)
    # at offset 0 the two-pass baseline is close to the reference
    case0 = accuracy.make_case("layer_norm", 0.0, shape=(2, 16), seed=5)
    z = accuracy.run_numpy_two_pass(case0)
    np.testing.assert_allclose(z, _mpref.to_float64(accuracy.reference(case0)),
                               rtol=0, atol=1e-14)


@pytest.mark.parametrize("op", accuracy.OPS)
def test_normref_within_target_on_tiny_case(op):
    normref, err = accuracy.load_normref()
    if normref is None:
        pytest.fail(f"normref does not import: {err}")
    shape = {"batch_norm": (4, 2, 3), "layer_norm": (3, 16), "group_norm": (2, 8, 3),
             "rms_norm": (3, 16)}[op]
    for offset in (0.0, 1e12):
        for affine in (False, True):
            case = accuracy.make_case(op, offset, affine, shape=shape, seed=11)
            row = accuracy.measure(case, normref=normref, torch=None)
            assert row["normref"] <= accuracy.TARGET_ULPS, (op, offset, affine, row)


@pytest.mark.parametrize("op, shape", [("batch_norm", (2, 1, 56, 56)), ("group_norm", (1, 8, 28, 28)),
                                       ("layer_norm", (2, 4096)), ("rms_norm", (2, 4096))])
def test_normref_within_target_on_realistic_groups_at_1e12(op, shape):
    # groups of 6272 and rows of 4096 values: the mean's low part must be kept as a
    # renormalized double-double (one unrenormalized double missed by 15-43 ulps here)
    normref, err = accuracy.load_normref()
    if normref is None:
        pytest.fail(f"normref does not import: {err}")
    for affine in (False, True):
        case = accuracy.make_case(op, 1e12, affine, shape=shape, seed=[7, int(affine)])
        row = accuracy.measure(case, normref=normref, torch=None)
        assert row["normref"] <= accuracy.TARGET_ULPS, (op, affine, row)
        assert row["worst"][2] == row["normref"]


def test_accuracy_rows_cover_realistic_groups():
    rows = accuracy.rows_for(accuracy.OPS)
    large = [r for r in rows if r[3] != accuracy.SHAPES[r[0]]]
    sizes = {(op, accuracy.group_size(op, shape)) for op, _, _, shape in large}
    assert sizes == {("batch_norm", 6272), ("group_norm", 6272), ("layer_norm", 768),
                     ("layer_norm", 4096), ("rms_norm", 768), ("rms_norm", 4096)}
    # every offset, with and without affine, for every realistic shape
    assert len(large) == 6 * len(accuracy.OFFSETS) * 2
    assert len(accuracy.rows_for(accuracy.OPS, large=False)) == 4 * (len(accuracy.OFFSETS) + 1)


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed (speed.py needs it for its table)")
def test_speed_quick_runs_and_prints_tables():
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, "speed.py"), "--quick"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for head in ("normref ms", "kernel ms", "torch ms", "jax ms", "numpy ms", "memcpy ms",
                 "torch/normref", "jax/normref", "kernel/memcpy", "normref.jacobian ms",
                 "torch.func.jacrev ms", "targets:", "load average at start",
                 "load average at end", "first call in a fresh process"):
        assert head in out, head
    for op in ("batch_norm", "group_norm", "layer_norm", "rms_norm"):
        assert f"{op} fwd+bwd: normref" in out, op
        assert f"{op} forward kernel: " in out, op
    # the subprocess found the kernels uncompiled after the import, and compiled them
    assert "import normref compiles nothing: PASS" in out


def test_whitening_quick_runs_and_prints_table():
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, "whitening.py"), "--quick"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for head in ("normref ms", "torch ms", "numpy fwd ms", "normref/torch", "40-digit reference",
                 "pca_whitening", "zca_whitening", "cholesky_whitening", "iter_norm"):
        assert head in proc.stdout, head


def test_accuracy_main_prints_table(capsys):
    assert accuracy.main(["--ops", "rms_norm", "--small"]) == 0
    out = capsys.readouterr().out
    assert "numpy two-pass" in out and "target: normref <= 4 ulps everywhere" in out


def test_ulp_error_agrees_with_normref_numerics():
    numerics = pytest.importorskip("normref.numerics")
    case = accuracy.make_case("group_norm", 1e4, shape=(2, 8, 2), seed=2)
    exact = accuracy.reference(case)
    approx = accuracy.run_numpy_two_pass(case)
    # same measure; up to 1 ulp apart if ulps_of rounds the reference to
    # float64 first (mpmath at its default 15 digits)
    np.testing.assert_allclose(_mpref.ulp_error(exact, approx),
                               numerics.ulps_of(exact, approx), rtol=0, atol=1.0)


def test_curvature_scale_runs_and_agrees_with_dense(capsys):
    import curvature_scale

    curvature_scale.main(["--cases", "1e3-dual", "--methods", "lanczos"])
    rows = [ln.split() for ln in capsys.readouterr().out.splitlines()
            if ln.startswith("1e3-dual")]
    assert [r[3] for r in rows] == ["dense", "lanczos"]
    assert rows[1][7] == "True" and float(rows[1][-1]) <= 1e-9
