"""Framework conventions as keyword options (PyTorch the default), checked
against PyTorch where it has the behaviour and against the stated formula
where it does not."""
import numpy as np
import pytest

import normref


@pytest.fixture
def rng():
    return np.random.default_rng(11)


def test_momentum_none_is_cumulative_average_like_torch_module(rng):
    torch = pytest.importorskip("torch")
    C = 3
    bn = torch.nn.BatchNorm1d(C, momentum=None, dtype=torch.float64)
    rm, rv = np.zeros(C), np.ones(C)
    nbt = np.zeros((), dtype=np.int64)
    for step in range(4):
        x = rng.standard_normal((5, C, 2)) * (step + 1) + step
        y = normref.batch_norm(x, rm, rv, None, None, True, None, 1e-5, num_batches_tracked=nbt)
        yt = bn(torch.tensor(x))
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(rm, bn.running_mean.numpy(), rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(rv, bn.running_var.numpy(), rtol=1e-13)
        assert int(nbt) == int(bn.num_batches_tracked) == step + 1


def test_momentum_none_without_counter_is_an_error(rng):
    x = rng.standard_normal((4, 3))
    with pytest.raises(ValueError, match="num_batches_tracked"):
        normref.batch_norm(x, np.zeros(3), np.ones(3), training=True, momentum=None)


def test_keras_momentum_and_biased_running_variance(rng):
    x = rng.standard_normal((6, 2, 3)) * 2 + 1
    rm0, rv0 = rng.standard_normal(2), rng.uniform(1, 2, 2)
    rm, rv = rm0.copy(), rv0.copy()
    normref.batch_norm(x, rm, rv, None, None, True, 0.99, 1e-3,
                       momentum_convention="keras", running_var_unbiased=False)
    mean = x.mean(axis=(0, 2))
    var = x.var(axis=(0, 2))  # biased
    np.testing.assert_allclose(rm, 0.99 * rm0 + 0.01 * mean, rtol=1e-14)
    np.testing.assert_allclose(rv, 0.99 * rv0 + 0.01 * var, rtol=1e-14)
    # torch convention, unbiased: the default
    rm, rv = rm0.copy(), rv0.copy()
    normref.batch_norm(x, rm, rv, None, None, True, 0.1)
    n = 6 * 3
    np.testing.assert_allclose(rm, 0.9 * rm0 + 0.1 * mean, rtol=1e-14)
    np.testing.assert_allclose(rv, 0.9 * rv0 + 0.1 * var * n / (n - 1), rtol=1e-14)
    with pytest.raises(ValueError, match="momentum_convention"):
        normref.batch_norm(x, rm, rv, training=True, momentum_convention="tf")


def test_running_stats_keep_their_dtype_and_are_updated_in_place(rng):
    x = rng.standard_normal((8, 3))
    rm, rv = np.zeros(3, dtype=np.float32), np.ones(3, dtype=np.float32)
    ids = id(rm), id(rv)
    normref.batch_norm(x, rm, rv, training=True)
    assert (id(rm), id(rv)) == ids and rm.dtype == np.float32
    np.testing.assert_allclose(rm, np.float32(0.1 * x.mean(0)), rtol=1e-6)


def test_channels_last_equals_moved_axis(rng):
    x = rng.standard_normal((4, 3, 5, 2))
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    y = normref.batch_norm(x, None, None, w, b, True)
    y_last = normref.batch_norm(np.moveaxis(x, 1, -1), None, None, w, b, True, channel_axis=-1)
    # same statistics, summed in another order: equal to a few ulps
    np.testing.assert_allclose(np.moveaxis(y_last, -1, 1), y, rtol=1e-14, atol=1e-15)


def test_group_norm_per_group_affine_is_onnx18(rng):
    x = rng.standard_normal((2, 6, 3))
    wg, bg = rng.standard_normal(3), rng.standard_normal(3)
    y = normref.group_norm(x, 3, wg, bg, affine="group")
    y_channel = normref.group_norm(x, 3, np.repeat(wg, 2), np.repeat(bg, 2))
    np.testing.assert_allclose(y, y_channel, rtol=1e-14, atol=1e-15)
    with pytest.raises(ValueError, match=r"\(3,\)"):
        normref.group_norm(x, 3, np.ones(6), None, affine="group")


def test_rms_norm_eps_none_follows_input_dtype(rng):
    x = np.zeros((2, 4), dtype=np.float32)
    x[0] = 1e-4
    dx = rng.standard_normal(x.shape)
    y32 = normref.rms_norm(x, (4,))
    y64 = normref.rms_norm(x.astype(np.float64), (4,))
    e32, e64 = np.finfo(np.float32).eps, np.finfo(np.float64).eps
    np.testing.assert_allclose(y32[0], 1e-4 / np.sqrt(np.float64(np.float32(1e-4)) ** 2 + e32) *
                               np.float64(np.float32(1e-4)) / 1e-4, rtol=1e-12)
    np.testing.assert_allclose(y64[0], np.float64(np.float32(1e-4)) /
                               np.sqrt(np.float64(np.float32(1e-4)) ** 2 + e64), rtol=1e-12)
    assert dx.shape == x.shape


def test_mean_variance_norm_eps_placement(rng):
    x = rng.standard_normal((2, 3, 4, 4))
    m = x.mean(axis=(0, 2, 3), keepdims=True)
    sd = x.std(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(normref.mean_variance_norm(x, eps=0.1), (x - m) / (sd + 0.1), rtol=1e-13)
    np.testing.assert_allclose(normref.mean_variance_norm(x, eps=0.1, eps_placement="variance"),
                               (x - m) / np.sqrt(sd ** 2 + 0.1), rtol=1e-13)
