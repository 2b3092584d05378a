r"""The golden corpus: normref's answers on the conformance catalogue, as files.

``python -m normref export --out DIR`` (or :func:`export_corpus`) writes, for
every case of :func:`normref.testing.conformance.catalogue` and every target
dtype, two files named after the case id (``/`` replaced by ``__``)::

    DIR/<id>.<dtype>.npz    DIR/<id>.<dtype>.json

and ``DIR/index.json`` listing them.  A C++/CUDA kernel test (or any program
that reads ``.npz`` -- a zip of ``.npy`` files -- and JSON) can then judge its
kernel against normref without running Python.

The ``.npz`` holds

``arg<i>``
    every array among the positional arguments, in the target dtype (for
    float32 the float64 values normref computed on are exactly these
    float32 values: inputs are rounded to the target dtype *first*, see
    :func:`normref.testing.conformance.round_to`).  Running statistics that
    the call updates are stored as they were *before* the call.
``kw_<name>``
    an array passed by keyword (rare), same rules.
``y``
    the forward output, float64, exactly as normref computed it on those
    inputs (not rounded to the target dtype: the reader decides how to
    compare, e.g. in target-dtype ulps).
``cotangent``
    the output cotangent :math:`\bar y` (float64) the VJPs were taken for.
``vjp<i>``
    :math:`J_i^\top \bar y` for every differentiable positional slot ``i``.
``state<i>``
    mutated arguments (running mean / variance) *after* the call.

The ``.json`` beside it records ``normalizer``, ``case`` (the stable id;
:func:`normref.testing.conformance.case_from_id` rebuilds it), ``label``,
``row`` (docs/adversarial.md row or null), ``dtype``, ``kwargs`` (tuples as lists;
an array keyword as ``{"array": "kw_<name>"}``), ``conventions`` (the
convention keywords an adapter applied; empty for the catalogue's own
cases), ``layout`` (one entry per positional argument: ``{"index", "kind":
"array" | "scalar" | "none" | "shape", "value"}`` -- the array's npz key and
dtype for arrays, the value itself otherwise), ``differentiable`` (slots with
a ``vjp<i>``), ``mutates`` (slots with a ``state<i>``), ``cond`` (the case's
conditioning number, ``1 + max|x| / smallest group sigma`` for shift-sensitive
normalizers, 1 otherwise: a reader's tolerance should scale with it),
``y_shape``, and the ``normref`` and ``numpy`` versions.  (``cond`` is
:func:`normref.testing.conformance.case_conditioning`: groups holding NaN/Inf
are judged on their finite neighbours, normalizers that subtract no mean get 1.)

Cases on which normref raises (a constant group with ``eps = 0``, say) have
no files; ``index.json`` lists them under ``"raises"`` with the error, since
"this call must fail" is part of the ground truth too.  A case whose inputs
do not survive rounding to a target dtype (``1e300`` in float32, float64
subnormals in float32) is listed under ``"skipped"`` for that dtype.

Exporting into a directory that holds a previous export first removes the
files that export's ``index.json`` lists (and the index itself), nothing
else: the directory then holds exactly the new corpus (plus any unrelated
files), never stale cases of normalizers or dtypes no longer exported.
"""
from __future__ import annotations

import json
import numbers
import os
import sys
import warnings

import numpy as np

__all__ = ["export_corpus", "case_filename", "previous_export"]

DTYPES = ("float64", "float32", "float16")


def case_filename(case_id: str, dtype: str) -> str:
    """File stem of a case: ``'layer_norm/offset1e4/s0'`` -> ``'layer_norm__offset1e4__s0.float64'``."""
    return case_id.replace("/", "__").replace(os.sep, "__") + "." + dtype


def _jsonable(v, arrays, key):
    """A JSON value for keyword ``key``; arrays go to ``arrays`` under ``kw_<key>``."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, np.ndarray):
        name = f"kw_{key}"
        arrays[name] = v
        return {"array": name}
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        return float(v)
    if isinstance(v, (tuple, list)):
        return [_jsonable(x, arrays, key) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x, arrays, key) for k, x in v.items()}
    return str(v)


def _is_shape(v):
    return isinstance(v, (tuple, list)) and all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in v
    )


def _layout(args, dtype, arrays):
    """The positional argument layout; float arrays stored in ``dtype``."""
    out = []
    for i, a in enumerate(args):
        if a is None:
            out.append({"index": i, "kind": "none", "value": None})
        elif isinstance(a, np.ndarray):
            key = f"arg{i}"
            if a.dtype.kind == "f":
                stored = a.astype(dtype)
                if not np.array_equal(stored.astype(np.float64), a.astype(np.float64),
                                      equal_nan=True):
                    raise AssertionError(f"argument {i} is not representable in {dtype}: "
                                         "round_to was not applied")
            else:
                stored = a
            arrays[key] = stored
            out.append({"index": i, "kind": "array", "value": key, "dtype": str(stored.dtype),
                        "shape": list(stored.shape)})
        elif _is_shape(a):
            out.append({"index": i, "kind": "shape", "value": [int(s) for s in a]})
        else:
            out.append({"index": i, "kind": "scalar", "value": _jsonable(a, {}, str(i))})
    return out


def _cond(case):
    """The conditioning the conformance judge uses (finite, >= 1)."""
    from .testing.conformance import case_conditioning

    return float(case_conditioning(case))


def export_case(case, dtype, out_dir):
    """Write one case in one dtype; return ``(npz path, json path)``."""
    import normref

    from .testing.conformance import expected_outputs, round_to

    rc = round_to(case, dtype)
    before = tuple(a.copy() if isinstance(a, np.ndarray) else a for a in rc.args)
    y, vjps, states = expected_outputs(rc)
    y = np.asarray(y, dtype=np.float64)
    arrays = {}
    layout = _layout(before, dtype, arrays)
    kwargs = {k: _jsonable(v, arrays, k) for k, v in rc.kwargs.items()}
    for k in list(arrays):
        if k.startswith("kw_") and arrays[k].dtype.kind == "f":
            arrays[k] = arrays[k].astype(dtype)
    arrays["y"] = y
    if isinstance(vjps, str):  # no exact VJP (it overflows): the case has no vjp<i> arrays
        vjps = None
    diff = sorted(int(i) for i, g in (vjps or {}).items() if g is not None)
    if diff:
        arrays["cotangent"] = np.asarray(rc.cotangent(y.shape), dtype=np.float64)
    for i in diff:
        arrays[f"vjp{i}"] = np.asarray(vjps[i], dtype=np.float64)
    mut = sorted(int(i) for i in (states or {}))
    for i in mut:
        arrays[f"state{i}"] = np.asarray(states[i])
    stem = os.path.join(out_dir, case_filename(case.id, dtype))
    np.savez(stem + ".npz", **arrays)
    meta = {
        "normalizer": case.name,
        "case": case.id,
        "label": case.label,
        "row": case.row,
        "dtype": dtype,
        "kwargs": kwargs,
        "conventions": _jsonable(dict(getattr(rc, "conventions", {}) or {}), {}, "conventions"),
        "layout": layout,
        "differentiable": diff,
        "mutates": mut,
        "cond": _cond(rc),
        "y_shape": list(y.shape),
        "normref": normref.__version__,
        "numpy": np.__version__,
        "npz": os.path.basename(stem + ".npz"),
    }
    with open(stem + ".json", "w") as fh:
        json.dump(meta, fh, indent=1, allow_nan=True)
    return stem + ".npz", stem + ".json"


def previous_export(out_dir):
    """The files of a previous export in ``out_dir``: those its ``index.json`` lists, then it.

    ``[]`` when ``out_dir`` holds no ``index.json``.  ValueError when the
    index is not one :func:`export_corpus` writes (not JSON, no list of case
    entries, or an entry whose ``npz`` / ``json`` is not a plain ``.npz`` /
    ``.json`` file name in ``out_dir``): then nothing should be removed.
    """
    ip = os.path.join(out_dir, "index.json")
    if not os.path.lexists(ip):
        return []
    try:
        with open(ip, encoding="utf-8") as fh:
            index = json.load(fh)
    except ValueError as e:
        raise ValueError(f"{ip} is not a corpus index (invalid JSON: {e}); "
                         "remove it or choose another directory") from None
    entries = index.get("cases") if isinstance(index, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{ip} is not a corpus index (no list of case entries); "
                         "remove it or choose another directory")
    files = []
    for e in entries:
        for key in ("npz", "json"):
            f = e.get(key)
            if not (isinstance(f, str) and f.endswith("." + key) and f == os.path.basename(f)
                    and f != "index.json"):
                raise ValueError(f"{ip} is not a corpus index (entry {e.get('case')!r} lists "
                                 f"{key} {f!r}, not a .{key} file name); "
                                 "remove it or choose another directory")
            files.append(os.path.join(out_dir, f))
    return list(dict.fromkeys(files)) + [ip]


def _remove_previous_export(out_dir):
    """Remove the files :func:`previous_export` lists (those still there)."""
    for path in previous_export(out_dir):
        if os.path.isfile(path) or os.path.islink(path):
            os.remove(path)


def export_corpus(out_dir, names=None, dtypes=("float64", "float32"), progress=False):
    """Write the golden corpus for ``names`` (default: every normalizer) to ``out_dir``.

    Returns the list of written paths (``.npz`` and ``.json`` of every case
    and dtype, then ``index.json``).  ``dtypes`` are the target dtypes
    (``float64``, ``float32``, ``float16``); repeats of a name or dtype are
    dropped.  Unknown names or dtypes, an empty list of either, or a
    previous ``index.json`` in ``out_dir`` that is not a corpus index raise
    ValueError before anything is written; the files a previous export lists
    are removed before the new ones are written (see the module doc).
    """
    import normref

    from .registry import REGISTRY
    from .testing.conformance import _representable, catalogue

    dtypes = (dtypes,) if isinstance(dtypes, str) else tuple(dict.fromkeys(dtypes))
    if not dtypes:
        raise ValueError(f"dtypes: none given; expected at least one of {', '.join(DTYPES)}")
    for d in dtypes:
        if d not in DTYPES:
            raise ValueError(f"dtypes: {d!r} is not one of {', '.join(DTYPES)}")
    if names is not None:
        names = [names] if isinstance(names, str) else list(dict.fromkeys(names))
        if not names:
            raise ValueError("names: an empty list; pass None for every normalizer")
        unknown = [n for n in names if n not in REGISTRY]
        if unknown:
            raise ValueError(f"names: no normalizer named {', '.join(map(repr, unknown))}; "
                             f"registered: {', '.join(sorted(REGISTRY))}")
    cases = catalogue(names)
    os.makedirs(out_dir, exist_ok=True)
    _remove_previous_export(out_dir)
    paths, entries, raises, skipped = [], [], [], []
    show = progress and getattr(sys.stderr, "isatty", lambda: False)()
    for k, case in enumerate(cases):
        for d in dtypes:
            why = _representable(case, d)
            if why:
                skipped.append({"case": case.id, "dtype": d, "reason": why})
                continue
            try:
                with warnings.catch_warnings(), np.errstate(all="ignore"):
                    warnings.simplefilter("ignore", RuntimeWarning)
                    npz, js = export_case(case, d, out_dir)
            except (ValueError, TypeError, ZeroDivisionError, FloatingPointError) as e:
                raises.append({"case": case.id, "dtype": d, "error": f"{type(e).__name__}: {e}"})
                continue
            paths += [npz, js]
            entries.append({"case": case.id, "normalizer": case.name, "dtype": d,
                            "npz": os.path.basename(npz), "json": os.path.basename(js)})
        if show:
            sys.stderr.write(f"\rexport {k + 1}/{len(cases)} cases")
            sys.stderr.flush()
    if show:
        sys.stderr.write("\n")
    index = {
        "normref": normref.__version__,
        "numpy": np.__version__,
        "dtypes": list(dtypes),
        "cases": entries,
        "raises": raises,
        "skipped": skipped,
    }
    ip = os.path.join(out_dir, "index.json")
    with open(ip, "w") as fh:
        json.dump(index, fh, indent=1)
    paths.append(ip)
    return paths

