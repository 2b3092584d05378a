"""The known-discrepancies files (normref/testing/known/) and their audit: the
loader's validation (a malformed entry is rejected naming the file and the
entry), match_known's patterns, and audit_known on a real run of a small
adapter that is wrong on chosen cases (stale, overlapping, too wide entries)."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from normref.testing import conformance as C
from normref.testing.adapters import ADAPTERS, Adapter, Outputs
from normref.testing.conformance import known as K
from normref.testing.conformance.runner import Result

CASES = ("layer_norm/affine/s0", "layer_norm/affine/s1", "layer_norm/plain/s0")
#: the targets whose files were converted from the former single file
CONVERTED = ("torch", "torch-modules", "onnxruntime", "onnx-reference", "jax")


def _entry(**kw):
    e = {"id": "off-by-one", "cases": ["layer_norm/affine/*"], "dtypes": ["*"],
         "checks": ["forward"], "reason": "adds one", "figures": "forward off by 1.0",
         "issue": None}
    e.update(kw)
    return e


def _write(tmp_path, name, entries, framework=None, **top):
    data = {"framework": name if framework is None else framework, "versions": "fake 1.0",
            "discrepancies": entries, **top}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


# ---------------------------------------------------------------- the shipped files

def test_shipped_files_load_with_framework_and_unique_ids():
    entries = K.load_known_discrepancies()
    assert K.KNOWN_DISCREPANCIES_FILE == K.KNOWN_DISCREPANCIES_DIR  # the former name
    fws = {e["framework"] for e in entries}
    assert set(CONVERTED) <= fws
    assert fws <= set(ADAPTERS)
    ids = [(e["framework"], e["id"]) for e in entries]
    assert len(ids) == len(set(ids))
    for e in entries:
        assert e["file"] == f"{e['framework']}.json"
    for e in [e for e in entries if e["framework"] in CONVERTED]:
        # the figures moved out of the reason (no "Here: ... ulps" left in it); an issue
        # is a GitHub issue or pull request, or null and the reason says what was searched
        assert not re.search(r"\bHere:", e["reason"]), e["id"]
        assert "ulps" in e["figures"] or "raises" in e["figures"], e["id"]
        if e["issue"] is None:
            assert re.search(r"no (report|issue)", e["reason"], re.I), e["id"]
        else:
            assert re.match(r"https://github\.com/[\w.-]+/[\w.-]+/(issues|pull)/\d+$",
                            e["issue"]), e["issue"]
    # second_order.json is not a target: the directory loader leaves it out
    assert "second_order" not in fws
    so = K.load_second_order_discrepancies()
    assert so and {e["framework"] for e in so} <= {"torch", "jax"}


# ---------------------------------------------------------------- validation

def test_directory_loads_every_target_file_and_skips_second_order(tmp_path):
    _write(tmp_path, "fake", [_entry()])
    _write(tmp_path, "other", [_entry(id="x"), _entry(id="y", cases=["rms_norm/*"])])
    (tmp_path / "second_order.json").write_text("not even JSON")
    (tmp_path / "notes.txt").write_text("ignored")
    entries = K.load_known_discrepancies(tmp_path)
    assert [(e["framework"], e["id"]) for e in entries] == [
        ("fake", "off-by-one"), ("other", "x"), ("other", "y")]
    one = K.load_known_discrepancies(tmp_path / "other.json")
    assert [e["id"] for e in one] == ["x", "y"]


@pytest.mark.parametrize("change, needle", [
    ({"reason": ""}, "'reason' must be a non-empty string"),
    ({"figures": "  "}, "'figures' must be a non-empty string"),
    ({"cases": "layer_norm/*"}, "'cases' must be a non-empty list"),
    ({"cases": []}, "'cases' must be a non-empty list"),
    ({"dtypes": ["float23x"]}, "'dtypes' has invalid patterns"),
    ({"checks": ["backwards"]}, "'checks' has invalid patterns"),
    ({"checks": ["forward", "forward"]}, "repeats a pattern"),
    ({"issue": "#123"}, "'issue' must be null or an https:// address"),
    ({"id": "Off By One"}, "'id' must be a kebab-case slug"),
    ({"framework": "torch"}, "the file's target is 'fake'"),
    ({"case": "layer_norm/*"}, r"unknown keys \['case'\]"),
])
def test_malformed_entry_is_rejected_naming_file_and_entry(tmp_path, change, needle):
    path = _write(tmp_path, "fake", [_entry(id="fine"), _entry(**change)])
    with pytest.raises(ValueError, match=needle) as err:
        K.load_known_discrepancies(tmp_path)
    msg = str(err.value)
    assert str(path) in msg and "entry 1" in msg, msg


def test_missing_key_and_repeated_id_are_rejected(tmp_path):
    e = _entry()
    del e["figures"]
    _write(tmp_path, "fake", [e])
    with pytest.raises(ValueError, match=r"fake\.json: entry 0 \('off-by-one'\): lacks \['figures'\]"):
        K.load_known_discrepancies(tmp_path)
    _write(tmp_path, "fake", [_entry(), _entry(cases=["rms_norm/*"])])
    with pytest.raises(ValueError, match=r"entry 1 \('off-by-one'\).*used twice"):
        K.load_known_discrepancies(tmp_path)


@pytest.mark.parametrize("content, needle", [
    ("{", "not valid JSON"),
    ("[]", "must hold a JSON object"),
    (json.dumps({"framework": "torch", "versions": "x", "discrepancies": []}),
     "'framework' is 'torch' but the file is named for the target 'fake'"),
    (json.dumps({"framework": "fake", "discrepancies": []}), r"lacks the keys \['versions'\]"),
    (json.dumps({"framework": "fake", "versions": "x", "discrepancies": {}}),
     "'discrepancies' must be a list"),
    (json.dumps({"framework": "fake", "versions": "x", "discrepancies": [], "extra": 1}),
     r"unknown keys \['extra'\]"),
])
def test_bad_file_is_rejected(tmp_path, content, needle):
    (tmp_path / "fake.json").write_text(content)
    with pytest.raises(ValueError, match=needle) as err:
        K.load_known_discrepancies(tmp_path)
    assert "fake.json" in str(err.value)


def test_missing_path_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="path: no known-discrepancies file or directory"):
        K.load_known_discrepancies(tmp_path / "nowhere")


def test_second_order_entries_need_a_framework_each(tmp_path):
    path = tmp_path / "so.json"
    path.write_text(json.dumps({"versions": "x", "discrepancies": [_entry(checks=["m"])]}))
    with pytest.raises(ValueError, match=r"so\.json: entry 0 \('off-by-one'\): lacks \['framework'\]"):
        K.load_second_order_discrepancies(path)
    path.write_text(json.dumps({"versions": "x", "discrepancies": [
        _entry(checks=["torch.func.hessian"], framework="torch")]}))
    assert K.load_second_order_discrepancies(path)[0]["framework"] == "torch"


# ---------------------------------------------------------------- matching

def test_match_known_patterns():
    e = {**_entry(cases=["layer_norm/affine/s*", "layer_norm/offset1e?/s0"],
                  dtypes=["float32"], checks=["forward", "backward:*"]), "framework": "fake"}
    star = {**_entry(id="any-dtype", cases=["rms_norm/*"], checks=["state:*"]), "framework": "fake"}
    known = [e, star]

    def m(*args):
        return K.match_known(known, "fake", "layer_norm", *args)

    assert m("layer_norm/affine/s2", "float32", "forward") is e
    assert m("layer_norm/offset1e4/s0", "float32", "backward:weight") is e
    assert m("layer_norm/offset1e4/s1", "float32", "forward") is None
    assert m("layer_norm/affine/s0", "float64", "forward") is None      # dtype not listed
    assert m("layer_norm/affine/s0", "float32", "state:running_mean") is None
    assert K.match_known(known, "fake", "rms_norm", "rms_norm/plain/s0", "float16",
                         "state:x") is star                                  # "*": every dtype
    assert K.match_known(known, "other", "layer_norm", "layer_norm/affine/s0", "float32",
                         "forward") is None                                  # framework


# ---------------------------------------------------------------- the audit, on a real run

class PerturbingAdapter(Adapter):
    """normref's own layer norm posing as a framework, off by ``shift`` on chosen cases."""

    framework = "fake"
    dtypes = ("float32", "float64")

    def __init__(self, bad=()):
        self.bad = set(bad)

    @classmethod
    def available(cls):
        return True

    def prepare(self, case):
        return case if case.name == "layer_norm" else None

    def run(self, case, dtype):
        y = np.asarray(C.expected_outputs(case)[0], dtype=np.float64)
        if case.id in self.bad:
            y = y + 1.0
        return Outputs(y=y.astype(dtype))


def _run(known, bad=("layer_norm/affine/s0", "layer_norm/affine/s1")):
    cases = [C.case_from_id(i) for i in CASES]
    return C.run_conformance(PerturbingAdapter(bad), cases, progress=False, known=known)


def _known(*entries):
    return [{**e, "framework": "fake", "file": "fake.json"} for e in entries]


def test_audit_of_exact_entries_is_clean():
    known = _known(_entry())
    res = _run(known)
    assert sorted((r.case_id, r.dtype, r.status) for r in res) == [
        (c, d, "pass" if "plain" in c else "xfail") for c in sorted(CASES)
        for d in ("float32", "float64")]
    assert K.audit_known(res, known) == []


def test_audit_finds_a_stale_entry_and_a_stale_pattern():
    known = _known(_entry(cases=["layer_norm/affine/s0", "layer_norm/affine/s1"]),
                   _entry(id="fixed-long-ago", cases=["layer_norm/plain/*"], dtypes=["float64"]))
    problems = K.audit_known(_run(known, bad=["layer_norm/affine/s0"]), known)
    assert problems == [
        "stale pattern: fake.json: 'off-by-one': 'layer_norm/affine/s1' matches no failing "
        "check of the entry in the fake run",
        "too wide: fake.json: 'off-by-one' matches 2 passing check(s): layer_norm/affine/s1 "
        "float32 forward, layer_norm/affine/s1 float64 forward",
        "stale: fake.json: 'fixed-long-ago' matches no failing check of the fake run",
        "too wide: fake.json: 'fixed-long-ago' matches 1 passing check(s): layer_norm/plain/s0 "
        "float64 forward",
    ]


def test_audit_finds_an_overlap():
    known = _known(_entry(), _entry(id="same-thing", cases=["layer_norm/affine/s1"],
                                    dtypes=["float32"]))
    problems = K.audit_known(_run(known), known)
    assert problems == ["overlap: fake layer_norm/affine/s1 float32 forward is matched by "
                        "fake.json: 'off-by-one', fake.json: 'same-thing'"]


def test_audit_finds_a_pattern_naming_no_case():
    known = _known(_entry(cases=["layer_norm/affine/*", "layer_norm/afine/s0"]))
    problems = K.audit_known(_run(known), known)
    assert problems == ["no such case: fake.json: 'off-by-one': the pattern "
                        "'layer_norm/afine/s0' matches no case id of the fake run"]


def test_audit_is_restricted_to_the_frameworks_run():
    known = _known(_entry()) + [{**_entry(id="elsewhere", cases=["nothing/*"]),
                                 "framework": "other", "file": "other.json"}]
    res = _run(known)
    assert K.audit_known(res, known) == []
    assert K.audit_known(res, known, frameworks=["other"]) == [
        "stale: other.json: 'elsewhere' matches no failing check of the other run",
        "no such case: other.json: 'elsewhere': the pattern 'nothing/*' matches no case id "
        "of the other run"]


def test_audit_ignores_checks_that_were_not_judged():
    known = _known(_entry(dtypes=["float32"]), _entry(id="twin", dtypes=["float32"]))
    rows = [Result("layer_norm/affine/s0", "fake", "layer_norm", "forward", "float32", None,
                   status, "") for status in ("skip", "limit")]
    assert K.audit_known(rows, known) == [
        "stale: fake.json: 'off-by-one' matches no failing check of the fake run",
        "stale: fake.json: 'twin' matches no failing check of the fake run"]


def test_default_directory_exists_and_is_documented():
    assert os.path.isdir(K.KNOWN_DISCREPANCIES_DIR)
    for word in ("stale", "overlap", "figures", "second_order.json"):
        assert word in K.__doc__
