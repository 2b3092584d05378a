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

A function that is not a registered normalizer -- any callable written with
``autograd.numpy`` -- is differentiated by autograd instead
(:mod:`normref.autograd_plan`): every floating-point positional array is a
differentiable slot, and the pullback's (and operator's) ``derivatives``
attribute says ``"autograd"`` rather than ``"normref"``.

The contract every derivative keeps (and tests/test_fuzz.py checks):

* arguments are checked before anything runs: a cotangent or tangent must be
  a float array of the expected shape (None, strings, complex, integer and
  ragged input are a TypeError naming it); a tangent for a non-differentiable
  argument, a bad ``wrt`` or a wrong-length operator vector is a ValueError
  or TypeError naming it.  A call that raises leaves every argument and
  running buffer as it was (a JVP validates its tangents before the forward
  updates running statistics);
* the derivatives are of the arguments *as they were at the call*: a
  pullback or an operator keeps private copies of what it reads later (made
  once, inside the forward kernel where it can), so mutating the arguments
  after :func:`vjp` or :func:`jacobian_operator` returns changes nothing
  (:func:`jvp` and :func:`jacobian` compute everything before they return);
* a cotangent or tangent of any finite magnitude gives the exact result:
  it is split into power-of-two bands (:func:`normref.numerics.power_bands`;
  a no-op for magnitudes between 2^-64 and 2^64 spanning less than 2^300)
  and the linear map applied to each, so no kernel sees a huge or a tiny
  direction; a result that is not finite although every argument is (the
  exact derivative overflows float64) is a ValueError;
* a dense Jacobian larger than :func:`normref.limits.max_bytes` is a
  ValueError before it is allocated.

A call with several outputs (``return_stats=True``: ``(y, mean, rstd)``) is
differentiated as the tuple it returns: the pullback takes a tuple with one
cotangent per output (None: zero; each checked against its output's shape),
:func:`jvp` returns one tangent per output, :func:`jacobian` one Jacobian per
output (``output.shape + args[wrt].shape``), and :func:`jacobian_operator`
maps to (and from) the outputs raveled and concatenated in order.
"""
from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass

import numpy as np

from .limits import check_bytes
from .numerics import apply_banded, as_float64
from .autograd_plan import autograd_bind, positional_names
from .registry import flatten_outputs, spec_of, split_outputs

__all__ = ["vjp", "jvp", "jacobian", "jacobian_operator", "bind"]


def _unwrap(f, args, kwargs):
    """``(function, all positional args, kwargs, number bound by partials)``."""
    n_pre = 0
    args = tuple(args)
    while isinstance(f, functools.partial):
        n_pre += len(f.args)
        args = f.args + args
        kwargs = {**f.keywords, **kwargs}
        f = f.func
    return f, args, dict(kwargs), n_pre


@dataclass(frozen=True)
class PlainCallable:
    """What :func:`bind` needs of a function that is not a registered normalizer:
    its name, positional parameter names and an autograd ``bind``."""

    name: str
    signature: tuple
    bind: object


def _spec_or_plain(f, n_args):
    """The registered Spec of ``f``, or (for any other callable) its autograd stand-in."""
    try:
        return spec_of(f)
    except TypeError:
        if not callable(f) or isinstance(f, type):
            raise TypeError(
                f"expected a normalizer (a registered normref function or a callable written "
                f"with autograd.numpy), got {type(f).__name__} {f!r:.60}"
            ) from None
    name = getattr(f, "__name__", type(f).__name__)
    return PlainCallable(name, positional_names(f, n_args), autograd_bind(name, f))


def bind(f, *args, **kwargs):
    """Return ``(spec, plan, slot_names)`` for a call ``f(*args, **kwargs)``.

    ``slot_names[i]`` is the parameter name of positional argument ``i`` if it
    is differentiable in this call, else None.  ``f`` may be a
    ``functools.partial`` of a registered function; slots then cover only the
    positional arguments passed here, not those bound in the partial.
    Binding validates the arguments and runs nothing.
    """
    f, args, kwargs, n_pre = _unwrap(f, args, kwargs)
    spec = _spec_or_plain(f, len(args))
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


def _owned_bind(f, args, kwargs):
    """:func:`bind` on private copies of the arrays the plan differentiates.

    Derivatives are computed after the call returns, from the plan's saved
    arguments; copying them makes the result independent of what the caller
    does to its arrays afterwards.  The plan says which arguments it needs
    copied (:meth:`~normref.registry.Plan.keep_private`: the standardizers copy
    their input inside the forward kernel, whitening reads it only during the
    forward).  Arrays the call updates in place (running statistics in
    training) are not differentiated and stay shared.
    """
    spec, plan, slots = bind(f, *args, **kwargs)
    func, full, kw, _ = _unwrap(f, args, kwargs)
    params = set(plan.keep_private())
    full = list(full)
    copied = False
    for i, name in enumerate(spec.signature[: len(full)]):
        if name in params and isinstance(full[i], np.ndarray):
            full[i] = full[i].copy()
            copied = True
    for k, v in kw.items():
        if k in params and isinstance(v, np.ndarray):
            kw[k] = v.copy()
            copied = True
    if copied:
        plan = spec.bind(*full, **kw)
        plan.keep_private()
    return spec, plan, slots


def _apply_vjp(plan, dy):
    """``{name: gradient}`` for cotangent ``dy`` (a tuple for several outputs), banded by
    magnitude, checked finite."""
    if plan.output_names is None:
        grads = plan.vjp(dy) if plan.bands_cotangent else apply_banded(plan.vjp, [dy])
        given = (dy,)
    else:
        grads = apply_banded(lambda *band: plan.vjp(band), list(dy))
        given = tuple(d for d in dy if d is not None)
    for n, g in grads.items():
        plan.check_finite(f"gradient of {n}", g, *given)
    return grads


def _apply_jvp(plan, tangents):
    """The output tangent for ``{name: tangent}`` (a tuple for several outputs), banded
    by magnitude, checked finite."""
    names = list(tangents)
    arrays = [tangents[n] for n in names]
    if plan.output_names is None:
        ty = apply_banded(lambda *band: np.asarray(plan.jvp(dict(zip(names, band)))), arrays)
        plan.check_finite("output tangent", ty, *arrays)
        return ty
    flat = apply_banded(lambda *band: flatten_outputs(plan.jvp(dict(zip(names, band)))), arrays)
    ty = split_outputs(flat, _output_shapes(plan, plan.forward()))
    for what, t in zip(plan.output_names, ty):
        plan.check_finite(f"{what} tangent", t, *arrays)
    return ty


def _output_shapes(plan, y=None):
    """The shape of each output (one for a single-output call): of ``y``, the forward
    value, when given; else as the plan declares them before running (``output_shape``)."""
    multi = plan.output_names is not None
    if y is not None:
        return tuple(np.shape(o) for o in y) if multi else (np.shape(y),)
    shape = plan.output_shape
    return tuple(tuple(s) for s in shape) if multi else (tuple(shape),)


def _cotangent(plan, cotangent, y):
    """Validate a pullback's cotangent: an array of the output's shape, or for a call with
    several outputs a tuple with one array (or None) per output."""
    shapes = _output_shapes(plan, y)
    if plan.output_names is None:
        dy = as_float64("cotangent", cotangent)
        if dy.shape != shapes[0]:
            raise ValueError(
                f"cotangent has shape {dy.shape}, expected the output shape {shapes[0]}"
            )
        return dy
    names = plan.output_names
    if not isinstance(cotangent, (tuple, list)):
        raise TypeError(
            f"this call returns {len(names)} outputs ({', '.join(names)}): the cotangent must "
            f"be a tuple of {len(names)} arrays (None for zero), got {type(cotangent).__name__}"
        )
    if len(cotangent) != len(names):
        raise ValueError(
            f"cotangent has {len(cotangent)} entries, expected one per output "
            f"({', '.join(names)})"
        )
    out = []
    for i, (what, c, shape) in enumerate(zip(names, cotangent, shapes)):
        if c is None:
            out.append(None)
            continue
        d = as_float64(f"cotangent[{i}] ({what})", c)
        if d.shape != shape:
            raise ValueError(f"cotangent[{i}] ({what}) has shape {d.shape}, expected the "
                             f"shape of the {what} {shape}")
        out.append(d)
    return tuple(out)


def vjp(f, *args, **kwargs):
    """Forward value and pullback of ``f(*args, **kwargs)``.

    Returns ``(y, pullback)``; ``pullback(dy)`` returns a tuple with one entry
    per positional argument: the gradient (float64, the argument's shape) for
    differentiable arrays, else None.  For a call with several outputs ``dy``
    is a tuple, one cotangent (or None) per output.  Note: a training-mode
    call updates running statistics exactly as the forward does (once, here).
    """
    spec, plan, slots = _owned_bind(f, args, kwargs)
    y = plan.forward()

    def pullback(cotangent):
        dy = _cotangent(plan, cotangent, y)
        grads = _apply_vjp(plan, dy)
        return tuple(None if s is None else grads[s] for s in slots)

    pullback.derivatives = plan.derivatives
    return y, pullback


def jvp(f, primals, tangents, **kwargs):
    """``(y, ty)``: forward value and directional derivative along ``tangents``.

    ``tangents`` has one entry per entry of ``primals``; None means zero (and
    must be None for non-differentiable arguments).  The tangents are
    validated before the forward runs (a training call then updates running
    statistics once).
    """
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise ValueError(
            f"primals and tangents must have the same length, got {len(primals)} "
            f"and {len(tangents)}"
        )
    spec, plan, slots = bind(f, *primals, **kwargs)  # (computed now: nothing to keep private)
    tans = {}
    for i, (slot, t) in enumerate(zip(slots, tangents)):
        if t is None:
            continue
        if slot is None:
            raise ValueError(
                f"tangents[{i}] must be None: argument {i} of {spec.name} "
                f"({spec.signature[i]}) is not differentiable in this call"
            )
        t = as_float64(f"tangents[{i}] ({slot})", t)
        shape = plan.value(slot).shape
        if t.shape != shape:
            raise ValueError(f"tangents[{i}] ({slot}) has shape {t.shape}, expected {shape}")
        tans[slot] = t
    y = plan.forward()
    return y, _apply_jvp(plan, tans)


def _wrt_name(spec, plan, slots, wrt):
    if isinstance(wrt, str):
        if wrt not in plan.params:
            raise ValueError(
                f"wrt={wrt!r} is not a differentiable argument of this {spec.name} call; "
                f"differentiable: {plan.params}"
            )
        return wrt
    if isinstance(wrt, (bool, np.bool_)) or not isinstance(wrt, numbers.Integral):
        raise TypeError(
            f"wrt must be a positional index (int) or a parameter name (str), got "
            f"{type(wrt).__name__} {wrt!r:.40}"
        )
    wrt = int(wrt)
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
    stack JVPs or VJPs.  ``wrt`` is a positional index or a parameter name.
    A call with several outputs gives a tuple, one Jacobian per output.
    A Jacobian larger than :func:`normref.limits.max_bytes` raises ValueError
    before anything runs (use :func:`jacobian_operator` for large inputs).
    """
    spec, plan, slots = bind(f, *args, **kwargs)
    name = _wrt_name(spec, plan, slots, wrt)
    n_out = sum(int(np.prod(s, dtype=np.int64)) for s in _output_shapes(plan))
    n_in = int(np.prod(plan.value(name).shape, dtype=np.int64))
    check_bytes(f"the dense Jacobian of {spec.name} w.r.t. {name} ({n_out} x {n_in})",
                8 * n_out * n_in, "use jacobian_operator for large inputs")
    J = plan.jacobian(name)
    if plan.output_names is None:
        plan.check_finite("Jacobian", J)
    else:
        for what, part in zip(plan.output_names, J):
            plan.check_finite(f"Jacobian of the {what}", part)
    return J


@functools.lru_cache(maxsize=None)
def _operator_class():
    """The LinearOperator subclass (defined on first use: scipy.sparse.linalg imports slowly)."""
    from scipy.sparse.linalg import LinearOperator

    class _JacobianOperator(LinearOperator):
        """The Jacobian of one bound call as a scipy ``LinearOperator``.

        ``matvec`` is a JVP, ``rmatvec`` a VJP (``transposed`` swaps them for
        the adjoint).  Vectors are validated with messages naming the
        operator: the length must be the size of the argument (matvec) or
        of the output (rmatvec); real floating vectors are applied as they
        are, complex ones by linearity (real and imaginary parts apart);
        integer, bool, object and string vectors are a TypeError.
        """

        def __init__(self, plan, name, label, transposed=False):
            self.plan, self.name, self.label, self.transposed = plan, name, label, transposed
            self.y_shapes = _output_shapes(plan, plan.forward())
            self.p_shape = tuple(plan.value(name).shape)
            m = sum(int(np.prod(s, dtype=np.int64)) for s in self.y_shapes)
            n = int(np.prod(self.p_shape, dtype=np.int64))
            super().__init__(dtype=np.float64, shape=(n, m) if transposed else (m, n))

        def _real(self, v, adjoint):
            multi = self.plan.output_names is not None
            if adjoint != self.transposed:
                dy = split_outputs(v, self.y_shapes) if multi else v.reshape(self.y_shapes[0])
                return np.asarray(_apply_vjp(self.plan, dy)[self.name]).ravel()
            ty = _apply_jvp(self.plan, {self.name: v.reshape(self.p_shape)})
            return flatten_outputs(ty) if multi else np.asarray(ty).ravel()

        def _apply(self, v, adjoint):
            v = np.asarray(v)
            if np.iscomplexobj(v):
                return self._real(np.ascontiguousarray(v.real, dtype=np.float64), adjoint) + \
                    1j * self._real(np.ascontiguousarray(v.imag, dtype=np.float64), adjoint)
            return self._real(np.ascontiguousarray(v, dtype=np.float64), adjoint)

        def _matvec(self, v):
            return self._apply(np.ravel(v), False)

        def _rmatvec(self, v):
            return self._apply(np.ravel(v), True)

        def _adjoint(self):
            return _JacobianOperator(self.plan, self.name, self.label, not self.transposed)

        def _check(self, x, op, matrix):
            rows = self.shape[0] if op.startswith("r") else self.shape[1]
            try:
                a = np.asarray(x)
            except (ValueError, TypeError) as e:
                raise TypeError(f"{self.label}: {op} needs a numeric array, got {type(x).__name__}: {e}") from None
            if a.dtype.kind not in "fc":
                raise TypeError(f"{self.label}: {op} needs a real or complex floating array, "
                                f"got dtype {a.dtype} with shape {a.shape}")
            what = ("the output" if (op.startswith("r") != self.transposed) else "the argument")
            ok = (a.ndim == 2 and a.shape[0] == rows) if matrix else a.shape in ((rows,), (rows, 1))
            if not ok:
                want = f"({rows}, k)" if matrix else f"({rows},) or ({rows}, 1)"
                raise ValueError(f"{self.label}: {op} expects shape {want} (the size of {what}), "
                                 f"got shape {a.shape}")
            return a

        def matvec(self, x):
            return super().matvec(self._check(x, "matvec", False))

        def rmatvec(self, x):
            return super().rmatvec(self._check(x, "rmatvec", False))

        def matmat(self, X):
            return super().matmat(self._check(X, "matmat", True))

        def rmatmat(self, X):
            return super().rmatmat(self._check(X, "rmatmat", True))

    return _JacobianOperator


def jacobian_operator(f, *args, wrt=0, **kwargs):
    """The Jacobian as a ``scipy.sparse.linalg.LinearOperator``.

    Shape ``(y.size, args[wrt].size)``; ``matvec`` is a JVP, ``rmatvec`` a VJP,
    both on flattened vectors (for a call with several outputs, the outputs
    raveled and concatenated in order: ``y.size`` is their total size); ``matmat`` / ``rmatmat`` loop over columns;
    ``.T`` / ``.H`` / ``.adjoint()`` is the operator with the two swapped.
    The forward runs once, at construction, on private copies of the
    differentiated arguments.  Vectors of the wrong length or dtype are a
    ValueError / TypeError naming the operator and the expected length.
    """
    spec, plan, slots = _owned_bind(f, args, kwargs)
    name = _wrt_name(spec, plan, slots, wrt)
    label = f"jacobian_operator of {spec.name} w.r.t. {name}"
    if plan.derivatives != "normref":
        label += f" (derivatives by {plan.derivatives})"
    op = _operator_class()(plan, name, label)
    op.derivatives = plan.derivatives
    return op
