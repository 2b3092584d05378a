"""Accuracy benchmark: float64 ulps from a 40-digit mpmath reference.

For batch_norm (training), layer_norm, group_norm and rms_norm, on inputs
``offset + N(0, 1)`` with offsets 0, 1e4, 1e8, 1e12 (fixed seeds), eps=1e-5,
no weight/bias (plus one row per op with weight and bias), print the maximum
error over all outputs, in float64 ulps of each exact output, of

* normref (the numba fast path),
* PyTorch float64 (``torch.nn.functional``; column skipped if torch is absent),
* NumPy two-pass: ``(x - x.mean()) / np.sqrt(x.var() + eps)``,
* NumPy one-pass: variance as ``E[x^2] - E[x]^2``.

The error of each output is measured against the spacing of float64 numbers
at *that output's* exact value, so a near-zero output at offset 1e12 must be
accurate relative to itself, not to the data: the demanding measure.

Target: normref within 4 ulps everywhere.  Exit status 0 regardless, unless
``--strict`` (then 1 on a miss or if normref is unavailable).

Run: ``python benchmarks/accuracy.py [--strict] [--ops layer_norm,rms_norm]``
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
# benchmark the checkout these scripts live in (and find _mpref next to them)
sys.path[:0] = [_HERE, os.path.dirname(_HERE)]
import _mpref  # noqa: E402

EPS = 1e-5
TARGET_ULPS = 4.0
OPS = ("batch_norm", "layer_norm", "group_norm", "rms_norm")
OFFSETS = (0.0, 1e4, 1e8, 1e12)
#: offset of the one row per op that also carries weight and bias
AFFINE_OFFSET = 1e8
SHAPES = {
    "batch_norm": (8, 4, 4, 4),   # 4 channels, 128 values each
    "layer_norm": (4, 256),       # normalized_shape (256,)
    "group_norm": (2, 8, 4, 4),   # 4 groups of 2 channels: 32 values each
    "rms_norm": (4, 256),         # normalized_shape (256,)
}
NUM_GROUPS = 4
COLUMNS = ("normref", "torch", "numpy two-pass", "numpy one-pass")


# --------------------------------------------------------------------------
# optional libraries
# --------------------------------------------------------------------------

def load_normref():
    """Return ``(module, None)`` or ``(None, reason)``."""
    try:
        import normref
        for op in OPS:
            getattr(normref, op)
        return normref, None
    except Exception as exc:  # noqa: BLE001 - any import failure is reported
        return None, f"{type(exc).__name__}: {exc}"


def load_torch():
    try:
        import torch
        import torch.nn.functional as F  # noqa: F401
        return torch, None
    except Exception as exc:  # noqa: BLE001
        return None, f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------

def param_shape(op, shape):
    """Shape of weight / bias for ``op`` on an input of ``shape``."""
    if op in ("layer_norm", "rms_norm"):
        return (shape[-1],)
    return (shape[1],)


def make_case(op, offset, affine=False, shape=None, seed=None):
    """Input (and weight/bias if ``affine``) for one table row.

    ``x = offset + N(0, 1)``, seeded from the row so every run is identical.
    With ``affine``, ``w ~ U(0.5, 1.5)`` and ``b ~ U(10, 12)``: the bias is
    kept away from ``-z w`` on purpose, because when ``z w + b`` cancels, the
    rounding of ``z w`` alone (half an ulp of ``z w``) is many ulps of the tiny
    result for *any* float64 implementation, and the row would measure the
    conditioning of the affine map rather than the normalizer.
    """
    shape = SHAPES[op] if shape is None else tuple(shape)
    if seed is None:
        seed = [OPS.index(op) if op in OPS else 99, OFFSETS.index(offset)
                if offset in OFFSETS else 99, int(affine)]
    rng = np.random.default_rng(seed)
    x = offset + rng.standard_normal(shape)
    case = {"op": op, "offset": offset, "x": x, "weight": None, "bias": None}
    if affine:
        ps = param_shape(op, shape)
        case["weight"] = rng.uniform(0.5, 1.5, ps)
        if op != "rms_norm":
            case["bias"] = rng.uniform(10.0, 12.0, ps)
    return case


def _channel(a, ndim):
    return None if a is None else a.reshape((1, -1) + (1,) * (ndim - 2))


# --------------------------------------------------------------------------
# the four implementations and the reference
# --------------------------------------------------------------------------

def reference(case, eps=EPS):
    op, x, w, b = case["op"], case["x"], case["weight"], case["bias"]
    if op == "batch_norm":
        return _mpref.batch_norm(x, w, b, eps)
    if op == "layer_norm":
        return _mpref.layer_norm(x, x.shape[-1:], w, b, eps)
    if op == "group_norm":
        return _mpref.group_norm(x, NUM_GROUPS, w, b, eps)
    if op == "rms_norm":
        return _mpref.rms_norm(x, x.shape[-1:], w, eps)
    raise ValueError(f"unknown op {op!r}")


def run_normref(normref, case, eps=EPS):
    op, x, w, b = case["op"], case["x"], case["weight"], case["bias"]
    if op == "batch_norm":
        return normref.batch_norm(x, None, None, w, b, True, 0.1, eps)
    if op == "layer_norm":
        return normref.layer_norm(x, x.shape[-1:], w, b, eps)
    if op == "group_norm":
        return normref.group_norm(x, NUM_GROUPS, w, b, eps)
    if op == "rms_norm":
        return normref.rms_norm(x, x.shape[-1:], w, eps)
    raise ValueError(f"unknown op {op!r}")


def run_torch(torch, case, eps=EPS):
    import torch.nn.functional as F

    op = case["op"]

    def t(a):
        return None if a is None else torch.from_numpy(np.ascontiguousarray(a))

    x, w, b = t(case["x"]), t(case["weight"]), t(case["bias"])
    with torch.no_grad():
        if op == "batch_norm":
            y = F.batch_norm(x, None, None, w, b, training=True, eps=eps)
        elif op == "layer_norm":
            y = F.layer_norm(x, tuple(x.shape[-1:]), w, b, eps)
        elif op == "group_norm":
            y = F.group_norm(x, NUM_GROUPS, w, b, eps)
        elif op == "rms_norm":
            y = F.rms_norm(x, tuple(x.shape[-1:]), w, eps)
        else:
            raise ValueError(f"unknown op {op!r}")
    return y.numpy()


def _numpy_standardize(case, eps, one_pass):
    op, x, w, b = case["op"], case["x"], case["weight"], case["bias"]
    if op == "rms_norm":
        y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
        return y if w is None else y * w
    if op == "batch_norm":
        xs, axes = x, (0,) + tuple(range(2, x.ndim))
    elif op == "layer_norm":
        xs, axes = x, (-1,)
    elif op == "group_norm":
        xs, axes = x.reshape(x.shape[0], NUM_GROUPS, -1), (-1,)
    else:
        raise ValueError(f"unknown op {op!r}")
    mean = xs.mean(axis=axes, keepdims=True)
    if one_pass:
        var = (xs * xs).mean(axis=axes, keepdims=True) - mean * mean
    else:
        var = xs.var(axis=axes, keepdims=True)
    y = ((xs - mean) / np.sqrt(var + eps)).reshape(x.shape)
    if op == "layer_norm":
        wb = (w, b)
    else:
        wb = (_channel(w, x.ndim), _channel(b, x.ndim))
    if wb[0] is not None:
        y = y * wb[0]
    if wb[1] is not None:
        y = y + wb[1]
    return y


def run_numpy_two_pass(case, eps=EPS):
    """``(x - x.mean()) / np.sqrt(x.var() + eps)`` per group (np.var is two-pass)."""
    return _numpy_standardize(case, eps, one_pass=False)


def run_numpy_one_pass(case, eps=EPS):
    """Variance as ``E[x^2] - E[x]^2``: the formula every design note warns about.

    Not defined for rms_norm (no mean is subtracted): returns None there.
    """
    if case["op"] == "rms_norm":
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        return _numpy_standardize(case, eps, one_pass=True)


def max_ulps(exact, approx):
    """Largest elementwise error in ulps of the exact value (inf if any non-finite)."""
    return float(np.max(_mpref.ulp_error(exact, approx)))


def measure(case, normref=None, torch=None, eps=EPS):
    """Return ``{column: max ulps or None}`` for one case (None = not measured)."""
    exact = reference(case, eps)
    row = {}
    row["normref"] = None if normref is None else max_ulps(exact, run_normref(normref, case, eps))
    row["torch"] = None if torch is None else max_ulps(exact, run_torch(torch, case, eps))
    row["numpy two-pass"] = max_ulps(exact, run_numpy_two_pass(case, eps))
    one = run_numpy_one_pass(case, eps)
    row["numpy one-pass"] = None if one is None else max_ulps(exact, one)
    return row


# --------------------------------------------------------------------------
# table
# --------------------------------------------------------------------------

def fmt_ulps(v):
    if v is None:
        return "n/a"
    if not np.isfinite(v):
        return "inf/nan"
    if v < 1000:
        return f"{v:.2f}"
    return f"{v:.2e}"


def rows_for(ops):
    out = []
    for op in ops:
        for off in OFFSETS:
            out.append((op, off, False))
        out.append((op, AFFINE_OFFSET, True))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 if normref misses the target (or is unavailable)")
    ap.add_argument("--ops", default=",".join(OPS),
                    help=f"comma-separated subset of {','.join(OPS)}")
    args = ap.parse_args(argv)
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    for o in ops:
        if o not in OPS:
            ap.error(f"unknown op {o!r}; choose from {', '.join(OPS)}")

    normref, nerr = load_normref()
    torch, terr = load_torch()
    t0 = time.perf_counter()
    print("accuracy: max error in float64 ulps of each exact output, vs a "
          f"{_mpref.DPS}-digit mpmath reference")
    print(f"input offset + N(0,1), eps={EPS:g}; shapes: "
          + ", ".join(f"{o} {SHAPES[o]}" for o in ops)
          + f" (group_norm: {NUM_GROUPS} groups; batch_norm in training mode)")
    if normref is None:
        print(f"note: normref column skipped, normref did not import ({nerr})")
    if torch is None:
        print(f"note: torch column skipped, torch did not import ({terr})")
    else:
        print(f"torch {torch.__version__}, float64, torch.nn.functional")
    print()

    header = f"{'op':<12} {'offset':>7} {'w,b':>4} | " + " | ".join(f"{c:>14}" for c in COLUMNS)
    print(header)
    print("-" * len(header))
    misses = []
    for op, off, affine in rows_for(ops):
        case = make_case(op, off, affine)
        row = measure(case, normref, torch)
        cells = " | ".join(f"{fmt_ulps(row[c]):>14}" for c in COLUMNS)
        print(f"{op:<12} {off:>7.0e} {'yes' if affine else '':>4} | {cells}")
        v = row["normref"]
        if v is not None and not (v <= TARGET_ULPS):
            misses.append(f"{op} offset {off:.0e}{' w,b' if affine else ''}: {fmt_ulps(v)} ulps")
    print()
    print("rms_norm subtracts no mean, so it has no one-pass/two-pass distinction "
          "(numpy one-pass: n/a).")
    print("w,b rows: w ~ U(0.5, 1.5), b ~ U(10, 12) (rms_norm: weight only), "
          "chosen so that z*w + b does not cancel.")
    if normref is None:
        status = "FAIL (normref unavailable)"
        failed = True
    elif misses:
        status = "FAIL: " + "; ".join(misses)
        failed = True
    else:
        status = "PASS"
        failed = False
    print(f"target: normref <= {TARGET_ULPS:g} ulps everywhere: {status}")
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 1 if (failed and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
