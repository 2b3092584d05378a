"""Argument checking and running statistics shared by the standardizers."""
from __future__ import annotations

import numbers

import numpy as np

from ..numerics import (all_finite, as_float64, as_optional_float64, check_choice,
                        check_finite_scalar, check_flag, check_shape)

__all__ = [
    "input_array",
    "affine_param",
    "eps_value",
    "channel_axis_of",
    "positive_int",
    "stats_option",
    "running_buffer",
    "running_options",
    "commit_updates",
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


def stats_option(return_stats, shape):
    """The ``stats_shape`` of a :class:`~normref.standardize.Standardization` for the
    keyword ``return_stats``: ``shape`` (the statistics' output shape) when True, None when
    False; anything but a bool is a TypeError (``check_flag``)."""
    return tuple(shape) if check_flag("return_stats", return_stats) else None


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


def running_buffer(name, buf, shape, context="one value per channel"):
    """A running-statistics buffer updated in place: a writeable float ndarray of ``shape``."""
    if not isinstance(buf, np.ndarray) or isinstance(buf, np.ma.MaskedArray):
        raise TypeError(f"{name} must be a numpy array (updated in place), got {type(buf).__name__}")
    as_float64(name, buf)  # dtype check only
    check_shape(name, buf, shape, context)
    if not buf.flags.writeable:
        raise ValueError(f"{name} must be writeable: it is updated in place")
    return buf


def commit_updates(owner, updates):
    """Write running-statistics updates, all or nothing.

    ``updates`` is a list of ``(name, buffer, new_value, inputs_finite)``.
    Every new value is cast to its buffer's dtype first; one that is not
    finite although its inputs were (a huge momentum, or a value beyond a
    float16 buffer's range) raises ValueError before any buffer is written.
    """
    staged = []
    for name, buf, new, ok in updates:
        with np.errstate(over="ignore", invalid="ignore"):
            cast = np.asarray(new, dtype=np.float64).astype(buf.dtype)
        if ok and not np.isfinite(cast).all():
            raise ValueError(
                f"{owner}: the updated {name} is not finite in its dtype {buf.dtype} (the new "
                f"value overflows; momentum and the batch statistics were finite): nothing was updated"
            )
        staged.append((buf, cast))
    for buf, cast in staged:
        buf[...] = cast


def running_options(momentum=0.1, momentum_convention="torch", unbiased=True,
                    num_batches_tracked=None, unbiased_name="running_var_unbiased"):
    """Validate the running-statistics options (also in eval mode, where they are unused).

    Returns ``(momentum, momentum_convention, unbiased, num_batches_tracked)``:
    momentum a finite real or None (cumulative average, which needs the
    counter), the convention ``"torch"`` or ``"keras"``, ``unbiased`` a bool,
    and ``num_batches_tracked`` None or a writeable integer array of one
    element holding a count that can be incremented.
    """
    momentum_convention = check_choice("momentum_convention", momentum_convention, ("torch", "keras"))
    unbiased = check_flag(unbiased_name, unbiased)
    if num_batches_tracked is not None:
        nbt = num_batches_tracked
        if (not isinstance(nbt, np.ndarray) or isinstance(nbt, np.ma.MaskedArray)
                or nbt.dtype.kind not in "iu" or nbt.size != 1):
            raise TypeError(
                "num_batches_tracked must be an integer numpy array of one element "
                f"(updated in place), got {type(nbt).__name__} {nbt!r:.60}"
            )
        if not nbt.flags.writeable:
            raise ValueError("num_batches_tracked must be writeable: it is incremented in place")
        count = int(nbt.reshape(-1)[0])
        if count < 0 or count >= np.iinfo(nbt.dtype).max:
            raise ValueError(
                f"num_batches_tracked must hold a count in [0, {np.iinfo(nbt.dtype).max - 1}] "
                f"(it is incremented before use), got {count}"
            )
    elif momentum is None:
        raise ValueError(
            "momentum=None (cumulative moving average) needs num_batches_tracked: "
            "an int64 array of shape () or (1,) updated in place"
        )
    if momentum is not None:
        momentum = check_finite_scalar("momentum", momentum)
    return momentum, momentum_convention, unbiased, num_batches_tracked


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
    Momentum outside [0, 1] is applied literally.  Every argument is
    validated here, before the forward runs, and the update is all or
    nothing (:func:`commit_updates`).  ``num_batches_tracked``, when given,
    must be a writeable integer array of one element holding a count >= 0.
    """

    def __init__(self, running_mean, running_var, num_channels, *, momentum=0.1,
                 momentum_convention="torch", unbiased=True, num_batches_tracked=None,
                 owner="batch_norm"):
        momentum, momentum_convention, unbiased, num_batches_tracked = running_options(
            momentum, momentum_convention, unbiased, num_batches_tracked)
        self.momentum = momentum
        self.convention = momentum_convention
        self.unbiased = unbiased
        self.num_batches_tracked = num_batches_tracked
        self.owner = owner
        self.buffers = [
            None if buf is None else running_buffer(name, buf, (num_channels,))
            for name, buf in (("running_mean", running_mean), ("running_var", running_var))
        ]

    @property
    def active(self):
        return any(b is not None for b in self.buffers)

    def update(self, batch_mean, batch_var, count):
        """Fold one batch's per-channel mean and biased variance (``count`` values each)."""
        self.update_many([(batch_mean, batch_var, count)])

    def update_many(self, batches):
        """Fold ``[(mean, biased var, count), ...]`` in order, all or nothing.

        Each step is rounded to the buffers' dtypes as if the buffers were
        written after every batch (ghost batch norm's one update per chunk).
        """
        if not self.active:
            return
        nbt = self.num_batches_tracked
        tracked = None if nbt is None else int(nbt.reshape(-1)[0])
        cur = [None if b is None else b.astype(np.float64) for b in self.buffers]
        finite = [None if b is None else all_finite(b) for b in cur]
        stepped = False
        for batch_mean, batch_var, count in batches:
            if count == 0:
                continue
            stepped = True
            if tracked is not None:
                tracked += 1
            factor = 1.0 / tracked if self.momentum is None else self.momentum
            keep, take = (1.0 - factor, factor) if self.convention == "torch" else (factor, 1.0 - factor)
            if self.unbiased:
                batch_var = batch_var * (count / (count - 1)) if count > 1 else np.full_like(batch_var, np.nan)
            for i, (buf, batch) in enumerate(zip(self.buffers, (batch_mean, batch_var))):
                if buf is None:
                    continue
                finite[i] = finite[i] and all_finite(batch)
                with np.errstate(over="ignore", invalid="ignore"):
                    cur[i] = (keep * cur[i] + take * batch).astype(buf.dtype).astype(np.float64)
        if not stepped:
            return
        updates = [(name, buf, c, ok) for name, buf, c, ok in
                   zip(("running_mean", "running_var"), self.buffers, cur, finite) if buf is not None]
        if nbt is not None:
            updates.append(("num_batches_tracked", nbt, np.full(nbt.shape, tracked), True))
        commit_updates(self.owner, updates)
