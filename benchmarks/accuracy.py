"""Accuracy benchmark: float64 ulps from a 40-digit mpmath reference.

For batch_norm (training), layer_norm, group_norm and rms_norm, on inputs
``offset + N(0, 1)`` with offsets 0, 1e4, 1e8, 1e12 (fixed seeds), eps=1e-5,
no weight/bias (plus one row per op with weight and bias), on small groups
and on realistic ones (``--small``: the small rows only), print the maximum
error over all outputs, in float64 ulps of each exact output, of

* normref (the numba fast path),
* PyTorch float64 (``torch.nn.functional``; column skipped if torch is absent),
* NumPy two-pass: ``(x - x.mean()) / np.sqrt(x.var() + eps)``,
* NumPy one-pass: variance as ``E[x^2] - E[x]^2``.

The error of each output is measured against the spacing of float64 numbers
at *that output's* exact value, so a near-zero output at offset 1e12 must be
accurate relative to itself, not to the data: the demanding measure.

Realistic groups (:data:`LARGE_SHAPES`, every offset, with and without
weight and bias): batch_norm channels and group_norm groups of 6272 values,
layer_norm and rms_norm rows of 768 and 4096.  For normref the table also
names the worst element: its exact value and where it sits.

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
#: realistic group sizes: BN channels of 8 x 28 x 28 = 6272 values, GN groups of
#: 8 channels x 784 = 6272, LN / RMS rows of 768 (BERT-base) and 4096 (7B-class LLMs)
LARGE_SHAPES = {
    "batch_norm": ((8, 4, 28, 28),),
    "layer_norm": ((16, 768), (8, 4096)),
    "group_norm": ((2, 32, 28, 28),),
    "rms_norm": ((16, 768), (8, 4096)),
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


def worst_element(exact, approx):
    """``(flat index, exact value as float64, ulps)`` of the largest error."""
    err = _mpref.ulp_error(exact, approx)
    i = int(np.argmax(err))
    return i, float(_mpref.to_float64(exact.reshape(-1)[i:i + 1])[0]), float(err.reshape(-1)[i])


def measure(case, normref=None, torch=None, eps=EPS):
    """Return ``{column: max ulps or None}`` for one case (None = not measured);
    ``row["worst"]`` is normref's :func:`worst_element` (None without normref)."""
    exact = reference(case, eps)
    row = {"worst": None}
    if normref is None:
        row["normref"] = None
    else:
        got = run_normref(normref, case, eps)
        row["normref"] = max_ulps(exact, got)
        row["worst"] = worst_element(exact, got)
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


def rows_for(ops, large=True):
    """``(op, offset, affine, shape)`` of every row: the small rows of each op, then
    (``large``) each realistic shape at every offset with and without affine."""
    out = []
    for op in ops:
        for off in OFFSETS:
            out.append((op, off, False, SHAPES[op]))
        out.append((op, AFFINE_OFFSET, True, SHAPES[op]))
    if large:
        for op in ops:
            for shape in LARGE_SHAPES[op]:
                for affine in (False, True):
                    for off in OFFSETS:
                        out.append((op, off, affine, shape))
    return out


def group_size(op, shape):
    if op == "batch_norm":
        return int(np.prod(shape)) // shape[1]
    if op == "group_norm":
        return int(np.prod(shape[1:])) // NUM_GROUPS
    return shape[-1]


def describe_worst(op, shape, worst):
    """'y=-1.2e-06 @ (3, 1, 5, 7)': the exact value and position of the worst output."""
    if worst is None:
        return "n/a"
    i, value, _ = worst
    return f"y={value:.1e} @ {tuple(int(k) for k in np.unravel_index(i, shape))}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 if normref misses the target (or is unavailable)")
    ap.add_argument("--ops", default=",".join(OPS),
                    help=f"comma-separated subset of {','.join(OPS)}")
    ap.add_argument("--small", action="store_true",
                    help="the small rows only (no realistic group sizes)")
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

    header = (f"{'op':<12} {'shape':<16} {'n':>5} {'offset':>7} {'w,b':>4} | "
              + " | ".join(f"{c:>14}" for c in COLUMNS) + " | normref worst element")
    print(header)
    print("-" * len(header))
    misses = []
    small = True
    for op, off, affine, shape in rows_for(ops, large=not args.small):
        if small and shape != SHAPES[op]:
            small = False
            print("-- realistic group sizes " + "-" * (len(header) - 25))
        seed = None if shape == SHAPES[op] else [OPS.index(op), OFFSETS.index(off), int(affine),
                                                 int(np.prod(shape))]
        case = make_case(op, off, affine, shape=shape, seed=seed)
        row = measure(case, normref, torch)
        cells = " | ".join(f"{fmt_ulps(row[c]):>14}" for c in COLUMNS)
        print(f"{op:<12} {str(shape):<16} {group_size(op, shape):>5} {off:>7.0e} "
              f"{'yes' if affine else '':>4} | {cells} | {describe_worst(op, shape, row['worst'])}")
        sys.stdout.flush()
        v = row["normref"]
        if v is not None and not (v <= TARGET_ULPS):
            misses.append(f"{op} {shape} offset {off:.0e}{' w,b' if affine else ''}: "
                          f"{fmt_ulps(v)} ulps")
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
