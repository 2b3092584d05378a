"""Textbook normalizers of activations in autograd.numpy: the independent oracle.

Every function has the public signature of its fast counterpart in
:mod:`normref.activations` and computes the formula in its docstring the
plain way: ``mean = anp.mean(x, axis, keepdims=True)``, a two-pass biased
variance ``anp.mean((x - mean)**2, ...)``, then ``(x - mean) /
anp.sqrt(var + eps)``.  Nothing here imports normref: these are a second
opinion, written for clarity rather than for speed or for extreme inputs
(large offsets, overflow), and tested on moderate data.

Autograd differentiates every function with respect to each float array
argument (input, weight, bias and, where statistics come from the running
buffers, running_mean and running_var).  Input validation is minimal: the
reference is called with valid inputs.  Plain arrays are converted to
float64; autograd boxes are used as they are.

Running statistics are updated in place with plain NumPy from the un-boxed
batch statistics, so tracing a function with autograd updates them exactly
once per call, like PyTorch's functional ops do.

``return_stats=True`` (batch, layer, group and RMS norm) returns the output
with the statistics it was normalized with, ``(y, mean, rstd)`` (RMS norm
``(y, rstd)``), ``rstd = 1 / sqrt(var + eps)``, shaped as the public
functions document: an autograd tuple, so autograd differentiates all of them.
"""
from __future__ import annotations

import math

import numpy as np
import autograd.numpy as anp
from autograd.builtins import tuple as _outputs
from autograd.tracer import getval, isbox

__all__ = [
    "batch_norm",
    "instance_norm",
    "layer_norm",
    "group_norm",
    "rms_norm",
    "positional_norm",
    "batch_group_norm",
    "ghost_batch_norm",
    "mean_variance_norm",
    "local_response_norm",
    "normalize",
]


# ---------------------------------------------------------------- helpers
def _f64(a):
    """float64 view of a plain array; autograd boxes and None pass through."""
    if a is None or isbox(a):
        return a
    return np.asarray(a, dtype=np.float64)


def _affine(y, weight, bias, shape):
    """``y * weight + bias`` with weight and bias reshaped to ``shape``."""
    if weight is not None:
        y = y * anp.reshape(_f64(weight), shape)
    if bias is not None:
        y = y + anp.reshape(_f64(bias), shape)
    return y


def _with_stats(y, return_stats, shape, *stats):
    """``y``, or ``(y, *stats)`` reshaped to ``shape`` (an autograd tuple) when asked for."""
    if not return_stats:
        return y
    return _outputs((y,) + tuple(anp.reshape(s, shape) for s in stats))


def _standardize(x, axes, eps):
    """(x - mean) / sqrt(var + eps) over ``axes``; returns (y, mean, var)."""
    mean = anp.mean(x, axis=axes, keepdims=True)
    var = anp.mean((x - mean) ** 2, axis=axes, keepdims=True)
    return (x - mean) / anp.sqrt(var + eps), mean, var


def _blend(old, batch, factor):
    """old <- (1 - factor) * old + factor * batch, in place, plain NumPy."""
    old = getval(old)
    old_values = np.asarray(old, dtype=np.float64)
    old[...] = (1.0 - factor) * old_values + factor * batch


def _update_running(running_mean, running_var, batch_mean, batch_var_biased, n,
                    momentum, momentum_convention="torch",
                    running_var_unbiased=True, num_batches_tracked=None):
    """PyTorch's running-statistics rule, applied in place.

    ``batch_mean`` and ``batch_var_biased`` are plain float64 arrays of the
    running buffers' shape; ``n`` is the number of values behind each.
    """
    if running_mean is None and running_var is None:
        return
    if num_batches_tracked is not None:
        num_batches_tracked = getval(num_batches_tracked)
        num_batches_tracked[...] += 1
    if momentum is None:
        if num_batches_tracked is None:
            raise ValueError("momentum=None (cumulative average) needs num_batches_tracked")
        factor = 1.0 / float(np.asarray(num_batches_tracked).reshape(-1)[0])
    elif momentum_convention == "torch":
        factor = float(momentum)
    elif momentum_convention == "keras":
        factor = 1.0 - float(momentum)
    else:
        raise ValueError(f"momentum_convention must be 'torch' or 'keras', got {momentum_convention!r}")
    if running_mean is not None:
        _blend(running_mean, batch_mean, factor)
    if running_var is not None:
        var = batch_var_biased * (n / (n - 1.0)) if running_var_unbiased else batch_var_biased
        _blend(running_var, var, factor)


def _as_shape(normalized_shape):
    if isinstance(normalized_shape, (int, np.integer)):
        return (int(normalized_shape),)
    return tuple(int(s) for s in normalized_shape)


# ---------------------------------------------------------------- batch norm
def batch_norm(input, running_mean, running_var, weight=None, bias=None,
               training=False, momentum=0.1, eps=1e-5, *, channel_axis=1,
               momentum_convention="torch", running_var_unbiased=True,
               num_batches_tracked=None, return_stats=False):
    r"""Batch normalization (Ioffe & Szegedy, ICML 2015, arXiv:1502.03167).

    Training (statistics of the batch, over every axis but ``channel_axis``):

    .. math::

        \mu_c = \frac1m \sum_{i \ne c} x_{i},\qquad
        \sigma^2_c = \frac1m \sum (x - \mu_c)^2,\qquad
        y = \frac{x - \mu_c}{\sqrt{\sigma^2_c + \epsilon}}\,\gamma_c + \beta_c

    with :math:`m` the number of values per channel and the biased
    (population) variance.  The running buffers are then updated in place,
    PyTorch's rule (``momentum_convention="torch"``):

    .. math::

        \hat\mu \leftarrow (1 - m)\hat\mu + m\,\mu,\qquad
        \hat\sigma^2 \leftarrow (1 - m)\hat\sigma^2 + m\,\tfrac{m_c}{m_c - 1}\sigma^2

    (the unbiased batch variance, unless ``running_var_unbiased=False``);
    ``"keras"`` swaps the roles: :math:`\hat\mu \leftarrow m\hat\mu + (1-m)\mu`.
    ``momentum=None`` increments ``num_batches_tracked`` in place and uses the
    factor :math:`1/\text{num\_batches\_tracked}` (cumulative average, either
    convention).  When ``num_batches_tracked`` is given it is incremented on
    every training call, as ``nn.BatchNorm`` does.  An empty batch leaves
    every buffer unchanged.

    Eval (``training=False``): :math:`y = (x - \hat\mu)/\sqrt{\hat\sigma^2 +
    \epsilon}\,\gamma + \beta`, differentiable in the running buffers too.

    ``return_stats``: also :math:`\mu_c` and :math:`(\sigma^2_c + \epsilon)^{-1/2}`,
    shape ``(C,)`` (eval: :math:`\hat\mu` and :math:`(\hat\sigma^2 + \epsilon)^{-1/2}`).
    """
    x = _f64(input)
    ndim = x.ndim
    ax = channel_axis % ndim
    C = x.shape[ax]
    bshape = [1] * ndim
    bshape[ax] = C
    bshape = tuple(bshape)
    axes = tuple(i for i in range(ndim) if i != ax)

    if not training:
        rm = anp.reshape(_f64(running_mean), bshape)
        rv = anp.reshape(_f64(running_var), bshape)
        y = (x - rm) / anp.sqrt(rv + eps)
        return _with_stats(_affine(y, weight, bias, bshape), return_stats, (C,),
                           rm, 1.0 / anp.sqrt(rv + eps))

    n = x.size // C if C else 0
    if x.size == 0:
        # empty batch: empty output, running statistics untouched
        return _affine(x, weight, bias, bshape)
    if n == 1:
        raise ValueError(
            f"batch_norm: expected more than 1 value per channel when training, "
            f"got input of shape {x.shape}")
    y, mean, var = _standardize(x, axes, eps)
    _update_running(running_mean, running_var,
                    np.reshape(getval(mean), (C,)), np.reshape(getval(var), (C,)), n,
                    momentum, momentum_convention, running_var_unbiased,
                    num_batches_tracked)
    return _with_stats(_affine(y, weight, bias, bshape), return_stats, (C,),
                       mean, 1.0 / anp.sqrt(var + eps))


def instance_norm(input, running_mean=None, running_var=None, weight=None,
                  bias=None, use_input_stats=True, momentum=0.1, eps=1e-5):
    r"""Instance normalization (Ulyanov, Vedaldi & Lempitsky 2016,
    arXiv:1607.08022).

    For input of shape ``(N, C, *spatial)``, per sample and channel:

    .. math::

        y_{nc\cdot} = \frac{x_{nc\cdot} - \mu_{nc}}{\sqrt{\sigma^2_{nc} + \epsilon}}
                      \gamma_c + \beta_c

    with the biased variance over the spatial axes.  With running buffers
    and ``use_input_stats=True`` they are updated in place as PyTorch does:
    the batch statistic is the mean over ``n`` of the per-instance means,
    and the mean over ``n`` of the per-instance *unbiased* variances,
    blended with ``new = (1 - momentum) old + momentum batch``.
    ``use_input_stats=False`` normalizes with the running buffers instead
    (differentiable in them).
    """
    x = _f64(input)
    ndim = x.ndim
    C = x.shape[1]
    bshape = (1, C) + (1,) * (ndim - 2)
    axes = tuple(range(2, ndim))

    if not use_input_stats:
        rm = anp.reshape(_f64(running_mean), bshape)
        rv = anp.reshape(_f64(running_var), bshape)
        y = (x - rm) / anp.sqrt(rv + eps)
        return _affine(y, weight, bias, bshape)

    if x.size == 0 and x.shape[0] == 0:
        return _affine(x, weight, bias, bshape)
    s = int(np.prod(x.shape[2:], dtype=np.int64))
    if s <= 1:
        raise ValueError(
            f"instance_norm: expected more than 1 spatial element when training, "
            f"got input of shape {x.shape}")
    y, mean, var = _standardize(x, axes, eps)
    if running_mean is not None or running_var is not None:
        if momentum is None:
            raise ValueError("instance_norm: momentum=None is not supported")
        m = np.reshape(getval(mean), x.shape[:2])
        v = np.reshape(getval(var), x.shape[:2]) * (s / (s - 1.0))
        # per-instance unbiased variances averaged over the batch: pass the
        # already-unbiased value and skip the correction.
        _update_running(running_mean, running_var, m.mean(axis=0), v.mean(axis=0), s,
                        momentum, "torch", running_var_unbiased=False)
    return _affine(y, weight, bias, bshape)


def ghost_batch_norm(input, virtual_batch_size, running_mean=None,
                     running_var=None, weight=None, bias=None, training=True,
                     momentum=0.1, eps=1e-5):
    r"""Ghost batch normalization (Hoffer, Hubara & Soudry, NeurIPS 2017,
    arXiv:1705.08741).

    Axis 0 is split into consecutive chunks of ``virtual_batch_size``
    samples; each chunk is batch-normalized on its own (channel axis 1,
    biased variance, eps inside the root) and the outputs concatenated:

    .. math::

        y^{(k)} = \frac{x^{(k)} - \mu^{(k)}_c}{\sqrt{\sigma^{2(k)}_c + \epsilon}}
                  \gamma_c + \beta_c .

    In training the running buffers are updated chunk by chunk in order,
    exactly as calling ``batch_norm(chunk, ..., training=True)`` on each
    chunk in turn.  Eval (``training=False``) is plain batch norm with the
    running statistics.
    """
    x = _f64(input)
    if not training:
        return batch_norm(x, running_mean, running_var, weight, bias, False,
                          momentum, eps)
    N = x.shape[0]
    vb = int(virtual_batch_size)
    if vb <= 0 or N % vb:
        raise ValueError(
            f"ghost_batch_norm: virtual_batch_size={virtual_batch_size} must divide "
            f"the batch size of input shape {x.shape}")
    if N == 0:
        return batch_norm(x, running_mean, running_var, weight, bias, True,
                          momentum, eps)
    if momentum is None and (running_mean is not None or running_var is not None):
        raise ValueError("ghost_batch_norm: momentum=None is not supported")
    chunks = [
        batch_norm(x[k:k + vb], running_mean, running_var, weight, bias, True,
                   momentum, eps)
        for k in range(0, N, vb)
    ]
    return anp.concatenate(chunks, axis=0)


# ---------------------------------------------------------------- per-sample
def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5, *,
               return_stats=False):
    r"""Layer normalization (Ba, Kiros & Hinton 2016, arXiv:1607.06450).

    Over the trailing ``len(normalized_shape)`` axes :math:`A`:

    .. math::

        y = \frac{x - \mathrm{E}_A[x]}{\sqrt{\mathrm{Var}_A[x] + \epsilon}}
            \odot \gamma + \beta

    biased variance; ``weight`` and ``bias`` have shape ``normalized_shape``.
    ``return_stats``: also the mean and :math:`(\mathrm{Var}_A[x] + \epsilon)^{-1/2}`,
    the axes :math:`A` kept as size 1.
    """
    x = _f64(input)
    shape = _as_shape(normalized_shape)
    k = len(shape)
    axes = tuple(range(x.ndim - k, x.ndim))
    y, mean, var = _standardize(x, axes, eps)
    return _with_stats(_affine(y, weight, bias, shape), return_stats, mean.shape,
                       mean, 1.0 / anp.sqrt(var + eps))


def rms_norm(input, normalized_shape, weight=None, eps=None, *, return_stats=False):
    r"""Root-mean-square layer normalization (Zhang & Sennrich, NeurIPS 2019,
    arXiv:1910.07467).

    Over the trailing ``len(normalized_shape)`` axes :math:`A`:

    .. math::

        y = \frac{x}{\sqrt{\mathrm{E}_A[x^2] + \epsilon}} \odot \gamma

    No centering.  ``eps=None`` means ``np.finfo(dtype).eps`` of the
    *original* input dtype (as ``torch.nn.functional.rms_norm``): 2**-23 for
    float32 input, 2**-52 for float64.  ``return_stats``: also
    :math:`(\mathrm{E}_A[x^2] + \epsilon)^{-1/2}`, the axes :math:`A` kept as size 1.
    """
    if eps is None:
        raw = getval(input)
        dtype = np.asarray(raw).dtype
        if not np.issubdtype(dtype, np.floating):
            dtype = np.dtype(np.float64)
        eps = float(np.finfo(dtype).eps)
    x = _f64(input)
    shape = _as_shape(normalized_shape)
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    ms = anp.mean(x ** 2, axis=axes, keepdims=True)
    y = x / anp.sqrt(ms + eps)
    return _with_stats(_affine(y, weight, None, shape), return_stats, ms.shape,
                       1.0 / anp.sqrt(ms + eps))


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5, *,
               affine="channel", return_stats=False):
    r"""Group normalization (Wu & He, ECCV 2018, arXiv:1803.08494).

    Input ``(N, C, *spatial)``; channels :math:`[gC/G, (g+1)C/G)` form group
    :math:`g` (PyTorch's grouping).  Per sample and group, over the group's
    channels and all spatial positions:

    .. math::

        \hat x = \frac{x - \mu_{ng}}{\sqrt{\sigma^2_{ng} + \epsilon}},\qquad
        y = \hat x\,\gamma + \beta

    biased variance.  ``affine="channel"``: :math:`\gamma, \beta` of shape
    ``(C,)`` (PyTorch, ONNX opset 21); ``affine="group"``: shape ``(G,)``,
    one scale per group (ONNX GroupNormalization opset 18).  ``return_stats``:
    also :math:`\mu_{ng}` and :math:`(\sigma^2_{ng} + \epsilon)^{-1/2}`, shape ``(N, G)``.
    """
    x = _f64(input)
    N, C = x.shape[0], x.shape[1]
    G = int(num_groups)
    if G <= 0 or C % G:
        raise ValueError(f"group_norm: num_groups={num_groups} must divide C={C}")
    rest = int(np.prod(x.shape[2:], dtype=np.int64)) * (C // G)
    xg = anp.reshape(x, (N, G, rest))
    yg, mean, var = _standardize(xg, (2,), eps)
    if affine == "group":
        y = anp.reshape(_affine(yg, weight, bias, (1, G, 1)), x.shape)
    elif affine == "channel":
        y = _affine(anp.reshape(yg, x.shape), weight, bias, (1, C) + (1,) * (x.ndim - 2))
    else:
        raise ValueError(f"group_norm: affine must be 'channel' or 'group', got {affine!r}")
    return _with_stats(y, return_stats, (N, G), mean, 1.0 / anp.sqrt(var + eps))


def positional_norm(input, eps=1e-5):
    r"""Positional normalization, PONO (Li, Wu, Lim, Belongie & Weinberger,
    NeurIPS 2019, arXiv:1907.04312).

    At every sample and spatial position, over the channel axis 1:

    .. math::

        y_{n\cdot p} = \frac{x_{n\cdot p} - \mu_{np}}{\sqrt{\sigma^2_{np} + \epsilon}}

    biased variance, eps inside the root, no affine parameters.
    """
    x = _f64(input)
    y, _, _ = _standardize(x, (1,), eps)
    return y


def batch_group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    r"""Batch group normalization (Zhou, Sun, Bai & Zhou 2020,
    arXiv:2012.02782).

    Input ``(N, C, *spatial)``; channels are grouped as in group norm and the
    statistics of group :math:`g` are taken over the whole batch, the
    group's :math:`C/G` channels and all spatial positions:

    .. math::

        y = \frac{x - \mu_g}{\sqrt{\sigma^2_g + \epsilon}}\,\gamma_c + \beta_c

    biased variance; per-channel affine (shape ``(C,)``).
    """
    x = _f64(input)
    N, C = x.shape[0], x.shape[1]
    G = int(num_groups)
    if G <= 0 or C % G:
        raise ValueError(f"batch_group_norm: num_groups={num_groups} must divide C={C}")
    bshape = (1, C) + (1,) * (x.ndim - 2)
    if x.size == 0:
        return _affine(x, weight, bias, bshape)
    rest = int(np.prod(x.shape[2:], dtype=np.int64)) * (C // G)
    xg = anp.reshape(x, (N, G, rest))
    yg, _, _ = _standardize(xg, (0, 2), eps)
    return _affine(anp.reshape(yg, x.shape), weight, bias, bshape)


def mean_variance_norm(input, axes=(0, 2, 3), eps=1e-9, *, eps_placement="std"):
    r"""Mean-variance normalization (ONNX MeanVarianceNormalization).

    Over ``axes``, biased variance:

    .. math::

        \text{"std"}:\; y = \frac{x - \mu}{\sqrt{\sigma^2} + \epsilon}
        \qquad
        \text{"variance"}:\; y = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}}

    ``"std"`` is ONNX's function body (eps added to the standard deviation,
    default 1e-9); ``"variance"`` the usual eps-inside-the-root form.
    """
    x = _f64(input)
    axes = tuple(int(a) % x.ndim for a in axes)
    if x.size == 0:
        return x
    mean = anp.mean(x, axis=axes, keepdims=True)
    var = anp.mean((x - mean) ** 2, axis=axes, keepdims=True)
    if eps_placement == "std":
        return (x - mean) / (anp.sqrt(var) + eps)
    if eps_placement == "variance":
        return (x - mean) / anp.sqrt(var + eps)
    raise ValueError(f"mean_variance_norm: eps_placement must be 'std' or 'variance', got {eps_placement!r}")


# ---------------------------------------------------------------- LRN
def _lrn_window(size, convention):
    """(channels before c, channels after c, divide alpha by size?)"""
    n = int(size)
    if convention == "torch":
        return n // 2, (n - 1) // 2, True
    if convention == "onnx":
        return (n - 1) // 2, n // 2, True          # ceil((n-1)/2) == n // 2
    if convention in ("caffe", "tf") and n % 2 == 0:
        raise ValueError(
            f"local_response_norm: convention={convention!r} has a symmetric window "
            f"and needs an odd size, got size={n}"
        )
    if convention == "caffe":
        return (n - 1) // 2, (n - 1) // 2, True
    if convention == "tf":
        r = (n - 1) // 2
        return r, r, False
    raise ValueError(f"local_response_norm: convention must be 'torch', 'onnx', 'caffe' or 'tf', got {convention!r}")


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0, *,
                        convention="torch"):
    r"""Local response normalization across channels (Krizhevsky, Sutskever &
    Hinton, NeurIPS 2012).

    Input ``(N, C, *spatial)`` (rank >= 3, channels on axis 1).  With the
    window :math:`W(c) = [c - a, c + b] \cap [0, C)` (zero padding outside):

    .. math::

        y_c = x_c \Big/ \Big(k + \frac{\alpha}{n} \sum_{j \in W(c)} x_j^2\Big)^{\beta}

    The conventions (checked against each framework's documentation; the
    torch one also numerically against ``torch.nn.functional.local_response_norm``
    for sizes 1..6, see tests/test_reference.py):

    * ``"torch"``: :math:`a = \lfloor n/2 \rfloor, b = \lfloor (n-1)/2 \rfloor`,
      alpha divided by :math:`n` -- PyTorch pads the squared input with
      ``size//2`` zeros before and ``(size-1)//2`` after the channel axis
      and average-pools with window ``size`` (zeros counted, so the sum is
      divided by :math:`n`).
    * ``"onnx"``: :math:`a = \lfloor (n-1)/2 \rfloor, b = \lceil (n-1)/2 \rceil`,
      alpha divided by :math:`n` (ONNX LRN-13 operator definition).  For
      odd :math:`n` this equals torch; for even :math:`n` the extra channel
      is on the other side.
    * ``"caffe"``: Caffe ACROSS_CHANNELS, ``local_size`` must be odd there
      (symmetric window, pre_pad :math:`(n-1)/2`), alpha divided by
      :math:`n`; an even ``size`` is a ValueError, as in Caffe.
    * ``"tf"``: ``tf.nn.local_response_normalization(input, depth_radius,
      bias, alpha, beta)`` with the mapping ``depth_radius = (size-1)//2``,
      ``bias = k``; the window is :math:`[c-r, c+r]` of :math:`2r+1`
      channels and alpha is **not** divided by the window size:
      :math:`y = x / (k + \alpha \sum x_j^2)^\beta`.  (TF puts channels
      last; here they are on axis 1 like the others.)  An even ``size`` has
      no depth_radius: ValueError.
    """
    x = _f64(input)
    before, after, divide = _lrn_window(size, convention)
    scale = alpha / size if divide else alpha
    if x.size == 0:
        return x
    sq = x ** 2
    C = x.shape[1]
    pad_shape = lambda w: (x.shape[0], w) + tuple(x.shape[2:])  # noqa: E731
    parts = []
    if before:
        parts.append(np.zeros(pad_shape(before)))
    parts.append(sq)
    if after:
        parts.append(np.zeros(pad_shape(after)))
    padded = anp.concatenate(parts, axis=1) if len(parts) > 1 else sq
    window_sum = padded[:, 0:C]
    for j in range(1, before + after + 1):
        window_sum = window_sum + padded[:, j:j + C]
    return x / (k + scale * window_sum) ** beta


# ---------------------------------------------------------------- Lp normalize
def normalize(input, p=2.0, dim=1, eps=1e-12, *, eps_placement="norm"):
    r"""Lp normalization along ``dim`` (``torch.nn.functional.normalize``).

    .. math::

        y = \frac{x}{\max(\lVert x \rVert_p, \epsilon)},\qquad
        \lVert x \rVert_p = \Big(\sum_{\text{dim}} |x|^p\Big)^{1/p},\quad
        \lVert x \rVert_\infty = \max |x|

    ``p`` may be any positive float or ``inf`` (``-inf``: the minimum of
    ``|x|``, as ``torch.linalg.vector_norm``).  The eps clamp is on the norm
    (not the squared norm, as TF's ``l2_normalize`` does) unless
    ``eps_placement="squared_norm"``: :math:`x / \sqrt{\max(\lVert x\rVert_2^2, \epsilon)}`,
    the same as clamping the norm at :math:`\sqrt\epsilon`.
    """
    x = _f64(input)
    p = float(p)
    if eps_placement == "squared_norm":
        eps = math.sqrt(eps)
    a = anp.abs(x)
    if p == math.inf:
        norm = anp.max(a, axis=dim, keepdims=True)
    elif p == -math.inf:
        norm = anp.min(a, axis=dim, keepdims=True)
    elif p == 2.0:
        norm = anp.sqrt(anp.sum(x ** 2, axis=dim, keepdims=True))
    elif p == 1.0:
        norm = anp.sum(a, axis=dim, keepdims=True)
    elif p > 0:
        norm = anp.sum(a ** p, axis=dim, keepdims=True) ** (1.0 / p)
    else:
        raise ValueError(f"normalize: p must be positive or +-inf, got {p}")
    return x / anp.maximum(norm, eps)
