"""normref.analysis.invariance: Ba et al. Table 1 and the scale-invariance
identities of theory item 1, with failing controls."""
import functools
import types

import autograd.numpy as anp
import numpy as np
import pytest

import normref
from normref.analysis import claims as C
from normref.analysis import invariance as I
from normref.registry import REGISTRY

T = I.TRANSFORMATIONS

# Ba, Kiros & Hinton 2016, Table 1, written out here independently of the module
PAPER = {
    "batch_norm": (True, False, True, True, True, False),
    "weight_norm": (True, False, True, False, False, False),
    "layer_norm": (True, True, False, True, False, True),
}


@pytest.fixture(scope="module")
def table():
    return I.invariance_table(detail=True)


@pytest.fixture(scope="module")
def item1():
    return {n: I.scale_invariance_measurements(n) for n in ("batch_norm", "layer_norm", "weight_norm")}


def test_transformation_keys():
    assert T == ("weight_matrix_rescaling", "weight_matrix_recentering",
                 "weight_vector_rescaling", "dataset_rescaling", "dataset_recentering",
                 "single_case_rescaling")


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_rows_reproduced(table, name):
    tab, worst = table
    assert tuple(tab[name][k] for k in T) == PAPER[name]
    assert I.PAPER_TABLE1[name] == dict(zip(T, PAPER[name]))
    # the decision is far from the threshold either way
    for k in T:
        if tab[name][k]:
            assert worst[name][k] < 1e-14
        else:
            assert worst[name][k] > 1e-2


def test_every_registered_normalizer_gets_a_row(table):
    tab, _ = table
    expected = {n for n, s in REGISTRY.items() if s.family in ("activations", "weights")}
    assert set(tab) == expected
    for name, row in tab.items():
        assert tuple(row) == T, name
        assert all(isinstance(v, bool) for v in row.values()), name


@pytest.mark.parametrize("name,row", [
    # per-case standardizers behave like layer norm
    ("instance_norm", (True, True, False, True, False, True)),
    ("group_norm", (True, True, False, True, False, True)),
    ("positional_norm", (True, True, False, True, False, True)),
    # per-feature batch standardizers behave like batch norm
    ("mean_variance_norm", (True, False, True, True, True, False)),
    ("ghost_batch_norm", (True, False, True, True, True, False)),
    # no centering: loses the re-centering invariance of layer norm
    ("rms_norm", (True, False, False, True, False, True)),
    ("normalize", (True, False, False, True, False, True)),
    # statistics over batch and channel group: only global rescalings
    ("batch_group_norm", (True, False, False, True, False, False)),
    # k = 1 in the denominator: invariant to nothing
    ("local_response_norm", (False,) * 6),
])
def test_other_rows(table, name, row):
    assert tuple(table[0][name][k] for k in T) == row


def test_plain_linear_unit_is_invariant_to_nothing():
    tab = I.layer_invariances(lambda X, W: X @ W.T)
    assert tab == dict.fromkeys(T, False)


def test_eps_breaks_exact_invariance():
    """eps > 0: the rescalings are only approximate invariances."""
    layer = lambda X, W: normref.batch_norm(X @ W.T, None, None, training=True, eps=1e-1)  # noqa: E731
    tab, worst = I.layer_invariances(layer, detail=True)
    assert not tab["weight_matrix_rescaling"] and not tab["dataset_rescaling"]
    assert tab["dataset_recentering"]  # a shift leaves the variance, hence eps's effect, alone


def test_table_is_deterministic():
    assert I.invariance_table(["layer_norm"], seed=4) == I.invariance_table(["layer_norm"], seed=4)


def test_unknown_name():
    with pytest.raises(ValueError, match="no_such_norm.*registered: .*layer_norm"):
        I.invariance_table(["no_such_norm"])
    with pytest.raises(TypeError, match="normalizers must hold"):
        I.invariance_table([3.0])


def my_ln(x):
    """A user's layer norm in plain autograd.numpy, no eps, no normref."""
    m = anp.mean(x, axis=-1, keepdims=True)
    return (x - m) / anp.sqrt(anp.mean((x - m) ** 2, axis=-1, keepdims=True))


def test_user_callable_reproduces_the_layer_norm_row():
    """A plain callable on (N, features) gets a measured row keyed by its __name__:
    Ba et al.'s layer-norm row (PAPER written out above, not the module's table)."""
    from normref.analysis import invariance_table

    tab, worst = invariance_table([my_ln], eps=0, detail=True)
    assert list(tab) == ["my_ln"]
    assert tuple(tab["my_ln"][k] for k in T) == PAPER["layer_norm"]
    for k in T:  # far from the threshold either way
        assert worst["my_ln"][k] < 1e-14 if tab["my_ln"][k] else worst["my_ln"][k] > 1e-2


def test_user_callable_without_centring_loses_recentering():
    def my_rms(x):
        return x / anp.sqrt(anp.mean(x * x, axis=-1, keepdims=True))

    row = I.invariance_table([my_rms])["my_rms"]
    assert not row["weight_matrix_recentering"] and row["single_case_rescaling"]


def test_names_functions_and_callables_mix():
    tab = I.invariance_table(["batch_norm", normref.layer_norm, my_ln], seed=2)
    assert list(tab) == ["batch_norm", "layer_norm", "my_ln"]
    assert tab["layer_norm"] == tab["my_ln"]
    assert tab["layer_norm"] == I.invariance_table(["layer_norm"], seed=2)["layer_norm"]
    with pytest.raises(ValueError, match="keyed 'layer_norm'"):
        I.invariance_table(["layer_norm", normref.layer_norm])


def test_table_eps_reaches_the_normalizers():
    """eps > 0 breaks the exact rescaling invariances of batch norm (eps inside the root);
    local response norm, which has no eps, is unaffected."""
    tab0 = I.invariance_table(["batch_norm", "local_response_norm"])
    tab1 = I.invariance_table(["batch_norm", "local_response_norm"], eps=1e-1)
    assert tab0["batch_norm"]["dataset_rescaling"] and not tab1["batch_norm"]["dataset_rescaling"]
    assert tab1["batch_norm"]["dataset_recentering"]
    assert tab0["local_response_norm"] == tab1["local_response_norm"]


def test_table_layer_follows_the_layer_fact():
    """table_layer applies the module's LayerCall: group norm with 3 groups of 4."""
    rng = np.random.default_rng(3)
    X, W = rng.standard_normal((I.N_CASES, I.D_IN)), rng.standard_normal((I.D_OUT, I.D_IN))
    got = I.table_layer("group_norm")(X, W)
    A = (X @ W.T).reshape(I.N_CASES, 3, 4)
    want = ((A - A.mean(-1, keepdims=True)) / A.std(-1, keepdims=True)).reshape(I.N_CASES, -1)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    # weight norm is a weight normalizer: h = X wn(W, g)^T, one norm per row of W
    h = I.table_layer("weight_norm")(X, W)
    g = np.linspace(0.5, 1.5, I.D_OUT)
    np.testing.assert_allclose(h, X @ (W * (g / np.linalg.norm(W, axis=1))[:, None]).T,
                               rtol=1e-13, atol=1e-13)


def test_a_registered_normalizer_without_layer_fact_is_tried_as_f_of_A():
    """A user's registration with no layer= fact: f(X W^T) with the table's eps."""
    import dataclasses

    from normref.registry import registered

    base = REGISTRY["rms_norm"]

    def my_registered_rms(input, eps=1e-5):
        return normref.rms_norm(input, (input.shape[-1],), eps=eps)

    spec = dataclasses.replace(base, name="my_registered_rms", function=my_registered_rms,
                               layer=None, strategy=None, catalogue=None, user=True)
    with registered(spec):
        row = I.invariance_table(["my_registered_rms"])["my_registered_rms"]
    assert row == I.invariance_table(["rms_norm"])["rms_norm"]


# -- item 1 -------------------------------------------------------------------

RESIDUALS = ("loss", "grad", "hessian", "euler", "hw", "curvature_w", "null_at_min")


@pytest.mark.parametrize("name", ["batch_norm", "layer_norm", "weight_norm"])
@pytest.mark.parametrize("key", RESIDUALS)
def test_item1_residuals_tiny(item1, name, key):
    assert item1[name][key] < 1e-10


@pytest.mark.parametrize("name,dim", [("batch_norm", 3), ("layer_norm", 8), ("weight_norm", 3)])
def test_item1_condition_number_on_complement(item1, name, dim):
    m = item1[name]
    assert m["complement_dim"] == dim
    assert abs(m["kappa_meas"] - m["kappa_pred"]) <= 1e-8 * m["kappa_pred"]
    assert 1.0 < m["kappa_pred"] < 1e4
    # the full Hessian at the minimum is singular along w
    assert m["kappa_full"] > 1e12


def test_gradient_scales_like_one_over_a():
    p = I._PROBLEMS["batch_norm"](np.random.default_rng(1))
    t = np.random.default_rng(2).standard_normal(8)
    g1, g5 = p.grad(p.w, t), p.grad(5.0 * p.w, t)
    np.testing.assert_allclose(g5, g1 / 5.0, rtol=1e-12, atol=1e-15)


def test_provider_registered_and_all_pass():
    rows = C.CLAIM_PROVIDERS["invariance"]()
    assert len(rows) == 3 * 8 + 18
    assert len({r.id for r in rows}) == len(rows)
    assert all(r.passed for r in rows), [r.id for r in rows if not r.passed]
    ids = {r.id for r in rows}
    assert "item1.loss_scale_invariance.batch_norm" in ids
    assert "item2.invariance_table.layer_norm.single_case_rescaling" in ids
    d = rows[0].as_dict()
    assert set(d) == {"id", "claim", "source", "predicted", "measured", "tolerance", "passed",
                          "alternatives"}
    cell = next(r for r in rows if r.id == "item2.invariance_table.weight_norm.dataset_rescaling")
    assert (cell.predicted, cell.measured) == ("not invariant", "not invariant")


def test_all_claims_includes_invariance():
    rows = C.all_claims(["invariance"])
    assert any(r.id.startswith("item1.hessian_scaling") for r in rows)


# -- failing controls ---------------------------------------------------------

def _linear_problem(rng):
    """A plain linear unit y = X w: not scale invariant."""
    X = rng.standard_normal((8, 4))
    return types.SimpleNamespace(
        name="linear", w=rng.standard_normal(4), desc="linear unit y = X w",
        y=lambda w: X @ w,
        grad=lambda w, t: X.T @ (X @ w - t),
        L_ref=lambda w, t: 0.5 * anp.sum((anp.dot(X, w) - t) ** 2),
        jac=lambda w: X,
        invariant_dirs=lambda w: w[:, None],
    )


def test_linear_unit_fails_scale_invariance_rows():
    rows = {r.id.split(".")[1]: r for r in
            I.scale_invariance_claims(["linear"], problems={"linear": _linear_problem})}
    for key in ("loss_scale_invariance", "grad_scaling", "hessian_scaling", "grad_orthogonal_w",
                "hessian_w_equals_minus_grad", "zero_curvature_along_w", "hessian_singular_along_w"):
        assert not rows[key].passed, key
        assert rows[key].measured > 1e-3, key
    # the Hessian of a linear least-squares unit is X^T X, at any scale
    assert rows["condition_number_complement"].passed


def test_bn_with_eps_fails_scale_invariance_rows():
    prob = functools.partial(I._bn_problem, eps=0.5)
    rows = {r.id.split(".")[1]: r for r in
            I.scale_invariance_claims(["batch_norm"], problems={"batch_norm": prob})}
    assert not rows["loss_scale_invariance"].passed
    assert not rows["grad_orthogonal_w"].passed
    assert rows["loss_scale_invariance"].measured > 1e-4


def test_wrong_table_gives_failing_cells():
    wrong = I.invariance_table(["rms_norm"])  # rms norm is not re-centering invariant
    rows = I.invariance_claims(["layer_norm"], table={"layer_norm": wrong["rms_norm"]})
    failed = [r.id for r in rows if not r.passed]
    assert failed == ["item2.invariance_table.layer_norm.weight_matrix_recentering"]
