"""The TensorFlow adapter of the conformance kit (tf.nn / tf.math ops, tf.GradientTape)."""
import dataclasses
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
pytest.importorskip("tensorflow")

from normref.registry import REGISTRY  # noqa: E402
from normref.testing.adapters import ADAPTERS, Outputs, Unsupported, get_adapter  # noqa: E402
from normref.testing.adapters.tensorflow import TensorflowAdapter  # noqa: E402
from normref.testing.conformance import (  # noqa: E402
    as_dtype,
    bound_arguments,
    case_conditioning,
    case_from_id,
    catalogue,
    expected_outputs,
    judge,
    load_known_discrepancies,
    round_to,
    run_conformance,
)
from normref.testing.conformance import known as K  # noqa: E402

TF_NAMES = ["batch_norm", "layer_norm", "instance_norm", "mean_variance_norm", "positional_norm",
            "local_response_norm", "normalize"]


@pytest.fixture(scope="module")
def adapter():
    return TensorflowAdapter()


@pytest.fixture(scope="module")
def fused():
    return TensorflowAdapter(batch_norm="fused")


def _verdicts(adapter, prepared, dtype, reference=None):
    """{check: Verdict} of one prepared case (forward, each VJP slot, each state slot).

    ``reference``: judge TF's outputs on ``prepared`` against normref run on this case
    instead (the same arrays with another convention: what a wrong convention would cost).
    """
    rounded = round_to(prepared, dtype)
    out = adapter.run(as_dtype(rounded, dtype), dtype)
    if reference is not None:
        rounded = round_to(reference, dtype)
    y, grads, state = expected_outputs(rounded)
    assert isinstance(out, Outputs)
    assert out.y.dtype == np.dtype(dtype)
    for a in list(out.grads.values()) + list(out.state.values()):
        assert a.dtype == np.dtype(dtype)
    cond = case_conditioning(rounded)
    sig = REGISTRY[prepared.name].signature
    v = {"forward": judge(rounded, y, out.y, dtype, "forward", cond=cond)}
    for i in sorted(out.grads):
        check = f"backward:{sig[i]}"
        v[check] = judge(rounded, grads[i], out.grads[i], dtype, check, cond=cond)
    for i in sorted(out.state):
        check = f"state:{sig[i]}"
        v[check] = judge(rounded, state[i], out.state[i], dtype, check, cond=cond)
    return v, out, (y, grads, state)


def _with(case, **kw):
    """``case`` with some kwargs (normref options) replaced."""
    return dataclasses.replace(case, kwargs={**dict(case.kwargs), **kw})


def test_registered_target_and_flags():
    assert "tensorflow" in ADAPTERS
    ad = get_adapter("tensorflow")
    assert isinstance(ad, TensorflowAdapter) and ad.batch_norm == "moments"
    assert ad.framework == "tensorflow" and ad.gradients is True
    assert ad.dtypes == ("float32", "float64")
    assert TensorflowAdapter.available() is True
    # set by the adapter unless the user (or an earlier import) already chose a level
    assert os.environ.get("TF_CPP_MIN_LOG_LEVEL") in ("1", "2", "3")
    with pytest.raises(ValueError, match="batch_norm must be 'moments' or 'fused'"):
        TensorflowAdapter(batch_norm="keras")


@pytest.mark.parametrize("case_id", [
    "batch_norm/train_affine/s0", "batch_norm/eval_affine/s1", "batch_norm/channels_last_train/s0",
    "layer_norm/affine/s0", "instance_norm/affine/s1", "instance_norm/running_eval/s0",
    "mean_variance_norm/random/s1", "positional_norm/random/s0", "normalize/p2/s0",
])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_random_cases_pass_with_gradients(adapter, case_id, dtype):
    prepared = adapter.prepare(case_from_id(case_id))
    v, out, (_, grads, state) = _verdicts(adapter, prepared, dtype)
    # every VJP normref has is judged (eval mode: the running statistics' too)
    assert sorted(out.grads) == sorted(grads) and "backward:input" in v
    assert sorted(out.state) == sorted(state)
    for verdict in v.values():
        assert verdict.passed, str(verdict)
        assert verdict.worst_ulps <= 16 * 64, str(verdict)  # centred random data: small errors


def test_float64_computes_in_float64(adapter):
    """A float64 run is judged in float64 ulps: float32 arithmetic anywhere would cost ~1e8."""
    prepared = adapter.prepare(case_from_id("layer_norm/affine/s0"))
    v, _, _ = _verdicts(adapter, prepared, "float64")
    assert max(x.worst_ulps for x in v.values()) < 1e3
    lrn = adapter.prepare(case_from_id("local_response_norm/random/s0"))
    with pytest.raises(Unsupported, match="no float64 kernel"):
        adapter.run(as_dtype(round_to(lrn, "float64"), "float64"), "float64")


# -- each configured convention, and the failure its opposite would cause --------------

def test_momentum_keras_direction_and_biased_running_var(adapter):
    case = case_from_id("batch_norm/train_affine/s0")
    prepared = adapter.prepare(case)
    assert prepared.kwargs["momentum_convention"] == "keras"
    assert prepared.kwargs["running_var_unbiased"] is False
    v, out, _ = _verdicts(adapter, prepared, "float64")
    assert v["state:running_mean"].passed and v["state:running_var"].passed
    b = bound_arguments(prepared)
    m, x = b["momentum"], b["input"]
    axes = (0,) + tuple(range(2, x.ndim))
    np.testing.assert_allclose(out.state[1], m * b["running_mean"] + (1 - m) * x.mean(axis=axes),
                               rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(out.state[2], m * b["running_var"] + (1 - m) * x.var(axis=axes),
                               rtol=1e-14)
    # either convention flipped: the running statistics no longer match
    v_torch, _, _ = _verdicts(adapter, prepared, "float64",
                              _with(prepared, momentum_convention="torch"))
    assert not v_torch["state:running_mean"].passed
    v_unb, _, _ = _verdicts(adapter, prepared, "float64",
                            _with(prepared, running_var_unbiased=True))
    assert v_unb["state:running_mean"].passed and not v_unb["state:running_var"].passed


def test_fused_batch_norm_bessel_corrected_running_var(fused):
    case = case_from_id("batch_norm/train_affine/s0")
    prepared = fused.prepare(case)
    assert prepared.kwargs["momentum_convention"] == "keras"
    assert prepared.kwargs["running_var_unbiased"] is True
    v, _, _ = _verdicts(fused, prepared, "float32")
    assert all(x.passed for x in v.values()), [str(x) for x in v.values()]
    v_biased, _, _ = _verdicts(fused, prepared, "float32",
                               _with(prepared, running_var_unbiased=False))
    assert not v_biased["state:running_var"].passed
    with pytest.raises(Unsupported, match="no float64 kernel"):
        fused.run(as_dtype(round_to(prepared, "float64"), "float64"), "float64")


def test_fused_eval_gradients_of_the_running_statistics_are_not_judged(fused):
    """FusedBatchNormV3 has no gradient for mean/variance: those slots are left out."""
    prepared = fused.prepare(case_from_id("batch_norm/channels_last_eval/s1"))
    v, out, (_, grads, _) = _verdicts(fused, prepared, "float32")
    assert {1, 2} <= set(grads) and not {1, 2} & set(out.grads)
    assert {"backward:input", "backward:weight", "backward:bias"} <= set(v)
    assert all(x.passed for x in v.values()), [str(x) for x in v.values()]


def test_mean_variance_norm_eps_on_the_variance(adapter):
    prepared = adapter.prepare(case_from_id("mean_variance_norm/random/s2"))
    assert prepared.kwargs["eps_placement"] == "variance"
    # a large eps makes the placement visible
    prepared = dataclasses.replace(prepared, args=prepared.args[:2] + (0.5,))
    v, _, _ = _verdicts(adapter, prepared, "float64")
    assert v["forward"].passed, str(v["forward"])
    v_std, _, _ = _verdicts(adapter, prepared, "float64",
                            _with(prepared, eps_placement="std"))
    assert not v_std["forward"].passed


def test_lrn_tf_window_and_undivided_alpha(adapter):
    case = case_from_id("local_response_norm/random/s1")
    prepared = adapter.prepare(case)
    assert prepared.kwargs["convention"] == "tf"
    assert bound_arguments(prepared)["size"] % 2 == 1
    args = list(prepared.args)
    args[1] = 3  # depth_radius 1: the window and alpha/size both matter
    prepared = dataclasses.replace(prepared, args=tuple(args))
    v, _, _ = _verdicts(adapter, prepared, "float32")
    assert v["forward"].passed and v["backward:input"].passed, [str(x) for x in v.values()]
    v_torch, _, _ = _verdicts(adapter, prepared, "float32",
                              _with(prepared, convention="torch"))
    assert not v_torch["forward"].passed
    # an even window has no depth_radius: not a TF case
    assert adapter.prepare(case_from_id("local_response_norm/lrn_size2/s0")) is None


def test_l2_normalize_clamps_the_squared_norm(adapter):
    case = case_from_id("normalize/p2/s1")
    prepared = adapter.prepare(case)
    assert prepared.kwargs["eps_placement"] == "squared_norm"
    # norms ~1e-9: below TF's sqrt(1e-12) = 1e-6 floor, above torch's 1e-12
    args = list(prepared.args)
    args[0] = args[0] * 1e-9
    prepared = dataclasses.replace(prepared, args=tuple(args))
    assert bound_arguments(prepared)["eps"] == 1e-12
    for dtype in ("float32", "float64"):
        v, out, (y, _, _) = _verdicts(adapter, prepared, dtype)
        assert v["forward"].passed and v["backward:input"].passed, [str(x) for x in v.values()]
        np.testing.assert_allclose(y, round_to(prepared, dtype).args[0] * 1e6, rtol=1e-15)
        v_norm, _, _ = _verdicts(adapter, prepared, dtype,
                                 _with(prepared, eps_placement="norm"))
        assert not v_norm["forward"].passed
    for cid in ("normalize/p1/s0", "normalize/pinf/s0"):
        assert adapter.prepare(case_from_id(cid)) is None  # l2_normalize is p = 2 only


def test_instance_norm_running_statistics_dropped(adapter):
    case = case_from_id("instance_norm/running_update/s0")
    assert case.mutates == (1, 2)
    prepared = adapter.prepare(case)
    b = bound_arguments(prepared)
    assert b["running_mean"] is None and b["running_var"] is None and prepared.mutates == ()
    v, out, _ = _verdicts(adapter, prepared, "float32")
    assert out.state == {} and all(x.passed for x in v.values())


def test_no_tf_op_or_variant_is_skipped(adapter):
    for cid in ("group_norm/affine/s0", "rms_norm/affine/s0", "weight_norm/dim0/s0",
                "batch_renorm/train_affine/s0"):
        assert adapter.prepare(case_from_id(cid)) is None, cid
    bn = case_from_id("batch_norm/train_affine/s0")
    assert adapter.prepare(dataclasses.replace(
        bn, args=bn.args[:6] + (None,) + bn.args[7:])) is None          # cumulative average
    assert adapter.prepare(_with(bn, num_batches_tracked=np.array(3))) is None


# -- the documented discrepancies ------------------------------------------------------

def test_constant_group_cancels_in_batch_normalization_not_in_the_fused_kernel(adapter, fused):
    """A constant float32 group at 1e8: the exact output is beta.  tf.nn.batch_normalization's
    x * inv + (beta - mean * inv) loses beta entirely; FusedBatchNormV3 ((x - mean) * inv)
    returns it."""
    case = case_from_id("batch_norm/offset1e8/s0")
    for ad in (adapter, fused):
        prepared = ad.prepare(case)
        rounded = round_to(prepared, "float32")
        x = bound_arguments(rounded)["input"]
        beta = bound_arguments(rounded)["bias"]
        assert np.all(x == x[:1]), "the float32 rounding makes every channel constant"
        y, _, _ = expected_outputs(rounded)
        np.testing.assert_array_equal(y, np.broadcast_to(beta, y.shape))
        got = ad.run(as_dtype(rounded, "float32"), "float32").y
        err = np.abs(got - y).max()
        if ad is adapter:
            assert err > 0.5 * np.abs(beta).max()   # beta absorbed by x * inv ~ 1e8 / sqrt(eps)
        else:
            assert err <= np.spacing(np.float32(np.abs(beta).max()))


def test_full_catalogue_no_unexpected_failure_and_every_known_entry_used(adapter):
    results = run_conformance(adapter, catalogue(TF_NAMES), progress=False)
    bad = [r for r in results if r.status in ("fail", "error", "xpass")]
    assert not bad, "\n".join(f"{r.status} {r.case_id} {r.check} {r.dtype}: "
                              f"{r.verdict or r.reason}" for r in bad[:20])
    known = [e for e in load_known_discrepancies() if e["framework"] == "tensorflow"]
    assert known and all(e.get("figures") for e in known)
    assert K.audit_known(results, known, frameworks=["tensorflow"]) == []
    by = {s: sum(r.status == s for r in results) for s in ("pass", "xfail")}
    assert by["pass"] > 700 and by["xfail"] > 30
    # gradients are judged for every normalizer, the running statistics for batch norm
    checks = {(r.normalizer, r.check) for r in results if r.status in ("pass", "xfail")}
    for name in TF_NAMES:
        assert (name, "backward:input") in checks, name
    for name in ("batch_norm", "layer_norm", "instance_norm"):
        assert (name, "backward:weight") in checks and (name, "backward:bias") in checks
    assert {("batch_norm", "state:running_mean"), ("batch_norm", "state:running_var"),
            ("batch_norm", "backward:running_mean")} <= checks
    # the skips: no TF op/variant, no float64 LRN kernel, inputs float32 cannot hold
    for r in results:
        if r.status == "skip":
            assert (r.reason == "no such op or variant in this framework"
                    or "no float64 kernel" in r.reason or r.dtype == "float32"), r


def test_fused_batch_norm_catalogue_fails_only_by_known_causes(fused):
    """The fused kernel shares the running-statistics, overflow and flush-to-zero
    discrepancies of tensorflow.json (and none of the cancellation ones)."""
    results = run_conformance(fused, catalogue(["batch_norm"]), progress=False)
    assert not [r for r in results if r.status in ("fail", "error")], \
        [f"{r.case_id} {r.dtype} {r.check}: {r.verdict or r.reason}" for r in results
         if r.status in ("fail", "error")]
    assert sum(r.status == "pass" for r in results) > 100
