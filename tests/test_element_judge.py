"""The judge's element-level conditioning, the dtype's limit, and the seeded defects
that the case-level judge let through.

Each defect below passed a judge with one conditioning number per case (its
worst group); judged per statistics group it fails, while its correct twin,
a two-pass float32 implementation, passes.
"""
import warnings

import numpy as np
import pytest

from normref.testing import assert_conforms
from normref.testing.conformance import ConformCase, expected_outputs, judge
from normref.testing.conformance.judge import element_cond
from normref.testing.conformance.report import accuracy_rows, format_accuracy, format_table
from normref.testing.conformance.runner import Result


def _ln(x, normalized_shape, weight=None, bias=None, eps=1e-5, *, defect=None):
    """A float32-in-float32 layer norm over the last axis; ``defect`` seeds one bug."""
    dt = x.dtype
    mu = x.mean(-1, keepdims=True, dtype=dt)
    if defect == "one_pass":  # E[x^2] - E[x]^2: cancels on offset data
        var = (x * x).mean(-1, keepdims=True, dtype=dt) - mu * mu
    else:
        d = x - mu
        var = (d * d).mean(-1, keepdims=True, dtype=dt)
    if defect == "eps_outside":  # (x - mu) / (sigma + eps)
        y = (x - mu) / (np.sqrt(var) + dt.type(eps))
    else:
        y = (x - mu) / np.sqrt(var + dt.type(eps))
    if defect == "zeros":
        y = np.zeros_like(x)
    return y.astype(dt)


def _call(defect, x, eps=1e-5):
    def candidate(x, normalized_shape, eps=1e-5):
        return _ln(x, normalized_shape, eps=eps, defect=defect)

    assert_conforms(candidate, "layer_norm", x, (x.shape[-1],), eps=eps, framework="numpy")


def _data(offset=0.0, rows_at_offset=None, seed=0, shape=(6, 48)):
    x = np.random.default_rng(seed).standard_normal(shape)
    if rows_at_offset is None:
        x = x + offset
    else:
        x[rows_at_offset] += offset
    return x.astype(np.float32)


@pytest.mark.parametrize("defect, kwargs, data", [
    ("zeros", {}, dict(offset=1e4)),
    ("one_pass", {}, dict(offset=1e3)),
    ("eps_outside", {"eps": 1e-3}, dict()),
    # one row at offset 1e4: the case-level judge loosened every row by 1e4
    ("eps_outside", {"eps": 1e-3}, dict(offset=1e4, rows_at_offset=[0])),
    ("zeros", {}, dict(offset=1e4, rows_at_offset=[2])),
])
def test_seeded_defect_fails_and_two_pass_twin_passes(defect, kwargs, data):
    x = _data(**data)
    with pytest.raises(AssertionError, match=r"forward \[float32\]"):
        _call(defect, x, **kwargs)
    _call(None, x, **kwargs)


def test_one_row_at_offset_keeps_the_other_rows_tight():
    """The per-element conditioning: the offset row gets ~1e4, the others ~4."""
    x = _data(offset=1e4, rows_at_offset=[0]).astype(np.float64)
    case = ConformCase(label="t", args=(x, (48,)), kwargs={"eps": 1e-3}, id="t",
                       name="layer_norm", dtype="float32")
    k = element_cond(case)
    assert k.shape == x.shape
    assert 5e3 < k[0].min() and k[0].max() < 2e4
    assert k[1:].max() < 10
    # and the weight gradient inherits the rows' conditioning by their share
    w = np.ones(48)
    case_w = ConformCase(label="t", args=(x, (48,), w, np.zeros(48)), kwargs={"eps": 1e-3},
                         id="t", name="layer_norm", dtype="float32")
    y, g, _ = expected_outputs(case_w)
    v = judge(case_w, g[2], g[2].astype(np.float32), "float32", "backward:weight")
    assert v.passed and 1 < v.tolerance_ulps / 64 < 1e4


def test_dtype_limit_is_reported_not_passed():
    """float32 at offset 1e9 with unit spread cannot hold the data: the check is
    judged for NaN/Inf only (at_limit) -- an all-zeros answer is not a pass."""
    x = (1e9 + 64 * np.random.default_rng(3).standard_normal((4, 32))).astype(np.float32)
    case = ConformCase(label="t", args=(x.astype(np.float64), (32,)), kwargs={},
                       id="t", name="layer_norm", dtype="float32")
    y, _, _ = expected_outputs(case)
    assert np.abs(y).max() > 0.5
    v = judge(case, y, np.zeros_like(x), "float32", "forward")
    assert v.passed and v.at_limit and v.limited == x.size and v.judged == 0
    assert "beyond what float32 can represent" in v.note
    # a NaN there is still a failure (robustness is judged)
    bad = np.zeros_like(x)
    bad[0, 0] = np.nan
    assert not judge(case, y, bad, "float32", "forward").passed
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        _call("zeros", x)
    assert any("judged for NaN / Inf only" in str(m.message) for m in w)


def test_tf_style_moments_batch_norm_fails_on_huge_input():
    """tf.nn.moments + tf.nn.batch_normalization squares before scaling: at 1e30 in
    float32 the variance overflows and the output collapses; a scaled two-pass
    twin passes."""
    tf = pytest.importorskip("tensorflow")

    def tf_batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps):
        mean, var = tf.nn.moments(x, axes=[0])
        return tf.nn.batch_normalization(x, mean, var, bias, weight, eps)

    def twin(x, running_mean, running_var, weight, bias, training, momentum, eps):
        s = tf.reduce_max(tf.abs(x), axis=0)
        xs = x / s
        mean, var = tf.nn.moments(xs, axes=[0])
        return (xs - mean) / tf.sqrt(var + eps / (s * s)) * weight + bias

    rng = np.random.default_rng(5)
    x = (1e30 * rng.standard_normal((32, 3))).astype(np.float32)
    w = rng.standard_normal(3).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    args = (x, None, None, w, b, True, 0.1, 1e-5)
    with pytest.raises(AssertionError, match=r"forward \[float32\]"):
        assert_conforms(tf_batch_norm, "batch_norm", *args, framework="tensorflow")
    assert_conforms(twin, "batch_norm", *args, framework="tensorflow")


def _result(fw, status, ulps, tol=16.0):
    from normref.testing.conformance.judge import Verdict

    v = Verdict("forward", "float32", ulps, tol, (0,), 1.0, 1.0, ulps <= tol, max_ulps=ulps,
                judged=1)
    return Result("layer_norm/affine/s0", fw, "layer_norm", "forward", "float32", v, status)


def test_report_worst_column_excludes_expected_failures_and_ranks_targets():
    results = [_result("a", "pass", 2.0), _result("a", "xfail", 1e9), _result("b", "pass", 0.5),
               _result("b", "pass", 1.5)]
    table = format_table(results)
    row_a = next(line for line in table.splitlines() if line.startswith("a "))
    assert "1e+09" not in row_a and " 2 " in row_a
    rows = accuracy_rows(results)
    assert rows == [("a", "layer_norm", "float32", 1, 2.0, 2.0),
                    ("b", "layer_norm", "float32", 2, 1.0, 1.5)]
    text = format_accuracy(results)
    assert "ranking [float32]: 1. b (median 1," in text and "2. a (median 2," in text
