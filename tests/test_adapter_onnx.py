"""The ONNX adapters (ONNX Runtime and the ONNX reference evaluator) judged
against normref: per-op checks on catalogue cases, the whole catalogue against
the known discrepancies (normref/testing/known/), and proof that the conventions configured in
``prepare`` are what makes the verdicts pass."""
import dataclasses
import json
import os

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from normref.testing.adapters import Outputs, Unsupported, get_adapter  # noqa: E402
from normref.testing.adapters.onnx import (  # noqa: E402
    LP_EPS, MVN_EPS, ONNX_OPS, OnnxReferenceAdapter, OnnxRuntimeAdapter, build_model,
)
from normref.testing.conformance import (  # noqa: E402
    KNOWN_DISCREPANCIES_DIR, ConformCase, as_dtype, audit_known, bound_arguments, case_from_id,
    catalogue, expected_outputs, judge, load_known_discrepancies, round_to, run_conformance,
    _signature_name,
)

FRAMEWORKS = ("onnxruntime", "onnx-reference")


@pytest.fixture(scope="module", params=FRAMEWORKS)
def adapter(request):
    return get_adapter(request.param)


@pytest.fixture(scope="module")
def ort():
    return get_adapter("onnxruntime")


@pytest.fixture(scope="module")
def ref():
    return get_adapter("onnx-reference")


def verdicts(adapter, case, dtype):
    """Run the prepared ``case`` through ``adapter`` in ``dtype``; judge forward and state."""
    prepared = adapter.prepare(case)
    assert prepared is not None, case.id
    rounded = round_to(prepared, dtype)
    y, _, state = expected_outputs(rounded)
    out = adapter.run(as_dtype(rounded, dtype), dtype)
    assert isinstance(out, Outputs)
    assert out.y.dtype == np.dtype(dtype)
    assert out.grads is None
    vs = [judge(rounded, y, out.y, dtype, "forward")]
    for slot in sorted(out.state):
        vs.append(judge(rounded, state[slot], out.state[slot], dtype,
                        f"state:{_signature_name(case.name, slot)}"))
    return vs


# ---------------------------------------------------------------- the contract

def test_adapters_are_registered_and_forward_only():
    a, b = get_adapter("onnxruntime"), get_adapter("onnx-reference")
    assert isinstance(a, OnnxRuntimeAdapter) and a.framework == "onnxruntime"
    assert isinstance(b, OnnxReferenceAdapter) and b.framework == "onnx-reference"
    for x in (a, b):
        assert x.gradients is False
        assert x.dtypes == ("float32", "float64")
        assert "LRN window" in x.conventions and "GroupNorm affine" in x.conventions
        assert type(x).available() is True


@pytest.mark.parametrize("name", ["positional_norm", "batch_group_norm", "ghost_batch_norm",
                                  "weight_norm"])
def test_normalizers_without_an_onnx_op_are_not_prepared(adapter, name):
    for case in catalogue([name])[:3]:
        assert adapter.prepare(case) is None


@pytest.mark.parametrize("case_id", [
    "batch_norm/channels_last_train/s0",   # ONNX BatchNormalization is channels-first
    "instance_norm/running_eval/s0",       # no use_input_stats=False in ONNX
    "normalize/p3/s0",                     # LpNormalization: p in {1, 2}
    "normalize/pinf/s0",
])
def test_variants_onnx_cannot_express_are_not_prepared(adapter, case_id):
    assert adapter.prepare(case_from_id(case_id)) is None


def test_models_are_single_node_with_the_op_versions_under_test():
    x = np.zeros((2, 4, 3), np.float32)
    m = build_model("RMSNormalization", 23, [("X", x), ("scale", np.ones(3, np.float32))],
                    {"axis": -1, "epsilon": 1e-5})
    assert [n.op_type for n in m.graph.node] == ["RMSNormalization"]
    assert m.opset_import[0].version == 23 and m.ir_version == 11
    assert [i.name for i in m.graph.input] == ["X", "scale"] and not m.graph.initializer
    # the checker marks GroupNormalization-18 deprecated; the model is still built
    g = build_model("GroupNormalization", 18, [("X", x), ("scale", np.ones(2, np.float32)),
                                               ("bias", np.zeros(2, np.float32))], {"num_groups": 2})
    assert g.opset_import[0].version == 18
    assert {op: v for op, v in ONNX_OPS.values()}["LRN"] == 13


# ---------------------------------------------------------------- prepare: conventions

def test_batch_norm_training_is_keras_momentum_with_biased_running_variance(adapter):
    case = case_from_id("batch_norm/train_affine/s0")
    p = bound_arguments(adapter.prepare(case))
    q = bound_arguments(case)
    assert p["momentum_convention"] == "keras" and p["running_var_unbiased"] is False
    # ONNX attributes are float32: normref gets exactly the values the runtime uses
    assert p["eps"] == float(np.float32(q["eps"])) and p["momentum"] == float(np.float32(q["momentum"]))
    assert p["eps"] != q["eps"]
    assert p["running_mean"] is q["running_mean"]


def test_eval_batch_norm_keeps_the_torch_defaults(adapter):
    p = bound_arguments(adapter.prepare(case_from_id("batch_norm/eval_affine/s0")))
    assert p["momentum_convention"] == "torch" and p["training"] is False


def test_instance_norm_drops_running_buffers(adapter):
    case = case_from_id("instance_norm/running_update/s0")
    assert case.mutates == (1, 2)
    prep = adapter.prepare(case)
    p = bound_arguments(prep)
    assert p["running_mean"] is None and p["running_var"] is None and prep.mutates == ()


def test_lrn_uses_the_onnx_window_and_mvn_the_std_eps(adapter):
    p = bound_arguments(adapter.prepare(case_from_id("local_response_norm/lrn_size4/s0")))
    assert p["convention"] == "onnx" and p["size"] == 4
    m = bound_arguments(adapter.prepare(case_from_id("mean_variance_norm/eps_variance/s0")))
    assert m["eps_placement"] == "std" and m["eps"] == MVN_EPS == float(np.float32(1e-9))


def test_normalize_gets_a_zero_norm_rule_not_a_clamp(adapter):
    p = bound_arguments(adapter.prepare(case_from_id("normalize/p2/s0")))
    assert p["eps"] == LP_EPS == 5e-324
    # ONNX defines the output of a zero-norm fibre as 0 (onnx/onnx#7618); both runtimes agree
    x = np.zeros((3, 4))
    x[1] = [3.0, -4.0, 0.0, 0.0]
    case = ConformCase("zero row", (x, 2.0, 1, 1e-12), id="normalize/zero_row/s0", name="normalize")
    for dtype in ("float32", "float64"):
        vs = verdicts(adapter, case, dtype)
        assert vs[0].passed, vs[0]
    rounded = round_to(adapter.prepare(case), "float64")
    out = adapter.run(as_dtype(rounded, "float64"), "float64")
    np.testing.assert_array_equal(out.y[0], 0.0)
    np.testing.assert_allclose(out.y[1], [0.6, -0.8, 0.0, 0.0], rtol=1e-15)


def test_group_norm_opset_follows_the_affine_shape(adapter):
    per_group = adapter.prepare(case_from_id("group_norm/group_affine/s0"))
    per_channel = adapter.prepare(case_from_id("group_norm/affine/s0"))
    assert per_group.conventions["opset"] == 18 and per_channel.conventions["opset"] == 21
    assert adapter.supports_opset(21) and adapter.supports_opset(18)


def test_group_norm_falls_back_to_per_group_opset_18(monkeypatch):
    a = OnnxRuntimeAdapter()
    a._opsets[21] = False  # as if the runtime stopped at opset 18
    x = np.random.default_rng(5).standard_normal((2, 6, 3))
    w_const = np.repeat([0.5, -1.5, 2.0], 2)          # constant within each of 3 groups
    w_free = np.array([0.5, 0.7, -1.5, 1.0, 2.0, 3.0])
    b = np.repeat([0.1, 0.2, -0.3], 2)
    for w, how in ((w_const, "collapsed exactly"), (w_free, "first channel of each group")):
        case = ConformCase("gn", (x, 3, w, b, 1e-5), id="group_norm/fallback/s0", name="group_norm")
        prep = a.prepare(case)
        p = bound_arguments(prep)
        assert p["affine"] == "group" and prep.conventions["per-group parameters"] == how
        np.testing.assert_array_equal(p["weight"], [0.5, -1.5, 2.0])
        for dtype in ("float32", "float64"):
            v = verdicts(a, case, dtype)[0]
            assert v.passed, v
            assert v.worst_ulps <= 8


# ---------------------------------------------------------------- each op, both dtypes

OP_CASES = {
    "batch_norm": ["batch_norm/train_affine/s1", "batch_norm/train_nostats/s0",
                   "batch_norm/eval_affine/s0", "batch_norm/offset1e4/s0"],
    "instance_norm": ["instance_norm/affine/s0", "instance_norm/plain/s1",
                      "instance_norm/running_update/s0"],
    "layer_norm": ["layer_norm/affine/s0", "layer_norm/plain/s2", "layer_norm/offset1e8/s0"],
    "group_norm": ["group_norm/affine/s0", "group_norm/group_affine/s1", "group_norm/plain/s2"],
    "rms_norm": ["rms_norm/affine/s0", "rms_norm/eps_none/s0", "rms_norm/offset1e4/s0"],
    "local_response_norm": ["local_response_norm/random/s1", "local_response_norm/offset1e4/s0"],
    "normalize": ["normalize/p2/s0", "normalize/p1/s1", "normalize/const_group/s0"],
    "mean_variance_norm": ["mean_variance_norm/random/s0", "mean_variance_norm/eps_variance/s1"],
}

#: (framework, normalizer) -> dtypes the implementation has no kernel for
NO_KERNEL = {
    ("onnxruntime", "instance_norm"): {"float64"},
    ("onnxruntime", "local_response_norm"): {"float64"},
    ("onnxruntime", "mean_variance_norm"): {"float64"},
    ("onnx-reference", "mean_variance_norm"): {"float64"},
}

#: cases of OP_CASES that hit a known defect of the implementation (asserted to fail)
KNOWN_BAD = {
    ("onnx-reference", "local_response_norm/random/s1"),    # onnx/onnx#7805
    ("onnx-reference", "local_response_norm/offset1e4/s0"),
    ("onnx-reference", "normalize/p1/s1"),                  # onnx/onnx#8427
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(OP_CASES))
def test_mapped_op_conforms(adapter, name, dtype):
    ran = 0
    for case_id in OP_CASES[name]:
        case = case_from_id(case_id)
        if dtype in NO_KERNEL.get((adapter.framework, name), ()):
            with pytest.raises(Unsupported, match=rf"cannot run .* in {dtype}"):
                verdicts(adapter, case, dtype)
            continue
        vs = verdicts(adapter, case, dtype)
        if (adapter.framework, case_id) in KNOWN_BAD:
            assert not vs[0].passed and vs[0].worst_ulps > 1e5, vs[0]
            ran += 1
            continue
        for v in vs:
            assert v.passed, f"{case_id}: {v}"
            # cases with conditioning ~1 agree to a few ulps, not just within tolerance
            if v.tolerance_ulps <= 16 * 50:
                assert v.worst_ulps <= v.tolerance_ulps / 2, f"{case_id}: {v}"
        ran += 1
    assert ran or NO_KERNEL.get((adapter.framework, name))


def test_batch_norm_training_reports_running_statistics(adapter):
    case = case_from_id("batch_norm/train_affine/s1")
    prep = adapter.prepare(case)
    rounded = round_to(prep, "float32")
    out = adapter.run(as_dtype(rounded, "float32"), "float32")
    assert sorted(out.state) == [1, 2]
    _, _, state = expected_outputs(rounded)
    for slot in (1, 2):
        assert out.state[slot].dtype == np.float32
        np.testing.assert_allclose(out.state[slot], state[slot], rtol=2e-6, atol=1e-7)


def test_unsupported_dtype_is_detected_once_and_cached(ort):
    a = OnnxRuntimeAdapter()
    case = a.prepare(case_from_id("local_response_norm/random/s0"))
    r64 = as_dtype(round_to(case, "float64"), "float64")
    with pytest.raises(Unsupported, match="LRN-13 in float64"):
        a.run(r64, "float64")
    assert ("LRN", 13, "float64") in a._unsupported
    calls = []
    a._execute = lambda *args: calls.append(args)  # the cache answers without the runtime
    with pytest.raises(Unsupported):
        a.run(r64, "float64")
    assert calls == []


def test_runtime_failures_other_than_missing_kernels_are_raised(ort):
    # ONNX Runtime's LRN kernel rejects even sizes: an error for the report, never a skip
    case = ort.prepare(case_from_id("local_response_norm/lrn_size2/s0"))
    with pytest.raises(Exception) as info:
        ort.run(as_dtype(round_to(case, "float32"), "float32"), "float32")
    assert not isinstance(info.value, Unsupported)
    assert "size_ % 2 == 1" in str(info.value)


# ---------------------------------------------------------------- conventions matter

def test_wrong_lrn_window_is_flagged(ref):
    """The reference evaluator is right when N == C (its batch-axis loop then covers
    the channels): with prepare's ONNX window it passes; judged against normref's
    PyTorch window at an even size it fails by far more than rounding."""
    x = np.random.default_rng(11).standard_normal((4, 4, 3, 2))
    case = ConformCase("lrn", (x, 2, 0.7, 0.75, 1.3), id="local_response_norm/n_eq_c/s0",
                       name="local_response_norm")
    prep = ref.prepare(case)
    rounded = round_to(prep, "float64")
    out = ref.run(as_dtype(rounded, "float64"), "float64")
    right = judge(rounded, expected_outputs(rounded)[0], out.y, "float64", "forward")
    assert right.passed and right.worst_ulps <= 4, right
    wrong_case = dataclasses.replace(rounded, kwargs={**rounded.kwargs, "convention": "torch"})
    wrong = judge(wrong_case, expected_outputs(wrong_case)[0], out.y, "float64", "forward")
    assert not wrong.passed and wrong.worst_ulps > 1e10, wrong


def test_wrong_momentum_convention_is_flagged(ort):
    """ONNX Runtime's training-mode BatchNormalization judged with PyTorch's momentum
    direction and unbiased running variance fails the state checks."""
    case = case_from_id("batch_norm/train_affine/s1")
    prep = ort.prepare(case)
    rounded = round_to(prep, "float64")
    out = ort.run(as_dtype(rounded, "float64"), "float64")
    _, _, state = expected_outputs(rounded)
    assert judge(rounded, state[1], out.state[1], "float64", "state:running_mean").passed
    torchy = dataclasses.replace(rounded, kwargs={**rounded.kwargs, "momentum_convention": "torch",
                                                  "running_var_unbiased": True})
    _, _, wrong = expected_outputs(torchy)
    for slot in (1, 2):
        v = judge(torchy, wrong[slot], out.state[slot], "float64", "state:x")
        assert not v.passed and v.worst_ulps > 1e10, v


# ---------------------------------------------------------------- the whole catalogue

@pytest.fixture(scope="module")
def catalogue_results():
    return {fw: run_conformance(get_adapter(fw), progress=False) for fw in FRAMEWORKS}


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_catalogue_has_no_unexpected_results(catalogue_results, fw):
    results = catalogue_results[fw]
    bad = [(r.status, r.case_id, r.dtype, r.check, str(r.verdict) if r.verdict else r.reason)
           for r in results if r.status in ("fail", "error", "xpass")]
    assert bad == []
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "xfail", "skip")}
    assert counts["pass"] > 200 and counts["xfail"] > 20
    # every mapped normalizer is exercised in float32
    passed = {r.normalizer for r in results if r.status == "pass" and r.dtype == "float32"}
    assert passed == set(ONNX_OPS)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_every_known_discrepancy_is_observed_and_documented(catalogue_results, fw):
    entries = [e for e in load_known_discrepancies() if e["framework"] == fw]
    assert entries
    # none stale, none overlapping, none matching a passing check, every pattern a case
    assert audit_known(catalogue_results[fw]) == []
    for e in entries:
        assert any(ch.isdigit() for ch in e["figures"]), e["figures"]


def test_known_discrepancy_file_is_valid_json_with_issue_links():
    ours = []
    for fw in FRAMEWORKS:
        with open(os.path.join(KNOWN_DISCREPANCIES_DIR, f"{fw}.json"), encoding="utf-8") as fh:
            data = json.load(fh)
        assert data["framework"] == fw and "onnx 1.23" in data["versions"]
        ours += data["discrepancies"]
    issues = {e["issue"] for e in ours if e["issue"]}
    assert "https://github.com/onnx/onnx/issues/7805" in issues          # LRN batch-axis loop
    assert "https://github.com/onnx/onnx/pull/8427" in issues            # Lp p=1 without abs
    assert "https://github.com/microsoft/onnxruntime/issues/10228" in issues  # MVN without eps
