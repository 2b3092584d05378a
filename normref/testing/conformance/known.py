"""The known discrepancies: framework behaviour that is documented, not a regression."""
from __future__ import annotations

import fnmatch
import json
import os

__all__ = ["KNOWN_DISCREPANCIES_FILE", "load_known_discrepancies", "match_known"]

#: the file shipped next to the package (normref/testing/known_discrepancies.json)
KNOWN_DISCREPANCIES_FILE = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                                        "known_discrepancies.json")
_KD_KEYS = ("framework", "normalizer", "case", "dtype", "check", "reason", "issue")


def load_known_discrepancies(path=None) -> list:
    """The entries of the known-discrepancies file (validated).

    Each entry: ``framework``, ``normalizer`` (fnmatch), ``case`` (fnmatch on
    the case id), ``dtype`` (``"*"`` for all), ``check`` (fnmatch, e.g.
    ``"forward"``, ``"backward:*"``), ``reason``, ``issue`` (str or None).
    """
    path = KNOWN_DISCREPANCIES_FILE if path is None else path
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    entries = data["discrepancies"] if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise ValueError(f"{path}: 'discrepancies' must be a list")
    for i, e in enumerate(entries):
        missing = [k for k in _KD_KEYS if k not in e]
        if missing:
            raise ValueError(f"{path}: entry {i} lacks {missing}: {e}")
        if not e["reason"]:
            raise ValueError(f"{path}: entry {i} has an empty reason")
    return entries


def match_known(known, framework, normalizer, case_id, dtype, check):
    for e in known:
        if (e["framework"] == framework
                and fnmatch.fnmatchcase(normalizer, e["normalizer"])
                and fnmatch.fnmatchcase(case_id, e["case"])
                and (e["dtype"] in ("*", dtype))
                and fnmatch.fnmatchcase(check, e["check"])):
            return e
    return None
