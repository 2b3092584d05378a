r"""Derivatives of a normalizer normref does not implement: the autograd path.

:func:`normref.vjp`, :func:`~normref.jvp`, :func:`~normref.jacobian` and
:func:`~normref.jacobian_operator` accept, besides a registered normalizer, any
function written with ``autograd.numpy``; a normalizer registered by a user
without its own ``bind`` (:func:`normref.register`) is served the same way.
Its derivatives are autograd's, not normref's exact kernels, and are labelled
so: the plan's ``derivatives`` is ``"autograd"`` (``"normref"`` for a built-in),
and so is the ``derivatives`` attribute of a pullback and of a Jacobian operator.

Which arguments are differentiable: every positional argument that is a
floating-point array (float16/32/64, upcast exactly to float64).  Python
scalars, ints, tuples, None and every keyword argument are constants.

.. math::

    \bar x_i = \Big(\frac{\partial f}{\partial x_i}\Big)^T \bar y
    \quad\text{(reverse mode)}, \qquad
    \dot y = \sum_i \frac{\partial f}{\partial x_i} \dot x_i
    \quad\text{(forward mode)}

both evaluated by autograd on the float64 copies of the arguments; the
forward value is the function's own output, which must be a floating array.
The contract of every plan holds (:class:`normref.registry.Plan`): a
non-finite output of finite arguments is a ValueError, and the derivative API
hands the plan private copies of its arguments.
"""
from __future__ import annotations

import inspect

import numpy as np

from .numerics import as_float64
from .registry import Plan

__all__ = ["AutogradPlan", "autograd_bind", "positional_names"]


def positional_names(function, n):
    """Names of the first ``n`` positional parameters (``arg<i>`` past a ``*args``)."""
    try:
        params = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = []
    for p in params:
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            names.append(p.name)
    while len(names) < n:
        names.append(f"arg{len(names)}")
    return tuple(names[:max(n, len(names))])


def _is_float_array(a):
    return isinstance(a, np.ndarray) and a.dtype.kind == "f"


class AutogradPlan(Plan):
    """A call ``function(*args, **kwargs)`` differentiated by autograd."""

    derivatives = "autograd"

    def __init__(self, name, function, args, kwargs):
        self.name = name
        self._function = function
        self._kwargs = dict(kwargs)
        names = positional_names(function, len(args))
        self._args = list(args)
        self._positions = {}
        values = {}
        for i, a in enumerate(args):
            if _is_float_array(a):
                values[names[i]] = as_float64(names[i], a)
                self._positions[names[i]] = i
        self._values = values
        self.params = tuple(values)

    def _call(self, vals):
        args = list(self._args)
        for name, v in zip(self.params, vals):
            args[self._positions[name]] = v
        return self._function(*args, **self._kwargs)

    def _output(self, y):
        try:
            out = np.asarray(y)
        except Exception as e:  # an autograd box escaped, or a non-array result
            raise TypeError(f"{self.name}: the function must return an array, got "
                            f"{type(y).__name__}: {e}") from None
        if out.dtype.kind != "f":
            raise TypeError(f"{self.name}: the function must return a floating array, "
                            f"got dtype {out.dtype} with shape {out.shape}")
        return out.astype(np.float64, copy=False)

    @property
    def output_shape(self):
        return self.forward().shape

    def _forward(self):
        from autograd import make_vjp

        vals = tuple(self._values[n] for n in self.params)
        if not vals:
            return self._output(self._call(vals))
        self._pull, y = make_vjp(lambda v: self._call(v))(vals)
        return self._output(y)

    def vjp(self, cotangent):
        self.forward()
        if not self.params:
            return {}
        grads = self._pull(np.asarray(cotangent, dtype=np.float64))
        return {n: np.asarray(g, dtype=np.float64).reshape(self._values[n].shape)
                for n, g in zip(self.params, grads)}

    def jvp(self, tangents):
        from autograd import make_jvp

        y = self.forward()
        if not self.params or not tangents:
            return np.zeros(y.shape)
        vals = tuple(self._values[n] for n in self.params)
        tans = tuple(np.asarray(tangents[n], dtype=np.float64) if n in tangents
                     else np.zeros(self._values[n].shape) for n in self.params)
        _, ty = make_jvp(lambda v: self._call(v))(vals)(tans)
        return np.asarray(ty, dtype=np.float64).reshape(y.shape)


def autograd_bind(name, function):
    """A ``bind`` for :class:`~normref.registry.Spec`: calls of ``function`` as autograd plans."""

    def bind(*args, **kwargs):
        return AutogradPlan(name, function, args, kwargs)

    bind.__name__ = f"autograd_bind_{name}"
    return bind
