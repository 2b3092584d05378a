"""``assert_conforms``: the conformance judgement inside anyone's pytest."""
from __future__ import annotations

import math
import os
import zlib

import numpy as np

from ...registry import REGISTRY
from .cases import ConformCase
from .judge import TOLERANCE_BASE, Verdict, case_conditioning, check_kind, expected_outputs, judge
from .rounding import DTYPES
from .runner import signature_name

__all__ = ["assert_conforms"]

#: parameters frameworks treat as buffers / non-trainable state (not differentiated)
_BUFFERS = frozenset({"running_mean", "running_var"})
_REPRO_INLINE_MAX = 64


def _literal(value, name, npz):
    """Python source that rebuilds ``value`` (arrays > 64 elements go to ``npz``)."""
    if isinstance(value, np.ndarray):
        dt = f"np.{value.dtype.name}" if value.dtype.kind in "fiub" else repr(value.dtype.str)
        if value.size == 0:
            return f"np.empty({value.shape!r}, dtype={dt})"
        if value.size <= _REPRO_INLINE_MAX and value.dtype.kind in "fiub":
            text = np.array2string(np.ascontiguousarray(value), precision=17, separator=", ",
                                   threshold=10**6, max_line_width=10**6,
                                   floatmode="maxprec")
            text = text.replace("nan", "nan").replace("inf", "inf")
            return f"np.array({text}, dtype={dt})"
        npz[name] = np.ascontiguousarray(value)
        return f"_data[{name!r}]"
    if isinstance(value, (float, np.floating)) and not math.isfinite(float(value)):
        return f"float({str(float(value))!r})"
    if isinstance(value, np.generic):
        return repr(value.item())
    if isinstance(value, tuple):
        inner = ", ".join(_literal(v, f"{name}_{i}", npz) for i, v in enumerate(value))
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v, f"{name}_{i}", npz) for i, v in enumerate(value)) + "]"
    return repr(value)


def _reproducer(candidate, name, args, kwargs, framework):
    """A copy-pasteable snippet that re-runs the failing assert_conforms call."""
    npz = {}
    arg_src = [_literal(a, f"arg{i}", npz) for i, a in enumerate(args)]
    kw_src = {k: _literal(v, f"kw_{k}", npz) for k, v in kwargs.items()}
    lines = ["import numpy as np", "from numpy import nan, inf",
             "from normref.testing import assert_conforms"]
    if npz:
        directory = os.environ.get("NORMREF_REPRO_DIR")
        if not directory:
            shapes = ", ".join(f"{k} {v.shape}" for k, v in npz.items())
            return (f"(arrays of more than {_REPRO_INLINE_MAX} elements: {shapes}; set "
                    f"NORMREF_REPRO_DIR to a directory to save them and get a runnable reproducer)")
        digest = zlib.crc32(b"".join(np.ascontiguousarray(v).tobytes() for v in npz.values()))
        path = os.path.join(directory, f"normref_repro_{name}_{digest:08x}.npz")
        np.savez(path, **npz)
        lines.append(f"_data = np.load({path!r})")
    mod = getattr(candidate, "__module__", None)
    qual = getattr(candidate, "__qualname__", None)
    lines.append("try:")
    lines.append("    candidate")
    lines.append("except NameError:")
    if mod and qual and "<" not in qual and mod != "__main__":
        lines.append(f"    from {mod} import {qual.split('.')[0]} as candidate")
        if "." in qual:
            lines.append(f"    candidate = candidate.{qual.split('.', 1)[1]}")
    else:
        lines.append("    raise SystemExit('define candidate (your implementation) first')")
    call_args = ", ".join([repr(name)] + arg_src + [f"framework={framework!r}"]
                          + [f"{k}={v}" for k, v in kw_src.items()])
    lines.append(f"assert_conforms(candidate, {call_args})")
    return "\n".join(lines)


def _snapshot(value):
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (tuple, list)):
        return type(value)(_snapshot(v) for v in value)
    return value


def _dtype_name(dt, what):
    name = np.dtype(dt).name
    if name not in DTYPES:
        raise TypeError(f"assert_conforms: {what} has dtype {name}; expected one of {DTYPES}")
    return name


#: the frameworks assert_conforms runs candidates in (autodiff: all but numpy)
FRAMEWORKS = ("numpy", "torch", "tensorflow", "jax")


def _framework_of(value):
    """The framework an array-like result belongs to, or None."""
    if isinstance(value, np.ndarray):
        return "numpy"
    root = type(value).__module__.split(".")[0]
    return {"torch": "torch", "tensorflow": "tensorflow", "keras": "tensorflow",
            "jax": "jax", "jaxlib": "jax"}.get(root)


def _detect(candidate, args, kwargs):
    """The candidate's framework: call it on NumPy arrays and look at what it returns
    (a NumPy array: "numpy"; a torch / TensorFlow / JAX array: that framework); if it
    rejects NumPy arrays, torch when installed."""
    try:
        out = candidate(*[_snapshot(a) for a in args], **{k: _snapshot(v) for k, v in kwargs.items()})
    except (TypeError, AttributeError) as e:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise TypeError(
                f"assert_conforms: the candidate rejected NumPy arrays ({type(e).__name__}: {e}) "
                f"and torch is not installed; pass framework= one of {FRAMEWORKS}"
            ) from e
        return "torch", None
    fw = _framework_of(out)
    if fw is not None:
        return fw, None
    raise TypeError(
        f"assert_conforms: cannot detect the framework of the candidate: given NumPy arrays "
        f"it returned {type(out).__name__}; pass framework= one of {FRAMEWORKS}"
    )


def _run_numpy(candidate, call_args, kwargs):
    y = candidate(*call_args, **kwargs)
    if not isinstance(y, np.ndarray):
        raise TypeError(
            f"assert_conforms(framework='numpy'): the candidate must return a NumPy array, "
            f"got {type(y).__name__}"
        )
    return y, None


def _run_torch(candidate, case, call_args, kwargs, diff_slots, y_shape):
    import torch

    def to_tensor(a, grad):
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            t = torch.from_numpy(np.ascontiguousarray(a).copy())
            if grad:
                t.requires_grad_(True)
            return t
        return a

    targs = [to_tensor(a, i in diff_slots) for i, a in enumerate(call_args)]
    tkw = {k: to_tensor(v, False) for k, v in kwargs.items()}
    y = candidate(*targs, **tkw)
    if not isinstance(y, torch.Tensor):
        raise TypeError(
            f"assert_conforms(framework='torch'): the candidate must return a torch.Tensor, "
            f"got {type(y).__name__}"
        )
    grads = {}
    leaves = [i for i in diff_slots if isinstance(targs[i], torch.Tensor)]
    if leaves:
        dy = torch.from_numpy(case.cotangent(tuple(y.shape))).to(y.dtype)
        if y.requires_grad:
            gs = torch.autograd.grad(y, [targs[i] for i in leaves], dy, allow_unused=True)
        else:
            gs = [None] * len(leaves)
        grads = {i: (None if g is None else g.detach().numpy()) for i, g in zip(leaves, gs)}
    # running statistics updated in place by the candidate
    for i in case.mutates:
        if isinstance(targs[i], torch.Tensor):
            call_args[i][...] = targs[i].detach().numpy()
    return y.detach().numpy(), grads


def _run_tensorflow(candidate, case, call_args, kwargs, diff_slots, y_shape):
    """Float arrays as tf tensors (running statistics as tf.Variable, read back
    after the call), gradients through ``tf.GradientTape``."""
    import tensorflow as tf

    state_slots = set(case.mutates)

    def to_tf(i, a):
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            return tf.Variable(a.copy(), trainable=False) if i in state_slots \
                else tf.constant(np.ascontiguousarray(a))
        return a

    targs = [to_tf(i, a) for i, a in enumerate(call_args)]
    tkw = {k: (tf.constant(v) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
           for k, v in kwargs.items()}
    leaves = [i for i in diff_slots if tf.is_tensor(targs[i]) and i not in state_slots]
    with tf.GradientTape() as tape:
        for i in leaves:
            tape.watch(targs[i])
        y = candidate(*targs, **tkw)
    if not tf.is_tensor(y):
        raise TypeError(f"assert_conforms(framework='tensorflow'): the candidate must return a "
                        f"tf.Tensor, got {type(y).__name__}")
    grads = {}
    if leaves:
        dy = tf.constant(case.cotangent(tuple(y.shape)), dtype=y.dtype)
        gs = tape.gradient(y, [targs[i] for i in leaves], output_gradients=dy)
        grads = {i: (None if g is None else np.asarray(tf.convert_to_tensor(g)))
                 for i, g in zip(leaves, gs)}
    for i in state_slots:
        if isinstance(targs[i], tf.Variable):
            call_args[i][...] = targs[i].numpy()
    return np.asarray(y), grads


def _run_jax(candidate, case, call_args, kwargs, diff_slots, y_shape):
    """Float arrays as jax arrays, gradients through ``jax.vjp``.  JAX is functional:
    running statistics a candidate would return are not judged.  A float64 call
    enables ``jax_enable_x64`` (a process-global JAX flag)."""
    import jax
    import jax.numpy as jnp

    if any(isinstance(a, np.ndarray) and a.dtype == np.float64 for a in call_args):
        jax.config.update("jax_enable_x64", True)

    def to_jax(a):
        return jnp.asarray(a) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a

    jargs = [to_jax(a) for a in call_args]
    jkw = {k: to_jax(v) for k, v in kwargs.items()}
    leaves = [i for i in diff_slots if isinstance(jargs[i], jax.Array) and i not in case.mutates]

    def f(*diff):
        a = list(jargs)
        for i, v in zip(leaves, diff):
            a[i] = v
        return candidate(*a, **jkw)

    y, pullback = jax.vjp(f, *[jargs[i] for i in leaves])
    if not isinstance(y, jax.Array):
        raise TypeError(f"assert_conforms(framework='jax'): the candidate must return a "
                        f"jax.Array, got {type(y).__name__}")
    grads = {}
    if leaves:
        gs = pullback(jnp.asarray(case.cotangent(tuple(y.shape)), dtype=y.dtype))
        grads = {i: np.asarray(g) for i, g in zip(leaves, gs)}
    return np.asarray(y), grads


def _verdicts(case, name, spec, y_exp, g_exp, s_exp, y, grads, call_args, diff_slots):
    """The judgement of the candidate's outputs against normref's (one list of Verdicts)."""
    cond = case_conditioning(case)
    verdicts = []
    out_dtype = _dtype_name(y.dtype, "the candidate's output")
    verdicts.append(judge(case, y_exp, y, out_dtype, "forward", cond=cond))
    if grads is not None and not isinstance(g_exp, str):  # (a str: no exact VJP exists)
        for i in diff_slots:
            check = f"backward:{signature_name(name, i)}"
            if i not in grads:  # (not an array of the candidate's framework)
                continue
            g = grads[i]
            if g is None:
                verdicts.append(Verdict(check, out_dtype, math.inf, TOLERANCE_BASE["backward"] * cond,
                                        None, math.nan, math.nan, False,
                                        note="the candidate returns no gradient for this argument "
                                             "(None from its framework's autodiff)"))
                continue
            verdicts.append(judge(case, g_exp[i], g, _dtype_name(g.dtype, check), check, cond=cond))
    for i, s in s_exp.items():
        check = f"state:{signature_name(name, i)}"
        verdicts.append(judge(case, s, np.asarray(call_args[i]),
                              _dtype_name(np.asarray(call_args[i]).dtype, check), check, cond=cond))
    return verdicts, cond


def _convention_hint(spec, case, name, outputs, diff_slots):
    """``"passes with momentum_convention='keras'"`` when normref run with other values
    of its convention options (``spec.convention_options``) accepts the candidate's
    outputs; None when no combination does."""
    import dataclasses
    import itertools

    opts = dict(spec.convention_options)
    if not opts:
        return None
    y, grads, call_args, state_judged = outputs
    current = {k: case.kwargs.get(k, _default(spec, k)) for k in opts}
    keys = list(opts)
    for values in itertools.product(*(opts[k] for k in keys)):
        changed = {k: v for k, v in zip(keys, values) if v != current[k]}
        if not changed:
            continue
        alt = dataclasses.replace(case, kwargs={**dict(case.kwargs), **changed})
        try:
            y_e, g_e, s_e = expected_outputs(alt)
        except Exception:  # noqa: BLE001  (an alternative normref rejects is simply no hint)
            continue
        if not state_judged:
            s_e = {}
        vs, _ = _verdicts(alt, name, spec, y_e, g_e, s_e, y, grads, call_args, diff_slots)
        if all(v.passed for v in vs):
            return "passes with " + ", ".join(f"{k}={v!r}" for k, v in changed.items())
    return None


def _default(spec, key):
    import inspect

    p = inspect.signature(spec.function).parameters.get(key)
    return None if p is None else p.default


def assert_conforms(candidate, name, *args, framework=None, **kwargs):
    """Assert that ``candidate`` computes the normalizer ``name`` like normref.

    ``args`` / ``kwargs`` are those of the normref function ``name`` (NumPy
    arrays).  normref's *convention options* (``spec.convention_options``:
    ``momentum_convention``, ``running_var_unbiased``, ``eps_placement``,
    LRN's ``convention``, GroupNorm's ``affine``, ...) configure normref only:
    the candidate is called as a user would call it, without them.

    ``framework``:

    * ``"numpy"`` -- the candidate takes and returns NumPy arrays; its forward
      (and running statistics it updates in place) are judged;
    * ``"torch"`` -- float arrays become tensors (``requires_grad`` for the
      arguments normref differentiates in this call, except running
      statistics, which frameworks treat as buffers); gradients for the
      case's cotangent through ``torch.autograd.grad``;
    * ``"tensorflow"`` -- float arrays become ``tf.constant`` (running
      statistics ``tf.Variable``, read back after the call); gradients through
      ``tf.GradientTape``;
    * ``"jax"`` -- float arrays become ``jax.Array``; gradients through
      ``jax.vjp``; a float64 call enables ``jax_enable_x64`` (process-global).
      JAX is functional, so running statistics are not judged;
    * ``None`` -- the candidate is called on NumPy arrays and the type of its
      result decides (a TypeError from it means "torch").

    With an autodiff framework the forward and every input gradient are
    judged; a missing gradient is a failure.

    Judgement as in :func:`judge`: errors in ulps of the candidate's output
    dtype (inputs rounded to it are what normref computes on: pass float32
    arrays to judge a float32 kernel), tolerance 16 (forward, state) or 64
    (backward) ulps times the conditioning of each element's statistics
    group.  Elements beyond what the dtype can represent for any algorithm
    are judged for NaN / Inf only; when that is every element of every check
    a ``UserWarning`` says so (nothing was measured).

    Raises AssertionError naming the normalizer, check, dtype, worst element
    (index, expected, actual), the error in ulps against the tolerance, a
    hint when other values of normref's convention options would pass
    ("passes with momentum_convention='keras'"), and a copy-pasteable
    reproducer: inline when every array has at most 64 elements, else saved
    to an .npz in ``$NORMREF_REPRO_DIR`` when that is set (nothing is written
    otherwise).
    """
    from ...autodiff import bind

    import normref  # noqa: F401  (registers every normalizer)

    if name not in REGISTRY:
        raise ValueError(f"assert_conforms: unknown normalizer {name!r}; registered: "
                         f"{', '.join(sorted(REGISTRY))}")
    if framework is not None and framework not in FRAMEWORKS:
        raise ValueError(f"assert_conforms: framework must be one of {FRAMEWORKS} or None, "
                         f"got {framework!r}")
    if not args:
        raise TypeError(f"assert_conforms: give the arguments of normref.{name} after the name")
    spec = REGISTRY[name]
    original = ([_snapshot(a) for a in args], {k: _snapshot(v) for k, v in kwargs.items()})
    cand_kwargs = {k: v for k, v in original[1].items() if k not in spec.convention_options}
    x = np.asarray(args[0])
    in_dtype = x.dtype.name if x.dtype.name in DTYPES else "float64"

    # which positional arrays the call updates in place (running statistics)
    probe = [_snapshot(a) for a in args]
    spec.function(*probe, **{k: _snapshot(v) for k, v in kwargs.items()})
    mutates = tuple(
        i for i, (a, b) in enumerate(zip(args, probe))
        if isinstance(a, np.ndarray) and a.dtype.kind == "f"
        and not np.array_equal(a, b, equal_nan=True)
    )
    case = ConformCase(label=f"adhoc/{name}", args=tuple(original[0]), kwargs=dict(original[1]),
                       mutates=mutates, id=f"adhoc/{name}", name=name, dtype=in_dtype)

    if framework is None:
        framework, _ = _detect(candidate, original[0], cand_kwargs)

    y_exp, g_exp, s_exp = expected_outputs(case)
    _, _, slots = bind(spec.function, *case.fresh_args(), **case.kwargs)
    diff_slots = [i for i, s in enumerate(slots) if s is not None
                  and (framework == "numpy" or s not in _BUFFERS)]

    call_args = [_snapshot(a) for a in original[0]]
    call_kwargs = {k: _snapshot(v) for k, v in cand_kwargs.items()}
    if framework == "numpy":
        y, grads = _run_numpy(candidate, call_args, call_kwargs)
    else:
        run = {"torch": _run_torch, "tensorflow": _run_tensorflow, "jax": _run_jax}[framework]
        y, grads = run(candidate, case, call_args, call_kwargs, diff_slots, y_exp.shape)
    y = np.asarray(y)
    state_judged = framework != "jax"
    if not state_judged:
        s_exp = {}

    verdicts, cond = _verdicts(case, name, spec, y_exp, g_exp, s_exp, y, grads, call_args,
                               diff_slots)
    failed = [v for v in verdicts if not v.passed]
    if not failed:
        if verdicts and all(v.at_limit for v in verdicts if v.passed and v.note != "empty"):
            import warnings

            warnings.warn(
                f"assert_conforms({name!r}): every element is beyond what {verdicts[0].dtype} can "
                f"represent for any algorithm (conditioning {cond:.3g}); the candidate was judged "
                f"for NaN / Inf only, not for accuracy", UserWarning, stacklevel=2)
        return
    failed.sort(key=lambda v: -(v.worst_ulps / v.tolerance_ulps if v.tolerance_ulps else math.inf))
    lines = [f"{name} does not conform to normref ({framework}, case {case.id}): "
             f"{len(failed)} of {len(verdicts)} checks fail"]
    for v in failed:
        where = "n/a" if v.index is None else str(v.index)
        kappa = v.tolerance_ulps / TOLERANCE_BASE[check_kind(v.check)]
        lines.append(
            f"  {v.check} [{v.dtype}]: worst element {where}: expected {v.expected!r}, "
            f"actual {v.actual!r}; error {v.worst_ulps:.4g} ulps > tolerance "
            f"{v.tolerance_ulps:.4g} ulps ({TOLERANCE_BASE[check_kind(v.check)]:g} x conditioning "
            f"{kappa:.3g} of that element's group)"
            + (f" -- {v.note}" if v.note else "")
        )
    hint = _convention_hint(spec, case, name, (y, grads, call_args, state_judged), diff_slots)
    if hint:
        lines.append(f"hint: {hint} (normref's convention option; the candidate follows "
                     f"another framework's convention)")
    lines.append("reproducer:")
    lines.append(_reproducer(candidate, name, original[0], original[1], framework))
    raise AssertionError("\n".join(lines))
