"""Speed benchmark: normref vs PyTorch (CPU) vs NumPy, in float64.

Measures, as medians over repeats after a warm-up call (which also compiles or
loads the numba kernels):

* batch_norm (training) and group_norm (32 groups) on (32, 64, 56, 56),
  layer_norm over the last axis of (64, 512, 768), with weight and bias, and
  rms_norm over the last axis of (64, 512, 768) with weight:

  - forward, through the API (a fresh output) and at kernel level (normref's
    forward kernel writing into preallocated arrays: what "within 2 memcpy"
    is about; allocating and first touching a fresh output costs about one
    memcpy by itself, for every library);
  - forward + backward: normref ``y, pb = normref.vjp(f, x, ..., w, b);
    pb(dy)``; PyTorch ``torch.autograd.grad(y, (x, w, b), dy)`` (the
    gradient of ``(y * dy).sum()``, without paying for the product and the
    sum); JAX ``jax.jit`` of the textbook formula (float64) and of its
    ``jax.vjp``; NumPy a plain vectorized two-pass forward and the textbook
    backward;
  - a memcpy of the input (``np.copyto`` into a preallocated array): the unit.

* the dense Jacobian of training-mode batch_norm (weight and bias given) on
  (128, 16) with respect to the input: ``normref.jacobian`` against
  ``torch.func.jacrev``.

All numbers come from the same run, timed round-robin per op; numba, torch and
XLA use ``--threads`` threads (default 2).  torch and JAX are optional (their
columns print ``n/a`` when they do not import).  Targets (printed with
PASS/FAIL): forward + backward at least 1.5x faster than PyTorch and faster
than JAX on each op; the forward kernel within 2 memcpy times; Jacobian at
least 10x faster than ``torch.func.jacrev``.  Also printed: the load average
at the start and the end, and the first call's time in a fresh process with
an empty and with a warm numba cache (``cache=True``: compiled once, loaded
after), with a check that ``import normref`` compiles nothing.  The exit
status is 0 unless something crashed; there are no timing assertions anywhere.

Run: ``python benchmarks/speed.py [--quick] [--ops batch_norm,jacobian] [--no-compile]``
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

# benchmark the checkout this script lives in
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

EPS = 1e-5
OPS = ("batch_norm", "group_norm", "layer_norm", "rms_norm", "jacobian")
FULL_SHAPES = {
    "batch_norm": (32, 64, 56, 56),
    "group_norm": (32, 64, 56, 56),
    "layer_norm": (64, 512, 768),
    "rms_norm": (64, 512, 768),
    "jacobian": (128, 16),
}
QUICK_SHAPES = {
    "batch_norm": (4, 16, 14, 14),
    "group_norm": (4, 64, 14, 14),
    "layer_norm": (4, 32, 96),
    "rms_norm": (4, 32, 96),
    "jacobian": (16, 4),
}
LAST_AXIS = ("layer_norm", "rms_norm")  # normalized over the last axis, per-feature weight
NUM_GROUPS = 32
FWD_BWD_SPEEDUP = 1.5    # normref fwd+bwd at least this much faster than torch
FWD_MEMCPY = 2.0         # normref forward within this many memcpy times
JAC_SPEEDUP = 10.0       # normref Jacobian at least this much faster than jacrev


# --------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------

def median_times(fns, repeats, budget, warmup=1):
    """Median wall time in seconds of each ``fns[name]()``, after warm-up.

    The callables are timed round-robin (one call of each per round), so every
    ratio compares calls made under the same machine load.  Runs ``repeats``
    rounds, stopping early (after at least 3) once ``budget`` seconds have
    been spent, so slow baselines do not dominate the run time.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    spent = 0.0
    for r in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            times[name].append(dt)
            spent += dt
        if r + 1 >= 3 and spent > budget:
            break
    return {name: statistics.median(ts) for name, ts in times.items()}


# --------------------------------------------------------------------------
# the three implementations
# --------------------------------------------------------------------------

def _layout(op, x):
    """Return ``(view, axes)`` for the NumPy baseline: ``x`` reshaped so that
    each normalization group is reduced over ``axes``."""
    if op == "batch_norm":
        return x, (0,) + tuple(range(2, x.ndim))
    if op == "group_norm":
        return x.reshape(x.shape[0], NUM_GROUPS, -1), (2,)
    if op in LAST_AXIS:
        return x, (x.ndim - 1,)
    raise ValueError(op)


def _pshape(op, x):
    if op in LAST_AXIS:
        return (x.shape[-1],)
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def _paxes(op, x):
    """Axes summed for dw / db."""
    if op in LAST_AXIS:
        return tuple(range(x.ndim - 1))
    return (0,) + tuple(range(2, x.ndim))


def numpy_forward(op, x, w, b, eps=EPS):
    """Plain vectorized two-pass forward; returns ``(y, xhat, rstd)`` (rms_norm:
    ``xhat = x / rms``, no bias)."""
    v, axes = _layout(op, x)
    if op == "rms_norm":
        rstd = 1.0 / np.sqrt(np.mean(v * v, axis=axes, keepdims=True) + eps)
        xhat = v * rstd
        return xhat * w, xhat, rstd
    mean = v.mean(axis=axes, keepdims=True)
    d = v - mean
    var = np.mean(d * d, axis=axes, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = (d * rstd).reshape(x.shape)
    y = xhat * w.reshape(_pshape(op, x)) + b.reshape(_pshape(op, x))
    return y, xhat, rstd


def numpy_backward(op, x, w, dy, xhat, rstd):
    r"""Textbook backward of standardize-then-affine.

    .. math::

       \hat g = dy \cdot w, \quad
       dx = \frac{1}{\sigma}\left(\hat g - \overline{\hat g}
            - \hat x\, \overline{\hat g \hat x}\right), \quad
       dw = \sum dy\, \hat x, \quad db = \sum dy
    """
    pax = _paxes(op, x)
    dw = np.sum(dy * xhat, axis=pax)
    g = dy * w.reshape(_pshape(op, x))
    gv, axes = _layout(op, g)
    xv, _ = _layout(op, xhat)
    gxm = np.mean(gv * xv, axis=axes, keepdims=True)
    if op == "rms_norm":  # no mean subtracted, no bias
        return (rstd * (gv - xv * gxm)).reshape(x.shape), dw
    db = np.sum(dy, axis=pax)
    gm = gv.mean(axis=axes, keepdims=True)
    dx = (rstd * (gv - gm - xv * gxm)).reshape(x.shape)
    return dx, dw, db


def normref_call(normref, op, x, w, b):
    """``(f, args)`` so that ``f(*args)`` is the normref forward of ``op``."""
    if op == "batch_norm":
        return normref.batch_norm, (x, None, None, w, b, True, 0.1, EPS)
    if op == "group_norm":
        return normref.group_norm, (x, NUM_GROUPS, w, b, EPS)
    if op == "layer_norm":
        return normref.layer_norm, (x, (x.shape[-1],), w, b, EPS)
    if op == "rms_norm":
        return normref.rms_norm, (x, (x.shape[-1],), w, EPS)
    raise ValueError(op)


def normref_kernel_forward(normref, op, x, w, b):
    """A callable running only normref's forward kernel of ``op`` on ``x``, into
    preallocated output and statistics arrays (the call's layout and options taken
    from a bound plan: internal API, benchmark use only); None if unavailable."""
    try:
        from normref.autodiff import bind
        from normref.kernels import standardize as K

        f, args = normref_call(normref, op, x, w, b)
        _, plan, _ = bind(f, *args)
        plan.forward()
        L = plan.layout
        G = L.n_groups
        xf = L.flat(x)
        out = np.empty_like(xf)
        stats = [np.empty(G) for _ in range(6)]
        nonfinite = np.empty(G, dtype=np.int64)
        gamma = plan.weight.flat if plan.weight is not None else np.zeros(1)
        beta = plan.bias.flat if plan.bias is not None else np.zeros(1)
        none = np.zeros(1)
        call = (xf, L.shape5, L.strides, L.param_strides, gamma, beta, plan.weight is not None,
                plan.bias is not None, plan.center, plan.eps, plan.eps_outside, none, none, 1.0,
                False, out, *stats, none, False, nonfinite)
        K.standardize_forward(*call)
        return lambda: K.standardize_forward(*call)
    except Exception:  # noqa: BLE001 - a benchmark of internals: report n/a
        return None


def jax_functions(jax, op):
    """``(forward, forward + vjp)``, both ``jax.jit`` of the textbook formula."""
    jnp = jax.numpy

    def f(x, w, b):
        if op == "rms_norm":
            return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + EPS) * w
        if op == "batch_norm":
            v, axes = x, (0,) + tuple(range(2, x.ndim))
        elif op == "group_norm":
            v, axes = x.reshape(x.shape[0], NUM_GROUPS, -1), (2,)
        else:
            v, axes = x, (x.ndim - 1,)
        mean = jnp.mean(v, axis=axes, keepdims=True)
        var = jnp.var(v, axis=axes, keepdims=True)
        xhat = ((v - mean) * jax.lax.rsqrt(var + EPS)).reshape(x.shape)
        ps = (x.shape[-1],) if op in LAST_AXIS else (1, x.shape[1]) + (1,) * (x.ndim - 2)
        return xhat * w.reshape(ps) + b.reshape(ps)

    def both(x, w, b, dy):
        return jax.vjp(f, x, w, b)[1](dy)

    return jax.jit(f), jax.jit(both)


def torch_call(F, op, x, w, b):
    if op == "batch_norm":
        return F.batch_norm(x, None, None, w, b, training=True, eps=EPS)
    if op == "group_norm":
        return F.group_norm(x, NUM_GROUPS, w, b, EPS)
    if op == "layer_norm":
        return F.layer_norm(x, (x.shape[-1],), w, b, EPS)
    if op == "rms_norm":
        return F.rms_norm(x, (x.shape[-1],), w, EPS)
    raise ValueError(op)


# --------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------

def fms(t):
    return "n/a" if t is None else f"{t * 1e3:.2f}"


def fratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}"


LIBS = ("normref", "kernel", "torch", "jax", "numpy", "memcpy")
HEADER = (f"{'op':<11} {'pass':<8} | {'normref ms':>10} {'kernel ms':>9} {'torch ms':>9} "
          f"{'jax ms':>8} {'numpy ms':>9} {'memcpy ms':>9} | {'torch/normref':>13} "
          f"{'jax/normref':>11} {'normref/memcpy':>14} {'kernel/memcpy':>13} {'torch/memcpy':>12}")


def row_line(op, label, t):
    return (f"{op:<11} {label:<8} | {fms(t['normref']):>10} {fms(t['kernel']):>9} "
            f"{fms(t['torch']):>9} {fms(t['jax']):>8} {fms(t['numpy']):>9} {fms(t['memcpy']):>9} | "
            f"{fratio(t['torch'], t['normref']):>13} {fratio(t['jax'], t['normref']):>11} "
            f"{fratio(t['normref'], t['memcpy']):>14} {fratio(t['kernel'], t['memcpy']):>13} "
            f"{fratio(t['torch'], t['memcpy']):>12}")


def verdict(ok):
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def bench_op(op, shape, normref, torch, jax, repeats, budget):
    """Time one op; return ``(fwd_times, fwdbwd_times, check_lines)``."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    pshape = (shape[-1],) if op in LAST_AXIS else (shape[1],)
    w = rng.uniform(0.5, 1.5, pshape)
    b = rng.standard_normal(pshape)
    dy = rng.standard_normal(shape)
    has_bias = op != "rms_norm"

    fwd = dict.fromkeys(LIBS)
    both = dict(fwd)
    checks = []

    dst = np.empty_like(x)
    fns = {
        "memcpy": lambda: np.copyto(dst, x),
        "copy": lambda: x.copy(),
    }

    def np_fwd():
        return numpy_forward(op, x, w, b)[0]

    def np_both():
        y, xhat, rstd = numpy_forward(op, x, w, b)
        return numpy_backward(op, x, w, dy, xhat, rstd)

    fns["numpy fwd"] = np_fwd
    fns["numpy both"] = np_both

    if normref is not None:
        f, args = normref_call(normref, op, x, w, b)

        def nr_both():
            y, pb = normref.vjp(f, *args)
            return pb(dy)

        fns["normref fwd"] = lambda: f(*args)
        fns["normref both"] = nr_both
        kern = normref_kernel_forward(normref, op, x, w, b)
        if kern is not None:
            fns["kernel fwd"] = kern

    if torch is not None:
        import torch.nn.functional as F

        xt, wt, bt, dyt = (torch.from_numpy(a) for a in (x, w, b, dy))

        def t_fwd():
            with torch.no_grad():
                return torch_call(F, op, xt, wt, bt)

        xg, wg, bg = (a.clone().requires_grad_(True) for a in (xt, wt, bt))
        wrt = (xg, wg, bg) if has_bias else (xg, wg)

        def t_both():
            y = torch_call(F, op, xg, wg, bg)
            return torch.autograd.grad(y, wrt, grad_outputs=dyt)

        fns["torch fwd"] = t_fwd
        fns["torch both"] = t_both

    if jax is not None:
        jf, jb = jax_functions(jax, op)
        xj, wj, bj, dyj = (jax.device_put(a) for a in (x, w, b, dy))
        fns["jax fwd"] = lambda: jf(xj, wj, bj).block_until_ready()
        fns["jax both"] = lambda: jax.block_until_ready(jb(xj, wj, bj, dyj))

    med = median_times(fns, repeats, budget)
    fwd["memcpy"] = both["memcpy"] = med["memcpy"]
    for lib in ("normref", "torch", "jax", "numpy"):
        fwd[lib] = med.get(f"{lib} fwd")
        both[lib] = med.get(f"{lib} both")
    fwd["kernel"] = med.get("kernel fwd")
    checks.append(f"  {op}: x.copy() (allocating a fresh output, page faults included) "
                  f"{med['copy'] * 1e3:.2f} ms = {med['copy'] / med['memcpy']:.2f} memcpy")
    del dst, fns

    # consistency of what was timed (not a timing assertion)
    y_np = np_fwd()
    ref = {"numpy": (y_np,) + tuple(np_both())}
    if normref is not None:
        f, args = normref_call(normref, op, x, w, b)
        y_nr, pb = normref.vjp(f, *args)
        g = pb(dy)
        iw = next(i for i, a in enumerate(args) if a is w)  # weight slot; bias next
        ref["normref"] = (y_nr, g[0], g[iw]) + ((g[iw + 1],) if has_bias else ())
    if torch is not None:
        gt = t_both()
        ref["torch"] = (t_fwd().numpy(),) + tuple(a.numpy() for a in gt)
    if jax is not None:
        ref["jax"] = (np.asarray(jf(xj, wj, bj)),) + tuple(
            np.asarray(a) for a in jb(xj, wj, bj, dyj))[: 3 if has_bias else 2]
    if "normref" in ref:
        for other in ("torch", "jax", "numpy"):
            if other in ref:
                diffs = [float(np.max(np.abs(a - c))) for a, c in zip(ref["normref"], ref[other])]
                checks.append(f"  {op}: max |normref - {other}| of y, dx, dw"
                              + (", db: " if has_bias else ": ")
                              + ", ".join(f"{d:.1e}" for d in diffs))
    return fwd, both, checks


def bench_jacobian(shape, normref, torch, repeats, budget):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    w = rng.uniform(0.5, 1.5, shape[1])
    b = rng.standard_normal(shape[1])
    fns = {}
    if normref is not None:
        def nr():
            return normref.jacobian(normref.batch_norm, x, None, None, w, b, True, wrt=0)
        fns["normref"] = nr
    if torch is not None:
        import torch.nn.functional as F
        from torch.func import jacrev

        xt, wt, bt = (torch.from_numpy(a) for a in (x, w, b))

        def fn(xx):
            return F.batch_norm(xx, None, None, wt, bt, training=True, eps=EPS)

        def tj():
            return jacrev(fn)(xt)
        fns["torch"] = tj
    med = median_times(fns, repeats, budget) if fns else {}
    out = {"normref": med.get("normref"), "torch": med.get("torch"), "diff": None}
    if normref is not None and torch is not None:
        out["diff"] = float(np.max(np.abs(np.asarray(nr()) - tj().numpy())))
    return out


def load(argv_threads):
    try:
        import numba
        numba.set_num_threads(min(argv_threads, numba.config.NUMBA_NUM_THREADS))
        nthreads = numba.get_num_threads()
    except Exception as exc:  # noqa: BLE001
        nthreads = f"n/a ({exc})"
    try:
        import normref
        for op in ("batch_norm", "group_norm", "layer_norm", "rms_norm", "vjp", "jacobian"):
            getattr(normref, op)
        nerr = None
    except Exception as exc:  # noqa: BLE001
        normref, nerr = None, f"{type(exc).__name__}: {exc}"
    try:
        import torch
        torch.set_num_threads(argv_threads)
        terr = None
    except Exception as exc:  # noqa: BLE001
        torch, terr = None, f"{type(exc).__name__}: {exc}"
    return nthreads, normref, nerr, torch, terr


def load_jax(threads):
    """``(jax, None)`` with float64 enabled and XLA's CPU threads limited, or ``(None, reason)``."""
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true "
                          f"intra_op_parallelism_threads={threads}")
    try:
        import jax
        jax.config.update("jax_enable_x64", True)
        jax.numpy.zeros(1).block_until_ready()
        return jax, None
    except Exception as exc:  # noqa: BLE001
        return None, f"{type(exc).__name__}: {exc}"


_FIRST_CALL = r"""
import json, sys, time
t0 = time.perf_counter()
import numba
import normref
from normref.kernels import standardize as K
t_import = time.perf_counter() - t0
kernels = [K.standardize_forward.serial, K.standardize_forward.parallel,
           K.standardize_project.serial, K.standardize_project.parallel]
compiled_at_import = sum(len(k.signatures) for k in kernels)
import numpy as np
x = np.random.default_rng(0).standard_normal((64, 16, 8, 8))  # big enough for the parallel build
w, b, dy = np.ones(16), np.zeros(16), np.ones(x.shape)
t0 = time.perf_counter()
y, pb = normref.vjp(normref.batch_norm, x, None, None, w, b, True)
pb(dy)
t_first = time.perf_counter() - t0
print(json.dumps({"import": t_import, "compiled_at_import": compiled_at_import,
                  "first": t_first}))
"""


def first_call_times():
    """``{"cold": ..., "warm": ...}``: ``import normref`` and the first batch_norm
    vjp + pullback in a fresh process with an empty numba cache directory, then again
    with the cache that run left (None on failure)."""
    import json

    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for kind in ("cold", "warm"):
            try:
                proc = subprocess.run([sys.executable, "-c", _FIRST_CALL], capture_output=True,
                                      text=True, env=env, timeout=900,
                                      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
                out[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
            except Exception:  # noqa: BLE001
                out[kind] = None
    return out


def loadavg():
    try:
        return "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "n/a"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="small shapes and few repeats (smoke run; figures meaningless)")
    ap.add_argument("--ops", default=",".join(OPS),
                    help=f"comma-separated subset of {','.join(OPS)}")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed calls per measurement (default 9, quick 3)")
    ap.add_argument("--threads", type=int, default=2,
                    help="numba, torch and XLA threads (default 2)")
    ap.add_argument("--no-jax", action="store_true", help="skip the JAX column")
    ap.add_argument("--no-compile", action="store_true",
                    help="skip the first-call (compile / cache load) measurement")
    args = ap.parse_args(argv)
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    for o in ops:
        if o not in OPS:
            ap.error(f"unknown op {o!r}; choose from {', '.join(OPS)}")
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    repeats = args.repeats or (3 if args.quick else 9)
    budget = 0.5 if args.quick else 20.0

    t_start = time.perf_counter()
    load_start = loadavg()
    nthreads, normref, nerr, torch, terr = load(args.threads)
    jax, jerr = (None, "--no-jax") if args.no_jax else load_jax(args.threads)
    print(f"speed: float64, median of up to {repeats} timed calls after a warm-up call; "
          f"numba threads {nthreads}, torch threads "
          f"{torch.get_num_threads() if torch is not None else 'n/a'}, XLA threads "
          f"{args.threads if jax is not None else 'n/a'}"
          + (" [--quick: tiny shapes, figures not meaningful]" if args.quick else ""))
    if normref is None:
        print(f"note: normref column skipped, normref did not import ({nerr})")
    if torch is None:
        print(f"note: torch column skipped, torch did not import ({terr})")
    else:
        print(f"torch {torch.__version__}; numpy {np.__version__}")
    if jax is None:
        print(f"note: jax column skipped ({jerr})")
    else:
        print(f"jax {jax.__version__} (jax.jit of the textbook formula, float64)")
    print(f"load average at start (1/5/15 min): {load_start} -- other processes on "
          "the cores inflate and scatter the figures")
    print("all ops with weight and bias (rms_norm: weight); fwd+bwd returns dx, dw, db "
          "(torch: autograd.grad(y, (x, w, b), dy)); kernel = normref's forward kernel "
          "into preallocated arrays")
    print()

    targets = []
    checks = []
    norm_ops = [o for o in ops if o != "jacobian"]
    if norm_ops:
        print(HEADER)
        print("-" * len(HEADER))
    for op in norm_ops:
        shape = shapes[op]
        fwd, both, chk = bench_op(op, shape, normref, torch, jax, repeats, budget)
        checks += chk
        print(row_line(op, "forward", fwd) + f"   {shape}"
              + (f", {NUM_GROUPS} groups" if op == "group_norm" else "")
              + (f", normalized_shape ({shape[-1]},)" if op in LAST_AXIS else ""))
        print(row_line("", "fwd+bwd", both))
        sys.stdout.flush()
        if both["normref"] is not None and both["torch"] is not None:
            speedup = both["torch"] / both["normref"]
            targets.append(f"{op} fwd+bwd: normref {speedup:.3f}x faster than torch "
                           f"(target >= {FWD_BWD_SPEEDUP:g}x): {verdict(speedup >= FWD_BWD_SPEEDUP)}")
        else:
            targets.append(f"{op} fwd+bwd vs torch (target >= {FWD_BWD_SPEEDUP:g}x): n/a")
        if both["normref"] is not None and both["jax"] is not None:
            speedup = both["jax"] / both["normref"]
            targets.append(f"{op} fwd+bwd: normref {speedup:.3f}x faster than jax "
                           f"(target > 1x): {verdict(speedup > 1.0)}")
        else:
            targets.append(f"{op} fwd+bwd vs jax (target > 1x): n/a")
        if fwd["kernel"] is not None:
            r = fwd["kernel"] / fwd["memcpy"]
            targets.append(f"{op} forward kernel: {r:.3f} memcpy "
                           f"(target <= {FWD_MEMCPY:g}): {verdict(r <= FWD_MEMCPY)}")
        else:
            targets.append(f"{op} forward kernel vs memcpy (target <= {FWD_MEMCPY:g}): n/a")
        if fwd["normref"] is not None:
            targets.append(f"{op} forward through the API (fresh output): "
                           f"{fwd['normref'] / fwd['memcpy']:.3f} memcpy (reported; torch "
                           f"{fratio(fwd['torch'], fwd['memcpy'])}, jax {fratio(fwd['jax'], fwd['memcpy'])})")

    if "jacobian" in ops:
        shape = shapes["jacobian"]
        jr = bench_jacobian(shape, normref, torch, repeats, budget)
        print()
        print(f"dense Jacobian of batch_norm (training, weight and bias) on {shape} "
              f"w.r.t. input, shape {shape + shape}")
        print(f"{'normref.jacobian ms':>20} {'torch.func.jacrev ms':>21} {'torch/normref':>14}")
        print(f"{fms(jr['normref']):>20} {fms(jr['torch']):>21} "
              f"{fratio(jr['torch'], jr['normref']):>14}")
        if jr["diff"] is not None:
            checks.append(f"  jacobian: max |J_normref - J_torch| = {jr['diff']:.1e}")
        if jr["normref"] is not None and jr["torch"] is not None:
            s = jr["torch"] / jr["normref"]
            targets.append(f"jacobian: normref {s:.3f}x faster than torch.func.jacrev "
                           f"(target >= {JAC_SPEEDUP:g}x): {verdict(s >= JAC_SPEEDUP)}")
        else:
            targets.append(f"jacobian vs torch.func.jacrev (target >= {JAC_SPEEDUP:g}x): n/a")

    if normref is not None and not args.no_compile:
        fc = first_call_times()
        print()
        print("first call in a fresh process (batch_norm vjp + pullback; numba cache=True):")
        for kind, label in (("cold", "empty cache (compiles)"), ("warm", "warm cache (loads)")):
            r = fc.get(kind)
            if r is None:
                print(f"  {label}: n/a")
            else:
                print(f"  {label}: import normref {r['import']:.2f} s, first call {r['first']:.2f} s; "
                      f"kernel signatures compiled by the import: {r['compiled_at_import']}")
        r = fc.get("cold")
        if r is not None:
            targets.append(f"import normref compiles nothing: "
                           f"{verdict(r['compiled_at_import'] == 0)}")

    if checks:
        print()
        print("reference points and agreement of the timed computations:")
        print("\n".join(checks))
    print()
    print("targets:")
    for t in targets:
        print("  " + t)
    print(f"load average at end (1/5/15 min): {loadavg()}")
    print(f"({time.perf_counter() - t_start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
