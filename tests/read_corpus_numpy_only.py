#!/usr/bin/env python
"""Check PyTorch against a normref golden corpus, with NumPy (and torch) only.

    python tests/read_corpus_numpy_only.py DIR [--rtol-forward R] [--rtol-backward R] [-v]

DIR is the output of ``python -m normref export --out DIR``.  This script
deliberately does not use normref: it reads ``DIR/index.json`` and, per case,
``<case>.<dtype>.json`` (the call layout and metadata) and ``<case>.<dtype>.npz``
(arrays), rebuilds the call of the corresponding ``torch.nn.functional``
function, runs it in float64 on exactly the stored inputs with autograd, and
compares

* ``y``           with the forward output,
* ``vjp<i>``      with ``torch.autograd.grad(y, arg_i, cotangent)``,
* ``state<i>``    with the running statistics torch updated in place.

Error measure: ``|torch - corpus| / max(|corpus|, rms(corpus))`` (relative at
the scale of the array, so values near 0 are not judged by their own tiny
magnitude); it must be ``<= rtol * cond`` where ``cond`` is the case's
conditioning number stored by the exporter (``1 + max|x| / smallest group
sigma`` for mean-subtracting normalizers).  NaN / Inf positions must agree.

Cases of normalizers PyTorch lacks, or calls with conventions PyTorch does not
have (ONNX LRN window, per-group GroupNorm affine, Keras momentum, ...), are
skipped and counted; so are the VJPs with respect to running statistics in
eval mode, which normref provides and torch.nn.functional refuses.  A few documented PyTorch behaviours differ from the
ground truth on purpose-built adversarial cases; they are listed in
``KNOWN_TORCH`` (with PyTorch's issue numbers) and reported as "known", not as
mismatches.

The corpus is read and validated before torch runs anything: ``index.json``
(an object whose ``"cases"`` is a list of entries with ``case``,
``normalizer``, ``dtype``, ``npz`` and ``json``), every case's JSON (the keys
used here, consistent with its index entry) and every ``.npz`` (the arrays its
JSON names: ``arg<i>`` / ``kw_<name>`` of the layout with the recorded dtype
and shape, ``y`` of ``y_shape``, ``cotangent`` and ``vjp<i>`` per
differentiable slot, ``state<i>`` per mutated slot).  Any failure there --
a missing, truncated or corrupted file, a missing key -- is one line
``malformed corpus: <file>: <problem>`` and exit status 2, never a mismatch:
only the torch phase judges torch.

Exit status: 0 when every compared case matches, 1 otherwise, 2 on a
malformed corpus (or bad arguments, or no torch).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import sys
import zipfile
import zlib

import numpy as np

#: normalizer -> (torch.nn.functional name, keyword options PyTorch does not
#: have, each with the value that means "PyTorch's behaviour")
TORCH_OPS = {
    "batch_norm": ("batch_norm", {"channel_axis": 1, "momentum_convention": "torch",
                                  "running_var_unbiased": True, "num_batches_tracked": None}),
    "layer_norm": ("layer_norm", {}),
    "group_norm": ("group_norm", {"affine": "channel"}),
    "instance_norm": ("instance_norm", {}),
    "rms_norm": ("rms_norm", {}),
    "local_response_norm": ("local_response_norm", {"convention": "torch"}),
    "normalize": ("normalize", {}),
}

#: documented PyTorch behaviours that differ from the ground truth:
#: (case-id pattern, check pattern, reason with PyTorch's issue)
KNOWN_TORCH = [
    ("*/huge1e300/*", "*",
     "PyTorch squares the values (centred or not) without rescaling: x^2 overflows float64 "
     "for |x| ~ 1e300 and the output collapses to 0 / NaN (pytorch/pytorch#162489)"),
    ("batch_norm/neg_eps_momentum/*", "raises",
     "PyTorch rejects eps < 0 in batch-norm training; normref computes it literally while "
     "var + eps > 0 (adversarial row 19)"),
    ("instance_norm/empty_batch/*", "raises",
     "F.instance_norm raises IndexError on an empty batch (N = 0); normref returns the "
     "empty output (pytorch/pytorch#12013)"),
]

#: (normalizer, positional slot): arguments normref differentiates but
#: torch.nn.functional refuses to (running statistics in eval mode)
NOT_DIFFERENTIABLE_IN_TORCH = {("batch_norm", 1), ("batch_norm", 2),
                               ("instance_norm", 1), ("instance_norm", 2)}


def _known(case_id, check):
    for pat, cpat, why in KNOWN_TORCH:
        if fnmatch.fnmatchcase(case_id, pat) and fnmatch.fnmatchcase(check, cpat):
            return why
    return None


def rel_error(actual, expected):
    """(worst relative error at the array's scale, index) -- inf where NaN/Inf disagree."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        return np.inf, f"shape {a.shape} != {e.shape}"
    if e.size == 0:
        return 0.0, None
    fin = np.isfinite(e)
    if fin.any():
        m = float(np.abs(e[fin]).max())
        rms = m * float(np.sqrt(np.mean(np.square(e[fin] / m)))) if m > 0 else 0.0
    else:
        rms = 0.0
    scale = np.maximum(np.abs(np.where(fin, e, 0.0)), rms)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        err = np.where(fin, np.abs(a - e) / np.where(scale > 0, scale, 1.0), 0.0)
    mismatch = ((np.isnan(e) != np.isnan(a)) | (~fin & ~np.isnan(e) & (a != e))
                | (fin & ~np.isfinite(a)))
    err = np.where(mismatch | np.isnan(err), np.inf, err)
    k = int(np.argmax(err))
    return float(err.ravel()[k]), tuple(int(i) for i in np.unravel_index(k, e.shape))


def build_call(meta, arrays, torch):
    """(function, args, kwargs, tensors needing grads {slot: tensor}, mutated {slot: tensor})."""
    import torch.nn.functional as F

    name = meta["normalizer"]
    fname, extra = TORCH_OPS[name]
    kwargs = {}
    for k, v in meta["kwargs"].items():
        if isinstance(v, dict) and set(v) == {"array"}:
            v = arrays[v["array"]]
        kwargs[k] = v
    for k, default in extra.items():
        if k in kwargs:
            v = kwargs.pop(k)
            if k == "num_batches_tracked" and v is not None:
                kwargs["__nbt"] = v
                continue
            if v != default:
                raise NotImplementedError(f"{k}={v!r} is not a PyTorch option")
    diff = set(meta["differentiable"])
    mut = set(meta["mutates"])
    args, grads_of, mutated = [], {}, {}
    for item in meta["layout"]:
        i, kind, value = item["index"], item["kind"], item.get("value")
        if kind == "array":
            a = np.asarray(arrays[value])
            if a.dtype.kind == "f":
                t = torch.tensor(a.astype(np.float64), dtype=torch.float64)
                if i in diff and (name, i) not in NOT_DIFFERENTIABLE_IN_TORCH:
                    t.requires_grad_(True)
                    grads_of[i] = t
                if i in mut:
                    mutated[i] = t
            else:
                t = torch.tensor(a)
            args.append(t)
        elif kind == "shape":
            args.append(tuple(value))
        else:
            args.append(value)
    for k, v in list(kwargs.items()):
        if isinstance(v, list):
            kwargs[k] = tuple(v)
    if name == "rms_norm":
        # eps=None means the machine epsilon of the input's dtype: the corpus
        # dtype, although the inputs are handed to torch in float64 here
        pos_eps = len(args) > 3
        eps = args[3] if pos_eps else kwargs.get("eps")
        if eps is None:
            eps = float(np.finfo(meta["dtype"]).eps)
            if pos_eps:
                args[3] = eps
            else:
                kwargs["eps"] = eps
    if name == "batch_norm" and "__nbt" in kwargs:
        # momentum=None: cumulative average with factor 1 / num_batches_tracked,
        # the counter incremented first (what torch.nn.BatchNorm passes to F.batch_norm)
        nbt = np.asarray(kwargs.pop("__nbt"))
        momentum = args[6] if len(args) > 6 else kwargs.get("momentum", 0.1)
        training = args[5] if len(args) > 5 else kwargs.get("training", False)
        if momentum is None and training:
            factor = 1.0 / float(int(nbt.reshape(-1)[0]) + 1)
            if len(args) > 6:
                args[6] = factor
            else:
                kwargs["momentum"] = factor
    return getattr(F, fname), args, kwargs, grads_of, mutated


class MalformedCorpus(Exception):
    """A corpus file that cannot be read or lacks what the reader needs."""

    def __init__(self, path, problem):
        super().__init__(f"{path}: {problem}")


#: what json.load / np.load raise on unreadable, truncated or corrupted bytes
_READ_ERRORS = (OSError, ValueError, EOFError, RecursionError, zipfile.BadZipFile, zlib.error)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _load_json(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except _READ_ERRORS as e:
        raise MalformedCorpus(path, f"cannot read JSON ({type(e).__name__}: {e})") from None


def _short(v):
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _require(path, obj, keys, what):
    """``obj`` is a dict holding ``keys`` ({key: type}; int excludes bool)."""
    if not isinstance(obj, dict):
        raise MalformedCorpus(path, f"{what} is a {type(obj).__name__}, expected an object")
    for k, t in keys.items():
        if k not in obj:
            raise MalformedCorpus(path, f"{what} has no {k!r}")
        if not isinstance(obj[k], t) or (t is int and isinstance(obj[k], bool)):
            raise MalformedCorpus(path, f"{what}: {k!r} is {_short(obj[k])}, expected "
                                  f"{'an object' if t is dict else 'a ' + t.__name__}")


def load_index(directory):
    """(index, its case entries) of ``directory/index.json``, validated."""
    path = os.path.join(directory, "index.json")
    index = _load_json(path)
    _require(path, index, {"cases": list}, "the index")
    for k, entry in enumerate(index["cases"]):
        _require(path, entry, {"case": str, "normalizer": str, "dtype": str, "npz": str,
                               "json": str}, f"cases[{k}]")
    return index, index["cases"]


def _check_meta(path, meta, entry):
    _require(path, meta, {"normalizer": str, "case": str, "dtype": str, "kwargs": dict,
                          "layout": list, "differentiable": list, "mutates": list}, "the case")
    for k in ("normalizer", "case", "dtype"):
        if meta[k] != entry[k]:
            raise MalformedCorpus(path, f"{k} {_short(meta[k])} differs from the index's "
                                  f"{_short(entry[k])}")
    try:
        np.finfo(meta["dtype"])
    except (TypeError, ValueError):
        raise MalformedCorpus(path, f"dtype {_short(meta['dtype'])} is not a float dtype") from None
    cond = meta.get("cond", 1.0)
    if not (isinstance(cond, (int, float)) and not isinstance(cond, bool) and math.isfinite(cond)
            and cond > 0):
        raise MalformedCorpus(path, f"cond is {_short(cond)}, expected a finite positive number")
    for k, item in enumerate(meta["layout"]):
        _require(path, item, {"index": int, "kind": str}, f"layout[{k}]")
        if item["index"] != k:
            raise MalformedCorpus(path, f"layout[{k}] has index {item['index']}")
        kind, value = item["kind"], item.get("value")
        if kind == "array":
            _require(path, item, {"value": str, "dtype": str, "shape": list}, f"layout[{k}]")
        elif kind == "shape":
            if not (isinstance(value, list) and all(_is_int(s) for s in value)):
                raise MalformedCorpus(path, f"layout[{k}]: shape {_short(value)} is not a list of "
                                      "ints")
        elif kind not in ("scalar", "none"):
            raise MalformedCorpus(path, f"layout[{k}]: unknown kind {_short(kind)}")
    for k, v in meta["kwargs"].items():
        if isinstance(v, dict) and set(v) == {"array"} and not isinstance(v["array"], str):
            raise MalformedCorpus(path, f"kwargs[{k!r}]: array {_short(v['array'])} is not "
                                  "an npz key")
    n = len(meta["layout"])
    for key in ("differentiable", "mutates"):
        for i in meta[key]:
            if not (_is_int(i) and 0 <= i < n and meta["layout"][i]["kind"] == "array"):
                raise MalformedCorpus(path, f"{key} lists {_short(i)}, not an array argument "
                                      "slot")


def _needed_arrays(meta):
    """{npz key: (dtype or None, shape or None)} the case's JSON says the .npz holds."""
    need = {}
    for item in meta["layout"]:
        if item["kind"] == "array":
            need[item["value"]] = (item["dtype"], tuple(item["shape"]))
    for v in meta["kwargs"].values():
        if isinstance(v, dict) and set(v) == {"array"}:
            need[v["array"]] = (None, None)
    y_shape = meta.get("y_shape")
    y_shape = tuple(y_shape) if isinstance(y_shape, list) else None
    need["y"] = (None, y_shape)
    if meta["differentiable"]:
        need["cotangent"] = (None, y_shape)
    for key, prefix in (("differentiable", "vjp"), ("mutates", "state")):
        for i in meta[key]:
            need[f"{prefix}{i}"] = (None, tuple(meta["layout"][i]["shape"]))
    return need


def _load_npz(path, need):
    try:
        with np.load(path) as z:
            if not hasattr(z, "files"):
                raise MalformedCorpus(path, "not an .npz archive")
            missing = [k for k in need if k not in z.files]
            if missing:
                raise MalformedCorpus(path, f"no array {', '.join(map(repr, missing))} "
                                      "(named by the case's JSON)")
            arrays = {k: z[k] for k in z.files}
    except _READ_ERRORS as e:
        raise MalformedCorpus(path, f"cannot read ({type(e).__name__}: {e})") from None
    for k, (dtype, shape) in need.items():
        a = arrays[k]
        if dtype is not None and str(a.dtype) != dtype:
            raise MalformedCorpus(path, f"array {k!r} is {a.dtype}, the JSON says {dtype}")
        if shape is not None and a.shape != shape:
            raise MalformedCorpus(path, f"array {k!r} has shape {a.shape}, expected {shape}")
    return arrays


def load_case(directory, entry):
    """(meta, arrays) of one index entry, validated (MalformedCorpus otherwise)."""
    path = os.path.join(directory, entry["json"])
    meta = _load_json(path)
    _check_meta(path, meta, entry)
    return meta, _load_npz(os.path.join(directory, entry["npz"]), _needed_arrays(meta))


def check_case(meta, arrays, torch, rtol_f, rtol_b):
    """[(check, error, tolerance, where, known reason or None)] for one loaded case."""
    fn, args, kwargs, grads_of, mutated = build_call(meta, arrays, torch)
    cond = float(meta.get("cond", 1.0))
    out = fn(*args, **kwargs)
    rows = []
    err, where = rel_error(out.detach().numpy(), arrays["y"])
    rows.append(("forward", err, rtol_f * cond, where))
    if grads_of:
        slots = sorted(grads_of)
        ct = torch.tensor(arrays["cotangent"], dtype=torch.float64)
        if out.requires_grad and out.numel():
            gs = torch.autograd.grad(out, [grads_of[i] for i in slots], ct, allow_unused=True)
        else:
            gs = [None] * len(slots)
        for i, g in zip(slots, gs):
            g = np.zeros(grads_of[i].shape) if g is None else g.numpy()
            err, where = rel_error(g, arrays[f"vjp{i}"])
            rows.append((f"backward:{i}", err, rtol_b * cond, where))
    for i in sorted(mutated):
        err, where = rel_error(mutated[i].detach().numpy(), arrays[f"state{i}"])
        rows.append((f"state:{i}", err, rtol_f * cond, where))
    return [(c, e, t, w, _known(meta["case"], c)) for c, e, t, w in rows]


def _tolerance(text):
    """argparse type of the tolerances: a finite positive number."""
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"invalid tolerance {text!r}: expected a finite "
                                         "positive number")
    return v


def load_corpus(directory):
    """(index, [(entry, meta, arrays)]): the whole corpus, validated; arrays are None
    for normalizers PyTorch lacks (their files are validated all the same)."""
    index, entries = load_index(directory)
    loaded = []
    for entry in entries:
        meta, arrays = load_case(directory, entry)
        loaded.append((entry, meta, arrays if entry["normalizer"] in TORCH_OPS else None))
    return index, loaded


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("directory")
    p.add_argument("--rtol-forward", type=_tolerance, default=1e-13,
                   help="relative tolerance per unit of conditioning (forward, state)")
    p.add_argument("--rtol-backward", type=_tolerance, default=1e-12,
                   help="relative tolerance per unit of conditioning (VJPs)")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    try:
        index, loaded = load_corpus(a.directory)
    except MalformedCorpus as e:
        print(f"malformed corpus: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    try:
        import torch
    except ImportError:
        print("torch is not installed: nothing to check against", file=sys.stderr)
        return 2
    torch.set_grad_enabled(True)
    counts = {"checked": 0, "skipped": 0, "known": 0, "mismatch": 0}
    worst = {}
    bad_lines = []
    for entry, meta, arrays in loaded:
        name = entry["normalizer"]
        if arrays is None:
            counts["skipped"] += 1
            continue
        try:
            rows = check_case(meta, arrays, torch, a.rtol_forward, a.rtol_backward)
        except NotImplementedError as e:
            counts["skipped"] += 1
            if a.verbose:
                print(f"skip {entry['case']} [{entry['dtype']}]: {e}")
            continue
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            line = (f"{entry['case']} [{entry['dtype']}]: torch raised "
                    f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            known = _known(entry["case"], "raises")
            if known:
                counts["known"] += 1
                if a.verbose:
                    print(f"known {line} ({known})")
            else:
                counts["mismatch"] += 1
                bad_lines.append("ERROR " + line)
            continue
        counts["checked"] += 1
        case_bad = False
        for check, err, tol, where, known in rows:
            kind = check.split(":")[0]
            key = (name, kind)
            if not known:
                worst[key] = max(worst.get(key, 0.0), err / tol if tol > 0 else np.inf)
            if err <= tol:
                continue
            line = (f"{entry['case']} [{entry['dtype']}] {check}: relative error {err:.3e} > "
                    f"tolerance {tol:.3e} at {where}")
            if known:
                counts["known"] += 1
                if a.verbose:
                    print(f"known {line} ({known})")
            else:
                case_bad = True
                bad_lines.append("MISMATCH " + line)
        counts["mismatch"] += case_bad
    print(f"corpus {a.directory}: normref {index.get('normref')}, numpy {index.get('numpy')}, "
          f"torch {torch.__version__}")
    print(f"{'normalizer':<22}{'check':<10}{'worst error / tolerance':>26}")
    for (name, kind), r in sorted(worst.items()):
        print(f"{name:<22}{kind:<10}{r:>26.3g}")
    for line in bad_lines:
        print(line)
    print(f"{counts['checked']} cases checked, {counts['mismatch']} mismatching, "
          f"{counts['known']} known PyTorch differences, {counts['skipped']} skipped "
          f"(no PyTorch counterpart)")
    return 1 if counts["mismatch"] else 0


if __name__ == "__main__":
    sys.exit(main())
