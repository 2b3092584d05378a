"""Hostile-input fuzzing of every registered normalizer and of the derivative API.

The contract (README "The contract"): for finite input a finite result or a
ValueError / TypeError naming an argument; a call that raises changes no
argument and no buffer; results independent of the memory layout of any
argument and of what the caller does to its arrays after the call; no other
exception type ever (no IndexError, ZeroDivisionError, OverflowError,
MemoryError, LinAlgError, numba error, ...).

Driven by the registry: every registered normalizer's examples
(``spec.examples``) are the seeds, and every argument of its signature --
positional or keyword, given by the example or left at its default -- is
mutated by kind (array, optional array, int, float, flag, option string,
shape), so a new normalizer is fuzzed without new code here.  A hostile
value replaces one argument at a time; ``test_equivalent_forms`` checks the
transformations that must not change the result at all (lists, float32
inputs, numpy scalars, Fortran order, negative strides), bitwise.

Size: ``NORMREF_FUZZ_EXAMPLES`` examples per test and normalizer (default
600, about a minute and a half and 20,000 calls, derandomized so CI is
reproducible; any other value draws fresh random examples).  The outcome counts of the run are printed in the test summary.
"""
from __future__ import annotations

import collections
import contextlib
import inspect
import math
import os
import signal
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import normref
from normref import check as nrcheck
from normref.registry import REGISTRY, Case

DEFAULT_EXAMPLES = 600
EXAMPLES = int(os.environ.get("NORMREF_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))
FUZZ = settings(max_examples=EXAMPLES, derandomize=EXAMPLES == DEFAULT_EXAMPLES, deadline=None,
                database=None, suppress_health_check=list(HealthCheck))

#: relative agreement always accepted between normref and the textbook reference
REFERENCE_FLOOR = 2.0 ** -40

#: outcome counts of this run: (test, outcome) -> calls (printed by conftest.py)
COUNTS = collections.Counter()

NAMES = sorted(REGISTRY)
_EXAMPLES = {}


def examples(name):
    if name not in _EXAMPLES:
        _EXAMPLES[name] = REGISTRY[name].examples(np.random.default_rng(1234))
    return _EXAMPLES[name]


# --------------------------------------------------------------------------- the contract
def _snapshot(values):
    out = []
    for v in values:
        if isinstance(v, np.ndarray):
            out.append((v, v.copy(), v.dtype, v.shape))
    return out


def _unchanged(snap):
    for arr, copy, dtype, shape in snap:
        if arr.dtype != dtype or arr.shape != shape:
            return False
        if arr.dtype.kind == "O":
            same = all(a is b or a == b or (a != a and b != b)
                       for a, b in zip(arr.ravel(), copy.ravel()))
        else:
            same = np.array_equal(arr, copy, equal_nan=arr.dtype.kind in "fc")
        if not same:
            return False
    return True


def _finite(values):
    """Every float number or float array among ``values`` is finite (others ignored)."""
    for v in values:
        if isinstance(v, (bool, np.bool_, str)) or v is None:
            continue
        if isinstance(v, (float, np.floating)) and not math.isfinite(v):
            return False
        if isinstance(v, np.ndarray) and v.dtype.kind in "fc" and not np.isfinite(v).all():
            return False
        if isinstance(v, (list, tuple)):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    a = np.asarray(v, dtype=np.float64)
            except (TypeError, ValueError):
                continue
            if not np.isfinite(a).all():
                return False
    return True


def _words(spec):
    return set(spec.signature) | {"input", "cotangent", "tangent", "wrt", "matvec", "rmatvec",
                                  "matmat", "rmatmat", "primals"}


def call(test, spec, fn, args, kwargs=None, *, extra_state=()):
    """Run ``fn(*args, **kwargs)`` under the contract; return ``("ok", result)`` or ``("error", e)``."""
    kwargs = kwargs or {}
    snap = _snapshot(list(args) + list(kwargs.values()) + list(extra_state))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("error", np.exceptions.ComplexWarning)
            result = fn(*args, **kwargs)
    except (TypeError, ValueError) as e:
        msg = str(e)
        COUNTS[(test, f"clean {type(e).__name__}")] += 1
        assert msg, f"{spec.name}: {type(e).__name__} without a message"
        assert any(w in msg for w in _words(spec)), (
            f"{spec.name}: {type(e).__name__} names no argument: {msg!r}")
        assert _unchanged(snap), f"{spec.name}: a call that raised ({msg!r}) changed an argument"
        return "error", e
    except Exception as e:  # noqa: BLE001 -- any other type breaks the contract
        COUNTS[(test, f"LEAK {type(e).__name__}")] += 1
        raise AssertionError(f"{spec.name}: leaked {type(e).__name__}: {e}") from e
    COUNTS[(test, "result")] += 1
    return "ok", result


def check_output(spec, y, args, kwargs):
    if isinstance(y, tuple):  # a call with several outputs (return_stats=True): each one
        for part in y:
            check_output(spec, part, args, kwargs)
        return
    assert type(y) is np.ndarray and y.dtype == np.float64, (
        f"{spec.name}: returned {type(y).__name__} of dtype {getattr(y, 'dtype', None)}")
    if _finite(list(args) + list(kwargs.values())):
        assert np.isfinite(y).all(), f"{spec.name}: finite input, non-finite output"
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, np.ndarray):
            assert not np.shares_memory(y, a), f"{spec.name}: the output aliases an argument"


# --------------------------------------------------------------------------- hostile values
HUGE, TINY = 1.7976931348623157e308, 5e-324


def _float_arrays(a):
    """Hostile replacements for a float array argument."""
    a = np.asarray(a, dtype=np.float64)
    out = [
        None, "abc", 3, a.astype(np.int64), a > 0, a + 1j, a.astype(object),
        [[1.0, 2.0], [3.0]], np.ma.masked_array(a, mask=np.zeros(a.shape, bool)),
        a[None], np.zeros(a.shape + (2,)), np.full(a.shape, HUGE), np.full(a.shape, TINY),
        a * 1e300, a * 1e-300, np.ldexp(a, 1000), np.ldexp(a, -1060), np.zeros(a.shape),
        np.full(a.shape, 7.0), np.float64(1.5),
    ]
    if a.size:
        nan = a.copy()
        nan.flat[0] = np.nan
        inf = a.copy()
        inf.flat[-1] = -np.inf
        spread = a.copy()
        spread.flat[0] = 1e300
        ro = a.copy()
        ro.setflags(write=False)
        out += [nan, inf, spread, ro]
    if a.ndim:
        out += [a.reshape(-1) if a.ndim > 1 else a[:-1], a[:0],
                np.moveaxis(a, -1, 0).copy() if a.ndim > 1 else np.concatenate([a, a])]
    return out


def _ints(v):
    return [0, -1, -(10 ** 30), 10 ** 30, 2 ** 63, 2 ** 40, 1.5, float(v), True, False, "3", None,
            np.array(v), np.array([v, v]), v + 1, 1j]


def _floats(v):
    return [math.nan, math.inf, -math.inf, HUGE, -HUGE, 1e-308, TINY, 0.0, -1.0, -0.5, 2.0, 1e300,
            True, "1e-5", None, 1j, np.array([v, v]), [v], np.float16(v) if v is not None else 1.0]


def _flags(v):
    return ["no", "yes", "", np.array(True), np.array([True, False]), None, 0, 1, 2.0, [v]]


def _options(v):
    return ["bogus", "", None, 3, np.array([v]), str(v).upper(), [v], b"torch"]


def _shapes(v):
    v = tuple(v) if isinstance(v, (tuple, list)) else (v,)
    return [iter(v), np.array(v), tuple(float(n) + 0.5 for n in v), (), tuple(-n for n in v),
            (10 ** 30,), v + (1,), "8", None, (True,) * len(v)]


def hostile_values(value):
    """Hostile replacements for an argument whose valid value is ``value``."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _hostile_values(value)


def _hostile_values(value):
    if isinstance(value, np.ndarray) and value.dtype.kind not in "fiu":
        return [None, "x", 1.0, np.ones(2)]
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "iu":  # a counter (num_batches_tracked)
            return [np.array(-1), np.array(0.0), np.array([0, 0]), [0], 0, None,
                    np.array(np.iinfo(np.int64).max), np.array(0, dtype=np.int8)]
        return _float_arrays(value)
    if value is None:
        return [np.ones(3), np.ones((2, 2)), 1.0, "x", True, np.array(np.nan), np.ones(0),
                np.full(4, HUGE), np.arange(3)]
    if isinstance(value, (bool, np.bool_)):
        return _flags(value)
    if isinstance(value, str):
        return _options(value)
    if isinstance(value, (tuple, list)):
        if all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in value):
            return _shapes(value)
        return [None, "x", (0.5,), (10 ** 30,), iter(value), np.array(value, dtype=object)]
    if isinstance(value, (int, np.integer)):
        return _ints(value)
    if isinstance(value, (float, np.floating)):
        return _floats(value)
    return [None, "x", 1.0, np.ones(2)]


def drawn_values(value):
    """A strategy of hostile values drawn over whole ranges (not a fixed list): arrays
    scaled by any power of two, any float64 (subnormal, huge, NaN, inf), any int."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        def scaled(k):
            with np.errstate(all="ignore"):
                return np.ldexp(np.asarray(value, dtype=np.float64), k)

        return st.integers(-1100, 1100).map(scaled)
    if isinstance(value, (bool, np.bool_, str)) or value is None:
        return st.sampled_from(hostile_values(value))
    if isinstance(value, (int, np.integer)):
        return st.integers(-(2 ** 70), 2 ** 70)
    if isinstance(value, (float, np.floating)):
        return st.floats(width=64)
    return st.sampled_from(hostile_values(value))


def arguments(spec, case):
    """``[(key, value)]``: every argument of the signature (positional index or keyword name)."""
    sig = inspect.signature(spec.function)
    params = list(sig.parameters.values())
    out = [(i, a) for i, a in enumerate(case.args)]
    for p in params[len(case.args):]:
        if p.name in case.kwargs:
            out.append((p.name, case.kwargs[p.name]))
        elif p.default is not inspect.Parameter.empty:
            out.append((p.name, p.default))
    return out


def mutated(case, key, value):
    args = [a.copy() if i in case.mutates and isinstance(a, np.ndarray) else a
            for i, a in enumerate(case.args)]
    kwargs = dict(case.kwargs)
    if isinstance(key, int):
        args[key] = value
    else:
        kwargs[key] = value
    return args, kwargs


class _Slow(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds):
    """Abandon a textbook-reference evaluation that takes longer than ``seconds`` (its
    loops are not bounded: IterNorm's reference runs all T steps)."""
    def stop(signum, frame):
        raise _Slow()

    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _reference_agrees(spec, y, args, kwargs, mutates):
    """Where the autograd reference evaluates without a floating-point exception (so that
    its textbook arithmetic is trustworthy: no overflow, underflow or invalid operation),
    normref's forward ``y`` agrees with it within the check's tolerance (relative to the
    conditioning of the call)."""
    # numpy scalar hyper-parameters as the numbers they hold (np.float16(0.7) / 5 would
    # be float16 arithmetic in the textbook formula; normref takes the value exactly)
    plain = lambda v: float(v) if isinstance(v, np.floating) and not isinstance(v, np.ndarray) else v  # noqa: E731
    args = [plain(a) for a in args]
    kwargs = {k: plain(v) for k, v in kwargs.items()}
    case = Case("fuzz", tuple(args), kwargs, mutates=mutates)
    try:
        with warnings.catch_warnings(), np.errstate(all="raise"), _time_limit(2.0):
            warnings.simplefilter("ignore")
            yr = spec.reference(*case.fresh_args(), **kwargs)
    except (ValueError, TypeError, ZeroDivisionError, FloatingPointError, np.linalg.LinAlgError,
            MemoryError, _Slow):
        return  # the textbook reference cannot evaluate this input reliably
    if isinstance(y, tuple):  # several outputs (return_stats=True): each against its own
        if isinstance(yr, tuple) and len(yr) == len(y):
            for part, ref in zip(y, yr):
                _agrees(spec, part, np.asarray(ref, dtype=np.float64), case)
        return
    _agrees(spec, y, np.asarray(yr, dtype=np.float64), case)


def _agrees(spec, y, yr, case):
    if yr.shape != y.shape or not np.isfinite(yr).all():
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tol = nrcheck.FORWARD_ULPS * nrcheck.EPS * nrcheck.case_cond(spec, case)
    # the textbook reference is itself inexact at hostile magnitudes (a p-norm of entries
    # near 2^361: 64 ulps from a 50-digit value, normref 1): the fuzz catches wrong
    # answers (NaN, garbage, a wrong branch: errors of order 1); ulp-level accuracy at
    # hostile points is asserted against mpmath in tests/test_hostile*.py
    tol = max(tol, REFERENCE_FLOOR)
    err = float(np.max(np.abs(y - yr), initial=0)) / max(1.0, float(np.max(np.abs(yr), initial=0)))
    COUNTS[("reference", "compared")] += 1
    assert err <= tol, f"{spec.name}: forward differs from the reference ({err:.3g} > {tol:.3g})"


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=st.data())
def test_hostile_arguments(name, data):
    """One or two hostile arguments (listed kinds, or values drawn over whole ranges): a
    clean error or a finite result that matches the reference, whose derivatives are
    finite too."""
    spec = REGISTRY[name]
    case = data.draw(st.sampled_from(examples(name)), label="case")
    for _ in range(data.draw(st.integers(1, 2), label="arguments mutated")):
        key, value = data.draw(st.sampled_from(arguments(spec, case)), label="argument")
        if data.draw(st.booleans(), label="drawn over a range"):
            bad = data.draw(drawn_values(value), label="value")
        else:
            bad = data.draw(st.sampled_from(hostile_values(value)), label="value")
        args, kwargs = mutated(case, key, bad)
        case = Case(case.label, tuple(args), kwargs, mutates=case.mutates)
    # the reference sees the running statistics as they were before the call updated
    # them (a training forward may read them: batch renorm's r and d)
    before = [a.copy() if i in case.mutates and isinstance(a, np.ndarray) else a
              for i, a in enumerate(args)]
    outcome, y = call("hostile", spec, spec.function, args, kwargs)
    if outcome != "ok":
        return
    check_output(spec, y, args, kwargs)
    if not _finite(list(args) + list(kwargs.values())):
        return
    # derivatives at the hostile point: finite, or a clean error
    args2 = [a.copy() if isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.flags.writeable
             else a for a in args]
    outcome, res = call("hostile-vjp", spec, normref.vjp, [spec.function] + args2, kwargs)
    if outcome == "ok":
        y2, pullback = res
        rng = np.random.default_rng(0)
        dy = (tuple(rng.standard_normal(o.shape) for o in y2) if isinstance(y2, tuple)
              else rng.standard_normal(y2.shape))
        outcome, grads = call("hostile-vjp", spec, pullback, [dy])
        if outcome == "ok":
            for g in grads:
                assert g is None or np.isfinite(g).all(), f"{spec.name}: non-finite gradient"
    _reference_agrees(spec, y, before, kwargs, case.mutates)


def _layouts(a, how):
    """``a`` (float, C-contiguous) in another memory layout with the same values."""
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "reversed":
        return np.flip(np.flip(a).copy()) if a.ndim else a
    if how == "strided":
        big = np.zeros(a.shape + (2,))
        big[..., 0] = a
        return big[..., 0]
    return a


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=st.data())
def test_equivalent_forms(name, data):
    """Layouts, lists, float32-representable inputs and numpy scalars give bit-identical
    forwards and gradients."""
    spec = REGISTRY[name]
    case = data.draw(st.sampled_from(examples(name)), label="case")
    how = data.draw(st.sampled_from(["fortran", "reversed", "strided", "list", "float32",
                                     "numpy-scalars"]), label="form")
    base = list(case.fresh_args())
    if how == "float32":  # values exactly representable in float32, given as float32 (all
        # but the input, whose dtype may be meaningful: rms_norm's eps=None is its machine eps)
        base = [a.astype(np.float32).astype(np.float64) if isinstance(a, np.ndarray)
                and a.dtype.kind == "f" and i > 0 else a for i, a in enumerate(base)]
    args = []
    for i, a in enumerate(case.fresh_args() if how != "float32" else base):
        if isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.ndim:
            if how == "list" and i not in case.mutates:
                a = a.tolist()
            elif how == "float32" and i > 0:
                a = a.astype(np.float32)
            elif how not in ("list", "numpy-scalars"):
                a = _layouts(a, how)
        elif how == "numpy-scalars" and isinstance(a, float):
            a = np.float64(a)
        elif how == "numpy-scalars" and isinstance(a, int) and not isinstance(a, bool):
            a = np.int64(a)
        args.append(a)
    ref_args = [a.copy() if isinstance(a, np.ndarray) else a for a in base]
    y0, pb0 = normref.vjp(spec.function, *ref_args, **case.kwargs)
    outcome, res = call("equivalent", spec, normref.vjp, [spec.function] + args, case.kwargs)
    assert outcome == "ok", f"{spec.name}: the {how} form raised {res}"
    y1, pb1 = res
    assert np.array_equal(y0, y1, equal_nan=True), f"{spec.name}: {how} changes the output"
    dy = np.random.default_rng(1).standard_normal(y0.shape)
    for g0, g1 in zip(pb0(dy), pb1(_layouts(dy, how) if how in ("fortran", "reversed", "strided")
                                   else dy)):
        assert (g0 is None) == (g1 is None)
        if g0 is not None:
            assert np.array_equal(g0, g1, equal_nan=True), f"{spec.name}: {how} changes a gradient"


def _cotangents(shape):
    dy = np.random.default_rng(2).standard_normal(shape)
    return [None, "x", dy + 1j, dy.astype(np.int64), dy[None], np.zeros(shape + (1,)),
            [[1.0], [2.0, 3.0]], np.ma.masked_array(dy), dy.tolist(), np.full(shape, np.nan),
            object()]


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=st.data())
def test_derivative_api(name, data):
    """Hostile cotangents, tangents, ``wrt`` and operator vectors: clean errors, no state
    change; magnitudes far outside the usual range give the exactly scaled result."""
    spec = REGISTRY[name]
    case = data.draw(st.sampled_from(examples(name)), label="case")
    args = case.fresh_args()
    y, pullback = normref.vjp(spec.function, *args, **case.kwargs)
    slots = [i for i, g in enumerate(pullback(np.zeros(y.shape))) if g is not None]
    kind = data.draw(st.sampled_from(["cotangent", "tangent", "wrt", "operator", "scale"]),
                     label="kind")
    if kind == "cotangent":
        bad = data.draw(st.sampled_from(_cotangents(y.shape)), label="cotangent")
        outcome, grads = call("api", spec, pullback, [bad], extra_state=args)
        if outcome == "ok":
            for g in grads:
                assert g is None or g.dtype == np.float64
    elif kind == "tangent":
        i = data.draw(st.integers(0, len(args) - 1), label="slot")
        tans = [None] * len(args)
        choice = data.draw(st.sampled_from(["non-differentiable", "shape", "complex", "str",
                                            "length", "int"]), label="how")
        x = np.asarray(args[slots[0]], dtype=np.float64)
        t = {"shape": x[None], "complex": x + 1j, "str": "x", "int": x.astype(np.int64)}.get(
            choice, x)
        tans[slots[0] if choice != "non-differentiable" else i] = t
        if choice == "non-differentiable" and i in slots:
            return
        if choice == "length":
            tans = tans + [None]
        fresh = case.fresh_args()
        outcome, _ = call("api", spec, normref.jvp, [spec.function, fresh, tans], case.kwargs)
        assert outcome == "error", f"{spec.name}: jvp accepted a {choice} tangent"
    elif kind == "wrt":
        wrt = data.draw(st.sampled_from([0.5, None, [0], True, -1, 99, "bogus", np.int64(99)]),
                        label="wrt")
        fresh = case.fresh_args()
        outcome, _ = call("api", spec, normref.jacobian, [spec.function] + list(fresh),
                          {**case.kwargs, "wrt": wrt})
        assert outcome == "error", f"{spec.name}: jacobian accepted wrt={wrt!r}"
    elif kind == "operator":
        op = normref.jacobian_operator(spec.function, *case.fresh_args(), wrt=slots[0],
                                       **case.kwargs)
        m, n = op.shape
        which = data.draw(st.sampled_from(["short", "long", "int", "matrix-rows", "str"]),
                          label="vector")
        vec = {"short": np.ones(max(n - 1, 0)), "long": np.ones(n + 1),
               "int": np.ones(n, dtype=np.int64), "matrix-rows": np.ones((n + 1, 2)),
               "str": "abc"}[which]
        meth = op.matmat if which == "matrix-rows" else op.matvec
        outcome, _ = call("api", spec, meth, [vec])
        assert outcome == "error", f"{spec.name}: the operator accepted a {which} vector"
        v = np.random.default_rng(3).standard_normal(n) + 1j * np.random.default_rng(4).standard_normal(n)
        got = op.matvec(v)
        assert np.allclose(got, op.matvec(v.real) + 1j * op.matvec(v.imag), rtol=0, atol=0)
    else:  # exact scaling by powers of two far outside the usual range
        k = data.draw(st.sampled_from([-1000, -300, 300, 900]), label="k")
        dy = np.random.default_rng(5).standard_normal(y.shape)
        base = pullback(dy)
        outcome, scaled = call("scale", spec, pullback, [np.ldexp(dy, k)])
        assert outcome == "ok", scaled
        for g0, g1 in zip(base, scaled):
            if g0 is None:
                continue
            with np.errstate(all="ignore"):
                expect = np.ldexp(g0, k)
            normal = np.abs(expect) >= 2.0 ** -1000  # (far from the subnormal range)
            assert np.array_equal(g1[normal], expect[normal]), (
                f"{spec.name}: the VJP of 2^{k} dy is not 2^{k} times the VJP of dy")


@pytest.mark.parametrize("name", NAMES)
def test_derivatives_are_of_the_arguments_as_they_were(name):
    """Mutating the arguments after vjp / jacobian_operator returns changes nothing."""
    spec = REGISTRY[name]
    for case in examples(name):
        args = tuple(a.copy() if isinstance(a, np.ndarray) else a for a in case.args)
        y, pullback = normref.vjp(spec.function, *args, **case.kwargs)
        dy = np.random.default_rng(6).standard_normal(y.shape)
        before = pullback(dy)
        op = normref.jacobian_operator(spec.function, *args, **case.kwargs)
        v = np.random.default_rng(7).standard_normal(op.shape[1])
        Jv = op.matvec(v)
        for a in args:
            if isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.flags.writeable and a.size:
                a[...] = a * 3.0 + 1.0
        after = pullback(dy)
        for g0, g1 in zip(before, after):
            assert (g0 is None and g1 is None) or np.array_equal(g0, g1, equal_nan=True), (
                f"{spec.name} [{case.label}]: the gradient read an argument mutated after vjp")
        assert np.array_equal(Jv, op.matvec(v)), f"{spec.name} [{case.label}]: operator changed"
        COUNTS[("aliasing", "checked")] += 1
