"""assert_conforms for TensorFlow and JAX candidates (gradients through their autodiff),
normref's convention options kept from the candidate, and the convention hint."""
import numpy as np
import pytest

from normref.testing import assert_conforms


def _ln_args(dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (3.0 + rng.standard_normal((4, 16))).astype(dtype)
    w = rng.standard_normal(16).astype(dtype)
    b = rng.standard_normal(16).astype(dtype)
    return x, (16,), w, b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tensorflow_candidate_with_gradients(dtype):
    tf = pytest.importorskip("tensorflow")

    def layer_norm(x, normalized_shape, weight, bias, eps=1e-5):
        mean = tf.reduce_mean(x, axis=-1, keepdims=True)
        var = tf.reduce_mean(tf.square(x - mean), axis=-1, keepdims=True)
        return (x - mean) * tf.math.rsqrt(var + eps) * weight + bias

    def no_mean_gradient(x, normalized_shape, weight, bias, eps=1e-5):
        # defect: the mean is a constant for autodiff (stop_gradient)
        mean = tf.stop_gradient(tf.reduce_mean(x, axis=-1, keepdims=True))
        var = tf.reduce_mean(tf.square(x - mean), axis=-1, keepdims=True)
        return (x - mean) * tf.math.rsqrt(var + eps) * weight + bias

    args = _ln_args(dtype)
    assert_conforms(layer_norm, "layer_norm", *args, framework="tensorflow")
    assert_conforms(layer_norm, "layer_norm", *args)  # detected from the tf.Tensor result
    with pytest.raises(AssertionError, match=r"backward:input \[float"):
        assert_conforms(no_mean_gradient, "layer_norm", *args, framework="tensorflow")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_jax_candidate_with_gradients(dtype):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy

    def layer_norm(x, normalized_shape, weight, bias, eps=1e-5):
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + eps) * weight + bias

    def wrong_weight_gradient(x, normalized_shape, weight, bias, eps=1e-5):
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        xhat = (x - mean) * jax.lax.rsqrt(var + eps)
        # forward exact, weight gradient dropped
        return xhat * jax.lax.stop_gradient(weight) + bias

    args = _ln_args(dtype, seed=1)
    assert_conforms(layer_norm, "layer_norm", *args, framework="jax")
    with pytest.raises(AssertionError, match=r"backward:weight"):
        assert_conforms(wrong_weight_gradient, "layer_norm", *args, framework="jax")


def _keras_style_batch_norm(x, running_mean, running_var, weight, bias, training, momentum,
                            eps):
    """Keras' BatchNormalization update: new = m * old + (1 - m) * batch, biased
    variance; takes exactly what a Keras user passes (no normref keywords)."""
    mean = x.mean(axis=0)
    var = ((x - mean) ** 2).mean(axis=0)
    running_mean[...] = momentum * running_mean + (1 - momentum) * mean
    running_var[...] = momentum * running_var + (1 - momentum) * var
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _bn_args():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((16, 3))
    return (x, np.zeros(3), np.ones(3), rng.standard_normal(3), rng.standard_normal(3),
            True, 0.99, 1e-3)


def test_convention_options_go_to_normref_only():
    # the candidate's signature has no momentum_convention: passing it would be a TypeError
    assert_conforms(_keras_style_batch_norm, "batch_norm", *_bn_args(), framework="numpy",
                    momentum_convention="keras", running_var_unbiased=False)


def test_convention_mismatch_names_the_keywords_that_would_pass():
    with pytest.raises(AssertionError) as e:
        assert_conforms(_keras_style_batch_norm, "batch_norm", *_bn_args(), framework="numpy")
    msg = str(e.value)
    assert "state:running_mean" in msg
    assert "hint: passes with momentum_convention='keras', running_var_unbiased=False" in msg


def test_a_real_defect_gets_no_convention_hint():
    def off_by_eps(x, running_mean, running_var, weight, bias, training, momentum, eps):
        mean = x.mean(axis=0)
        var = ((x - mean) ** 2).mean(axis=0)
        return (x - mean) / np.sqrt(var + 10 * eps) * weight + bias

    args = _bn_args()
    args = (args[0], None, None) + args[3:]
    with pytest.raises(AssertionError) as e:
        assert_conforms(off_by_eps, "batch_norm", *args, framework="numpy")
    assert "hint:" not in str(e.value)


def test_unknown_framework_is_rejected():
    with pytest.raises(ValueError, match="framework must be one of"):
        assert_conforms(lambda *a: a[0], "layer_norm", *_ln_args(np.float64), framework="mxnet")


def test_large_arrays_write_no_reproducer_file_unless_asked(tmp_path, monkeypatch):
    import glob
    import tempfile

    monkeypatch.delenv("NORMREF_REPRO_DIR", raising=False)
    before = set(glob.glob(f"{tempfile.gettempdir()}/normref_repro_*"))
    x = np.random.default_rng(0).standard_normal((8, 16))

    def zeros(x, normalized_shape):
        return np.zeros_like(x)

    with pytest.raises(AssertionError, match="set NORMREF_REPRO_DIR"):
        assert_conforms(zeros, "layer_norm", x, (16,), framework="numpy")
    assert set(glob.glob(f"{tempfile.gettempdir()}/normref_repro_*")) == before
    monkeypatch.setenv("NORMREF_REPRO_DIR", str(tmp_path))
    with pytest.raises(AssertionError, match="_data = np.load"):
        assert_conforms(zeros, "layer_norm", x, (16,), framework="numpy")
    assert len(list(tmp_path.glob("normref_repro_layer_norm_*.npz"))) == 1


def test_convention_options_are_keyword_only_parameters_with_their_default_listed():
    import inspect

    import normref  # noqa: F401
    from normref.registry import REGISTRY

    seen = 0
    for name, spec in REGISTRY.items():
        params = inspect.signature(spec.function).parameters
        for key, values in spec.convention_options.items():
            seen += 1
            assert key in params, (name, key)
            assert params[key].kind is inspect.Parameter.KEYWORD_ONLY, (name, key)
            assert params[key].default in values, (name, key, values)
            assert len(values) == len(set(values)) >= 2, (name, key)
    assert seen >= 8
