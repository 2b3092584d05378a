"""Argument checking and running statistics shared by the standardizers."""
from __future__ import annotations

import numbers

import numpy as np

from ..numerics import as_float64, as_optional_float64, check_finite_scalar, check_shape

__all__ = [
    "input_array",
    "affine_param",
    "eps_value",
    "channel_axis_of",
    "positive_int",
    "RunningStats",
]


def input_array(x, min_ndim, what="input", layout="(N, C, *)"):
    x = as_float64(what, x)
    if x.ndim < min_ndim:
        raise ValueError(
            f"{what} must have at least {min_ndim} dimensions {layout}, got shape {x.shape}"
        )
    return x


def affine_param(name, value, expected, context):
    """Optional affine parameter of exactly the expected shape (float64) or None."""
    v = as_optional_float64(name, value)
    if v is not None:
        check_shape(name, v, expected, context)
    return v


def eps_value(eps, name="eps"):
    """eps as a float; negative values are legal (computed literally, PyTorch)."""
    return check_finite_scalar(name, eps)


def positive_int(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def channel_axis_of(x, channel_axis):
    if isinstance(channel_axis, (bool, np.bool_)) or not isinstance(channel_axis, numbers.Integral):
        raise TypeError(f"channel_axis must be an integer, got {channel_axis!r}")
    if not -x.ndim <= channel_axis < x.ndim:
        raise ValueError(
            f"channel_axis={channel_axis} is out of range for input of shape {x.shape}"
        )
    return channel_axis % x.ndim


class RunningStats:
    """Running mean / variance buffers and their update rule.

    The update follows PyTorch by default:
    ``new = (1 - m) * old + m * batch`` (``momentum_convention="torch"``) or
    Keras / Flax / ONNX ``new = m * old + (1 - m) * batch``
    (``momentum_convention="keras"``); ``momentum=None`` is PyTorch's
    cumulative moving average with factor ``1 / num_batches_tracked`` after
    incrementing the counter in place (a given counter is incremented
    whatever the momentum, as the PyTorch module does).  The running variance receives the
    unbiased batch variance ``n / (n - 1) * var`` (PyTorch) unless
    ``unbiased=False`` (biased, as Keras / Flax / ONNX).  Buffers are updated
    in place, in their own dtype; an empty batch leaves them unchanged.
    Momentum outside [0, 1] is applied literally.
    """

    def __init__(self, running_mean, running_var, num_channels, *, momentum=0.1,
                 momentum_convention="torch", unbiased=True, num_batches_tracked=None):
        if momentum_convention not in ("torch", "keras"):
            raise ValueError(
                f"momentum_convention must be 'torch' or 'keras', got {momentum_convention!r}"
            )
        if momentum is None:
            if num_batches_tracked is None:
                raise ValueError(
                    "momentum=None (cumulative moving average) needs num_batches_tracked: "
                    "an int64 array of shape () or (1,) updated in place"
                )
            nbt = np.asarray(num_batches_tracked)
            if not isinstance(num_batches_tracked, np.ndarray) or nbt.size != 1 or nbt.dtype.kind not in "iu":
                raise TypeError(
                    "num_batches_tracked must be an integer numpy array of one element, "
                    f"got {num_batches_tracked!r}"
                )
        else:
            momentum = check_finite_scalar("momentum", momentum)
        self.momentum = momentum
        self.convention = momentum_convention
        self.unbiased = bool(unbiased)
        self.num_batches_tracked = num_batches_tracked
        self.buffers = []
        for name, buf in (("running_mean", running_mean), ("running_var", running_var)):
            if buf is None:
                self.buffers.append(None)
                continue
            if not isinstance(buf, np.ndarray):
                raise TypeError(f"{name} must be a numpy array (updated in place), got {type(buf).__name__}")
            as_float64(name, buf)  # dtype check only
            check_shape(name, buf, (num_channels,), "one value per channel")
            if not buf.flags.writeable:
                raise ValueError(f"{name} must be writeable: it is updated in place")
            self.buffers.append(buf)

    @property
    def active(self):
        return any(b is not None for b in self.buffers)

    def update(self, batch_mean, batch_var, count):
        """Fold one batch's per-channel mean and biased variance (``count`` values each)."""
        if not self.active or count == 0:
            return
        if self.num_batches_tracked is not None:
            self.num_batches_tracked[...] += 1
        if self.momentum is None:
            factor = 1.0 / float(np.asarray(self.num_batches_tracked).reshape(-1)[0])
        else:
            factor = self.momentum
        keep, take = (1.0 - factor, factor) if self.convention == "torch" else (factor, 1.0 - factor)
        if self.unbiased:
            batch_var = batch_var * (count / (count - 1)) if count > 1 else np.full_like(batch_var, np.nan)
        rm, rv = self.buffers
        if rm is not None:
            rm[...] = keep * rm.astype(np.float64) + take * batch_mean
        if rv is not None:
            rv[...] = keep * rv.astype(np.float64) + take * batch_var
