"""The autograd.numpy oracle (normref.reference) against hand-computed values,
closed forms, finite differences and -- when torch is installed -- PyTorch's
float64 functionals, running-statistic updates included."""
import math

import numpy as np
import pytest
from autograd import grad

from normref import reference as R

RTOL = 1e-12
ATOL = 1e-13


def close(a, b, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


# ------------------------------------------------------------ hand values
def test_batch_norm_training_hand_values_and_running_update():
    x = np.array([[1.0], [3.0]])                     # N=2, C=1
    rm, rv = np.array([0.0]), np.array([1.0])
    y = R.batch_norm(x, rm, rv, training=True, momentum=0.1, eps=0.0)
    close(y, [[-1.0], [1.0]])
    close(rm, [0.2])                                  # 0.9*0 + 0.1*2
    close(rv, [1.1])                                  # 0.9*1 + 0.1*2 (unbiased var 2)


def test_batch_norm_keras_convention_and_biased_running_var():
    x = np.array([[1.0], [3.0]])
    rm, rv = np.array([0.0]), np.array([1.0])
    R.batch_norm(x, rm, rv, training=True, momentum=0.99,
                 momentum_convention="keras", running_var_unbiased=False)
    close(rm, [0.02])                                 # 0.99*0 + 0.01*2
    close(rv, [0.99 + 0.01 * 1.0])                    # biased var 1


def test_batch_norm_cumulative_average():
    rm, rv = np.zeros(1), np.ones(1)
    nbt = np.array(0, dtype=np.int64)
    R.batch_norm(np.array([[1.0], [3.0]]), rm, rv, training=True, momentum=None,
                 num_batches_tracked=nbt)
    assert int(nbt) == 1
    close(rm, [2.0])
    close(rv, [2.0])
    R.batch_norm(np.array([[5.0], [9.0]]), rm, rv, training=True, momentum=None,
                 num_batches_tracked=nbt)
    assert int(nbt) == 2
    close(rm, [(2.0 + 7.0) / 2])
    close(rv, [(2.0 + 8.0) / 2])
    with pytest.raises(ValueError):
        R.batch_norm(np.ones((2, 1)), rm, rv, training=True, momentum=None)


def test_batch_norm_eval_and_channel_axis(rng):
    x = rng.normal(size=(4, 3, 5))
    rm, rv = rng.normal(size=3), rng.uniform(0.5, 2, size=3)
    w, b = rng.normal(size=3), rng.normal(size=3)
    y = R.batch_norm(x, rm, rv, w, b, eps=1e-3)
    close(y, (x - rm[:, None]) / np.sqrt(rv[:, None] + 1e-3) * w[:, None] + b[:, None])
    xl = np.moveaxis(x, 1, -1)
    close(R.batch_norm(xl, rm, rv, w, b, eps=1e-3, channel_axis=-1), np.moveaxis(y, 1, -1))
    yt = R.batch_norm(x, None, None, w, b, training=True)
    ytl = R.batch_norm(xl, None, None, w, b, training=True, channel_axis=-1)
    close(ytl, np.moveaxis(yt, 1, -1))


def test_batch_norm_empty_batch_and_single_value():
    rm, rv = np.array([0.5, 1.5]), np.array([2.0, 3.0])
    y = R.batch_norm(np.zeros((0, 2, 3)), rm, rv, training=True)
    assert y.shape == (0, 2, 3)
    assert rm.tolist() == [0.5, 1.5] and rv.tolist() == [2.0, 3.0]
    with pytest.raises(ValueError, match="more than 1 value"):
        R.batch_norm(np.ones((1, 2)), rm, rv, training=True)


def test_layer_rms_instance_positional_hand_values():
    x = np.array([[1.0, 2.0, 3.0, 4.0]])
    close(R.layer_norm(x, (4,), eps=0.0), (x - 2.5) / math.sqrt(1.25))
    close(R.layer_norm(x, 4, weight=np.full(4, 2.0), bias=np.ones(4), eps=0.0),
          2 * (x - 2.5) / math.sqrt(1.25) + 1)
    close(R.rms_norm(np.array([3.0, 4.0]), (2,), eps=0.0), np.array([3.0, 4.0]) / math.sqrt(12.5))
    # eps=None: finfo of the original dtype; a = 2**-12, a**2 = 2**-24, eps32 = 2**-23
    a = np.float32(2.0 ** -12)
    close(R.rms_norm(np.array([a, a], dtype=np.float32), (2,)), [1 / math.sqrt(3)] * 2)
    close(R.rms_norm(np.array([2.0 ** -26] * 2), (2,)), [1 / math.sqrt(2)] * 2)
    xi = np.array([[[1.0, 3.0], [2.0, 2.0 + 2.0]]])   # (N=1, C=2, L=2)
    close(R.instance_norm(xi, eps=0.0), [[[-1.0, 1.0], [-1.0, 1.0]]])
    xp = np.array([[[1.0], [3.0]]])                  # positional: over C
    close(R.positional_norm(xp, eps=0.0), [[[-1.0], [1.0]]])


def test_instance_norm_running_stats_hand_values():
    x = np.array([[[1.0, 3.0]], [[2.0, 6.0]]])       # N=2, C=1, L=2
    rm, rv = np.zeros(1), np.ones(1)
    R.instance_norm(x, rm, rv, momentum=0.5)
    close(rm, [0.5 * (2.0 + 4.0) / 2])               # mean of per-instance means
    close(rv, [0.5 + 0.5 * (2.0 + 8.0) / 2])         # mean of unbiased variances
    with pytest.raises(ValueError, match="spatial"):
        R.instance_norm(np.ones((2, 1, 1)))


def test_group_norm_affine_group_equals_repeated_channel(rng):
    x = rng.normal(size=(2, 6, 3))
    wg, bg = rng.normal(size=3), rng.normal(size=3)
    close(R.group_norm(x, 3, wg, bg, affine="group"),
          R.group_norm(x, 3, np.repeat(wg, 2), np.repeat(bg, 2)))
    # one group per channel = instance norm; one group = layer norm over (C, L)
    close(R.group_norm(x, 6), R.instance_norm(x))
    close(R.group_norm(x, 1), R.layer_norm(x, (6, 3)))


def test_batch_group_norm_limits(rng):
    x = rng.normal(size=(3, 4, 5))
    w, b = rng.normal(size=4), rng.normal(size=4)
    close(R.batch_group_norm(x, 4, w, b), R.batch_norm(x, None, None, w, b, training=True))
    whole = (x - x.mean()) / np.sqrt(x.var() + 1e-5)
    close(R.batch_group_norm(x, 1), whole)
    # G=2: channels {0,1} and {2,3} share statistics over the whole batch
    g0 = x[:, :2]
    close(R.batch_group_norm(x, 2)[:, :2], (g0 - g0.mean()) / np.sqrt(g0.var() + 1e-5))


def test_ghost_batch_norm_chunks_and_running_stats(rng):
    x = rng.normal(size=(6, 2, 3))
    rm, rv = np.zeros(2), np.ones(2)
    y = R.ghost_batch_norm(x, 2, rm, rv, momentum=0.3)
    rm2, rv2 = np.zeros(2), np.ones(2)
    parts = [R.batch_norm(x[k:k + 2], rm2, rv2, training=True, momentum=0.3) for k in (0, 2, 4)]
    close(y, np.concatenate(parts))
    close(rm, rm2)
    close(rv, rv2)
    close(R.ghost_batch_norm(x, 6), R.batch_norm(x, None, None, training=True))
    close(R.ghost_batch_norm(x, 2, rm, rv, training=False), R.batch_norm(x, rm, rv))
    with pytest.raises(ValueError):
        R.ghost_batch_norm(x, 4)


def test_mean_variance_norm_eps_placement():
    x = np.array([1.0, 3.0])
    close(R.mean_variance_norm(x, axes=(0,), eps=0.5), [-1 / 1.5, 1 / 1.5])
    close(R.mean_variance_norm(x, axes=(0,), eps=0.5, eps_placement="variance"),
          [-1 / math.sqrt(1.5), 1 / math.sqrt(1.5)])


def test_local_response_norm_windows_hand_values():
    x = np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1)
    # size 2, alpha/n = 1, k = 1, beta = 1
    y = R.local_response_norm(x, 2, alpha=2.0, beta=1.0, k=1.0).ravel()
    close(y, [1 / 2, 2 / 6, 3 / 14])                 # torch: [c-1, c]
    y = R.local_response_norm(x, 2, alpha=2.0, beta=1.0, k=1.0, convention="onnx").ravel()
    close(y, [1 / 6, 2 / 14, 3 / 10])                # onnx: [c, c+1]
    for conv in ("caffe", "tf"):                      # symmetric windows need odd n
        with pytest.raises(ValueError, match="odd size"):
            R.local_response_norm(x, 2, convention=conv)
    y = R.local_response_norm(x, 3, alpha=1.0, beta=1.0, k=1.0, convention="tf").ravel()
    close(y, [1 / 6, 2 / 15, 3 / 14])                # tf: radius 1, alpha undivided
    y = R.local_response_norm(x, 3, alpha=3.0, beta=1.0, k=1.0, convention="caffe").ravel()
    close(y, [1 / 6, 2 / 15, 3 / 14])                # caffe odd n: symmetric, alpha/n
    y = R.local_response_norm(x, 1, alpha=1.0, beta=0.5, k=0.0).ravel()
    close(y, [1.0, 1.0, 1.0])                        # x / |x|


def test_normalize_hand_values():
    x = np.array([[3.0, -4.0]])
    close(R.normalize(x), [[0.6, -0.8]])
    close(R.normalize(x, p=1), [[3 / 7, -4 / 7]])
    close(R.normalize(x, p=math.inf), [[0.75, -1.0]])
    close(R.normalize(x, p=3), x / (27 + 64) ** (1 / 3))
    close(R.normalize(np.array([[1e-13, 0.0]])), [[0.1, 0.0]])   # clamp at eps
    close(R.normalize(np.array([[3.0], [4.0]]), dim=0), [[0.6], [0.8]])


def test_weight_norm_hand_values():
    v = np.array([[3.0, 4.0], [0.0, 5.0]])
    close(R.weight_norm(v, np.array([[2.0], [3.0]]), 0), [[1.2, 1.6], [0.0, 3.0]])
    close(R.weight_norm(v, np.array([2.0, 3.0]), 0), [[1.2, 1.6], [0.0, 3.0]])
    close(R.weight_norm(v, np.array([[2.0, 3.0]]), 1), [[2.0, 3 * 4 / math.sqrt(41)],
                                                          [0.0, 3 * 5 / math.sqrt(41)]])
    close(R.weight_norm(v, np.array([2.0, 3.0]), -1), R.weight_norm(v, np.array([[2.0, 3.0]]), 1))
    close(R.weight_norm(v, np.array(2.0), None), 2 * v / math.sqrt(50))


# ------------------------------------------------------------ derivatives by finite differences
def _fd_check(f, x, rng, h=1e-6, rtol=1e-7):
    """<grad f(x), d> against a central difference in a random direction."""
    d = rng.normal(size=x.shape)
    analytic = float(np.sum(grad(f)(x) * d))
    numeric = (f(x + h * d) - f(x - h * d)) / (2 * h)
    assert abs(analytic - numeric) <= rtol * max(1.0, abs(numeric)), (analytic, numeric)


@pytest.mark.parametrize("which", ["input", "running_mean", "running_var", "weight", "bias"])
def test_batch_norm_eval_differentiable_in_every_array(rng, which):
    args = dict(input=rng.normal(size=(3, 4, 2)), running_mean=rng.normal(size=4),
                running_var=rng.uniform(0.5, 2, size=4), weight=rng.normal(size=4),
                bias=rng.normal(size=4))
    c = rng.normal(size=(3, 4, 2))

    def f(a):
        kw = dict(args, **{which: a})
        return np.sum(R.batch_norm(kw["input"], kw["running_mean"], kw["running_var"],
                                   kw["weight"], kw["bias"]) * c)

    _fd_check(f, args[which], rng)


def test_training_and_weight_norm_gradients_by_fd(rng):
    x = rng.normal(size=(4, 3, 2))
    c = rng.normal(size=x.shape)
    for fn in (lambda a: R.batch_norm(a, None, None, training=True),
               lambda a: R.group_norm(a, 3),
               lambda a: R.layer_norm(a, (3, 2)),
               lambda a: R.rms_norm(a, (2,)),
               lambda a: R.positional_norm(a),
               lambda a: R.batch_group_norm(a, 3),
               lambda a: R.ghost_batch_norm(a, 2),
               lambda a: R.mean_variance_norm(a, (0, 2)),
               lambda a: R.local_response_norm(a, 2, alpha=0.5),
               lambda a: R.normalize(a, p=3)):
        _fd_check(lambda a: np.sum(fn(a) * c), x, rng)
    v, g = rng.normal(size=(3, 4)), rng.normal(size=(3, 1))
    cv = rng.normal(size=(3, 4))
    _fd_check(lambda a: np.sum(R.weight_norm(a, g, 0) * cv), v, rng)
    _fd_check(lambda a: np.sum(R.weight_norm(v, a, 0) * cv), g, rng)


def test_running_stats_updated_once_under_autograd(rng):
    x = rng.normal(size=(5, 2))
    rm, rv = np.zeros(2), np.ones(2)
    grad(lambda a: np.sum(R.batch_norm(a, rm, rv, training=True) ** 3))(x)
    close(rm, 0.1 * x.mean(0))
    close(rv, 0.9 + 0.1 * x.var(0, ddof=1))


# ------------------------------------------------------------ against PyTorch float64
@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def T(torch, a):
    return torch.tensor(np.asarray(a, dtype=np.float64))


def test_batch_norm_vs_torch_with_running_stats(torch, rng):
    F = torch.nn.functional
    rm, rv = rng.normal(size=3), rng.uniform(0.5, 2, size=3)
    trm, trv = T(torch, rm), T(torch, rv)
    w, b = rng.normal(size=3), rng.normal(size=3)
    for step in range(3):
        x = rng.normal(size=(4, 3, 2, 2)) + step
        y = R.batch_norm(x, rm, rv, w, b, training=True, momentum=0.2, eps=1e-4)
        ty = F.batch_norm(T(torch, x), trm, trv, T(torch, w), T(torch, b),
                          training=True, momentum=0.2, eps=1e-4)
        close(y, ty.numpy())
        close(rm, trm.numpy())
        close(rv, trv.numpy())
    x = rng.normal(size=(2, 3, 4))
    close(R.batch_norm(x, rm, rv, w, b), F.batch_norm(T(torch, x), trm, trv, T(torch, w),
                                                      T(torch, b)).numpy())


def test_batch_norm_cumulative_vs_torch_module(torch, rng):
    m = torch.nn.BatchNorm1d(3, momentum=None).double()
    rm, rv = np.zeros(3), np.ones(3)
    nbt = np.zeros((), dtype=np.int64)
    for _ in range(4):
        x = rng.normal(size=(5, 3))
        y = R.batch_norm(x, rm, rv, m.weight.detach().numpy(), m.bias.detach().numpy(),
                         training=True, momentum=None, num_batches_tracked=nbt)
        ty = m(T(torch, x)).detach().numpy()
        close(y, ty)
    assert int(nbt) == int(m.num_batches_tracked) == 4
    close(rm, m.running_mean.numpy())
    close(rv, m.running_var.numpy())


def test_batch_norm_gradients_vs_torch(torch, rng):
    x, w, b = rng.normal(size=(4, 3, 5)), rng.normal(size=3), rng.normal(size=3)
    c = rng.normal(size=x.shape)
    tx, tw, tb = (T(torch, a).requires_grad_() for a in (x, w, b))
    (torch.nn.functional.batch_norm(tx, None, None, tw, tb, training=True) * T(torch, c)).sum().backward()
    for i, t in enumerate((tx, tw, tb)):
        def f(a, i=i):
            args = [x, w, b]
            args[i] = a
            return np.sum(R.batch_norm(args[0], None, None, args[1], args[2], training=True) * c)
        close(grad(f)([x, w, b][i]), t.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_instance_norm_vs_torch(torch, rng):
    F = torch.nn.functional
    x = rng.normal(size=(3, 2, 4, 5)) * 2 + 1
    w, b = rng.normal(size=2), rng.normal(size=2)
    rm, rv = rng.normal(size=2), rng.uniform(0.5, 2, size=2)
    trm, trv = T(torch, rm), T(torch, rv)
    y = R.instance_norm(x, rm, rv, w, b, momentum=0.3, eps=1e-3)
    ty = F.instance_norm(T(torch, x), trm, trv, T(torch, w), T(torch, b),
                         use_input_stats=True, momentum=0.3, eps=1e-3)
    close(y, ty.numpy())
    close(rm, trm.numpy())
    close(rv, trv.numpy())
    y = R.instance_norm(x, rm, rv, w, b, use_input_stats=False)
    ty = F.instance_norm(T(torch, x), trm, trv, T(torch, w), T(torch, b), use_input_stats=False)
    close(y, ty.numpy())
    close(R.instance_norm(x[:, :, 0]), F.instance_norm(T(torch, x[:, :, 0])).numpy())


def test_layer_group_rms_norm_vs_torch(torch, rng):
    F = torch.nn.functional
    x = rng.normal(size=(2, 6, 3, 4)) * 3 - 1
    w, b = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    close(R.layer_norm(x, (3, 4), w, b, 1e-3),
          F.layer_norm(T(torch, x), (3, 4), T(torch, w), T(torch, b), 1e-3).numpy())
    close(R.layer_norm(x, 4), F.layer_norm(T(torch, x), (4,)).numpy())
    wc, bc = rng.normal(size=6), rng.normal(size=6)
    for G in (1, 2, 3, 6):
        close(R.group_norm(x, G, wc, bc, 1e-4),
              F.group_norm(T(torch, x), G, T(torch, wc), T(torch, bc), 1e-4).numpy())
    close(R.rms_norm(x, (3, 4), w), F.rms_norm(T(torch, x), (3, 4), T(torch, w)).numpy())
    close(R.rms_norm(x, (4,), None, 1e-2), F.rms_norm(T(torch, x), (4,), None, 1e-2).numpy())
    # eps=None with float32 input: torch uses finfo(float32).eps as we do
    x32 = (rng.normal(size=(3, 5)) * 1e-3).astype(np.float32)
    close(R.rms_norm(x32, (5,)),
          F.rms_norm(T(torch, x32), (5,), None, float(np.finfo(np.float32).eps)).numpy())
    assert not np.allclose(R.rms_norm(x32, (5,)), R.rms_norm(x32.astype(np.float64), (5,)),
                           rtol=1e-6, atol=0)


@pytest.mark.parametrize("shape", [(2, 7, 3), (2, 7, 3, 2), (1, 5, 2, 2, 2)])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6])
def test_local_response_norm_vs_torch(torch, rng, shape, size):
    x = rng.normal(size=shape) * 3
    y = R.local_response_norm(x, size, alpha=0.7, beta=0.6, k=1.3)
    ty = torch.nn.functional.local_response_norm(T(torch, x), size, alpha=0.7, beta=0.6, k=1.3)
    close(y, ty.numpy())


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6])
def test_local_response_norm_onnx_caffe_tf_windows_brute_force(rng, size):
    """Each convention against a direct per-channel loop over its documented window."""
    x = rng.normal(size=(2, 7, 3))
    C = 7
    rules = {
        "onnx": (lambda c: (c - (size - 1) // 2, c + math.ceil((size - 1) / 2)), 0.4 / size),
        "caffe": (lambda c: (c - (size - 1) // 2, c + (size - 1) // 2), 0.4 / size),
        "tf": (lambda c: (c - (size - 1) // 2, c + (size - 1) // 2), 0.4),
    }
    if size % 2 == 0:
        del rules["caffe"], rules["tf"]
    for conv, (window, scale) in rules.items():
        expected = np.empty_like(x)
        for c in range(C):
            lo, hi = window(c)
            s = np.sum(x[:, max(lo, 0):min(hi, C - 1) + 1] ** 2, axis=1)
            expected[:, c] = x[:, c] / (2.0 + scale * s) ** 0.75
        close(R.local_response_norm(x, size, alpha=0.4, beta=0.75, k=2.0, convention=conv),
              expected)


@pytest.mark.parametrize("p", [1, 2, 3, math.inf])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_normalize_vs_torch(torch, rng, p, dim):
    x = rng.normal(size=(3, 4, 5))
    x[0, 0, 0] = 0.0
    close(R.normalize(x, p, dim), torch.nn.functional.normalize(T(torch, x), p, dim).numpy())
    c = rng.normal(size=x.shape)
    tx = T(torch, x).requires_grad_()
    (torch.nn.functional.normalize(tx, p, dim) * T(torch, c)).sum().backward()
    close(grad(lambda a: np.sum(R.normalize(a, p, dim) * c))(x), tx.grad.numpy(),
          rtol=1e-10, atol=1e-12)


def test_weight_norm_vs_torch(torch, rng):
    v = rng.normal(size=(3, 4, 5))
    for dim in (0, 1, 2, -2, -3):
        gshape = [1, 1, 1]
        gshape[dim] = v.shape[dim]
        g = rng.normal(size=gshape)
        close(R.weight_norm(v, g, dim), torch._weight_norm(T(torch, v), T(torch, g), dim).numpy())
    g = np.array(1.7)
    # torch's dim=-1 sentinel means the whole tensor: our dim=None
    close(R.weight_norm(v, g, None), torch._weight_norm(T(torch, v), T(torch, g), -1).numpy())
    g5 = rng.normal(size=(1, 1, 5))
    assert not np.allclose(R.weight_norm(v, g5, -1),
                           torch._weight_norm(T(torch, v), T(torch, g5), -1).numpy())
    close(R.weight_norm(v, g5, 2), torch._weight_norm(T(torch, v), T(torch, g5), 2).numpy())


def test_ghost_batch_norm_vs_torch_sequential(torch, rng):
    F = torch.nn.functional
    x = rng.normal(size=(8, 3, 2))
    w, b = rng.normal(size=3), rng.normal(size=3)
    rm, rv = np.zeros(3), np.ones(3)
    trm, trv = T(torch, rm), T(torch, rv)
    y = R.ghost_batch_norm(x, 4, rm, rv, w, b, momentum=0.25)
    ty = torch.cat([F.batch_norm(T(torch, x[k:k + 4]), trm, trv, T(torch, w), T(torch, b),
                                 training=True, momentum=0.25) for k in (0, 4)])
    close(y, ty.numpy())
    close(rm, trm.numpy())
    close(rv, trv.numpy())
