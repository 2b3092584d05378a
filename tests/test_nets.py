"""normref.nets: exact gradients of small networks built from normref layers.

The oracle is an autograd.numpy network written out here by hand from
normref.reference functions (not the MLP's own reference twin), plus
central finite differences."""
import autograd
import autograd.numpy as anp
import numpy as np
import pytest

from normref import reference
from normref.layer_call import TABLE_CASES, TABLE_FEATURES
from normref.nets import MLP, Activation, Linear, Norm
from normref.registry import REGISTRY

D_IN, WIDTH, D_OUT, N = 5, 7, 3, 6


def _net(norm, act="tanh", seed=0):
    rng = np.random.default_rng(seed)
    net = MLP([Linear(D_IN, WIDTH, rng=rng), Norm(norm), Activation(act),
               Linear(WIDTH, WIDTH, rng=rng), Norm(norm), Activation(act),
               Linear(WIDTH, D_OUT, rng=rng)])
    # move the affine parameters and biases away from (1, 0)
    net.set_params(net.params + 0.3 * rng.standard_normal(net.n_params))
    return net


def _handwritten(norm, act):
    """The same network in autograd.numpy from normref.reference (flat parameters)."""
    shapes = [(WIDTH, D_IN), (WIDTH,), (WIDTH,), (WIDTH,),
              (WIDTH, WIDTH), (WIDTH,), (WIDTH,), (WIDTH,),
              (D_OUT, WIDTH), (D_OUT,)]

    def unpack(theta):
        out, i = [], 0
        for s in shapes:
            k = int(np.prod(s))
            out.append(anp.reshape(theta[i:i + k], s))
            i += k
        return out

    phi = anp.tanh if act == "tanh" else (lambda u: anp.where(u > 0, u, 0.0))

    def normalize(h, w, b):
        if norm == "batch_norm":
            return reference.batch_norm(h, None, None, w, b, True, 0.1, 1e-5)
        return reference.layer_norm(h, (WIDTH,), w, b, 1e-5)

    def forward(theta, x):
        W1, b1, g1, c1, W2, b2, g2, c2, W3, b3 = unpack(theta)
        h = phi(normalize(anp.dot(x, W1.T) + b1, g1, c1))
        h = phi(normalize(anp.dot(h, W2.T) + b2, g2, c2))
        return anp.dot(h, W3.T) + b3

    return forward


def _loss(forward, loss):
    def L(theta, x, y):
        out = forward(theta, x)
        if loss == "mse":
            return anp.mean((out - y) ** 2)
        z = out - anp.max(out, axis=1, keepdims=True)
        logp = z - anp.log(anp.sum(anp.exp(z), axis=1, keepdims=True))
        return -anp.sum(logp[np.arange(out.shape[0]), y]) / out.shape[0]
    return L


def _data(loss, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D_IN)) * 1.5 + 0.3
    y = rng.standard_normal((N, D_OUT)) if loss == "mse" else rng.integers(0, D_OUT, N)
    return x, y


@pytest.mark.parametrize("norm", ["batch_norm", "layer_norm"])
@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("loss", ["mse", "softmax_ce"])
def test_gradient_matches_handwritten_autograd_network(norm, act, loss):
    net = _net(norm, act)
    x, y = _data(loss)
    theta = net.params
    fwd = _handwritten(norm, act)
    np.testing.assert_allclose(net.forward(x), fwd(theta, x), rtol=1e-12, atol=1e-13)
    L, g = net.loss_and_grad(x, y, loss)
    L_ref = _loss(fwd, loss)
    assert L == pytest.approx(float(L_ref(theta, x, y)), rel=1e-12)
    g_ref = autograd.grad(L_ref)(theta, x, y)
    np.testing.assert_allclose(g, g_ref, rtol=1e-8, atol=1e-12 * np.abs(g_ref).max())
    # and the MLP's own autograd twin agrees too
    np.testing.assert_allclose(autograd.grad(net.reference_loss)(theta, x, y, loss), g_ref,
                               rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("norm", ["batch_norm", "layer_norm"])
@pytest.mark.parametrize("loss", ["mse", "softmax_ce"])
def test_gradient_matches_central_differences(norm, loss):
    net = _net(norm, "tanh", seed=3)
    x, y = _data(loss, seed=4)
    theta = net.params
    _, g = net.loss_and_grad(x, y, loss)
    h = 1e-6
    fd = np.empty_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = h
        net.set_params(theta + e)
        lp, _ = net.loss_and_grad(x, y, loss)
        net.set_params(theta - e)
        lm, _ = net.loss_and_grad(x, y, loss)
        fd[i] = (lp - lm) / (2 * h)
    net.set_params(theta)
    # central differences: truncation O(h^2) and rounding O(eps/h) ~ 1e-10 absolute
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("norm", ["batch_norm", "layer_norm"])
def test_output_jacobian_matches_autograd_and_the_loss_gradient(norm):
    net = _net(norm, "tanh", seed=5)
    x, y = _data("mse", seed=6)
    theta = net.params
    J = net.output_jacobian(x)
    assert J.shape == (N, D_OUT, net.n_params)
    J_ref = autograd.jacobian(_handwritten(norm, "tanh"))(theta, x)
    np.testing.assert_allclose(J, J_ref, rtol=1e-8, atol=1e-12 * np.abs(J_ref).max())
    # chain rule: dL/dtheta = sum_nk dL/df_nk J[n, k]
    r = net.forward(x) - y
    np.testing.assert_allclose(np.einsum("nk,nkp->p", 2 * r / r.size, J),
                               net.loss_and_grad(x, y)[1], rtol=1e-10, atol=1e-14)


def test_batch_norm_couples_the_examples_layer_norm_does_not():
    x, _ = _data("mse", seed=7)
    x2 = x.copy()
    x2[1:] += 0.5 * np.random.default_rng(8).standard_normal(x2[1:].shape)   # others change
    for norm, coupled in (("batch_norm", True), ("layer_norm", False)):
        net = _net(norm, "tanh", seed=9)
        d = np.abs(net.output_jacobian(x)[0] - net.output_jacobian(x2)[0]).max()
        assert (d > 1e-3) if coupled else (d < 1e-14), (norm, d)


def test_params_roundtrip_and_split():
    net = _net("batch_norm")
    theta = np.arange(net.n_params, dtype=float)
    net.set_params(theta)
    np.testing.assert_array_equal(net.params, theta)
    parts = net.split(theta)
    assert [sorted(p) for p in parts] == [["bias", "weight"], ["bias", "weight"], [],
                                         ["bias", "weight"], ["bias", "weight"], [],
                                         ["bias", "weight"]]
    assert parts[0]["weight"].shape == (WIDTH, D_IN)
    assert net.n_params == (WIDTH * D_IN + WIDTH) + 2 * WIDTH + (WIDTH * WIDTH + WIDTH) \
        + 2 * WIDTH + (D_OUT * WIDTH + D_OUT)
    with pytest.raises(ValueError):
        net.set_params(theta[:-1])


#: every registered normalizer whose Spec declares an activations-form layer= fact
LAYERED = sorted(n for n, sp in REGISTRY.items()
                 if sp.layer is not None and sp.layer.form == "activations")


def test_the_builtin_activation_normalizers_are_layers():
    builtin = {n for n, sp in REGISTRY.items()
               if sp.family == "activations" and sp.function.__module__.startswith("normref.")}
    assert builtin <= set(LAYERED), builtin - set(LAYERED)


@pytest.mark.parametrize("name", sorted(n for n, sp in REGISTRY.items() if sp.layer is not None))
def test_layer_slots_are_the_signature_slots(name):
    """The affine slots a layer fact declares are where the signature has weight / bias."""
    spec = REGISTRY[name]
    lc = spec.layer
    assert lc.weight == (spec.slot("weight") if lc.weight is not None else None)
    assert lc.bias == (spec.slot("bias") if lc.bias is not None else None)
    if lc.form == "activations" and spec.slot("weight") is not None:
        assert lc.weight is not None, "the normalizer has a weight the layer fact leaves out"
    options, _ = lc.resolve(lc.table)
    x = np.arange(TABLE_CASES * TABLE_FEATURES, dtype=float).reshape(TABLE_CASES, TABLE_FEATURES)
    args = lc.arguments(x.reshape(lc.shape(*x.shape, options)), "W", "B", options)
    assert len(args) <= len(spec.signature)
    if lc.weight is not None:
        assert args[lc.weight] == "W"
    if lc.bias is not None:
        assert args[lc.bias] == "B"


@pytest.mark.parametrize("name", LAYERED)
def test_every_layered_normalizer_backpropagates_exactly(name):
    """In the invariance table's geometry (its options from the layer fact): 8 cases,
    12 features."""
    rng = np.random.default_rng(10)
    F = TABLE_FEATURES
    net = MLP([Linear(4, F, rng=rng), Norm(name, **REGISTRY[name].layer.table), Activation("tanh"),
               Linear(F, 2, rng=rng)])
    net.set_params(net.params + 0.2 * rng.standard_normal(net.n_params))
    x, y = rng.standard_normal((TABLE_CASES, 4)), rng.standard_normal((TABLE_CASES, 2))
    theta = net.params
    _, g = net.loss_and_grad(x, y)
    g_ref = autograd.grad(net.reference_loss)(theta, x, y)
    np.testing.assert_allclose(g, g_ref, rtol=1e-8, atol=1e-13 * max(1.0, np.abs(g_ref).max()))


def test_norm_arguments_are_checked():
    with pytest.raises(TypeError, match="num_groups"):
        Norm("group_norm")
    with pytest.raises(ValueError, match="no affine"):
        Norm("positional_norm", affine=True)
    with pytest.raises(ValueError, match="unknown normalizer"):
        Norm("no_such_norm")
    with pytest.raises(ValueError, match="not an activation normalizer"):
        Norm("weight_norm")
    with pytest.raises(TypeError, match="size"):
        Norm("local_response_norm")
    with pytest.raises(ValueError, match="channels"):
        MLP([Linear(3, 8), Norm("instance_norm", channels=3)])
    with pytest.raises(ValueError):
        Activation("sigmoid")


def test_orthogonal_linear_preserves_norms():
    lin = Linear(16, 16, bias=False, init="orthogonal", rng=0)
    W = lin.params["weight"]
    np.testing.assert_allclose(W @ W.T, np.eye(16), atol=1e-13)


def test_layer_call_rejects_bad_declarations():
    from normref.layer_call import REQUIRED, LayerCall

    with pytest.raises(TypeError, match="args must be callable"):
        LayerCall((0, 1))
    with pytest.raises(TypeError, match="weight must be"):
        LayerCall(lambda x, w, b, o: (x,), weight=0)
    with pytest.raises(ValueError, match="bias slot without a weight"):
        LayerCall(lambda x, w, b, o: (x,), bias=2)
    with pytest.raises(ValueError, match="form"):
        LayerCall(lambda x, w, b, o: (x,), form="gradients")
    lc = LayerCall(lambda x, w, b, o: (x, o["k"]), options={"k": REQUIRED, "j": 2})
    with pytest.raises(TypeError, match="needs the option k"):
        lc.resolve({})
    assert lc.resolve({"k": 1, "eps": 0.5}) == ({"k": 1, "j": 2}, {"eps": 0.5})
    bad_view = LayerCall(lambda x, w, b, o: (x,), view=lambda N, F, o: (N, F + 1))
    with pytest.raises(ValueError, match="does not keep"):
        bad_view.shape(2, 3, {})
