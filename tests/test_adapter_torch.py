"""The PyTorch adapters (``torch`` functional ops, ``torch-modules`` nn modules)."""
import collections
import dataclasses
import json
import os
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from normref.testing import conformance as C  # noqa: E402
from normref.testing.adapters import Outputs, Unsupported, get_adapter  # noqa: E402
from normref.testing.adapters.torch import TorchAdapter, TorchModulesAdapter  # noqa: E402

ADAPTERS = [TorchAdapter(), TorchModulesAdapter()]
IDS = [a.framework for a in ADAPTERS]


def _judge_all(adapter, case, dtype):
    """Run ``case`` through ``adapter`` in ``dtype``; return (outputs, expected, verdicts)."""
    prepared = adapter.prepare(case)
    assert prepared is not None, case.id
    rounded = C.round_to(prepared, dtype)
    y, grads, state = C.expected_outputs(rounded)
    out = adapter.run(C.as_dtype(rounded, dtype), dtype)
    cond = C.case_conditioning(rounded)
    verdicts = [C.judge(rounded, y, out.y, dtype, "forward", cond=cond)]
    for slot, g in sorted((out.grads or {}).items()):
        verdicts.append(C.judge(rounded, grads[slot], g, dtype, f"backward:{slot}", cond=cond))
    for slot, s in sorted(out.state.items()):
        verdicts.append(C.judge(rounded, state[slot], s, dtype, f"state:{slot}", cond=cond))
    return out, (y, grads, state), verdicts


# case id -> (slots with judged gradients, slots with judged running statistics)
HANDFUL = {
    "layer_norm/affine/s0": ({0, 2, 3}, set()),
    "layer_norm/plain/s1": ({0}, set()),
    "batch_norm/train_affine/s0": ({0, 3, 4}, {1, 2}),
    # eval: normref differentiates the running statistics too, torch declares them
    # non-differentiable (native_batch_norm): those slots are left out, not judged
    "batch_norm/eval_affine/s1": ({0, 3, 4}, set()),
    "batch_norm/train_nostats/s2": ({0, 3, 4}, set()),
    "group_norm/affine/s2": ({0, 2, 3}, set()),
    "instance_norm/running_update/s0": ({0, 3, 4}, {1, 2}),
    "instance_norm/running_eval/s1": ({0, 3, 4}, set()),
    "rms_norm/affine/s0": ({0, 2}, set()),
    "rms_norm/eps_none/s1": ({0, 2}, set()),
    "local_response_norm/lrn_size4/s0": ({0}, set()),
}
FUNCTIONAL_ONLY = {
    "normalize/p3/s0": ({0}, set()),
    "normalize/pinf/s1": ({0}, set()),
    "weight_norm/dim0/s0": ({0, 1}, set()),
    "weight_norm/dim_none/s0": ({0, 1}, set()),
    "weight_norm/dim_last/s1": ({0, 1}, set()),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("adapter", ADAPTERS, ids=IDS)
@pytest.mark.parametrize("case_id", sorted(HANDFUL) + sorted(FUNCTIONAL_ONLY))
def test_handful_of_cases_conform(adapter, case_id, dtype):
    table = {**HANDFUL, **FUNCTIONAL_ONLY}
    if case_id in FUNCTIONAL_ONLY and adapter.framework == "torch-modules":
        pytest.skip("no torch.nn module for this normalizer")
    out, (y, _, _), verdicts = _judge_all(adapter, C.case_from_id(case_id), dtype)
    grad_slots, state_slots = table[case_id]
    assert isinstance(out, Outputs)
    assert out.y.dtype == np.dtype(dtype)          # the framework's dtype, not upcast
    assert out.y.shape == y.shape
    assert set(out.grads) == grad_slots
    assert set(out.state) == state_slots
    for v in verdicts:
        assert v.passed, str(v)
        # these well-conditioned cases sit far inside the tolerance
        assert v.worst_ulps <= 0.25 * v.tolerance_ulps, str(v)


def test_parameter_gradients_match_normref_values():
    case = C.case_from_id("layer_norm/affine/s0")
    out, (_, grads, _), _ = _judge_all(TorchAdapter(), case, "float64")
    for slot in (2, 3):  # weight, bias
        np.testing.assert_allclose(out.grads[slot], grads[slot], rtol=1e-13, atol=1e-13)
    # bias gradient = cotangent summed over the leading axes, exactly
    cot = C.round_to(case, "float64").cotangent(out.y.shape)
    lead = tuple(range(cot.ndim - len(case.args[1])))
    np.testing.assert_allclose(out.grads[3], cot.sum(axis=lead), rtol=1e-14)


def test_case_arrays_are_not_mutated():
    case = C.case_from_id("batch_norm/train_affine/s0")
    before = [np.copy(a) if isinstance(a, np.ndarray) else a for a in case.args]
    for adapter in ADAPTERS:
        adapter.run(C.as_dtype(C.round_to(case, "float64"), "float64"), "float64")
    for a, b in zip(case.args, before):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=IDS)
def test_cumulative_moving_average(adapter):
    """momentum=None: factor 1/num_batches_tracked after the increment, like nn.BatchNorm."""
    r = np.random.default_rng(5)
    x = r.standard_normal((4, 3, 5)) * 2 + 1
    rm, rv = r.standard_normal(3), r.uniform(0.5, 2, 3)
    case = C.ConformCase(label="cma", args=(x, rm.copy(), rv.copy(), None, None, True, None, 1e-5),
                         kwargs={"num_batches_tracked": np.array(3, dtype=np.int64)},
                         mutates=(1, 2), id="batch_norm/cma/s0", name="batch_norm")
    out = adapter.run(case, "float64")
    np.testing.assert_array_equal(case.kwargs["num_batches_tracked"], 3)  # not mutated
    mean = x.mean(axis=(0, 2))
    var = x.var(axis=(0, 2), ddof=1)
    np.testing.assert_allclose(out.state[1], 0.75 * rm + 0.25 * mean, rtol=1e-14)
    np.testing.assert_allclose(out.state[2], 0.75 * rv + 0.25 * var, rtol=1e-14)


def test_weight_norm_g_of_shape_c():
    """g given as (v.shape[dim],) is reshaped to torch's (C, 1, ...) and its gradient back."""
    r = np.random.default_rng(6)
    v, g = r.standard_normal((4, 3)), r.standard_normal(4) + 1.5
    case = C.ConformCase(label="g1d", args=(v, g, 0), id="weight_norm/g1d/s0", name="weight_norm")
    out, (y, grads, _), verdicts = _judge_all(TorchAdapter(), case, "float64")
    assert out.grads[1].shape == (4,)
    assert all(v.passed for v in verdicts), [str(v) for v in verdicts]
    np.testing.assert_allclose(out.y, g[:, None] * v / np.linalg.norm(v, axis=1, keepdims=True),
                               rtol=1e-14)


# ---------------------------------------------------------------------------
# unsupported variants
# ---------------------------------------------------------------------------

UNSUPPORTED_IDS = [
    "positional_norm/random/s0", "batch_group_norm/affine/s0", "ghost_batch_norm/train_affine/s0",
    "mean_variance_norm/random/s0", "group_norm/group_affine/s0",
    "batch_norm/channels_last_train/s0",  # (3, 4, 4, 4) with channel_axis=-1
]


def _variant(case_id, **kwargs):
    c = C.case_from_id(case_id)
    return dataclasses.replace(c, kwargs={**dict(c.kwargs), **kwargs})


UNSUPPORTED_CASES = {
    "keras momentum": lambda: _variant("batch_norm/train_affine/s0", momentum_convention="keras"),
    "biased running var": lambda: _variant("batch_norm/train_affine/s0", running_var_unbiased=False),
    "lrn onnx": lambda: _variant("local_response_norm/lrn_size4/s0", convention="onnx"),
    "lrn tf": lambda: _variant("local_response_norm/random/s0", convention="tf"),
}


@pytest.mark.parametrize("adapter", ADAPTERS, ids=IDS)
@pytest.mark.parametrize("case_id", UNSUPPORTED_IDS)
def test_unsupported_catalogue_variants(adapter, case_id):
    case = C.case_from_id(case_id)
    assert adapter.prepare(case) is None
    with pytest.raises(Unsupported):
        adapter.run(C.as_dtype(C.round_to(case, "float64"), "float64"), "float64")


@pytest.mark.parametrize("adapter", ADAPTERS, ids=IDS)
@pytest.mark.parametrize("label", sorted(UNSUPPORTED_CASES))
def test_unsupported_conventions(adapter, label):
    case = UNSUPPORTED_CASES[label]()
    assert adapter.prepare(case) is None
    with pytest.raises(Unsupported):
        adapter.run(case, "float64")


def test_modules_adapter_has_no_normalize_or_weight_norm():
    m = TorchModulesAdapter()
    assert m.prepare(C.case_from_id("normalize/p2/s0")) is None
    assert m.prepare(C.case_from_id("weight_norm/dim0/s0")) is None
    assert TorchAdapter().prepare(C.case_from_id("normalize/p2/s0")) is not None


def test_registry_and_metadata():
    assert isinstance(get_adapter("torch"), TorchAdapter)
    assert isinstance(get_adapter("torch-modules"), TorchModulesAdapter)
    a = TorchAdapter()
    assert a.available() and a.gradients and a.dtypes == ("float32", "float64")
    for topic in ("BN momentum", "BN running variance", "eps defaults", "LRN window",
                  "GroupNorm affine", "RMS definition"):
        assert topic in a.conventions
    assert "c - n//2" in a.conventions["LRN window"]


def test_a_convention_defect_in_an_adapter_is_caught_in_running_stats():
    """A torch adapter that passes 1 - momentum (the Keras direction) to
    F.batch_norm: run_conformance must flag the running statistics, not the forward."""

    class Reversed(TorchAdapter):
        framework = "torch-reversed"

        @staticmethod
        def _momentum(a, torch):
            return 1.0 - a["momentum"]

    cases = [C.case_from_id(f"batch_norm/train_affine/s{s}") for s in range(3)]
    res = C.run_conformance(Reversed(), cases=cases, progress=False, known=[])
    status = collections.Counter((r.check.split(":")[0], r.status) for r in res)
    assert status[("forward", "pass")] == 6
    assert status[("backward", "pass")] == 18
    assert status[("state", "fail")] == 12
    assert status[("state", "pass")] == 0


# ---------------------------------------------------------------------------
# the whole catalogue
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module", params=ADAPTERS, ids=IDS)
def catalogue_run(request):
    return request.param, C.run_conformance(request.param, dtypes=("float64", "float32"),
                                            progress=False)


def test_catalogue_has_no_unexpected_failures(catalogue_run):
    adapter, results = catalogue_run
    bad = [(r.case_id, r.check, r.dtype, r.status, r.reason[:160],
            r.verdict and f"{r.verdict.worst_ulps:.3g}/{r.verdict.tolerance_ulps:.3g}")
           for r in results if r.status in ("fail", "error")]
    assert not bad, "\n".join(map(str, bad))
    counts = collections.Counter(r.status for r in results)
    assert counts["pass"] > (800 if adapter.framework == "torch" else 700)
    assert {r.dtype for r in results} == {"float32", "float64"}


def test_catalogue_known_discrepancies_are_used(catalogue_run):
    """The entries of normref/testing/known/<target>.json are exactly as wide as the
    failures (audit_known: none stale, none overlapping, none matching a pass); the
    headline discrepancies are reported as xfail."""
    adapter, results = catalogue_run
    xfail = {(r.case_id, r.check, r.dtype) for r in results if r.status == "xfail"}
    xpass = [(r.case_id, r.check, r.dtype) for r in results if r.status == "xpass"]
    assert not xpass, xpass
    entries = [e for e in C.load_known_discrepancies() if e["framework"] == adapter.framework]
    assert entries
    assert C.audit_known(results) == []
    for key in [("instance_norm/empty_batch/s0", "forward", "float64"),
                ("layer_norm/offset1e8/s0", "backward:weight", "float32"),
                ("batch_norm/neg_eps_momentum/s0", "forward", "float32"),
                ("group_norm/huge1e30/s0", "forward", "float32"),
                ("batch_norm/huge1e300/s0", "forward", "float64")]:
        assert key in xfail, key


def test_catalogue_skips_only_what_torch_lacks(catalogue_run):
    adapter, results = catalogue_run
    skipped = {r.normalizer for r in results if r.status == "skip"
               and r.reason == "no such op or variant in this framework"}
    # what torch has (the adapter's knowledge); everything else in the catalogue is skipped,
    # and of these two, the variants torch lacks (channels-last, per-group affine)
    ran_expected = {"batch_norm", "instance_norm", "layer_norm", "group_norm", "rms_norm",
                    "local_response_norm"} | (
        {"normalize", "weight_norm"} if adapter.framework == "torch" else set())
    partly = {"batch_norm", "group_norm"}
    assert skipped == (set(C.catalogued()) - ran_expected) | partly
    ran = {r.normalizer for r in results if r.status in ("pass", "xfail")}
    assert ran == ran_expected


def test_known_discrepancy_entries_are_well_formed():
    for fw in ("torch", "torch-modules"):
        with open(os.path.join(C.KNOWN_DISCREPANCIES_DIR, f"{fw}.json"), encoding="utf-8") as fh:
            data = json.load(fh)
        assert data["framework"] == fw and "torch 2." in data["versions"]
        mine = data["discrepancies"]
        assert len(mine) >= 7
        for e in mine:
            assert "ulps" in e["figures"] or "raises" in e["figures"], e["id"]
            assert e["issue"] is None or re.match(
                r"https://github\.com/pytorch/pytorch/(issues|pull)/\d+$", e["issue"]), e["issue"]


def test_group_norm_bias_without_weight_backward_fails_in_torch():
    """F.group_norm(x, G, weight=None, bias=b): the bias gradient raises
    RuntimeError("tensor does not have a device") in torch 2.13 CPU; the kit
    records an error (not a silent zero); nn.GroupNorm (weight = ones) is fine."""
    base = C.case_from_id("group_norm/affine/s0")
    args = list(base.args)
    args[2] = None  # weight
    case = dataclasses.replace(base, args=tuple(args), id="group_norm/bias_only/s0")
    with pytest.raises(RuntimeError, match="does not have a device"):
        TorchAdapter().run(C.as_dtype(C.round_to(case, "float64"), "float64"), "float64")
    res = C.run_conformance(TorchAdapter(), cases=[case], dtypes=("float64",), progress=False,
                            known=[])
    assert [(r.check, r.status) for r in res] == [("forward", "error")]
    assert "does not have a device" in res[0].reason
    out, _, verdicts = _judge_all(TorchModulesAdapter(), case, "float64")
    assert set(out.grads) == {0, 3}
    assert all(v.passed for v in verdicts), [str(v) for v in verdicts]
