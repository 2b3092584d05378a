"""The known discrepancies: framework behaviour that is documented, not a regression.

Files
-----
One JSON file per conformance target in :data:`KNOWN_DISCREPANCIES_DIR`
(``normref/testing/known/<target>.json``, e.g. ``torch.json``,
``torch-modules.json``, ``onnxruntime.json``)::

    {
      "framework": "<target>",            # must equal the file name without .json
      "versions": "torch 2.13.0 (CPU)",   # the versions the figures were measured with
      "description": "...",               # optional free text
      "discrepancies": [
        {
          "id": "short-kebab-slug",                    # unique within the file
          "cases": ["layer_norm/offset1e4/s*"],         # fnmatch patterns on case ids
          "dtypes": ["float32"],                        # or ["*"]
          "checks": ["forward", "backward:*"],          # fnmatch patterns on checks
          "reason": "what the framework does and why it differs from normref",
          "figures": "the measured numbers",
          "issue": "https://github.com/owner/repo/issues/N"   # or null: none found
        }
      ]
    }

A case id is ``"<normalizer>/<variant>/s<seed>"`` (so a case pattern also
names the normalizer); a check is ``"forward"``, ``"backward:<argument>"`` or
``"state:<argument>"`` (the argument's name in the normalizer's signature).
An entry matches a check of a run when the framework is the file's, some case
pattern matches the case id, the dtype is listed (or ``"*"`` is) and some
check pattern matches the check (:func:`match_known`).  The runner reports a
matching failing check as ``xfail`` and a matching passing one as ``xpass``.

One entry per *root cause*, with patterns exactly as wide as its failures.
:func:`audit_known` lists what a full run of a target says is wrong with the
entries: a stale entry (it matches no failing check), a case pattern that
fails nowhere or names no case of the run, an entry that also matches
passing checks (too wide), a check matched by two entries (overlap).

:func:`load_known_discrepancies` rejects a malformed file with a
:class:`ValueError` naming the file and the entry: a missing or unknown key,
a wrong type, an empty ``reason`` / ``figures`` / pattern list, a repeated
``id``, a ``framework`` that is not the file's target, an ``issue`` that is
neither null nor an ``https://`` address.

Second-order entries
--------------------
``second_order.json`` in the same directory holds the documented failures of
the second-order suite (:mod:`normref.testing.second_order`); the directory
loader leaves it out (:func:`load_second_order_discrepancies` reads it).  Its
entries have the same keys plus a per-entry ``"framework"`` (``torch`` or
``jax``: one file covers both); a case pattern matches the network label
``"<normalizer>/<affine|plain|weight|bias>/s<seed>"``, a check pattern the
method name (``"torch.func.hessian"``), and ``dtypes`` is ``["float64"]``.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re

__all__ = ["KNOWN_DISCREPANCIES_DIR", "KNOWN_DISCREPANCIES_FILE", "SECOND_ORDER_FILE",
           "load_known_discrepancies", "load_second_order_discrepancies", "match_known",
           "entry_matches", "audit_known"]

#: the directory shipped with the package: normref/testing/known/, one <target>.json each
KNOWN_DISCREPANCIES_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "known")
#: the former name (it was one file); now the directory
KNOWN_DISCREPANCIES_FILE = KNOWN_DISCREPANCIES_DIR
#: the second-order entries (not a target: left out of the directory loader)
SECOND_ORDER_FILE = os.path.join(KNOWN_DISCREPANCIES_DIR, "second_order.json")

_ENTRY_KEYS = ("id", "cases", "dtypes", "checks", "reason", "figures", "issue")
_FILE_KEYS = ("framework", "versions", "discrepancies")
_OPTIONAL_FILE_KEYS = ("description",)
_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*\Z")
_DTYPE = re.compile(r"(?:\*|b?float\d+)\Z")
_CHECK = re.compile(r"(?:\*|forward|(?:backward|state):.+)\Z")
#: statuses of checks that were not judged (an entry matching them is neither used nor wrong)
_UNJUDGED = ("skip", "limit")


def _nonempty_str(v):
    return isinstance(v, str) and v.strip() != ""


def _check_entry(where, e, framework, second_order):
    """Raise ValueError(``where``: ...) unless ``e`` is a well-formed entry."""
    if not isinstance(e, dict):
        raise ValueError(f"{where}: an entry must be an object, got {type(e).__name__}")
    allowed = _ENTRY_KEYS + ("framework",)
    missing = [k for k in _ENTRY_KEYS if k not in e]
    if second_order and "framework" not in e:
        missing.append("framework")
    if missing:
        raise ValueError(f"{where}: lacks {missing}")
    extra = sorted(k for k in e if k not in allowed)
    if extra:
        raise ValueError(f"{where}: unknown keys {extra} (allowed: {list(allowed)})")
    if not _nonempty_str(e["id"]) or not _ID.match(e["id"]):
        raise ValueError(f"{where}: 'id' must be a kebab-case slug, got {e['id']!r}")
    if second_order:
        if not _nonempty_str(e["framework"]):
            raise ValueError(f"{where}: 'framework' must be a non-empty string")
    elif "framework" in e and e["framework"] != framework:
        raise ValueError(f"{where}: 'framework' is {e['framework']!r}, the file's target is "
                         f"{framework!r}")
    for key, pattern in (("cases", None), ("dtypes", _DTYPE),
                         ("checks", None if second_order else _CHECK)):
        v = e[key]
        if not isinstance(v, list) or not v or not all(_nonempty_str(p) for p in v):
            raise ValueError(f"{where}: {key!r} must be a non-empty list of non-empty strings, "
                             f"got {v!r}")
        if len(set(v)) != len(v):
            raise ValueError(f"{where}: {key!r} repeats a pattern: {v!r}")
        bad = [p for p in v if pattern is not None and not pattern.match(p)]
        if bad:
            raise ValueError(f"{where}: {key!r} has invalid patterns {bad}")
    for key in ("reason", "figures"):
        if not _nonempty_str(e[key]):
            raise ValueError(f"{where}: {key!r} must be a non-empty string, got {e[key]!r}")
    issue = e["issue"]
    if issue is not None and not (isinstance(issue, str) and issue.startswith("https://")
                                  and " " not in issue):
        raise ValueError(f"{where}: 'issue' must be null or an https:// address, got {issue!r}")


def _load_file(path, second_order=False):
    """The validated entries of one file, each a new dict with ``framework`` and ``file``."""
    name = os.path.basename(path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the file must hold a JSON object, got {type(data).__name__}")
    need = ("versions", "discrepancies") if second_order else _FILE_KEYS
    missing = [k for k in need if k not in data]
    if missing:
        raise ValueError(f"{path}: lacks the keys {missing}")
    extra = sorted(k for k in data if k not in _FILE_KEYS + _OPTIONAL_FILE_KEYS)
    if extra:
        raise ValueError(f"{path}: unknown keys {extra}")
    framework = None
    if not second_order:
        framework = os.path.splitext(name)[0]
        if data["framework"] != framework:
            raise ValueError(f"{path}: 'framework' is {data['framework']!r} but the file is "
                             f"named for the target {framework!r}")
    if not _nonempty_str(data["versions"]):
        raise ValueError(f"{path}: 'versions' must be a non-empty string")
    entries = data["discrepancies"]
    if not isinstance(entries, list):
        raise ValueError(f"{path}: 'discrepancies' must be a list")
    seen, out = set(), []
    for i, e in enumerate(entries):
        label = e.get("id") if isinstance(e, dict) else None
        where = f"{path}: entry {i}" + (f" ({label!r})" if label is not None else "")
        _check_entry(where, e, framework, second_order)
        if e["id"] in seen:
            raise ValueError(f"{where}: the id {e['id']!r} is used twice in the file")
        seen.add(e["id"])
        out.append({**e, "framework": e.get("framework", framework), "file": name})
    return out


def load_known_discrepancies(path=None) -> list:
    """The validated entries of every ``<target>.json`` in ``path``, one flat list.

    ``path``: a directory (default :data:`KNOWN_DISCREPANCIES_DIR`; its
    ``second_order.json`` is left out) or one file.  Each entry is returned
    with ``"framework"`` (the file's target) and ``"file"`` (its base name)
    filled in; the file order is sorted by name, the entries keep theirs.
    """
    path = KNOWN_DISCREPANCIES_DIR if path is None else os.fspath(path)
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.endswith(".json")
                       and n != os.path.basename(SECOND_ORDER_FILE))
        files = [os.path.join(path, n) for n in names]
    elif os.path.isfile(path):
        files = [path]
    else:
        raise ValueError(f"path: no known-discrepancies file or directory at {path!r}")
    return [e for f in files for e in _load_file(f)]


def load_second_order_discrepancies(path=None) -> list:
    """The validated entries of ``second_order.json`` (:data:`SECOND_ORDER_FILE`)."""
    return _load_file(SECOND_ORDER_FILE if path is None else os.fspath(path), second_order=True)


def entry_matches(entry, framework, case_id, dtype, check) -> bool:
    """Whether ``entry`` covers this check (see the module docstring)."""
    return (entry["framework"] == framework
            and any(fnmatch.fnmatchcase(case_id, p) for p in entry["cases"])
            and ("*" in entry["dtypes"] or dtype in entry["dtypes"])
            and any(fnmatch.fnmatchcase(check, p) for p in entry["checks"]))


def match_known(known, framework, normalizer, case_id, dtype, check):
    """The first entry of ``known`` covering the check, or None.

    ``normalizer`` is implied by the case id (its first component) and kept
    for the signature's sake; :func:`audit_known` reports a check two entries
    cover, so "first" never decides anything in a clean file.
    """
    for e in known:
        if entry_matches(e, framework, case_id, dtype, check):
            return e
    return None


def _name(e):
    return f"{e.get('file') or e['framework']}: {e['id']!r}"


def audit_known(results, known=None, frameworks=None) -> list:
    """What a run says is wrong with the known discrepancies: a list of messages.

    ``results`` -- :class:`~normref.testing.conformance.Result` rows of a
    *full* run (every case of the catalogue) of one or more targets;
    ``known`` -- the entries (default :func:`load_known_discrepancies`);
    ``frameworks`` -- the targets to audit (default: those in ``results``).
    For each entry of those targets:

    * ``stale``: it matches no failing (``xfail``) check of the run;
    * ``stale pattern``: one of its case patterns matches no failing check of
      the entry (that case has been fixed, or the pattern is mistyped);
    * ``no such case``: a case pattern matches no case id of the run at all;
    * ``too wide``: it matches a check that passes (``xpass``);

    and for each check of the run (skipped and unjudged ones aside):

    * ``overlap``: two or more entries match it.

    An empty list is a clean audit.
    """
    known = load_known_discrepancies() if known is None else known
    present = sorted({r.framework for r in results})
    fws = present if frameworks is None else list(frameworks)
    problems = []
    for fw in fws:
        rows = [r for r in results if r.framework == fw]
        entries = [e for e in known if e["framework"] == fw]
        case_ids = sorted({r.case_id for r in rows})
        hits = {id(e): [] for e in entries}
        for r in rows:
            if r.status in _UNJUDGED:
                continue
            matched = [e for e in entries if entry_matches(e, fw, r.case_id, r.dtype, r.check)]
            for e in matched:
                hits[id(e)].append(r)
            if len(matched) > 1:
                problems.append(f"overlap: {fw} {r.case_id} {r.dtype} {r.check} is matched by "
                                f"{', '.join(_name(e) for e in matched)}")
        for e in entries:
            failing = [r for r in hits[id(e)] if r.status == "xfail"]
            if not failing:
                problems.append(f"stale: {_name(e)} matches no failing check of the {fw} run")
            for p in e["cases"]:
                if not any(fnmatch.fnmatchcase(c, p) for c in case_ids):
                    problems.append(f"no such case: {_name(e)}: the pattern {p!r} matches no "
                                    f"case id of the {fw} run")
                elif failing and not any(fnmatch.fnmatchcase(r.case_id, p) for r in failing):
                    problems.append(f"stale pattern: {_name(e)}: {p!r} matches no failing check "
                                    f"of the entry in the {fw} run")
            passing = [r for r in hits[id(e)] if r.status == "xpass"]
            if passing:
                shown = ", ".join(f"{r.case_id} {r.dtype} {r.check}" for r in passing[:5])
                more = f" (+{len(passing) - 5} more)" if len(passing) > 5 else ""
                problems.append(f"too wide: {_name(e)} matches {len(passing)} passing "
                                f"check(s): {shown}{more}")
    return problems
