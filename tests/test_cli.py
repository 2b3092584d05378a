"""python -m normref {list, check, info}."""
import subprocess
import sys

import numpy as np
import pytest

import normref
import normref.check
from normref import cli
from normref.standardize import Standardization


def test_check_one_normalizer_passes(capsys):
    assert cli.main(["check", "layer_norm"]) == 0
    out = capsys.readouterr().out
    assert "layer_norm" in out and "0 failures" in out
    for col in ("forward", "vjp", "jvp", "jacobian", "vjp-fd", "jvp-fd"):
        assert col in out


def test_check_fails_on_a_broken_vjp(monkeypatch, capsys):
    real = Standardization.vjp

    def broken(self, dy):
        grads = real(self, dy)
        grads["input"] = grads["input"] * (1 + 1e-6)  # a 1e-6 relative error
        return grads

    monkeypatch.setattr(Standardization, "vjp", broken)
    assert cli.main(["check", "batch_norm"]) == 1
    out = capsys.readouterr().out
    assert "FAIL batch_norm" in out and " vjp" in out


def test_check_fails_on_a_broken_jvp(monkeypatch, capsys):
    real = Standardization.jvp
    monkeypatch.setattr(Standardization, "jvp", lambda self, t: real(self, t) * 1.001)
    assert cli.main(["check", "group_norm"]) == 1
    assert "jvp" in capsys.readouterr().out


def test_check_reports_an_exception_as_failure(monkeypatch, capsys):
    def boom(self, dy):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(Standardization, "vjp", boom)
    assert cli.main(["check", "rms_norm"]) == 1
    assert "kernel exploded" in capsys.readouterr().out


def test_check_unknown_name(capsys):
    assert cli.main(["check", "not_a_norm"]) == 2
    err = capsys.readouterr().err
    assert "no normalizer named 'not_a_norm'" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(KeyError, match="no normalizer named"):  # the library keeps its KeyError
        normref.check.run(["not_a_norm"])


def test_list_prints_the_taxonomy(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in normref.REGISTRY:
        assert name in out
    assert "NAP" in out and "NOP" in out and "NRR" in out
    lines = {ln.split()[0]: ln for ln in out.splitlines()[1:]}
    for name, spec in normref.REGISTRY.items():  # the data columns are the Spec's, queried
        cols = lines[name].split()
        assert cols[2] == spec.nap.kind.value.split()[0] and cols[3] == spec.nop.kind.value
        assert ("centres" in lines[name]) == spec.centres
    assert "renorm+affine" in lines["batch_renorm"] and "whitens" in lines["zca_whitening"]


@pytest.mark.slow
def test_module_entry_point_runs_check():
    r = subprocess.run([sys.executable, "-m", "normref", "check", "instance_norm", "normalize"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "instance_norm" in r.stdout and "normalize" in r.stdout


def test_check_theory_section_json_and_exit_code(monkeypatch, tmp_path, capsys):
    import json

    from normref.analysis import claims as C

    rows = [
        C.Claim("demo.exact", "an exact identity", "Paper 2020", 0.0, 1e-17, 1e-12),
        C.Claim("demo.categorical", "smaller", "Paper 2021", "smaller", "smaller", 0.0),
    ]
    monkeypatch.setattr(C, "all_claims", lambda names=None: list(rows))
    out = tmp_path / "claims.json"
    assert cli.main(["check", "rms_norm", "--theory", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [d["id"] for d in data] == ["demo.exact", "demo.categorical"]
    assert set(data[0]) == {"id", "claim", "source", "predicted", "measured", "tolerance", "passed",
                            "alternatives"}
    assert all(d["passed"] for d in data)
    assert "2 claims, 0 failing" in capsys.readouterr().out
    rows.append(C.Claim("demo.broken", "fails", "Paper", 1.0, 1.5, 0.1))
    assert cli.main(["check", "rms_norm", "--theory"]) == 1
    assert "demo.broken" in capsys.readouterr().out
