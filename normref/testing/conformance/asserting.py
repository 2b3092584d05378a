"""``assert_conforms``: the conformance judgement inside anyone's pytest."""
from __future__ import annotations

import math
import os
import tempfile
import zlib

import numpy as np

from ...registry import REGISTRY
from .cases import ConformCase
from .judge import TOLERANCE_BASE, Verdict, case_conditioning, check_kind, expected_outputs, judge
from .rounding import DTYPES
from .runner import signature_name

__all__ = ["assert_conforms"]

#: parameters that torch treats as buffers (not differentiable through autograd)
_TORCH_BUFFERS = frozenset({"running_mean", "running_var"})
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
        digest = zlib.crc32(b"".join(np.ascontiguousarray(v).tobytes() for v in npz.values()))
        path = os.path.join(tempfile.gettempdir(), f"normref_repro_{name}_{digest:08x}.npz")
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


def _detect(candidate, args, kwargs):
    """('numpy', output) or ('torch', None): try the candidate on NumPy arrays."""
    try:
        out = candidate(*[_snapshot(a) for a in args], **{k: _snapshot(v) for k, v in kwargs.items()})
    except (TypeError, AttributeError) as e:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise TypeError(
                f"assert_conforms: the candidate rejected NumPy arrays ({type(e).__name__}: {e}) "
                f"and torch is not installed; pass framework='numpy' or 'torch'"
            ) from e
        return "torch", None
    if isinstance(out, np.ndarray):
        return "numpy", None
    if type(out).__module__.split(".")[0] == "torch":
        return "torch", None
    raise TypeError(
        f"assert_conforms: cannot detect the framework of the candidate: given NumPy arrays "
        f"it returned {type(out).__name__}; pass framework='numpy' or 'torch'"
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


def assert_conforms(candidate, name, *args, framework=None, **kwargs):
    """Assert that ``candidate`` computes the normalizer ``name`` like normref.

    ``args`` / ``kwargs`` are those of the normref function ``name`` (NumPy
    arrays).  ``framework="numpy"``: the candidate takes and returns NumPy
    arrays; its forward (and running statistics it updates in place) are
    judged.  ``framework="torch"``: float arrays are converted to tensors
    (``requires_grad`` for the arguments normref differentiates in this call,
    except running statistics, which torch treats as buffers), and the
    forward plus every input gradient for the case's cotangent (through
    ``torch.autograd.grad``) are judged; a missing gradient is a failure.
    ``framework=None``: the candidate is called on NumPy arrays; a NumPy
    result means "numpy", a tensor result or a TypeError means "torch".

    Judgement as in :func:`judge`: errors in ulps of the candidate's output
    dtype (inputs rounded to it are what normref computes on: pass float32
    arrays to judge a float32 kernel), tolerance 16 (forward, state) or 64
    (backward) ulps times the case's conditioning.

    Raises AssertionError naming the normalizer, check, dtype, worst element
    (index, expected, actual), the error in ulps against the tolerance and a
    copy-pasteable reproducer (arrays of more than 64 elements are saved to
    an .npz in the temporary directory).
    """
    from ...autodiff import bind

    import normref  # noqa: F401  (registers every normalizer)

    if name not in REGISTRY:
        raise ValueError(f"assert_conforms: unknown normalizer {name!r}; registered: "
                         f"{', '.join(sorted(REGISTRY))}")
    if framework not in (None, "numpy", "torch"):
        raise ValueError(f"assert_conforms: framework must be 'numpy', 'torch' or None, got {framework!r}")
    if not args:
        raise TypeError(f"assert_conforms: give the arguments of normref.{name} after the name")
    spec = REGISTRY[name]
    original = ([_snapshot(a) for a in args], {k: _snapshot(v) for k, v in kwargs.items()})
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
        framework, _ = _detect(candidate, original[0], original[1])

    y_exp, g_exp, s_exp = expected_outputs(case)
    _, _, slots = bind(spec.function, *case.fresh_args(), **case.kwargs)
    diff_slots = [i for i, s in enumerate(slots) if s is not None
                  and (framework != "torch" or s not in _TORCH_BUFFERS)]

    call_args = [_snapshot(a) for a in original[0]]
    call_kwargs = {k: _snapshot(v) for k, v in original[1].items()}
    if framework == "numpy":
        y, grads = _run_numpy(candidate, call_args, call_kwargs)
    else:
        y, grads = _run_torch(candidate, case, call_args, call_kwargs, diff_slots, y_exp.shape)

    cond = case_conditioning(case)
    verdicts = []
    out_dtype = _dtype_name(y.dtype, "the candidate's output")
    verdicts.append(judge(case, y_exp, y, out_dtype, "forward", cond=cond))
    if grads is not None and not isinstance(g_exp, str):  # (a str: no exact VJP exists)
        for i in diff_slots:
            check = f"backward:{signature_name(name, i)}"
            g = grads.get(i)
            if g is None:
                verdicts.append(Verdict(check, out_dtype, math.inf, TOLERANCE_BASE["backward"] * cond,
                                        None, math.nan, math.nan, False,
                                        note="the candidate returns no gradient for this argument "
                                             "(None from torch.autograd.grad)"))
                continue
            verdicts.append(judge(case, g_exp[i], g, _dtype_name(g.dtype, check), check, cond=cond))
    for i, s in s_exp.items():
        check = f"state:{signature_name(name, i)}"
        verdicts.append(judge(case, s, np.asarray(call_args[i]),
                              _dtype_name(np.asarray(call_args[i]).dtype, check), check, cond=cond))
    failed = [v for v in verdicts if not v.passed]
    if not failed:
        return
    failed.sort(key=lambda v: -(v.worst_ulps / v.tolerance_ulps if v.tolerance_ulps else math.inf))
    lines = [f"{name} does not conform to normref ({framework}, case {case.id}): "
             f"{len(failed)} of {len(verdicts)} checks fail"]
    for v in failed:
        where = "n/a" if v.index is None else str(v.index)
        lines.append(
            f"  {v.check} [{v.dtype}]: worst element {where}: expected {v.expected!r}, "
            f"actual {v.actual!r}; error {v.worst_ulps:.4g} ulps > tolerance "
            f"{v.tolerance_ulps:.4g} ulps ({TOLERANCE_BASE[check_kind(v.check)]:g} x conditioning {cond:.3g})"
            + (f" -- {v.note}" if v.note else "")
        )
    lines.append("reproducer:")
    lines.append(_reproducer(candidate, name, original[0], original[1], framework))
    raise AssertionError("\n".join(lines))
