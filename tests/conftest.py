"""Test-session hooks: the fuzz module's outcome counts in the terminal summary."""
import sys


def pytest_terminal_summary(terminalreporter):
    fuzz = sys.modules.get("test_fuzz") or sys.modules.get("tests.test_fuzz")
    counts = getattr(fuzz, "COUNTS", None)
    if not counts:
        return
    total = sum(counts.values())
    terminalreporter.write_sep("-", f"fuzz: {total} calls")
    for (test, outcome), n in sorted(counts.items()):
        terminalreporter.write_line(f"  {test:<12} {outcome:<28} {n}")
