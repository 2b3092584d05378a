"""The users' documentation in docs/: every citation resolves, every claim is documented.

* docs/theory.md has one section ``## Item N: <title>`` per theory item; the
  claim ids of ``python -m normref check`` are exactly the ids listed in its
  claim tables, and an id ``itemN.<...>`` is listed in the section of item N;
* docs/adversarial.md has one section ``### Row N: <title>`` per adversarial
  row; every row of the conformance catalogue (``ADVERSARIAL``,
  ``ROWS_NOT_CASES``) is one, and every catalogue variant is named in its row;
* every "theory.md item N", "theory item N", "adversarial.md row N" or
  "adversarial row N" (also "items 3, 4, 5", "items 3-5", "rows 16-17") cited
  in the project's code, tests, proofs, notebooks, README or docs resolves to
  a section, as does every ``test_rowNN_`` test;
* nothing in the project points at the engineers' guidance directory, which
  users do not have.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
THEORY = DOCS / "theory.md"
ADVERSARIAL = DOCS / "adversarial.md"

#: the project's own files (README.md and docs/ are added where they matter)
PROJECT_DIRS = ("normref", "tests", "proofs", "notebooks")
TEXT_SUFFIXES = {".py", ".md", ".json", ".ipynb", ".toml", ".txt", ".rst", ".cfg", ".ini",
                 ".yaml", ".yml"}
SKIP_DIRS = {"__pycache__", ".ipynb_checkpoints", ".pytest_cache", ".hypothesis"}


def _project_files(dirs, extra=(), *, text_only=True):
    out = []
    for d in dirs:
        base = ROOT / d
        if not base.is_dir():
            continue
        for p in sorted(base.rglob("*")):
            if (p.is_file() and not SKIP_DIRS & set(p.relative_to(ROOT).parts)
                    and (p.suffix in TEXT_SUFFIXES or not text_only)):
                out.append(p)
    out += [ROOT / e for e in extra if (ROOT / e).is_file()]
    return out


def _sections(path, heading, level):
    """``{number: section text}`` of the headings matching ``heading`` (one group:
    the number); a section ends at the next heading of ``level`` or above."""
    text = path.read_text(encoding="utf-8")
    bounds = [m.start() for m in re.finditer(rf"^#{{1,{level}}} ", text, re.M)] + [len(text)]
    out = {}
    for m in re.finditer(heading, text, re.M):
        n = int(m.group(1))
        assert n not in out, f"{path.name}: two sections for number {n}"
        end = min(b for b in bounds if b > m.start())
        out[n] = text[m.start():end]
    return out


def theory_items():
    return _sections(THEORY, r"^## Item (\d+): \S", 2)


def adversarial_rows():
    return _sections(ADVERSARIAL, r"^### Row (\d+): \S", 3)


def _numbers(spec):
    """'3, 4, 5' / '3-5' / '1 and 2' / '9 and 11' -> {3, 4, 5} / ... (ranges expanded)."""
    out = set()
    for part in re.split(r"\s*(?:,|\band\b|\bor\b)\s*", spec.strip()):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)\s*[-\u2013]\s*(\d+)", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            assert lo <= hi, f"backwards range {part!r}"
            out.update(range(lo, hi + 1))
        else:
            out.add(int(part))
    return out


_LIST = r"(\d+(?:\s*(?:[-\u2013]|,|,?\s*and|,?\s*or)\s*\d+)*)"
THEORY_CITE = re.compile(rf"\btheory(?:\.md)?\s+items?\s+{_LIST}", re.I)
ADVERSARIAL_CITE = re.compile(rf"\badversarial(?:\.md)?\s+rows?\s+{_LIST}", re.I)
ROW_TEST = re.compile(r"\bdef (test_row(\d+)_\w*)")


def citations(pattern, files):
    """``{number: [file:line, ...]}`` of the citations matching ``pattern``."""
    found = {}
    for p in files:
        text = p.read_text(encoding="utf-8", errors="replace")
        for m in pattern.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            for n in _numbers(m.group(1)):
                found.setdefault(n, []).append(f"{p.relative_to(ROOT)}:{line}")
    return found


def test_number_parsing():
    assert _numbers("3, 4, 5") == _numbers("3-5") == _numbers("3 and 4, and 5") == {3, 4, 5}
    assert _numbers("9 and 11") == {9, 11}
    assert _numbers("16-17") == {16, 17}
    assert THEORY_CITE.search("(theory.md items 3, 4, 5)").group(1) == "3, 4, 5"
    assert THEORY_CITE.search("Theory item 7 as claim rows").group(1) == "7"
    assert ADVERSARIAL_CITE.search("adversarial.md rows 16-17, running").group(1) == "16-17"
    assert ADVERSARIAL_CITE.search("the adversarial.md row (``\"1\"``") is None


# -- the documents themselves --------------------------------------------------------


def test_sections_are_numbered_without_gaps():
    items, rows = theory_items(), adversarial_rows()
    assert sorted(items) == list(range(1, len(items) + 1)) and len(items) >= 11, sorted(items)
    assert sorted(rows) == list(range(1, len(rows) + 1)) and len(rows) >= 21, sorted(rows)
    for n, text in items.items():
        for part in ("**Statement.**", "**Source", "**How normref measures it.**",
                     "**Tolerance.**", "**Limits.**"):
            assert part in text, f"theory.md item {n} has no {part}"
    for n, text in rows.items():
        for part in ("**Input.**", "**What other frameworks did.**", "**normref.**",
                     "**Tested.**"):
            assert part in text, f"adversarial.md row {n} has no {part}"


@pytest.mark.parametrize("doc", [THEORY, ADVERSARIAL], ids=lambda p: p.name)
def test_tables_have_one_cell_count(doc):
    """An unescaped ``|`` inside a cell (say in ``||w||``) splits it in two."""
    lines = doc.read_text(encoding="utf-8").split("\n")
    table, bad = [], []
    for i, line in enumerate(lines + [""], 1):
        if line.startswith("|"):
            table.append((i, len(re.split(r"(?<!\\)\|", line)) - 2))
            continue
        if table:
            bad += [n for n, c in table if c != table[0][1]]
        table = []
    assert not bad, f"{doc.name}: table lines with a different number of cells: {bad}"


# -- (a) claim ids -------------------------------------------------------------------


_TABLE_ID = re.compile(r"^\|\s*`([A-Za-z0-9_.]+)`\s*\|", re.M)


@pytest.fixture(scope="module")
def claim_ids(theory_claims):
    """The ids the theory section prints (every provider, deterministic seeds)."""
    return {r.id for r in theory_claims}


def test_every_claim_id_is_documented_in_its_item(claim_ids):
    items = theory_items()
    tabled = {n: set(_TABLE_ID.findall(text)) for n, text in items.items()}
    documented = set().union(*tabled.values())
    missing = sorted(claim_ids - documented)
    assert not missing, f"claim ids without a row in docs/theory.md: {missing}"
    stale = sorted(documented - claim_ids)
    assert not stale, f"docs/theory.md lists ids that no claim produces: {stale}"
    misplaced = []
    for cid in claim_ids:
        m = re.match(r"item(\d+)\.", cid)
        if m and cid not in tabled.get(int(m.group(1)), set()):
            misplaced.append(cid)
    assert not misplaced, f"ids not listed under their own '## Item N': {sorted(misplaced)}"


# -- (b) citations in the project ------------------------------------------------------


def test_every_cited_theory_item_exists():
    cited = citations(THEORY_CITE, _project_files(PROJECT_DIRS + ("docs",), ("README.md",)))
    assert cited, "no theory citations found: the pattern no longer matches the code"
    items = theory_items()
    missing = {n: where for n, where in cited.items() if n not in items}
    assert not missing, f"cited theory items with no '## Item N' in docs/theory.md: {missing}"


def test_every_cited_adversarial_row_exists():
    files = _project_files(PROJECT_DIRS + ("docs",), ("README.md",))
    cited = citations(ADVERSARIAL_CITE, files)
    assert cited, "no adversarial citations found: the pattern no longer matches the code"
    for p in files:
        if p.suffix == ".py":
            for m in ROW_TEST.finditer(p.read_text(encoding="utf-8", errors="replace")):
                cited.setdefault(int(m.group(2)), []).append(f"{p.relative_to(ROOT)}::{m.group(1)}")
    rows = adversarial_rows()
    missing = {n: where for n, where in cited.items() if n not in rows}
    assert not missing, f"cited adversarial rows with no '### Row N' in docs/adversarial.md: {missing}"


# -- (c) the conformance catalogue's rows ----------------------------------------------


def _row_of(entry):
    """The adversarial row of a catalogue entry: a ``(row, applies to)`` pair or an
    object with a ``row`` attribute."""
    return int(entry.row if hasattr(entry, "row") else entry[0])


def test_catalogue_rows_and_variants_are_documented():
    from normref.registry import REGISTRY
    from normref.testing.conformance import ADVERSARIAL, ROWS_NOT_CASES

    rows = adversarial_rows()
    case_rows = {}
    for variant, entry in ADVERSARIAL.items():
        case_rows.setdefault(_row_of(entry), []).append(variant)
    for spec in REGISTRY.values():  # the variants a normalizer alone takes (its own module)
        for variant, (row, _) in (spec.catalogue.only.items() if spec.catalogue else ()):
            case_rows.setdefault(int(row), []).append(variant)
    assert case_rows, "the catalogue has no adversarial variants"
    used = set(case_rows) | {int(r) for r in ROWS_NOT_CASES}
    assert not used - set(rows), f"catalogue rows missing from docs/adversarial.md: {sorted(used - set(rows))}"
    unnamed = {v: r for r, vs in case_rows.items() for v in vs if f"`{v}`" not in rows[r]}
    assert not unnamed, f"catalogue variants not named in their row of docs/adversarial.md: {unnamed}"
    for r in ROWS_NOT_CASES:
        assert "ROWS_NOT_CASES" in rows[int(r)], f"row {r} does not say it is not a catalogue case"


# -- the files, tests and functions the documents name exist ---------------------------


_PATH = re.compile(r"`((?:normref|tests|proofs|notebooks)/[\w/.-]+?\.(?:py|json|md|ipynb))(?:::(\w+))?`")
_TEST_NAME = re.compile(r"`(test_\w+?)(\*)?`")
_DOTTED = re.compile(r"`(normref(?:\.\w+)+)`")


def _test_functions():
    names = set()
    for p in (ROOT / "tests").glob("*.py"):
        names |= set(re.findall(r"^def (test_\w+)", p.read_text(encoding="utf-8"), re.M))
    return names


def _resolve(dotted):
    import importlib

    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        for attr in parts[k:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


@pytest.mark.parametrize("doc", [THEORY, ADVERSARIAL], ids=lambda p: p.name)
def test_named_files_tests_and_functions_exist(doc):
    text = doc.read_text(encoding="utf-8")
    tests = _test_functions()
    bad = []
    for path, fn in _PATH.findall(text):
        if not (ROOT / path).is_file():
            bad.append(path)
        elif fn and not re.search(rf"^def {fn}\b", (ROOT / path).read_text(encoding="utf-8"), re.M):
            bad.append(f"{path}::{fn}")
    for name, star in _TEST_NAME.findall(text):
        if not (any(t.startswith(name) for t in tests) if star else name in tests):
            bad.append(name + star)
    for dotted in _DOTTED.findall(text):
        try:
            _resolve(dotted)
        except (ImportError, AttributeError):
            bad.append(dotted)
    assert not bad, f"{doc.name} names what the project does not have: {sorted(set(bad))}"


def test_python_examples_run():
    """Every ```python block of the documents runs (theory.md runs one provider)."""
    blocks = []
    for doc in (THEORY, ADVERSARIAL):
        blocks += [(doc.name, i, code) for i, code in
                   enumerate(re.findall(r"^```python\n(.*?)^```", doc.read_text(encoding="utf-8"),
                                        re.M | re.S))]
    assert blocks
    for name, i, code in blocks:
        exec(compile(code, f"{name}[python block {i}]", "exec"), {})


# -- (d) no reference to the engineers' guidance ---------------------------------------


def test_nothing_points_at_the_guidance_directory():
    needles = [("/work/" + "shared").encode(), ("shared" + "/").encode()]
    hits = []
    files = _project_files(PROJECT_DIRS + ("docs", "benchmarks"), ("README.md", "pyproject.toml"),
                           text_only=False)
    assert any(p.name == "theory.md" for p in files)
    for p in files:
        data = p.read_bytes()
        for needle in needles:
            if needle in data:
                line = data[:data.index(needle)].count(b"\n") + 1
                hits.append(f"{p.relative_to(ROOT)}:{line}: {needle.decode()!r}")
    assert not hits, "the project must not cite the guidance directory: " + "; ".join(hits)
