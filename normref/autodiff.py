"""Derivatives of any registered normalizer: ``vjp``, ``jvp``, ``jacobian``,
``jacobian_operator``.

They take the public function itself plus its arguments, like ``jax.vjp``, and
dispatch through the registry to the normalizer's :class:`~normref.registry.Plan`,
which runs the numba fast path once and serves every derivative from the
saved statistics.

Slots: derivatives are indexed by *positional* argument, one slot per
positional argument given.  A slot whose argument is not a differentiable
array (``normalized_shape``, ``None``, a flag, running statistics in training
mode) carries ``None``; keyword arguments are constants.

>>> y, pullback = vjp(layer_norm, x, (8,), w, b)     # doctest: +SKIP
>>> dx, _, dw, db = pullback(dy)                        # doctest: +SKIP
"""
from __future__ import annotations

import functools

import numpy as np

from .registry import spec_of

__all__ = ["vjp", "jvp", "jacobian", "jacobian_operator", "bind"]


def bind(f, *args, **kwargs):
    """Return ``(spec, plan, slot_names)`` for a call ``f(*args, **kwargs)``.

    ``slot_names[i]`` is the parameter name of positional argument ``i`` if it
    is differentiable in this call, else None.  ``f`` may be a
    ``functools.partial`` of a registered function; slots then cover only the
    positional arguments passed here, not those bound in the partial.
    """
    n_pre = 0
    while isinstance(f, functools.partial):
        n_pre += len(f.args)
        args = f.args + tuple(args)
        kwargs = {**f.keywords, **kwargs}
        f = f.func
    spec = spec_of(f)
    if len(args) > len(spec.signature):
        raise TypeError(
            f"{spec.name}() takes at most {len(spec.signature)} positional arguments, "
            f"got {len(args)}"
        )
    plan = spec.bind(*args, **kwargs)
    slots = tuple(
        name if name in plan.params else None
        for name in spec.signature[: len(args)]
    )
    return spec, plan, slots[n_pre:]


def _shape_of(plan, name):
    return plan.value(name).shape


def vjp(f, *args, **kwargs):
    """Forward value and pullback of ``f(*args, **kwargs)``.

    Returns ``(y, pullback)``; ``pullback(dy)`` returns a tuple with one entry
    per positional argument: the gradient (float64, the argument's shape) for
    differentiable arrays, else None.  Note: a training-mode call updates
    running statistics exactly as the forward does (once, here).
    """
    spec, plan, slots = bind(f, *args, **kwargs)
    y = plan.forward()

    def pullback(cotangent):
        dy = np.asarray(cotangent, dtype=np.float64)
        if dy.shape != y.shape:
            raise ValueError(
                f"cotangent has shape {dy.shape}, expected the output shape {y.shape}"
            )
        grads = plan.vjp(dy)
        return tuple(None if s is None else grads[s] for s in slots)

    return y, pullback


def jvp(f, primals, tangents, **kwargs):
    """``(y, ty)``: forward value and directional derivative along ``tangents``.

    ``tangents`` has one entry per entry of ``primals``; None means zero (and
    must be None for non-differentiable arguments).
    """
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise ValueError(
            f"primals and tangents must have the same length, got {len(primals)} "
            f"and {len(tangents)}"
        )
    spec, plan, slots = bind(f, *primals, **kwargs)
    y = plan.forward()
    tans = {}
    for i, (slot, t) in enumerate(zip(slots, tangents)):
        if t is None:
            continue
        if slot is None:
            raise ValueError(
                f"tangents[{i}] must be None: argument {i} of {spec.name} "
                f"({spec.signature[i]}) is not differentiable in this call"
            )
        t = np.asarray(t, dtype=np.float64)
        shape = _shape_of(plan, slot)
        if t.shape != shape:
            raise ValueError(f"tangents[{i}] ({slot}) has shape {t.shape}, expected {shape}")
        tans[slot] = t
    return y, plan.jvp(tans)


def _wrt_name(spec, plan, slots, wrt):
    if isinstance(wrt, str):
        if wrt not in plan.params:
            raise ValueError(
                f"wrt={wrt!r} is not a differentiable argument of this {spec.name} call; "
                f"differentiable: {plan.params}"
            )
        return wrt
    if not 0 <= wrt < len(slots) or slots[wrt] is None:
        raise ValueError(
            f"wrt={wrt} is not a differentiable positional argument of this "
            f"{spec.name} call; differentiable positions: "
            f"{[i for i, s in enumerate(slots) if s is not None]}"
        )
    return slots[wrt]


def jacobian(f, *args, wrt=0, **kwargs):
    """Dense Jacobian of ``f(*args, **kwargs)`` w.r.t. positional argument ``wrt``.

    Shape ``y.shape + args[wrt].shape``.  Normalizers with block structure
    assemble it in closed form (one block per statistics group); the others
    stack JVPs or VJPs.
    """
    spec, plan, slots = bind(f, *args, **kwargs)
    return plan.jacobian(_wrt_name(spec, plan, slots, wrt))


def jacobian_operator(f, *args, wrt=0, **kwargs):
    """The Jacobian as a ``scipy.sparse.linalg.LinearOperator``.

    Shape ``(y.size, args[wrt].size)``; ``matvec`` is a JVP, ``rmatvec`` a VJP,
    both on flattened vectors; ``matmat`` / ``rmatmat`` loop over columns.
    The forward runs once, at construction.
    """
    from scipy.sparse.linalg import LinearOperator

    spec, plan, slots = bind(f, *args, **kwargs)
    name = _wrt_name(spec, plan, slots, wrt)
    y = plan.forward()
    pshape = _shape_of(plan, name)
    n_in = int(np.prod(pshape, dtype=np.int64))

    def matvec(v):
        v = np.asarray(v, dtype=np.float64).reshape(pshape)
        return np.asarray(plan.jvp({name: v})).ravel()

    def rmatvec(u):
        u = np.asarray(u, dtype=np.float64).reshape(y.shape)
        return np.asarray(plan.vjp(u)[name]).ravel()

    return LinearOperator(
        (y.size, n_in), matvec=matvec, rmatvec=rmatvec, dtype=np.float64
    )
