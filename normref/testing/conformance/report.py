"""The report of a conformance run: a text table and JSON-ready dicts."""
from __future__ import annotations

import math

from .judge import check_kind

__all__ = ["STATUSES", "format_table", "results_json"]

STATUSES = ("pass", "fail", "xfail", "xpass", "skip", "error")


def format_table(results) -> str:
    """Framework x normalizer x check (forward / backward / state) x dtype.

    Columns: number of cases, the worst error in ulps with its tolerance
    (the check with the largest error / tolerance ratio), and how many
    checks had each status.
    """
    groups = {}
    for r in results:
        key = (r.framework, r.normalizer, check_kind(r.check), r.dtype)
        g = groups.setdefault(key, {"cases": set(), "worst": None, **{s: 0 for s in STATUSES}})
        g["cases"].add(r.case_id)
        g[r.status] += 1
        v = r.verdict
        if v is not None and r.status in ("pass", "fail", "xfail", "xpass"):
            ratio = v.worst_ulps / v.tolerance_ulps if v.tolerance_ulps > 0 else math.inf
            if g["worst"] is None or ratio > g["worst"][0]:
                g["worst"] = (ratio, v.worst_ulps, v.tolerance_ulps)
    heads = ("framework", "normalizer", "check", "dtype", "cases", "worst ulps", "tolerance") + STATUSES
    rows = []
    kind_order = {"forward": 0, "backward": 1, "state": 2}
    for key in sorted(groups, key=lambda k: (k[0], k[1], kind_order.get(k[2], 9), k[3])):
        g = groups[key]
        if g["worst"] is None:
            wu, tl = "-", "-"
        else:
            wu = f"{g['worst'][1]:.3g}"
            tl = f"{g['worst'][2]:.3g}"
        rows.append(key + (str(len(g["cases"])), wu, tl) + tuple(str(g[s]) for s in STATUSES))
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(heads)]
    right = set(range(4, len(heads)))

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(heads), "-" * len(line(heads))]
    out += [line(r) for r in rows]
    totals = {s: sum(1 for r in results if r.status == s) for s in STATUSES}
    out.append("-" * len(line(heads)))
    out.append("total: " + ", ".join(f"{totals[s]} {s}" for s in STATUSES))
    return "\n".join(out)


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return repr(x)
    return x


def results_json(results) -> list:
    """The results as JSON-ready dicts (infinite / NaN floats as strings)."""
    out = []
    for r in results:
        d = {"case": r.case_id, "framework": r.framework, "normalizer": r.normalizer,
             "check": r.check, "dtype": r.dtype, "status": r.status, "reason": r.reason}
        v = r.verdict
        if v is not None:
            d.update({
                "worst_ulps": _jsonable(v.worst_ulps), "tolerance_ulps": _jsonable(v.tolerance_ulps),
                "index": list(v.index) if v.index is not None else None,
                "expected": _jsonable(v.expected), "actual": _jsonable(v.actual),
                "passed": v.passed,
            })
        out.append(d)
    return out
