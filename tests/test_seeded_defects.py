"""Seeded defects: small implementations with exactly one known bug each.

Every defective implementation must be caught by
:func:`normref.testing.assert_conforms` (AssertionError naming the failing
check and its error in ulps) while its correct twin, identical but for the
bug, passes.  NumPy candidates are judged on their forward and on the running
statistics they update in place; PyTorch candidates also on every input
gradient, pulled back through ``torch.autograd`` with the case's seeded
Gaussian cotangent (never all ones: a constant cotangent hides exactly the
mean-subtraction terms the backward defects drop).
"""
import re

import numpy as np
import pytest

from normref.testing import assert_conforms
from normref.testing.conformance import ConformCase

torch = pytest.importorskip("torch")


def rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------
# NumPy building blocks
# ---------------------------------------------------------------------------

def _np_layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, *,
                   eps_outside=False, one_pass=False):
    shape = (normalized_shape,) if np.isscalar(normalized_shape) else tuple(normalized_shape)
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    if one_pass:  # defect: E[x^2] - E[x]^2 cancels catastrophically on offset data
        var = (x * x).mean(axis=axes, keepdims=True) - mu * mu
    else:
        var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    if eps_outside:  # defect: (x - mu) / (sigma + eps)
        y = (x - mu) / (np.sqrt(var) + eps)
    else:
        y = (x - mu) / np.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.astype(x.dtype)


def _np_batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
                   momentum=0.1, eps=1e-5, *, unbiased_normalization=False,
                   reversed_momentum=False):
    axes = (0,) + tuple(range(2, x.ndim))
    bshape = (1, -1) + (1,) * (x.ndim - 2)
    if training:
        n = x.size // x.shape[1]
        mu = x.mean(axis=axes)
        var = ((x - mu.reshape(bshape)) ** 2).mean(axis=axes)
        unbiased = var * n / (n - 1)
        if running_mean is not None:
            keep, take = (momentum, 1 - momentum) if reversed_momentum else (1 - momentum, momentum)
            running_mean[...] = keep * running_mean + take * mu
            running_var[...] = keep * running_var + take * unbiased
        if unbiased_normalization:  # defect: n/(n-1) variance in the normalization
            var = unbiased
    else:
        mu, var = running_mean, running_var
    y = (x - mu.reshape(bshape)) / np.sqrt(var.reshape(bshape) + eps)
    if weight is not None:
        y = y * weight.reshape(bshape)
    if bias is not None:
        y = y + bias.reshape(bshape)
    return y


def _np_lrn(x, size, alpha=1e-4, beta=0.75, k=1.0, *, alpha_per_element=False):
    """PyTorch window: channels [c - size//2, c + (size-1)//2], zero padded."""
    C = x.shape[1]
    sq = x * x
    s = np.zeros_like(x)
    for c in range(C):
        lo, hi = max(0, c - size // 2), min(C - 1, c + (size - 1) // 2)
        s[:, c] = sq[:, lo:hi + 1].sum(axis=1)
    a = alpha if alpha_per_element else alpha / size  # defect: alpha not divided by size
    return x / (k + a * s) ** beta


def _np_group_norm(x, num_groups, weight=None, bias=None, eps=1e-5, *, interleaved=False):
    N, C = x.shape[:2]
    G = num_groups
    if interleaved:  # defect: group g = channels {g, g + G, g + 2G, ...}
        order = np.concatenate([np.arange(g, C, G) for g in range(G)])
    else:
        order = np.arange(C)
    xs = x[:, order].reshape(N, G, -1)
    mu = xs.mean(axis=-1, keepdims=True)
    var = ((xs - mu) ** 2).mean(axis=-1, keepdims=True)
    ys = ((xs - mu) / np.sqrt(var + eps)).reshape(x.shape)
    y = np.empty_like(x)
    y[:, order] = ys
    bshape = (1, -1) + (1,) * (x.ndim - 2)
    if weight is not None:
        y = y * weight.reshape(bshape)
    if bias is not None:
        y = y + bias.reshape(bshape)
    return y


def _np_rms_norm(x, normalized_shape, weight=None, eps=None, *, use_variance=False):
    shape = (normalized_shape,) if np.isscalar(normalized_shape) else tuple(normalized_shape)
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    eps = np.finfo(x.dtype).eps if eps is None else eps
    if use_variance:  # defect: the variance (centred) instead of the mean square
        ms = x.var(axis=axes, keepdims=True)
    else:
        ms = (x * x).mean(axis=axes, keepdims=True)
    y = x / np.sqrt(ms + eps)
    return y if weight is None else y * weight


def _np_instance_norm(x, running_mean=None, running_var=None, weight=None, bias=None,
                      use_input_stats=True, momentum=0.1, eps=1e-5, *, over_batch=False):
    # defect: statistics over (N, spatial) per channel -- batch norm's groups
    axes = ((0,) if over_batch else ()) + tuple(range(2, x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    bshape = (1, -1) + (1,) * (x.ndim - 2)
    if weight is not None:
        y = y * weight.reshape(bshape)
    if bias is not None:
        y = y + bias.reshape(bshape)
    return y


# ---------------------------------------------------------------------------
# PyTorch candidates
# ---------------------------------------------------------------------------

def _torch_layer_norm(eps_outside):
    def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
        dims = tuple(range(-len(normalized_shape), 0))
        mu = x.mean(dim=dims, keepdim=True)
        var = ((x - mu) ** 2).mean(dim=dims, keepdim=True)
        if eps_outside:  # defect
            y = (x - mu) / (var.sqrt() + eps)
        else:
            y = (x - mu) / (var + eps).sqrt()
        if weight is not None:
            y = y * weight
        if bias is not None:
            y = y + bias
        return y
    return layer_norm


class _BatchNormTrain(torch.autograd.Function):
    """Training-mode batch norm (NC...) with a hand-written backward.

    dx = w * rstd * (g - mean(g) - xhat * mean(g * xhat)) per channel; with
    ``drop_term`` the backward omits ``xhat * mean(g * xhat)`` (the defect).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps, drop_term):
        axes = (0,) + tuple(range(2, x.dim()))
        mu = x.mean(dim=axes, keepdim=True)
        var = ((x - mu) ** 2).mean(dim=axes, keepdim=True)
        rstd = 1.0 / torch.sqrt(var + eps)
        xhat = (x - mu) * rstd
        shape = (1, -1) + (1,) * (x.dim() - 2)
        ctx.save_for_backward(xhat, rstd, weight)
        ctx.axes, ctx.shape, ctx.drop_term = axes, shape, drop_term
        return xhat * weight.reshape(shape) + bias.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        xhat, rstd, weight = ctx.saved_tensors
        axes, shape = ctx.axes, ctx.shape
        gw = g * weight.reshape(shape)
        dx = gw - gw.mean(dim=axes, keepdim=True)
        if not ctx.drop_term:
            dx = dx - xhat * (gw * xhat).mean(dim=axes, keepdim=True)
        dx = dx * rstd
        return dx, (g * xhat).sum(dim=axes), g.sum(dim=axes), None, None


def _torch_batch_norm(drop_term=False, reversed_momentum=False):
    def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
                   momentum=0.1, eps=1e-5):
        assert training
        y = _BatchNormTrain.apply(x, weight, bias, eps, drop_term)
        if running_mean is not None:
            with torch.no_grad():
                axes = (0,) + tuple(range(2, x.dim()))
                n = x.numel() // x.shape[1]
                mu = x.mean(dim=axes)
                var = x.var(dim=axes, unbiased=False) * n / (n - 1)
                m = (1 - momentum) if reversed_momentum else momentum  # defect when reversed
                running_mean.mul_(1 - m).add_(m * mu)
                running_var.mul_(1 - m).add_(m * var)
        return y
    return batch_norm


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------

def _bn_args(seed=0, shape=(4, 3, 2, 2)):
    r = rng(seed)
    C = shape[1]
    x = r.standard_normal(shape) * 1.5 + 0.5
    return (x, r.standard_normal(C) * 0.5, r.uniform(0.5, 2.0, C),
            r.standard_normal(C) + 1.0, r.standard_normal(C), True, 0.1, 1e-5)


# ---------------------------------------------------------------------------
# the defects
# ---------------------------------------------------------------------------

class TestEpsOutsideSqrt:
    def args(self):
        r = rng(1)
        # a small spread makes eps visible: sigma ~ 3e-3, eps = 1e-5
        x = r.standard_normal((3, 8)) * 3e-3
        return x, (8,), r.standard_normal(8) + 1.0, r.standard_normal(8)

    def test_numpy_defect_caught(self):
        f = lambda *a, **k: _np_layer_norm(*a, eps_outside=True, **k)
        with pytest.raises(AssertionError, match=r"forward \[float64\].*ulps"):
            assert_conforms(f, "layer_norm", *self.args(), framework="numpy")

    def test_numpy_twin_passes(self):
        assert_conforms(_np_layer_norm, "layer_norm", *self.args(), framework="numpy")

    def test_torch_defect_caught(self):
        with pytest.raises(AssertionError, match=r"ulps"):
            assert_conforms(_torch_layer_norm(True), "layer_norm", *self.args(), framework="torch")

    def test_torch_twin_passes_with_gradients(self):
        assert_conforms(_torch_layer_norm(False), "layer_norm", *self.args(), framework="torch")

    def test_defect_visible_even_at_unit_scale(self):
        # sigma ~ 1: (sigma + eps) vs sqrt(sigma^2 + eps) differ by ~5e-6 relative,
        # billions of float64 ulps
        r = rng(2)
        args = (r.standard_normal((2, 16)), (16,))
        f = lambda *a, **k: _np_layer_norm(*a, eps_outside=True, **k)
        with pytest.raises(AssertionError, match="ulps"):
            assert_conforms(f, "layer_norm", *args, framework="numpy")
        assert_conforms(_np_layer_norm, "layer_norm", *args, framework="numpy")


class TestOnePassVariance:
    @pytest.mark.parametrize("offset,dtype", [(1e8, np.float64), (1e4, np.float32)])
    def test_defect_caught(self, offset, dtype):
        x = (rng(3).standard_normal((4, 16)) + offset).astype(dtype)
        f = lambda *a, **k: _np_layer_norm(*a, one_pass=True, **k)
        with np.errstate(invalid="ignore"), \
                pytest.raises(AssertionError, match=r"forward \[%s\].*ulps" % np.dtype(dtype).name):
            assert_conforms(f, "layer_norm", x, (16,), framework="numpy")

    @pytest.mark.parametrize("offset,dtype", [(1e8, np.float64), (1e4, np.float32)])
    def test_two_pass_twin_passes(self, offset, dtype):
        x = (rng(3).standard_normal((4, 16)) + offset).astype(dtype)
        assert_conforms(_np_layer_norm, "layer_norm", x, (16,), framework="numpy")

    def test_one_pass_harmless_on_centred_data(self):
        # the same defect is invisible without an offset: the catalogue needs row 1
        x = rng(3).standard_normal((4, 16))
        f = lambda *a, **k: _np_layer_norm(*a, one_pass=True, **k)
        assert_conforms(f, "layer_norm", x, (16,), framework="numpy")


class TestUnbiasedNormalization:
    def test_defect_caught(self):
        f = lambda *a, **k: _np_batch_norm(*a, unbiased_normalization=True, **k)
        with pytest.raises(AssertionError, match=r"forward \[float64\].*ulps"):
            assert_conforms(f, "batch_norm", *_bn_args(4), framework="numpy")

    def test_twin_passes(self):
        assert_conforms(_np_batch_norm, "batch_norm", *_bn_args(4), framework="numpy")


class TestReversedMomentum:
    def test_numpy_defect_caught_by_state(self):
        f = lambda *a, **k: _np_batch_norm(*a, reversed_momentum=True, **k)
        # the forward is right; only the running statistics are wrong
        with pytest.raises(AssertionError, match=r"state:running_(mean|var) \[float64\].*ulps") as exc:
            assert_conforms(f, "batch_norm", *_bn_args(5), framework="numpy")
        assert "forward [" not in str(exc.value)

    def test_numpy_twin_passes(self):
        args = _bn_args(5)
        rm, rv = args[1].copy(), args[2].copy()
        assert_conforms(_np_batch_norm, "batch_norm", *args, framework="numpy")
        # assert_conforms works on copies: the caller's buffers are untouched
        np.testing.assert_array_equal(args[1], rm)
        np.testing.assert_array_equal(args[2], rv)

    def test_torch_defect_caught_by_state(self):
        with pytest.raises(AssertionError, match=r"state:running_(mean|var) \[float64\].*ulps"):
            assert_conforms(_torch_batch_norm(reversed_momentum=True), "batch_norm",
                            *_bn_args(5), framework="torch")

    def test_torch_twin_passes(self):
        assert_conforms(_torch_batch_norm(), "batch_norm", *_bn_args(5), framework="torch")


class TestBatchNormBackwardMissingTerm:
    def test_defect_caught_in_input_gradient_only(self):
        with pytest.raises(AssertionError, match=r"backward:input \[float64\].*ulps") as exc:
            assert_conforms(_torch_batch_norm(drop_term=True), "batch_norm", *_bn_args(6),
                            framework="torch")
        msg = str(exc.value)
        # forward, weight / bias gradients and running statistics all conform
        assert re.search(r"\b1 of 6 checks fail", msg)
        assert "forward [" not in msg and "backward:weight" not in msg

    def test_defect_caught_in_float32(self):
        args = list(_bn_args(7))
        for i in (0, 1, 2, 3, 4):
            args[i] = args[i].astype(np.float32)
        with pytest.raises(AssertionError, match=r"backward:input \[float32\].*ulps"):
            assert_conforms(_torch_batch_norm(drop_term=True), "batch_norm", *args,
                            framework="torch")
        assert_conforms(_torch_batch_norm(), "batch_norm", *args, framework="torch")

    def test_twin_passes(self):
        assert_conforms(_torch_batch_norm(), "batch_norm", *_bn_args(6), framework="torch")

    def test_dropped_term_matters_only_for_non_constant_cotangents(self):
        # sum(g * xhat) = 0 for g = 1 (xhat has zero mean per channel): an all-ones
        # cotangent cannot see this defect, hence the kit's Gaussian cotangent
        x = torch.tensor(_bn_args(6)[0], requires_grad=True)
        w = torch.ones(3, dtype=torch.float64)
        b = torch.zeros(3, dtype=torch.float64)
        outs = []
        for drop in (False, True):
            y = _BatchNormTrain.apply(x, w, b, 1e-5, drop)
            outs.append(torch.autograd.grad(y, x, torch.ones_like(y))[0])
        assert float((outs[0] - outs[1]).abs().max()) < 1e-12
        cot = ConformCase(label="c", args=(), id="batch_norm/x/s0").cotangent((4, 3, 2, 2))
        assert np.ptp(cot) > 1.0  # Gaussian, not constant


class TestLRNAlpha:
    def args(self):
        r = rng(8)
        return r.standard_normal((2, 7, 3)) * 2.0, 5, 0.3, 0.75, 1.5

    def test_defect_caught(self):
        f = lambda *a, **k: _np_lrn(*a, alpha_per_element=True, **k)
        with pytest.raises(AssertionError, match=r"forward \[float64\].*ulps"):
            assert_conforms(f, "local_response_norm", *self.args(), framework="numpy")

    def test_twin_passes(self):
        assert_conforms(_np_lrn, "local_response_norm", *self.args(), framework="numpy")

    def test_size_one_hides_the_defect(self):
        # alpha / 1 == alpha: a catalogue of size-1 windows would miss the bug
        x, _, alpha, beta, k = self.args()
        f = lambda *a, **kw: _np_lrn(*a, alpha_per_element=True, **kw)
        assert_conforms(f, "local_response_norm", x, 1, alpha, beta, k, framework="numpy")


class TestGroupNormChannels:
    def args(self):
        r = rng(9)
        # channels with different centres so that regrouping changes the statistics
        x = r.standard_normal((2, 6, 3)) + np.arange(6).reshape(1, 6, 1)
        return x, 2, r.standard_normal(6) + 1.0, r.standard_normal(6)

    def test_defect_caught(self):
        f = lambda *a, **k: _np_group_norm(*a, interleaved=True, **k)
        with pytest.raises(AssertionError, match=r"forward \[float64\].*ulps"):
            assert_conforms(f, "group_norm", *self.args(), framework="numpy")

    def test_twin_passes(self):
        assert_conforms(_np_group_norm, "group_norm", *self.args(), framework="numpy")


class TestRMSNormVariance:
    def args(self):
        r = rng(10)
        return r.standard_normal((3, 8)) + 0.7, (8,), r.standard_normal(8) + 1.0, 1e-6

    def test_defect_caught(self):
        f = lambda *a, **k: _np_rms_norm(*a, use_variance=True, **k)
        with pytest.raises(AssertionError, match=r"forward \[float64\].*ulps"):
            assert_conforms(f, "rms_norm", *self.args(), framework="numpy")

    def test_twin_passes(self):
        assert_conforms(_np_rms_norm, "rms_norm", *self.args(), framework="numpy")

    def test_twin_passes_with_eps_none_in_float32(self):
        x = (rng(11).standard_normal((3, 8)) + 0.7).astype(np.float32)
        assert_conforms(_np_rms_norm, "rms_norm", x, (8,), framework="numpy")


class TestInstanceNormOverBatch:
    def args(self):
        r = rng(12)
        # samples with different centres: batch statistics differ from instance ones
        x = r.standard_normal((3, 2, 5)) + np.array([-1.0, 0.0, 2.0]).reshape(3, 1, 1)
        return x, None, None, r.standard_normal(2) + 1.0, r.standard_normal(2)

    def test_defect_caught(self):
        f = lambda *a, **k: _np_instance_norm(*a, over_batch=True, **k)
        with pytest.raises(AssertionError, match=r"forward \[float64\].*ulps"):
            assert_conforms(f, "instance_norm", *self.args(), framework="numpy")

    def test_twin_passes(self):
        assert_conforms(_np_instance_norm, "instance_norm", *self.args(), framework="numpy")
