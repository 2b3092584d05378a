"""The conformance kit: catalogue ids, the dtype-aware judge, run_conformance
statuses with a fake adapter, the CLI exit codes and assert_conforms."""
from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest

import normref
from normref import cli
from normref.testing import assert_conforms, conformance as C
from normref.testing.adapters import ADAPTERS, Adapter, Outputs, Unsupported, get_adapter


# -- catalogue --------------------------------------------------------------

@pytest.fixture(scope="module")
def cat():
    return C.catalogue()


def _same(a, b):
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
                and a.strides == b.strides and a.tobytes() == b.tobytes())
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


def test_catalogue_covers_every_normalizer_with_unique_ids(cat):
    ids = [c.id for c in cat]
    assert len(ids) == len(set(ids))
    public = {n for n in normref.__all__ if n in normref.REGISTRY}  # (tests may register more)
    assert len(public) >= 12 and {c.name for c in cat} == public
    for c in cat:
        name, variant, seed = c.id.split("/")
        assert name == c.name and seed.startswith("s")
        assert np.asarray(c.args[0]).size <= 2000
    # ids are stable: fixed names of the catalogue
    assert "layer_norm/offset1e4/s0" in ids and "batch_norm/train_affine/s2" in ids
    assert "local_response_norm/lrn_size4/s0" in ids


def test_case_from_id_rebuilds_every_case_bit_identically(cat):
    for c in cat:
        r = C.case_from_id(c.id)
        assert len(r.args) == len(c.args), c.id
        assert all(_same(a, b) for a, b in zip(c.args, r.args)), c.id
        assert dict(r.kwargs) == dict(c.kwargs) and r.mutates == c.mutates and r.row == c.row
        assert np.array_equal(r.cotangent((3, 2)), c.cotangent((3, 2)))


def test_case_from_id_rejects_unknown_ids():
    for bad in ("layer_norm/nope/s0", "nonorm/affine/s0", "layer_norm/affine", "layer_norm/affine/x1"):
        with pytest.raises(ValueError):
            C.case_from_id(bad)


def test_adversarial_rows_present_and_normref_answers_every_case(cat):
    rows = {c.row for c in cat if c.row}
    assert rows == {"1", "2", "4", "6", "7", "8", "9", "10", "12", "15", "16", "17", "19", "20"}
    assert rows & set(C.ROWS_NOT_CASES) == {"4"}  # N=1 with spatial axes is a case, without is not
    # a few specific contents
    c = C.case_from_id("batch_norm/n1_spatial/s0")
    assert c.args[0].shape[0] == 1 and c.args[0].ndim == 4
    assert C.case_from_id("layer_norm/empty_batch/s0").args[0].shape[0] == 0
    assert not C.case_from_id("group_norm/noncontiguous/s0").args[0].flags.c_contiguous
    assert C.case_from_id("rms_norm/float16/s0").args[0].dtype == np.float16
    c = C.case_from_id("batch_norm/neg_eps_momentum/s0")
    assert c.args[7] == -0.5 and c.args[6] == -1.2
    for c in cat:  # normref gives a number (no exception) on every case, in both dtypes
        for d in ("float32", "float64"):
            if C._representable(c, d) is None:
                y, grads, state = C.expected_outputs(C.round_to(c, d))
                assert y.dtype == np.float64


def test_cotangent_is_seeded_gaussian_and_rounded_to_dtype():
    c = C.case_from_id("layer_norm/affine/s0")
    g = c.cotangent((4, 5))
    assert g.shape == (4, 5) and not np.all(g == g.flat[0])
    assert np.array_equal(g, C.case_from_id("layer_norm/affine/s0").cotangent((4, 5)))
    g32 = C.round_to(c, "float32").cotangent((4, 5))
    assert np.array_equal(g32, g.astype(np.float32).astype(np.float64))
    assert not np.array_equal(g32, g)


def test_round_to_keeps_layout_and_scalars():
    c = C.case_from_id("layer_norm/noncontiguous/s0")
    r = C.round_to(c, "float32")
    assert r.dtype == "float32" and r.args[0].dtype == np.float64
    assert not r.args[0].flags.c_contiguous
    assert np.array_equal(r.args[0], c.args[0].astype(np.float32).astype(np.float64))
    assert r.args[4] == c.args[4] and isinstance(r.args[4], float)


# -- judge --------------------------------------------------------------------

def _plain_case(name="rms_norm", x=None):
    x = np.linspace(-2.0, 2.0, 12).reshape(3, 4) if x is None else x
    return C.ConformCase(label="t", args=(x, (4,)), id="t/x/s0", name=name)


def test_judge_one_float32_ulp_is_one_ulp():
    e = np.array([1.0, 0.75, -0.5, 1.25])
    a = e.astype(np.float32)
    a[0] = np.nextafter(np.float32(1.0), np.float32(2.0))
    v = C.judge(_plain_case(), e, a, "float32", "forward", cond=1.0)
    assert v.worst_ulps == pytest.approx(1.0)
    assert v.index == (0,) and v.passed and v.tolerance_ulps == 16.0
    # an element near zero is judged at the RMS scale, not its own spacing
    e2 = np.array([1.0, 1e-12, -1.0])
    a2 = e2.copy()
    a2[1] = 1e-12 + float(np.spacing(np.float32(1.0))) * 3
    v2 = C.judge(_plain_case(), e2, a2, "float32", "forward", cond=1.0)
    assert v2.worst_ulps == pytest.approx(3.0 * 2 ** -23 / np.spacing(np.float32(np.sqrt(2 / 3))), rel=1e-6)
    assert v2.index == (1,)


def test_judge_tolerance_scales_with_conditioning_and_kind():
    v = C.judge(_plain_case(), np.ones(3), np.ones(3), "float64", "backward:input", cond=10.0)
    assert v.tolerance_ulps == 640.0 and v.worst_ulps == 0.0
    x = np.array([[1e4 + 1.0, 1e4 - 1.0, 1e4 + 0.5, 1e4 - 0.5]])
    c = C.ConformCase(label="t", args=(x, (4,)), id="t/x/s0", name="layer_norm")
    kappa = C.case_conditioning(c)
    assert 1e4 / np.std(x) < kappa < 1.01e4 / np.std(x) + 2
    assert C.case_conditioning(_plain_case("rms_norm", x)) == 1.0


def test_judge_nan_positions_must_match():
    e = np.array([1.0, np.nan, -1.0])
    ok = C.judge(_plain_case(), e, np.array([1.0, np.nan, -1.0]), "float64", "forward", cond=1.0)
    assert ok.passed and ok.worst_ulps == 0.0
    extra = C.judge(_plain_case(), e, np.array([np.nan, np.nan, -1.0]), "float64", "forward", cond=1.0)
    assert not extra.passed and extra.worst_ulps == math.inf and extra.index == (0,)
    missing = C.judge(_plain_case(), e, np.array([1.0, 0.0, -1.0]), "float64", "forward", cond=1.0)
    assert not missing.passed and missing.index == (1,)
    shape = C.judge(_plain_case(), e, np.ones(4), "float64", "forward", cond=1.0)
    assert not shape.passed and "shape" in shape.note
    with pytest.raises(ValueError):
        C.judge(_plain_case(), e, e, "float64", "sideways", cond=1.0)


# -- run_conformance with fake adapters --------------------------------------

def _numpy_layer_norm(x, shape, w=None, b=None, eps=1e-5, wrong=False):
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    m = x.mean(axis=axes, keepdims=True)
    v = ((x - m) ** 2).mean(axis=axes, keepdims=True)
    y = (x - m) / (np.sqrt(v) + eps if wrong else np.sqrt(v + eps))
    if w is not None:
        y = y * w
    if b is not None:
        y = y + b
    return y


class FakeAdapter(Adapter):
    """A NumPy layer norm (forward only) posing as a framework."""

    framework = "fake"
    dtypes = ("float32", "float64")
    conventions = {"eps": "inside the square root"}
    wrong = False

    @classmethod
    def available(cls):
        return True

    def prepare(self, case):
        if case.name != "layer_norm" or "huge1e300" in case.id:
            return None  # (the naive two-pass formula overflows at 1e300)
        if case.id.endswith("unsupported/s0"):
            raise Unsupported("no such thing")
        return case

    def run(self, case, dtype):
        x, shape, w, b, eps = case.args
        assert x.dtype == np.dtype(dtype)
        # computed in float64 (correct to a rounding in any target dtype), returned in dtype
        f64 = [None if a is None else np.asarray(a, dtype=np.float64) for a in (x, w, b)]
        with np.errstate(all="ignore"):
            y = _numpy_layer_norm(f64[0], shape, f64[1], f64[2], eps, wrong=self.wrong)
        return Outputs(y=y.astype(dtype))


class WrongAdapter(FakeAdapter):
    wrong = True


def _cases():
    # eps = 1e-3 in both layer_norm cases: eps outside the sqrt is off by ~1e-3 relative
    return [C.case_from_id(i) for i in ("layer_norm/affine/s0", "layer_norm/plain/s0",
                                        "rms_norm/affine/s0")]


def test_run_conformance_pass_fail_skip():
    good = C.run_conformance(FakeAdapter(), _cases(), progress=False, known=[])
    st = {(r.case_id, r.dtype): r.status for r in good}
    assert st[("layer_norm/affine/s0", "float32")] == "pass"
    assert st[("layer_norm/plain/s0", "float64")] == "pass"
    assert st[("rms_norm/affine/s0", "float64")] == "skip"
    worst = max(r.verdict.worst_ulps for r in good if r.verdict)
    assert worst < 16
    bad = C.run_conformance(WrongAdapter(), _cases()[:2], progress=False, known=[])
    assert {r.status for r in bad} == {"fail"}
    assert all(r.verdict.worst_ulps > 1e3 for r in bad)


def test_run_conformance_known_discrepancies_give_xfail_and_xpass():
    known = [{"framework": "fake", "id": "eps-outside-sqrt", "cases": ["layer_norm/affine/*"],
              "dtypes": ["*"], "checks": ["forward"], "reason": "eps outside the sqrt",
              "figures": "-", "issue": None}]
    bad = C.run_conformance(WrongAdapter(), _cases()[:2], progress=False, known=known)
    st = {(r.case_id, r.dtype): r.status for r in bad}
    assert st[("layer_norm/affine/s0", "float32")] == "xfail"
    assert st[("layer_norm/plain/s0", "float32")] == "fail"
    good = C.run_conformance(FakeAdapter(), _cases()[:1], progress=False, known=known)
    assert {r.status for r in good} == {"xpass"}
    assert "eps outside the sqrt" in good[0].reason


def test_run_conformance_errors_and_unsupported():
    class Crashing(FakeAdapter):
        def run(self, case, dtype):
            raise RuntimeError("kernel exploded")

    res = C.run_conformance(Crashing(), _cases()[:1], progress=False, known=[])
    assert [r.status for r in res] == ["error", "error"]
    assert "kernel exploded" in res[0].reason
    c = dataclasses.replace(C.case_from_id("layer_norm/affine/s0"), id="layer_norm/unsupported/s0")
    res = C.run_conformance(FakeAdapter(), [c], progress=False, known=[])
    assert [r.status for r in res] == ["skip", "skip"] and res[0].reason == "no such thing"


def test_format_table_and_json():
    res = C.run_conformance(WrongAdapter(), _cases(), progress=False, known=[])
    table = C.format_table(res)
    assert "layer_norm" in table and "forward" in table and "float32" in table
    assert "total: 0 pass, 4 fail" in table
    js = C.results_json(res)
    json.dumps(js)
    assert js[0]["status"] == "fail" and js[0]["worst_ulps"] > 1e3


def test_known_discrepancies_file_is_valid():
    entries = C.load_known_discrepancies()
    assert isinstance(entries, list) and entries
    for e in entries:
        assert e["framework"] in ADAPTERS and e["reason"] and e["figures"]
    # one file per target, named for it (the loader checks the "framework" in each)
    names = {n[:-5] for n in os.listdir(C.KNOWN_DISCREPANCIES_DIR) if n.endswith(".json")}
    assert {e["framework"] for e in entries} <= names - {"second_order"} <= set(ADAPTERS)


def test_get_adapter_rejects_unknown_names():
    with pytest.raises(ValueError, match="onnx-reference"):
        get_adapter("mxnet")


# -- CLI ---------------------------------------------------------------------

def test_cli_conform_exit_codes(monkeypatch, tmp_path, capsys):
    import normref.testing.adapters as adapters

    monkeypatch.setattr(adapters, "get_adapter", lambda name: FakeAdapter())
    out = tmp_path / "r.json"
    rc = cli.main(["conform", "--target", "torch", "--names", "layer_norm", "--json", str(out),
                   "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0 and "layer_norm" in text
    data = json.loads(out.read_text())
    assert any(r["status"] == "pass" for r in data["results"])
    assert not any(r["status"] in ("fail", "error") for r in data["results"])

    monkeypatch.setattr(adapters, "get_adapter", lambda name: WrongAdapter())
    rc = cli.main(["conform", "--target", "torch", "--names", "layer_norm", "--dtype", "float64",
                   "--quiet"])
    text = capsys.readouterr().out
    assert rc == 1
    assert "unexpected failures" in text and "layer_norm/affine/s0" in text


# -- assert_conforms ---------------------------------------------------------

def _ln(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    return _numpy_layer_norm(x, normalized_shape, weight, bias, eps)


def _ln_eps_outside(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    return _numpy_layer_norm(x, normalized_shape, weight, bias, eps, wrong=True)


def test_assert_conforms_numpy_pass_and_fail_with_reproducer():
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((3, 6)), rng.standard_normal(6), rng.standard_normal(6)
    assert_conforms(_ln, "layer_norm", x, (6,), w, b, eps=0.1, framework="numpy")
    assert_conforms(_ln, "layer_norm", x.astype(np.float32), (6,), w.astype(np.float32),
                    b.astype(np.float32), eps=0.1)  # detected: numpy
    with pytest.raises(AssertionError) as info:
        assert_conforms(_ln_eps_outside, "layer_norm", x, (6,), w, b, eps=0.1, framework="numpy")
    msg = str(info.value)
    assert "ulps" in msg and "reproducer" in msg and "layer_norm" in msg and "forward" in msg
    assert "worst element" in msg and "float64" in msg
    snippet = msg.split("reproducer:\n", 1)[1]
    with pytest.raises(AssertionError) as again:
        exec(snippet, {"candidate": _ln_eps_outside})
    assert "forward [float64]" in str(again.value)
    # the reproducer's arrays are exact copies
    ns = {"candidate": _ln}
    exec(snippet, ns)  # the correct implementation passes on the same data


def test_assert_conforms_large_arrays_go_to_npz(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMREF_REPRO_DIR", str(tmp_path))  # (without it, no file is written)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((10, 8))
    with pytest.raises(AssertionError) as info:
        assert_conforms(_ln_eps_outside, "layer_norm", x, (8,), eps=0.5, framework="numpy")
    snippet = str(info.value).split("reproducer:\n", 1)[1]
    assert "np.load(" in snippet and ".npz" in snippet
    with pytest.raises(AssertionError):
        exec(snippet, {"candidate": _ln_eps_outside})


def test_assert_conforms_checks_running_statistics_numpy():
    def bn(x, rm, rv, w=None, b=None, training=False, momentum=0.1, eps=1e-5, reverse=False):
        m = x.mean(axis=(0, 2))
        v = x.var(axis=(0, 2))
        n = x.shape[0] * x.shape[2]
        f = (1 - momentum) if reverse else momentum
        rm[...] = (1 - f) * rm + f * m
        rv[...] = (1 - f) * rv + f * v * n / (n - 1)
        return (x - m[:, None]) / np.sqrt(v[:, None] + eps)

    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 5))
    rm, rv = np.zeros(3), np.ones(3)
    assert_conforms(bn, "batch_norm", x, rm, rv, None, None, True, 0.1, 1e-5, framework="numpy")
    assert np.array_equal(rm, np.zeros(3))  # the caller's arrays are left alone
    with pytest.raises(AssertionError, match="state:running_mean"):
        assert_conforms(lambda *a: bn(*a, reverse=True), "batch_norm", x, rm, rv, None, None,
                        True, 0.1, 1e-5, framework="numpy")


def test_assert_conforms_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown normalizer"):
        assert_conforms(_ln, "layer_nrom", np.ones((2, 3)), (3,))
    with pytest.raises(ValueError, match="framework"):
        assert_conforms(_ln, "layer_norm", np.ones((2, 3)), (3,), framework="tf")


def test_assert_conforms_torch_forward_and_gradients():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(6)
    x, w, b = rng.standard_normal((3, 6)), rng.standard_normal(6), rng.standard_normal(6)
    assert_conforms(F.layer_norm, "layer_norm", x, (6,), w, b, eps=1e-3)  # detected: torch
    assert_conforms(F.layer_norm, "layer_norm", x.astype(np.float32), (6,), w.astype(np.float32),
                    b.astype(np.float32), framework="torch")

    def detached(*a, **k):
        return F.layer_norm(*a, **k).detach()

    with pytest.raises(AssertionError, match="no gradient"):
        assert_conforms(detached, "layer_norm", x, (6,), w, b, framework="torch")

    def wrong_grad(x, shape, w=None, b=None, eps=1e-5):
        # correct forward, backward missing the mean-of-dy term (stop-gradient on the mean)
        m = x.detach().mean(-1, keepdim=True)
        v = x.var(-1, unbiased=False, keepdim=True)
        return (x - m) / torch.sqrt(v + eps) * w + b

    with pytest.raises(AssertionError, match="backward:input"):
        assert_conforms(wrong_grad, "layer_norm", x, (6,), w, b, framework="torch")


# -- the catalogue reads the registry; one tolerance rule ---------------------

def test_catalogue_entries_are_declared_by_the_normalizers():
    from normref.catalogue import Catalogue
    from normref.testing.conformance.build import ADVERSARIAL

    for name in C.catalogued():
        cat = normref.REGISTRY[name].catalogue
        assert isinstance(cat, Catalogue)
        # an exclusion names a shared adversarial variant (a typo would silently keep it)
        assert set(cat.exclude) <= set(ADVERSARIAL), name
        assert not set(cat.only) & set(ADVERSARIAL), name
        got = C.variants(name)
        for v in cat.exclude:
            assert v not in got, (name, v)
        for v, (row, _) in cat.only.items():
            assert got[v][0] == row
        for v in cat.variants:
            assert got[v] == (None, C.build.RANDOM_SEEDS)
    assert "n1_spatial" in C.variants("batch_norm") and "n1_spatial" not in C.variants("layer_norm")
    assert "identity_cov" not in C.variants("pca_whitening")
    assert "identity_cov" in C.variants("zca_whitening")
    assert "neg_eps_momentum" not in C.variants("mean_variance_norm")


def test_shift_sensitive_and_slots_are_trait_queries():
    from normref.tolerance import shift_sensitive

    assert C.SHIFT_SENSITIVE == {n for n, s in normref.REGISTRY.items() if s.centres and not s.whitening}
    assert {"batch_norm", "layer_norm", "mean_variance_norm"} <= C.SHIFT_SENSITIVE
    assert not {"rms_norm", "zca_whitening", "weight_norm"} & C.SHIFT_SENSITIVE
    assert not shift_sensitive(None)
    # row 19 writes the eps and momentum slots the signature names
    for name in ("batch_norm", "ghost_batch_norm", "layer_norm"):
        spec = normref.REGISTRY[name]
        c = C.case_from_id(f"{name}/neg_eps_momentum/s0")
        assert c.args[spec.slot("eps")] == -0.5
        if spec.slot("momentum") is not None:
            assert c.args[spec.slot("momentum")] == -1.2


def test_a_registered_catalogue_joins_the_catalogue_and_ids():
    from normref.catalogue import Catalogue
    from normref.registry import registered

    base_spec = normref.REGISTRY["rms_norm"]
    seen = []

    def base(rng, options, h):
        seen.append(dict(options))
        x = h.data(rng, (options.get("n", 3), 4))
        return [x, (4,), None, 1e-3], {}, (), (0,)

    def mine(input, normalized_shape, weight=None, eps=None):
        return normref.rms_norm(input, normalized_shape, weight, eps)

    cat = Catalogue(base=base, variants={"plain": {}},
                    exclude={"huge1e300": "test: excluded with a reason"},
                    only={"mine_row": ("7", {"n": 2})})
    spec = normref.registry.Spec(**{**base_spec.__dict__, "name": "my_rms", "function": mine,
                                    "catalogue": cat, "user": True})
    with registered(spec):
        assert "my_rms" in C.catalogued()
        vs = C.variants("my_rms")
        assert vs["plain"] == (None, 3) and vs["mine_row"] == ("7", 1)
        assert "huge1e300" not in vs and "offset1e8" not in vs  # rms does not centre
        ids = [c.id for c in C.catalogue("my_rms")]
        assert "my_rms/plain/s2" in ids and "my_rms/mine_row/s0" in ids
        c = C.case_from_id("my_rms/mine_row/s0")
        assert c.args[0].shape == (2, 4) and seen[-1] == {"n": 2}
        # a shared row applied to the base drawn from the id's seed
        r = C.case_from_id("my_rms/offset1e4/s0")
        rng = np.random.default_rng([C.cases.seed_of("my_rms/offset1e4"), 0])
        drawn = base(rng, {}, C.helpers)[0][0]
        assert np.array_equal(r.args[0], drawn + 1e4) and r.row == "1"
    assert "my_rms" not in C.catalogued()
    with pytest.raises(ValueError, match="my_rms"):
        C.case_from_id("my_rms/plain/s0")
    # an exclusion must name a shared variant, a variant of its own must not reuse one
    for bad in (Catalogue(base=base, variants={"plain": {}}, exclude={"offset1e5": "typo"}),
                Catalogue(base=base, variants={"offset1e4": {}})):
        with registered(dataclasses.replace(spec, catalogue=bad)):
            with pytest.raises(ValueError, match="my_rms: catalogue"):
                C.catalogue("my_rms")


def test_catalogue_rejects_bad_declarations():
    from normref.catalogue import Catalogue

    def base(rng, o, h):
        return [], {}, (), ()

    with pytest.raises(TypeError, match="base"):
        Catalogue(base=None, variants={"a": {}})
    with pytest.raises(ValueError, match="variants"):
        Catalogue(base=base, variants={})
    with pytest.raises(TypeError, match="options"):
        Catalogue(base=base, variants={"a": 3})
    with pytest.raises(ValueError, match="reason"):
        Catalogue(base=base, variants={"a": {}}, exclude={"offset1e4": ""})
    with pytest.raises(TypeError, match="only"):
        Catalogue(base=base, variants={"a": {}}, only={"b": {"n": 1}})
    with pytest.raises(ValueError, match="'/'"):
        Catalogue(base=base, variants={"a/b": {}})
    with pytest.raises(ValueError, match="twice"):
        Catalogue(base=base, variants={"a": {}}, only={"a": ("4", {})})


def test_check_and_judge_share_one_tolerance_rule():
    from normref import check, tolerance as T

    assert C.TOLERANCE_BASE is T.ULPS
    assert check.FORWARD_ULPS == T.ULPS["forward"] and check.DERIVATIVE_ULPS == T.ULPS["backward"]
    assert check.case_cond is T.case_cond and check.cond is T.cond
    c = C.round_to(C.case_from_id("layer_norm/offset1e4/s0"), "float32")
    kappa = C.case_conditioning(c)
    assert kappa == T.conditioning(normref.REGISTRY["layer_norm"], c, "float32") > 1e3
    v = C.judge(c, np.ones(3), np.ones(3), "float32", "backward:input", cond=kappa)
    assert v.tolerance_ulps == T.tolerance("backward", kappa) == 64.0 * kappa
    spec = normref.REGISTRY["layer_norm"]
    case = spec.examples(np.random.default_rng(1234))[0]
    err, tol = check.forward_error(spec, case)
    assert tol == T.tolerance("forward", T.case_cond(spec, case), T.EPS)
    with pytest.raises(ValueError, match="kind"):
        T.tolerance("sideways", 1.0)


def test_rounding_scale_is_the_terms_of_the_derivative_with_the_centring_floor():
    from normref.tolerance import rounding_scale

    J = np.array([[1.0, -2.0], [0.5, 0.0], [0.0, 3.0]])  # y of 3, p of 2
    v = np.array([1.0, -2.0, 0.5])
    y, x = np.zeros(3), np.array([1.0, 3.0])
    assert np.array_equal(rounding_scale(J, v, y, x), np.abs(J).T @ np.abs(v))
    assert np.array_equal(rounding_scale(J, [1.0, 1.0], y, x, transpose=False), np.abs(J) @ [1, 1])
    floor = np.sqrt(np.mean(v ** 2)) * 1.0 / np.std(x)
    t = rounding_scale(np.zeros((3, 2)), v, y, x, floor=True)
    assert np.allclose(t, floor) and t.shape == (2,)
    Jn = J.copy()
    Jn[0, 0] = np.nan
    assert rounding_scale(Jn, v, y, x)[0] == 0.5 * 2.0


def test_catalogue_and_tolerance_modules_are_leaves():
    """normref.catalogue imports the standard library only, normref.tolerance nothing of
    normref, and the conformance package never imports normref.check (no cycle
    check -> testing -> conformance -> check), function-local imports included."""
    import ast
    import os
    import sys

    import normref.catalogue
    import normref.testing.conformance as pkg
    import normref.tolerance

    def imported(path):
        out = set()
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Import):
                out |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = "." * node.level + (node.module or "")
                out.add(base)
                out |= {base.rstrip(".") + "." + a.name if node.module else base + a.name
                        for a in node.names}
        return out

    cat = imported(normref.catalogue.__file__)
    assert all(m.split(".")[0] in sys.stdlib_module_names for m in cat), cat
    assert not {m for m in imported(normref.tolerance.__file__) if m.startswith(".") or "normref" in m}
    folder = os.path.dirname(pkg.__file__)
    for f in os.listdir(folder):
        if f.endswith(".py"):
            mods = imported(os.path.join(folder, f))
            assert not {m for m in mods if m.endswith("check") and "gradcheck" not in m}, f
