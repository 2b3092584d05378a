"""The report of a conformance run: a text table and JSON-ready dicts."""
from __future__ import annotations

import math

from .judge import check_kind

__all__ = ["STATUSES", "format_table", "results_json", "accuracy_rows", "format_accuracy"]

#: ``limit``: the dtype cannot represent the case's data for any algorithm; the
#: check was judged for robustness (NaN / Inf positions) only, not accuracy
STATUSES = ("pass", "fail", "xfail", "xpass", "limit", "skip", "error")


def format_table(results) -> str:
    """Framework x normalizer x check (forward / backward / state) x dtype.

    Columns: number of cases, the worst error in ulps with its tolerance
    (the check with the largest error / tolerance ratio among the passing and
    unexpectedly failing ones: expected failures are excluded, "-" when none
    is left), and how many checks had each status.
    """
    groups = {}
    for r in results:
        key = (r.framework, r.normalizer, check_kind(r.check), r.dtype)
        g = groups.setdefault(key, {"cases": set(), "worst": None, **{s: 0 for s in STATUSES}})
        g["cases"].add(r.case_id)
        g[r.status] += 1
        v = r.verdict
        if v is not None and r.status in ("pass", "fail", "xpass"):
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


def accuracy_rows(results) -> list:
    """Each target's accuracy in ulps of its dtype, per normalizer and dtype.

    Over the checks that were judged for accuracy and are not expected
    failures (status pass, fail or xpass): the median and the worst of each
    check's largest error (:attr:`Verdict.max_ulps`).  Rows
    ``(framework, normalizer, dtype, checks, median, worst)``, sorted.
    """
    groups = {}
    for r in results:
        v = r.verdict
        if v is None or r.status not in ("pass", "fail", "xpass") or not math.isfinite(v.max_ulps):
            if v is not None and r.status in ("pass", "fail", "xpass") and v.max_ulps == math.inf:
                groups.setdefault((r.framework, r.normalizer, r.dtype), []).append(math.inf)
            continue
        groups.setdefault((r.framework, r.normalizer, r.dtype), []).append(float(v.max_ulps))
    rows = []
    for key in sorted(groups):
        vals = sorted(groups[key])
        n = len(vals)
        med = vals[n // 2] if n % 2 else 0.5 * (vals[n // 2 - 1] + vals[n // 2])
        rows.append(key + (n, med, vals[-1]))
    return rows


def format_accuracy(results) -> str:
    """The accuracy table (:func:`accuracy_rows`) and, per dtype, the targets ranked
    by the median over their normalizers of the median error (ties: worst error)."""
    rows = accuracy_rows(results)
    if not rows:
        return "accuracy: no check judged for accuracy"
    heads = ("framework", "normalizer", "dtype", "checks", "median ulps", "worst ulps")
    cells = [(f, n, d, str(c), f"{m:.3g}", f"{w:.3g}") for f, n, d, c, m, w in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(heads)]

    def line(cs):
        return "  ".join(c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(cs, widths)))

    out = ["accuracy in ulps of each dtype (expected failures excluded)", line(heads),
           "-" * len(line(heads))] + [line(c) for c in cells]
    by = {}
    for f, n, d, c, m, w in rows:
        by.setdefault(d, {}).setdefault(f, []).append((m, w))
    for d in sorted(by):
        ranked = []
        for f, vals in by[d].items():
            meds = sorted(m for m, _ in vals)
            k = len(meds)
            med = meds[k // 2] if k % 2 else 0.5 * (meds[k // 2 - 1] + meds[k // 2])
            ranked.append((med, max(w for _, w in vals), f, k))
        ranked.sort()
        out.append(f"ranking [{d}]: " + ", ".join(
            f"{i + 1}. {f} (median {m:.3g}, worst {w:.3g} ulps, {k} normalizers)"
            for i, (m, w, f, k) in enumerate(ranked)))
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
                "passed": v.passed, "max_ulps": _jsonable(v.max_ulps),
                "judged": v.judged, "limited": v.limited,
            })
        out.append(d)
    return out
