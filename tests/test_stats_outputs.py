"""Statistics as outputs: ``return_stats=True`` on the normalizers that take it.

Every normalizer whose signature has the keyword (found in the registry) returns
``(y, mean, rstd)`` -- ``(y, rstd)`` when it does not centre -- and its
derivatives take / give one entry per output.  Checked here: the registry's
example cases through the same reference-vs-kernel and finite-difference
measures ``python -m normref check`` uses; torch's native_layer_norm /
native_batch_norm / native_group_norm (and ``_fused_rms_norm``) in float64; ONNX
LayerNormalization's three outputs in onnx.reference and onnxruntime, float32 and
float64; exactness against mpmath at offset 1e8 (values and derivatives); the
default (keyword False) bit for bit unchanged; bad keyword values and bad
cotangents rejected with errors naming them; seeded defects caught.
"""
import dataclasses
import inspect

import numpy as np
import pytest

import normref
from normref.numerics import ulp_distance, ulps_of
from normref.registry import REGISTRY
from normref.standardize import Standardization
from normref.verification import check_case, forward_error, jvp_error, vjp_error

#: every registered normalizer that offers the statistics as outputs
STATS = sorted(n for n, s in REGISTRY.items()
               if "return_stats" in inspect.signature(s.function).parameters)
EPS32 = float(np.finfo(np.float32).eps)


def _cases(name):
    spec = REGISTRY[name]
    return [dataclasses.replace(c, kwargs={**c.kwargs, "return_stats": True})
            for c in spec.examples(np.random.default_rng(1234))]


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b), initial=0)) / max(1.0, float(np.max(np.abs(b), initial=0)))


def test_the_four_standardizers_offer_their_statistics():
    assert {"batch_norm", "group_norm", "layer_norm", "rms_norm"} <= set(STATS)
    for name in STATS:
        assert inspect.signature(REGISTRY[name].function).parameters["return_stats"].default is False
        assert "return_stats" in inspect.signature(REGISTRY[name].reference).parameters


# ------------------------------------------------------------ the registry's checks
@pytest.mark.parametrize("name", STATS)
def test_examples_pass_every_reference_and_finite_difference_check(name):
    """forward, VJP, JVP, dense Jacobian, VJP / JVP vs finite differences of the tuple
    output, each within the tolerance of ``python -m normref check``."""
    spec = REGISTRY[name]
    for i, case in enumerate(_cases(name)):
        out = spec.function(*case.fresh_args(), **case.kwargs)
        assert isinstance(out, tuple) and len(out) == (3 if spec.centres else 2)
        assert all(type(o) is np.ndarray and o.dtype == np.float64 for o in out)
        assert out[-1].shape == out[1].shape
        for check, (err, tol) in check_case(spec, case, seed=i).items():
            assert err <= tol, f"{name} [{case.label}] {check}: {err:.3e} > {tol:.3e}"


@pytest.mark.parametrize("name", STATS)
def test_default_is_unchanged_and_y_is_the_same_bits(name):
    spec = REGISTRY[name]
    rng = np.random.default_rng(3)
    for case in spec.examples(np.random.default_rng(1234)):
        y0 = spec.function(*case.fresh_args(), **case.kwargs)
        y_false = spec.function(*case.fresh_args(), **case.kwargs, return_stats=False)
        assert type(y_false) is np.ndarray and np.array_equal(y0, y_false)
        y1, *stats = spec.function(*case.fresh_args(), **case.kwargs, return_stats=True)
        assert np.array_equal(y0, y1)
        # the output's own cotangent / tangent: the same derivatives as without the keyword
        _, pb0 = normref.vjp(spec.function, *case.fresh_args(), **case.kwargs)
        _, pb1 = normref.vjp(spec.function, *case.fresh_args(), **case.kwargs, return_stats=True)
        dy = rng.standard_normal(y0.shape)
        for g0, g1 in zip(pb0(dy), pb1((dy,) + (None,) * len(stats))):
            assert (g0 is None) == (g1 is None)
            assert g0 is None or np.array_equal(g0, g1)
        tans = [rng.standard_normal(np.shape(a)) if g is not None else None
                for a, g in zip(case.args, pb0(dy))]
        _, t0 = normref.jvp(spec.function, case.fresh_args(), tans, **case.kwargs)
        _, t1 = normref.jvp(spec.function, case.fresh_args(), tans, **case.kwargs,
                            return_stats=True)
        assert isinstance(t1, tuple) and np.array_equal(t0, t1[0])


def test_running_statistics_update_as_without_the_keyword():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 3, 4)) * 2 + 1
    bufs = [(rng.standard_normal(3), rng.uniform(0.5, 2, 3)) for _ in range(2)]
    rm0, rv0 = bufs[0][0].copy(), bufs[0][1].copy()
    rm1, rv1 = rm0.copy(), rv0.copy()
    y0 = normref.batch_norm(x, rm0, rv0, None, None, True, 0.3)
    y1, mean, rstd = normref.batch_norm(x, rm1, rv1, None, None, True, 0.3, return_stats=True)
    assert np.array_equal(y0, y1) and np.array_equal(rm0, rm1) and np.array_equal(rv0, rv1)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2)), rtol=1e-15)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(x.var(axis=(0, 2)) + 1e-5), rtol=1e-15)


# ------------------------------------------------------------ torch (float64)
@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _t(torch, a):
    return None if a is None else torch.tensor(np.asarray(a, dtype=np.float64))


@pytest.mark.parametrize("k", [1, 2])
def test_layer_norm_matches_torch_native_layer_norm(torch, k):
    rng = np.random.default_rng(10 + k)
    x = rng.standard_normal((2, 3, 4, 5)) * 3 - 1
    shape = x.shape[4 - k:]
    w, b = rng.standard_normal(shape), rng.standard_normal(shape)
    ours = normref.layer_norm(x, shape, w, b, 1e-3, return_stats=True)
    theirs = torch.native_layer_norm(_t(torch, x), list(shape), _t(torch, w), _t(torch, b), 1e-3)
    assert ours[1].shape == tuple(theirs[1].shape) == x.shape[:4 - k] + (1,) * k
    for a, t in zip(ours, theirs):
        assert a.shape == tuple(t.shape) and _rel(a, t.numpy()) <= 1e-14
    # torch returns the statistics in the input's dtype
    t32 = torch.native_layer_norm(_t(torch, x).float(), list(shape), None, None, 1e-3)
    assert t32[1].dtype == t32[2].dtype == torch.float32


def test_batch_norm_matches_torch_native_batch_norm(torch):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((4, 3, 2, 5)) * 2 + 3
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    ours = normref.batch_norm(x, None, None, w, b, True, 0.1, 1e-4, return_stats=True)
    theirs = torch.native_batch_norm(_t(torch, x), _t(torch, w), _t(torch, b), None, None,
                                     True, 0.1, 1e-4)
    for a, t in zip(ours, theirs):  # y, save_mean, save_invstd
        assert a.shape == tuple(t.shape) and _rel(a, t.numpy()) <= 1e-14
    # channels-last gives the same per-channel statistics
    last = normref.batch_norm(np.moveaxis(x, 1, -1).copy(), None, None, w, b, True, 0.1, 1e-4,
                              channel_axis=-1, return_stats=True)
    for a, c in zip(ours[1:], last[1:]):
        np.testing.assert_array_equal(a, c)
    # eval: torch saves nothing (empty tensors); normref returns the statistics it used
    rm, rv = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3)
    te = torch.native_batch_norm(_t(torch, x), None, None, _t(torch, rm), _t(torch, rv),
                                 False, 0.1, 1e-4)
    assert te[1].numel() == 0 and te[2].numel() == 0
    y, mean, rstd = normref.batch_norm(x, rm, rv, None, None, False, 0.1, 1e-4, return_stats=True)
    assert _rel(y, te[0].numpy()) <= 1e-14
    assert np.array_equal(mean, rm) and not np.shares_memory(mean, rm)
    assert np.array_equal(rstd, 1.0 / np.sqrt(rv + 1e-4))


@pytest.mark.parametrize("G", [1, 2, 6])
def test_group_norm_matches_torch_native_group_norm(torch, G):
    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, 6, 4, 2)) * 2 - 1
    w, b = rng.standard_normal(6), rng.standard_normal(6)
    ours = normref.group_norm(x, G, w, b, 1e-4, return_stats=True)
    theirs = torch.native_group_norm(_t(torch, x), _t(torch, w), _t(torch, b), 3, 6, 8, G, 1e-4)
    assert ours[1].shape == (3, G)
    for a, t in zip(ours, theirs):
        assert a.shape == tuple(t.shape) and _rel(a, t.numpy()) <= 1e-14


def test_rms_norm_matches_torch_fused_rms_norm(torch):
    if not hasattr(torch, "_fused_rms_norm"):
        pytest.skip("this torch has no _fused_rms_norm")
    rng = np.random.default_rng(14)
    x = rng.standard_normal((2, 3, 4, 5)) * 2 + 1
    w = rng.standard_normal((4, 5))
    y, rstd = normref.rms_norm(x, (4, 5), w, 1e-4, return_stats=True)
    ty, trstd = torch._fused_rms_norm(_t(torch, x), [4, 5], _t(torch, w), 1e-4)
    assert rstd.shape == tuple(trstd.shape) == (2, 3, 1, 1)
    assert _rel(y, ty.numpy()) <= 1e-14 and _rel(rstd, trstd.numpy()) <= 1e-14


# ------------------------------------------------------------ ONNX LayerNormalization
def _onnx_layer_norm(shape, k, dtype, eps):
    """LayerNormalization-17 with all three outputs (Mean / InvStdDev: float32, the
    schema's stash type)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    elem = {np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE}[dtype]
    red = list(shape[:len(shape) - k]) + [1] * k
    node = helper.make_node("LayerNormalization", ["X", "Scale", "B"], ["Y", "Mean", "InvStdDev"],
                            axis=-k, epsilon=eps, stash_type=1)
    graph = helper.make_graph(
        [node], "layer_norm_stats",
        [helper.make_tensor_value_info("X", elem, list(shape)),
         helper.make_tensor_value_info("Scale", elem, list(shape[-k:])),
         helper.make_tensor_value_info("B", elem, list(shape[-k:]))],
        [helper.make_tensor_value_info("Y", elem, list(shape)),
         helper.make_tensor_value_info("Mean", TensorProto.FLOAT, red),
         helper.make_tensor_value_info("InvStdDev", TensorProto.FLOAT, red)])
    opset = helper.make_opsetid("", 17)
    model = helper.make_model(graph, opset_imports=[opset],
                              ir_version=helper.find_min_ir_version_for([opset]))
    onnx.checker.check_model(model)
    return model


def _run_onnx(runtime, model, feeds):
    if runtime == "onnxruntime":
        ort = pytest.importorskip("onnxruntime")
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, feeds)
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model).run(None, feeds)


@pytest.mark.parametrize("runtime", ["onnx-reference", "onnxruntime"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,k", [((3, 4, 5), 1), ((2, 3, 4, 5), 2)])
def test_layer_norm_matches_onnx_layer_normalization(runtime, dtype, shape, k):
    rng = np.random.default_rng(20 + k)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in (shape, shape[-k:], shape[-k:]))
    x = (x * 3 + 1).astype(dtype)
    eps = float(np.float32(1e-5))  # an ONNX float attribute
    model = _onnx_layer_norm(shape, k, dtype, eps)
    Y, Mean, Inv = _run_onnx(runtime, model, {"X": x, "Scale": w, "B": b})
    y, mean, rstd = normref.layer_norm(x.astype(np.float64), shape[-k:], w.astype(np.float64),
                                       b.astype(np.float64), eps, return_stats=True)
    assert Mean.shape == mean.shape == shape[:len(shape) - k] + (1,) * k == Inv.shape
    # the spread of the tightest group: 1 / rstd^2 = var + eps
    cond = 1.0 + float(np.abs(x).max()) / float(np.sqrt(1.0 / rstd.max() ** 2 - eps))
    if dtype == np.float32:  # ONNX computes in float32 (stash_type 1)
        for a, o in ((y, Y), (mean, Mean), (rstd, Inv)):
            assert o.dtype == np.float32 and _rel(o, a) <= 8 * EPS32 * cond
        return
    assert Y.dtype == np.float64 and _rel(Y, y) <= 64 * np.finfo(float).eps * cond
    if runtime == "onnxruntime":
        # float64 in, statistics computed in double and returned rounded to float32
        assert Mean.dtype == Inv.dtype == np.float32
        assert ulp_distance(Mean, mean.astype(np.float32)).max() <= 1
        assert ulp_distance(Inv, rstd.astype(np.float32)).max() <= 1
    else:  # the reference evaluator keeps the input's dtype
        for a, o in ((mean, Mean), (rstd, Inv)):
            assert o.dtype == np.float64 and _rel(o, a) <= 64 * np.finfo(float).eps * cond


# ------------------------------------------------------------ exactness at offset 1e8
def _exact_stats(groups, eps, center=True):
    """mpmath (320 bits) mean and (var + eps)^-1/2 of each row of ``groups``."""
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workprec(320):
        means, rstds, devs = [], [], []
        for row in groups:
            v = [mpmath.mpf(float(a)) for a in row]
            mu = mpmath.fsum(v) / len(v) if center else mpmath.mpf(0)
            var = mpmath.fsum((a - mu) ** 2 for a in v) / len(v)
            means.append(mu)
            rstds.append(1 / mpmath.sqrt(var + mpmath.mpf(eps)))
            devs.append([a - mu for a in v])
    return np.array(means, dtype=object), np.array(rstds, dtype=object), devs


def _offset_calls():
    rng = np.random.default_rng(8)
    eps = 1e-5
    xl = 1e8 + rng.standard_normal((5, 48))
    xb = 1e8 + rng.standard_normal((6, 3, 8))
    xg = 1e8 + rng.standard_normal((2, 6, 8))
    return [
        # (name, call, its groups as rows (in stats order), centres)
        ("layer_norm", lambda **kw: normref.layer_norm(xl, 48, eps=eps, **kw), xl, True),
        ("rms_norm", lambda **kw: normref.rms_norm(xl, 48, eps=eps, **kw), xl, False),
        ("batch_norm", lambda **kw: normref.batch_norm(xb, None, None, training=True, eps=eps, **kw),
         np.moveaxis(xb, 1, 0).reshape(3, -1), True),
        ("group_norm", lambda **kw: normref.group_norm(xg, 3, eps=eps, **kw),
         xg.reshape(6, -1), True),
    ], eps


def test_statistics_exact_at_offset_1e8():
    """The compensated mean within 1 ulp of the exact mean (0.5 measured), rstd within a
    few ulps, where a plain one-pass variance loses everything."""
    calls, eps = _offset_calls()
    for name, call, rows, centres in calls:
        out = call(return_stats=True)
        mean_ex, rstd_ex, _ = _exact_stats(rows, eps, center=centres)
        if centres:
            assert ulps_of(mean_ex, out[1].ravel()).max() <= 1.0, name
        assert ulps_of(rstd_ex, out[-1].ravel()).max() <= 4.0, name


def test_derivatives_of_the_statistics_exact_at_offset_1e8():
    """VJP / JVP of mean and rstd against the exact closed forms (mpmath):
    d mean / dx_j = 1/n, d rstd / dx_j = -rstd^3 (x_j - mean) / n."""
    mpmath = pytest.importorskip("mpmath")
    eps = 1e-5
    x = 1e8 + np.random.default_rng(8).standard_normal((5, 48))
    rng = np.random.default_rng(9)
    for f, centres in ((normref.layer_norm, True), (normref.rms_norm, False)):
        y, pullback = normref.vjp(f, x, 48, eps=eps, return_stats=True)
        _, rstd_ex, devs = _exact_stats(x, eps, center=centres)
        n = x.shape[1]
        dr = rng.standard_normal(y[-1].shape)
        got = pullback((None,) * (len(y) - 1) + (dr,))[0]
        with mpmath.workprec(320):
            exact = np.array([[float(-dr.ravel()[g] * rstd_ex[g] ** 3 * d / n) for d in devs[g]]
                              for g in range(len(devs))])
        # a few ulps of the largest entry (the textbook reference loses ~1e8 x more here)
        assert np.max(np.abs(got - exact)) <= 8 * 2.0 ** -52 * np.max(np.abs(exact)), f.__name__
        t = rng.standard_normal(x.shape)
        _, ty = normref.jvp(f, (x, 48), (t, None), eps=eps, return_stats=True)
        with mpmath.workprec(320):
            tr = [float(-rstd_ex[g] ** 3 * mpmath.fsum(d * mpmath.mpf(float(tt))
                                                      for d, tt in zip(devs[g], t[g])) / n)
                  for g in range(len(devs))]
        assert np.max(np.abs(ty[-1].ravel() - tr)) <= 8 * 2.0 ** -52 * np.max(np.abs(tr)), f.__name__
        if centres:  # the mean: dm / n exactly, and sum(t) / n to rounding
            dm = rng.standard_normal(y[1].shape)
            np.testing.assert_array_equal(pullback((None, dm, None))[0],
                                          np.broadcast_to(dm / n, x.shape))
            np.testing.assert_allclose(ty[1].ravel(), [float(mpmath.fsum(map(mpmath.mpf, r)) / n)
                                                       for r in t], rtol=4e-16, atol=1e-300)


def test_eval_statistics_are_differentiable_in_the_running_buffers():
    rng = np.random.default_rng(15)
    x = rng.standard_normal((4, 3, 2))
    rm, rv = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3)
    (y, mean, rstd), pullback = normref.vjp(normref.batch_norm, x, rm, rv, None, None, False,
                                            return_stats=True)
    dm, dr = rng.standard_normal(3), rng.standard_normal(3)
    gx, grm, grv, *_ = pullback((None, dm, dr))
    assert np.array_equal(gx, np.zeros(x.shape)) and np.array_equal(grm, dm)
    np.testing.assert_allclose(grv, -0.5 * rstd ** 3 * dr, rtol=1e-15)
    J = normref.jacobian(normref.batch_norm, x, rm, rv, None, None, False, wrt=2,
                         return_stats=True)
    assert [j.shape for j in J] == [x.shape + (3,), (3, 3), (3, 3)]
    np.testing.assert_array_equal(J[1], 0.0)
    np.testing.assert_allclose(J[2], np.diag(-0.5 * rstd ** 3), rtol=1e-15)


def test_jacobian_operator_of_the_tuple_output():
    rng = np.random.default_rng(16)
    x, w = rng.standard_normal((3, 6)) + 2, rng.standard_normal(6)
    Js = normref.jacobian(normref.layer_norm, x, 6, w, return_stats=True)
    assert [j.shape for j in Js] == [(3, 6, 3, 6), (3, 1, 3, 6), (3, 1, 3, 6)]
    dense = np.concatenate([j.reshape(-1, x.size) for j in Js])
    for wrt, p in ((0, x), (2, w)):
        op = normref.jacobian_operator(normref.layer_norm, x, 6, w, wrt=wrt, return_stats=True)
        D = np.concatenate([j.reshape(-1, p.size) for j in
                            normref.jacobian(normref.layer_norm, x, 6, w, wrt=wrt,
                                             return_stats=True)])
        assert op.shape == (x.size + 6, p.size)
        v, u = rng.standard_normal(p.size), rng.standard_normal(op.shape[0])
        np.testing.assert_allclose(op.matvec(v), D @ v, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(op.rmatvec(u), D.T @ u, rtol=1e-13, atol=1e-14)
    assert np.abs(dense[x.size:]).max() > 0  # the statistics do depend on x


def test_cotangents_of_any_magnitude_and_constant_groups():
    """A tuple cotangent scaled by 2^k gives exactly 2^k times the gradient (banded by
    magnitude); a constant group with eps = 1e-310 (rstd 1e155, c r^2 overflows) has the
    exact rstd derivative 0, not inf * 0."""
    rng = np.random.default_rng(18)
    x = rng.standard_normal((3, 6)) + 1
    y, pullback = normref.vjp(normref.layer_norm, x, 6, return_stats=True)
    cot = tuple(rng.standard_normal(o.shape) for o in y)
    base = pullback(cot)[0]
    for k in (-1000, -300, 300, 900):
        got = pullback(tuple(np.ldexp(c, k) for c in cot))[0]
        expect = np.ldexp(base, k)
        normal = np.abs(expect) >= 2.0 ** -1000
        assert np.array_equal(got[normal], expect[normal]), k
    xc = np.array([[1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    (_, mean, rstd), pullback = normref.vjp(normref.layer_norm, xc, 4, eps=1e-310,
                                            return_stats=True)
    assert rstd[0, 0] == 1.0 / np.sqrt(1e-310)  # ~1e155
    g = pullback((None, np.ones((2, 1)), np.ones((2, 1))))[0]
    d = xc[1] - 2.5
    np.testing.assert_array_equal(g[0], 0.25)
    np.testing.assert_allclose(g[1], 0.25 - rstd[1, 0] ** 3 * d / 4, rtol=1e-15)
    _, ty = normref.jvp(normref.layer_norm, (xc, 4), (np.ones((2, 4)), None), eps=1e-310,
                        return_stats=True)
    assert np.array_equal(ty[1].ravel(), [1.0, 1.0]) and ty[2][0, 0] == 0.0


# ------------------------------------------------------------ errors
@pytest.mark.parametrize("name", STATS)
@pytest.mark.parametrize("bad", ["yes", 1, 0, None, 1.0, np.array(True), [True]])
def test_invalid_return_stats_is_a_type_error(name, bad):
    case = REGISTRY[name].examples(np.random.default_rng(1234))[0]
    with pytest.raises(TypeError, match="return_stats must be a bool"):
        REGISTRY[name].function(*case.fresh_args(), **case.kwargs, return_stats=bad)


def test_bad_cotangents_name_the_output():
    x = np.random.default_rng(17).standard_normal((3, 4))
    (y, mean, rstd), pullback = normref.vjp(normref.layer_norm, x, 4, return_stats=True)
    with pytest.raises(TypeError, match="3 outputs.*tuple of 3 arrays"):
        pullback(np.zeros(y.shape))
    with pytest.raises(ValueError, match="2 entries, expected one per output"):
        pullback((np.zeros(y.shape), None))
    with pytest.raises(ValueError, match=r"cotangent\[1\] \(mean\) has shape \(3,\)"):
        pullback((None, np.zeros(3), None))
    with pytest.raises(TypeError, match="rstd"):
        pullback((None, None, "x"))
    assert all(np.array_equal(g, np.zeros(x.shape)) for g in pullback((None, None, None))[:1])


def test_empty_groups():
    y, mean, rstd = normref.layer_norm(np.zeros((0, 8)), 8, return_stats=True)
    assert y.shape == (0, 8) and mean.shape == rstd.shape == (0, 1)
    with pytest.raises(ValueError, match="groups of group_norm are empty"):
        normref.group_norm(np.zeros((2, 4, 0)), 2, return_stats=True)
    with pytest.raises(ValueError, match="groups of batch_norm are empty"):
        normref.batch_norm(np.zeros((0, 3)), None, None, training=True, return_stats=True)
    rm, rv = np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 0.5])
    y, mean, rstd = normref.batch_norm(np.zeros((0, 3)), rm, rv, return_stats=True)
    assert y.shape == (0, 3) and np.array_equal(mean, rm)
    assert np.array_equal(rstd, 1 / np.sqrt(rv + 1e-5))


# ------------------------------------------------------------ the checks can fail
def test_seeded_defects_in_the_statistics_are_caught(monkeypatch):
    spec = REGISTRY["layer_norm"]
    case = _cases("layer_norm")[0]
    rng = np.random.default_rng(0)
    slope = Standardization._rstd_slope
    monkeypatch.setattr(Standardization, "_rstd_slope", lambda self, w: slope(self, w) * (1 + 1e-7))
    for measure in (lambda: vjp_error(spec, case, rng), lambda: jvp_error(spec, case, rng)):
        err, tol = measure()
        assert err > tol
    monkeypatch.setattr(Standardization, "_rstd_slope", slope)
    err, tol = vjp_error(spec, case, rng)
    assert err <= tol
    mean = Standardization._flat_mean
    monkeypatch.setattr(Standardization, "_flat_mean", lambda self: mean(self) * (1 + 1e-12))
    err, tol = forward_error(spec, case)
    assert err > tol
