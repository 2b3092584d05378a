"""Running an adapter over the catalogue and classifying each check."""
from __future__ import annotations

import sys
from dataclasses import dataclass

from ...registry import REGISTRY
from .build import catalogue
from .judge import Verdict, case_conditioning, expected_outputs, judge
from .known import load_known_discrepancies, match_known
from .rounding import as_dtype, representable, round_to

__all__ = ["Result", "run_conformance", "signature_name"]


@dataclass
class Result:
    """One check of one case in one dtype against one framework."""

    case_id: str
    framework: str
    normalizer: str
    check: str
    dtype: str
    verdict: Verdict | None
    status: str  # pass | fail | xfail | xpass | limit | skip | error
    reason: str = ""


def signature_name(name, slot):
    sig = REGISTRY[name].signature
    return sig[slot] if slot < len(sig) else f"arg{slot}"


class _Progress:
    def __init__(self, total, enabled, stream=None):
        self.total, self.n = total, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > 0
        self.width = 30

    def step(self, label=""):
        self.n += 1
        if not self.enabled:
            return
        done = int(self.width * self.n / self.total)
        bar = "#" * done + "." * (self.width - done)
        if getattr(self.stream, "isatty", lambda: False)():
            self.stream.write(f"\r[{bar}] {self.n}/{self.total} {label[:40]:<40}")
        elif self.n == self.total or (10 * self.n) // self.total != (10 * (self.n - 1)) // self.total:
            # a log file: one line per tenth
            self.stream.write(f"[{bar}] {self.n}/{self.total} {label}\n")
        self.stream.flush()

    def close(self):
        if self.enabled and getattr(self.stream, "isatty", lambda: False)():
            self.stream.write("\n")
            self.stream.flush()


def run_conformance(adapter, cases=None, dtypes=None, progress=True, known=None) -> list:
    """Run ``adapter`` over ``cases`` (the whole catalogue by default).

    For each case ``c = adapter.prepare(case)`` (None: the framework has no
    such op / variant, skipped); for each dtype of the adapter (intersected
    with ``dtypes``): the case rounded to the dtype, the framework run on the
    arrays of that dtype, normref on the rounded values, one :class:`Result`
    per check (forward, each backward slot the adapter returns, each state
    slot).  An adapter exception is an ``error`` result (``skip`` for
    :class:`~normref.testing.adapters.Unsupported`); a check matching a known
    discrepancy is ``xfail`` when it fails and ``xpass`` when it passes; a check
    whose every element is beyond what the dtype can represent for any
    algorithm (:attr:`Verdict.at_limit`: float32 at offset 1e8) and that is
    finite where normref is finite is ``limit``: judged for robustness, not
    accuracy, and never counted as a pass.
    ``progress``: a text bar on stderr (when stderr is a terminal, or
    ``progress="always"``).
    """
    from ..adapters import Unsupported

    if cases is None:
        cases = catalogue()
    known = load_known_discrepancies() if known is None else known
    fw = adapter.framework
    run_dtypes = [d for d in adapter.dtypes if dtypes is None or d in dtypes]
    show = progress == "always" or (progress and getattr(sys.stderr, "isatty", lambda: False)())
    bar = _Progress(len(cases), show)
    results = []

    def classify(case_id, name, check, dtype, verdict, failed, reason=""):
        if verdict is not None and not failed and verdict.at_limit:
            # the dtype cannot represent the data for any algorithm: robustness only
            results.append(Result(case_id, fw, name, check, dtype, verdict, "limit", reason))
            return
        entry = match_known(known, fw, name, case_id, dtype, check)
        if failed:
            status = "xfail" if entry else "fail"
        else:
            status = "xpass" if entry else "pass"
        if entry:
            reason = (reason + "; " if reason else "") + "known: " + entry["reason"] + (
                f" ({entry['issue']})" if entry.get("issue") else "")
        results.append(Result(case_id, fw, name, check, dtype, verdict, status, reason))

    for case in cases:
        bar.step(case.id)
        try:
            prepared = adapter.prepare(case)
        except Unsupported as e:
            prepared, why = None, str(e)
        except Exception as e:  # noqa: BLE001
            for dtype in run_dtypes:
                classify(case.id, case.name, "forward", dtype, None, True,
                         f"prepare raised {type(e).__name__}: {e}")
                if results[-1].status == "fail":
                    results[-1].status = "error"
            continue
        else:
            why = "no such op or variant in this framework"
        if prepared is None:
            for dtype in run_dtypes:
                results.append(Result(case.id, fw, case.name, "forward", dtype, None, "skip", why))
            continue
        for dtype in run_dtypes:
            skip = representable(prepared, dtype)
            if skip:
                results.append(Result(case.id, fw, case.name, "forward", dtype, None, "skip", skip))
                continue
            rounded = round_to(prepared, dtype)
            try:
                y, egrads, estate = expected_outputs(rounded)
            except Exception as e:  # noqa: BLE001  (a catalogue bug: reported, never hidden)
                results.append(Result(case.id, fw, case.name, "forward", dtype, None, "error",
                                      f"normref raised {type(e).__name__}: {e}"))
                continue
            try:
                out = adapter.run(as_dtype(rounded, dtype), dtype)
            except Unsupported as e:
                results.append(Result(case.id, fw, case.name, "forward", dtype, None, "skip", str(e)))
                continue
            except Exception as e:  # noqa: BLE001
                msg = f"{type(e).__name__}: {e}".strip()
                classify(case.id, case.name, "forward", dtype, None, True, msg)
                if results[-1].status == "fail":
                    results[-1].status = "error"
                continue
            cond = case_conditioning(rounded)
            v = judge(rounded, y, out.y, dtype, "forward", cond=cond)
            classify(case.id, case.name, "forward", dtype, v, not v.passed, v.note)
            if adapter.gradients and out.grads:
                for slot in sorted(out.grads):
                    check = f"backward:{signature_name(case.name, slot)}"
                    if isinstance(egrads, str):
                        results.append(Result(case.id, fw, case.name, check, dtype, None, "skip",
                                              egrads))
                        continue
                    if slot not in egrads:
                        classify(case.id, case.name, check, dtype, None, True,
                                 "the framework returns a gradient where normref has none")
                        continue
                    v = judge(rounded, egrads[slot], out.grads[slot], dtype, check, cond=cond)
                    classify(case.id, case.name, check, dtype, v, not v.passed, v.note)
            for slot in sorted(out.state or {}):
                check = f"state:{signature_name(case.name, slot)}"
                if slot not in estate:
                    classify(case.id, case.name, check, dtype, None, True,
                             "the framework reports running statistics normref does not update")
                    continue
                v = judge(rounded, estate[slot], out.state[slot], dtype, check, cond=cond)
                classify(case.id, case.name, check, dtype, v, not v.passed, v.note)
    bar.close()
    return results
