"""Test-session hooks.

* the fuzz module's outcome counts in the terminal summary;
* ``theory_claims``: every theory claim row, computed once per session;
* ``NORMREF_TEST_ORDER=reverse``: run the test files in reverse order (the
  order of the tests inside each file is kept).  Opt-in, to show that no file
  depends on state another file left behind (a registration, a cache, a
  global setting): ``NORMREF_TEST_ORDER=reverse pytest tests``.
"""
import os
import sys

import pytest

_ORDERS = ("", "forward", "reverse")


def pytest_collection_modifyitems(session, config, items):
    order = os.environ.get("NORMREF_TEST_ORDER", "").strip().lower()
    if order not in _ORDERS:
        raise ValueError(f"NORMREF_TEST_ORDER must be one of {_ORDERS[1:]} (or unset), "
                         f"got {order!r}")
    if order != "reverse":
        return
    by_file = {}
    for item in items:  # dicts keep insertion order: files in collection order
        by_file.setdefault(str(item.path), []).append(item)
    items[:] = [item for path in reversed(list(by_file)) for item in by_file[path]]


def pytest_report_header(config):
    order = os.environ.get("NORMREF_TEST_ORDER", "").strip().lower()
    if order == "reverse":
        return "test files in reverse order (NORMREF_TEST_ORDER=reverse)"
    return None


def pytest_terminal_summary(terminalreporter):
    fuzz = sys.modules.get("test_fuzz") or sys.modules.get("tests.test_fuzz")
    counts = getattr(fuzz, "COUNTS", None)
    if not counts:
        return
    total = sum(counts.values())
    terminalreporter.write_sep("-", f"fuzz: {total} calls")
    for (test, outcome), n in sorted(counts.items()):
        terminalreporter.write_line(f"  {test:<12} {outcome:<28} {n}")


@pytest.fixture(scope="session")
def theory_claims():
    """Every theory claim row, computed once per session (all providers, deterministic
    seeds; ~40 s of CPU) for the tests that read them all (test_docs, test_alternatives)."""
    from normref.analysis.claims import all_claims

    rows = tuple(all_claims())
    assert rows
    return rows
