"""Hostile input (issue 9): user errors exit 2 with one line on stderr, never a traceback.

Every error of ``python -m normref`` names the argument, the value received
and what was expected, and is found before any long work starts; the corpus
reader (tests/read_corpus_numpy_only.py) exits 2 with ``malformed corpus:
<file>: <problem>`` on every malformed corpus and never blames torch for it.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import normref.check
import normref.export
import normref.testing.adapters as adapters
import normref.testing.conformance as conformance
from normref import cli
from normref.export import export_corpus, previous_export

SCRIPT = os.path.join(os.path.dirname(__file__), "read_corpus_numpy_only.py")


def _usage_error(capsys, rc, *words):
    """rc is 2 and stderr is one line, no traceback, holding every word; return the line."""
    return _one_line(rc, capsys.readouterr().err, *words)


def _one_line(rc, err, *words):
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.fixture
def no_long_work(monkeypatch):
    """Every long-running entry point fails the test if it is reached."""
    def reached(*args, **kwargs):
        raise AssertionError("the long work started before the arguments were validated")

    monkeypatch.setattr(normref.check, "run", reached)
    monkeypatch.setattr(normref.check, "run_theory", reached)
    monkeypatch.setattr(normref.export, "export_corpus", reached)
    monkeypatch.setattr(conformance, "run_conformance", reached)


def _writable(directory):
    try:
        with tempfile.TemporaryFile(dir=directory):
            return True
    except OSError:
        return False


@pytest.fixture
def unwritable_dir(tmp_path):
    """A directory no file can be created in (chmod; /sys when running as root)."""
    d = tmp_path / "read_only"
    d.mkdir()
    d.chmod(0o500)
    try:
        if not _writable(d):
            yield str(d)
        elif os.path.isdir("/sys") and not _writable("/sys"):
            yield "/sys"
        else:
            pytest.skip("no unwritable directory available (root on a writable /sys?)")
    finally:
        d.chmod(0o700)


# -- names -------------------------------------------------------------------

def test_check_unknown_name_exits_2(capsys, no_long_work):
    line = _usage_error(capsys, cli.main(["check", "layer_norm", "bogus_norm"]),
                        "check", "'bogus_norm'", "layer_norm, local_response_norm")
    assert "'layer_norm'" not in line  # only the unknown name is blamed


def test_export_unknown_name_exits_2(capsys, tmp_path, no_long_work):
    _usage_error(capsys, cli.main(["export", "--out", str(tmp_path / "c"), "--names", "bogus_norm"]),
                 "export", "--names", "'bogus_norm'", "batch_norm")
    assert not (tmp_path / "c").exists()


def test_conform_unknown_name_exits_2(capsys, no_long_work):
    _usage_error(capsys, cli.main(["conform", "--target", "torch", "--names", "bogus_norm"]),
                 "conform", "--names", "'bogus_norm'", "batch_norm")


@pytest.mark.parametrize("argv", [["export", "--out", "c", "--names"],
                                  ["conform", "--target", "torch", "--names"]])
def test_names_option_without_values_exits_2(capsys, argv, no_long_work):
    _usage_error(capsys, cli.main(argv), "--names", "expected at least one")


# -- seed --------------------------------------------------------------------

@pytest.mark.parametrize("seed", ["-1", "1.5", "x"])
def test_check_negative_or_non_integer_seed_exits_2(capsys, seed, no_long_work):
    _usage_error(capsys, cli.main(["check", "layer_norm", "--seed", seed]),
                 "--seed", repr(seed), "non-negative integer")


# -- dtypes ------------------------------------------------------------------

def test_export_dtype_without_values_exits_2(capsys, tmp_path, no_long_work):
    _usage_error(capsys, cli.main(["export", "--out", str(tmp_path), "--dtype"]),
                 "--dtype", "expected at least one")


def test_export_unknown_dtype_exits_2(capsys, tmp_path, no_long_work):
    _usage_error(capsys, cli.main(["export", "--out", str(tmp_path), "--dtype", "float8"]),
                 "--dtype", "'float8'", "float16")


def test_conform_dtype_the_target_does_not_run_exits_2(capsys, monkeypatch, no_long_work):
    class Adapter:
        dtypes = ("float32", "float64")

    monkeypatch.setattr(adapters, "get_adapter", lambda name: Adapter())
    _usage_error(capsys, cli.main(["conform", "--target", "torch", "--dtype", "float16"]),
                 "--dtype float16", "torch", "float32, float64")


def test_conform_every_target_loads_before_any_runs(capsys, monkeypatch, no_long_work):
    class Adapter:
        dtypes = ("float32", "float64")

    def get_adapter(name):
        if name == "jax":
            raise ImportError("the 'jax' adapter needs its framework: pip install jax")
        return Adapter()

    monkeypatch.setattr(adapters, "get_adapter", get_adapter)
    _usage_error(capsys, cli.main(["conform", "--target", "torch", "--target", "jax"]),
                 "--target jax", "pip install jax")


def test_export_corpus_rejects_empty_and_drops_repeated_dtypes(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        export_corpus(str(tmp_path), names=["layer_norm"], dtypes=())
    with pytest.raises(ValueError, match="empty"):
        export_corpus(str(tmp_path), names=[], dtypes=("float64",))
    assert os.listdir(tmp_path) == []


# -- output directory --------------------------------------------------------

def test_export_out_is_an_existing_file_exits_2(capsys, tmp_path, no_long_work):
    f = tmp_path / "somefile"
    f.write_text("keep me")
    _usage_error(capsys, cli.main(["export", "--out", str(f)]),
                 "--out", repr(str(f)), "existing file", "expected a directory")
    assert f.read_text() == "keep me"


def test_export_out_under_a_regular_file_exits_2(capsys, tmp_path, no_long_work):
    f = tmp_path / "somefile"
    f.write_text("")
    _usage_error(capsys, cli.main(["export", "--out", str(f / "sub" / "deeper")]),
                 "--out", repr(str(f)), "is a file, not a directory")


def test_export_out_in_an_unwritable_directory_exits_2(capsys, unwritable_dir, no_long_work):
    out = os.path.join(unwritable_dir, "corpus")
    _usage_error(capsys, cli.main(["export", "--out", out]),
                 "--out", repr(out), "cannot write in directory", repr(unwritable_dir))


def test_export_out_with_a_foreign_index_exits_2(capsys, tmp_path, no_long_work):
    (tmp_path / "index.json").write_text("[1, 2, 3]")
    (tmp_path / "data.npz").write_text("")
    _usage_error(capsys, cli.main(["export", "--out", str(tmp_path)]),
                 "--out", "index.json", "not a corpus index")
    assert sorted(os.listdir(tmp_path)) == ["data.npz", "index.json"]


# -- writable --json file ----------------------------------------------------

@pytest.mark.parametrize("command", [["check"], ["conform", "--target", "torch"]])
@pytest.mark.parametrize("where", ["a directory", "missing directory", "under a file",
                                   "unwritable directory"])
def test_json_unwritable_exits_2_before_running(capsys, tmp_path, request, command, where,
                                                no_long_work):
    if where == "a directory":
        path, words = str(tmp_path), ("is a directory",)
    elif where == "missing directory":
        path, words = str(tmp_path / "nope" / "r.json"), ("does not exist",)
    elif where == "under a file":
        (tmp_path / "f").write_text("")
        path, words = str(tmp_path / "f" / "r.json"), ("is not a directory",)
    else:
        d = request.getfixturevalue("unwritable_dir")
        path, words = os.path.join(d, "r.json"), ("cannot write in directory",)
    _usage_error(capsys, cli.main(command + ["--json", path]), command[0], "--json",
                 repr(path), *words)
    assert not os.path.exists(os.path.join(str(tmp_path), "r.json"))


def test_json_writability_check_leaves_no_file(capsys, tmp_path, monkeypatch):
    seen = []

    def run(names=None, seed=0, **options):  # (seeds=, map_units=: the --seeds / --dask hooks)
        seen.append(sorted(os.listdir(tmp_path)))
        return []

    monkeypatch.setattr(normref.check, "run", run)
    monkeypatch.setattr(normref.check, "run_theory", lambda: ([], []))
    assert cli.main(["check", "layer_norm", "--theory", "--json", str(tmp_path / "c.json")]) == 0
    assert seen == [[]]  # nothing created by the check before the run
    assert json.loads((tmp_path / "c.json").read_text()) == []


def test_check_json_without_theory_when_naming_exits_2(capsys, tmp_path, no_long_work):
    out = tmp_path / "claims.json"
    _usage_error(capsys, cli.main(["check", "layer_norm", "--json", str(out)]),
                 "--json", "theory claims", "add --theory")
    assert not out.exists()


# -- OSError while writing; genuine bugs -------------------------------------

def test_oserror_while_writing_is_one_line_exit_2(capsys, tmp_path, monkeypatch):
    def disk_full(out_dir, **kwargs):
        raise OSError(28, "No space left on device", os.path.join(out_dir, "x.npz"))

    monkeypatch.setattr(normref.export, "export_corpus", disk_full)
    _usage_error(capsys, cli.main(["export", "--out", str(tmp_path), "--quiet"]),
                 "export", "x.npz", "No space left on device")


def test_json_directory_vanishing_during_the_run_is_one_line_exit_2(capsys, tmp_path,
                                                                    monkeypatch):
    d = tmp_path / "reports"
    d.mkdir()

    def run(adapter, cases, dtypes=None, progress=False):
        shutil.rmtree(d)
        return []

    monkeypatch.setattr(adapters, "get_adapter", lambda name: type("A", (), {"dtypes": ()})())
    monkeypatch.setattr(conformance, "run_conformance", run)
    rc = cli.main(["conform", "--target", "torch", "--names", "layer_norm",
                   "--json", str(d / "r.json"), "--quiet"])
    err = capsys.readouterr().err
    progress, error = err.strip().splitlines()  # the run's progress line, then the error
    assert progress.startswith("conform: torch:")
    _one_line(rc, error, "conform", "r.json", "No such file or directory")


def test_a_genuine_bug_is_not_disguised_as_a_user_error(tmp_path, monkeypatch):
    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(normref.export, "export_corpus", bug)
    with pytest.raises(ZeroDivisionError):
        cli.main(["export", "--out", str(tmp_path), "--quiet"])


def test_argparse_errors_are_one_line_exit_2(capsys):
    _usage_error(capsys, cli.main(["bogus"]), "invalid choice", "'bogus'", "--help")
    _usage_error(capsys, cli.main(["conform", "--target", "mxnet"]),
                 "--target", "'mxnet'", "onnxruntime")


@pytest.mark.slow
def test_no_traceback_reaches_the_terminal(tmp_path):
    f = tmp_path / "somefile"
    f.write_text("")
    for argv in (["check", "bogus_norm"], ["export", "--out", str(f / "sub")]):
        r = subprocess.run([sys.executable, "-m", "normref", *argv], capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stdout == ""


# -- re-export into the same directory ---------------------------------------

def test_reexport_removes_exactly_the_previous_exports_files(tmp_path):
    out = str(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "other.npz").write_text("not listed by any index")
    first = export_corpus(out, names=["layer_norm", "rms_norm"], dtypes=("float64", "float32"))
    assert previous_export(out) == first  # the index lists exactly what was written
    second = export_corpus(out, names=["layer_norm"], dtypes=("float64",))
    assert sorted(os.listdir(out)) == sorted(
        [os.path.basename(p) for p in second] + ["notes.txt", "other.npz"])
    assert not any("rms_norm" in p or "float32" in p for p in os.listdir(out))


def test_previous_export_removes_nothing_outside_the_directory(tmp_path):
    out = tmp_path / "corpus"
    out.mkdir()
    victim = tmp_path / "victim.npz"
    victim.write_text("")
    (out / "index.json").write_text(json.dumps({"cases": [
        {"case": "x", "npz": "../victim.npz", "json": "x.json"}]}))
    with pytest.raises(ValueError, match="not a .npz file name"):
        export_corpus(str(out), names=["layer_norm"], dtypes=("float64",))
    assert victim.exists() and os.listdir(out) == ["index.json"]


# -- the corpus reader -------------------------------------------------------

@pytest.fixture(scope="module")
def reader():
    spec = importlib.util.spec_from_file_location("read_corpus_numpy_only", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("small_corpus")
    export_corpus(str(out), names=["layer_norm"], dtypes=("float64",))
    return out


STEM = "layer_norm__affine__s0.float64"


def _edit_index(d, fn):
    p = d / "index.json"
    p.write_text(json.dumps(fn(json.loads(p.read_text()))))


def _edit_case(d, fn):
    p = d / f"{STEM}.json"
    p.write_text(json.dumps(fn(json.loads(p.read_text()))))


def _truncate(p):
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _flip_data_byte(p):
    with np.load(p) as z:
        y = z["y"].tobytes()
    data = bytearray(p.read_bytes())
    data[data.find(y) + 3] ^= 0xFF  # inside y's bytes: the zip CRC no longer matches
    p.write_bytes(bytes(data))


def _drop_array(p, key):
    with np.load(p) as z:
        arrays = {k: z[k] for k in z.files if k != key}
    np.savez(p, **arrays)


def _without(d, key):
    return {k: v for k, v in d.items() if k != key}


CORRUPTIONS = {
    "index missing": ("index.json", "cannot read JSON",
                      lambda d: (d / "index.json").unlink()),
    "index truncated": ("index.json", "cannot read JSON", lambda d: _truncate(d / "index.json")),
    "index is a list": ("index.json", "the index is a list, expected an object",
                        lambda d: _edit_index(d, lambda i: i["cases"])),
    "cases not a list": ("index.json", "'cases' is {", lambda d: _edit_index(
        d, lambda i: dict(i, cases={"a": 1}))),
    "entry not a dict": ("index.json", "cases[0] is a str", lambda d: _edit_index(
        d, lambda i: dict(i, cases=["x"] + i["cases"]))),
    "entry missing key": ("index.json", "has no 'npz'", lambda d: _edit_index(
        d, lambda i: dict(i, cases=[_without(e, "npz") for e in i["cases"]]))),
    "case json missing": (f"{STEM}.json", "cannot read JSON",
                          lambda d: (d / f"{STEM}.json").unlink()),
    "case json truncated": (f"{STEM}.json", "JSONDecodeError",
                            lambda d: _truncate(d / f"{STEM}.json")),
    "case json missing key": (f"{STEM}.json", "the case has no 'layout'",
                              lambda d: _edit_case(d, lambda m: _without(m, "layout"))),
    "case json disagrees with the index": (f"{STEM}.json", "differs from the index", lambda d:
                                           _edit_case(d, lambda m: dict(m, dtype="float32"))),
    "npz missing": (f"{STEM}.npz", "cannot read", lambda d: (d / f"{STEM}.npz").unlink()),
    "npz truncated": (f"{STEM}.npz", "BadZipFile", lambda d: _truncate(d / f"{STEM}.npz")),
    "npz corrupted": (f"{STEM}.npz", "CRC", lambda d: _flip_data_byte(d / f"{STEM}.npz")),
    "npz lacks an array the json names": (f"{STEM}.npz", "no array 'vjp2'",
                                          lambda d: _drop_array(d / f"{STEM}.npz", "vjp2")),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_reader_malformed_corpus_exits_2(reader, small_corpus, tmp_path, capsys, kind):
    name, problem, corrupt = CORRUPTIONS[kind]
    bad = tmp_path / "bad"
    shutil.copytree(small_corpus, bad)
    corrupt(bad)
    rc = reader.main([str(bad)])
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing judged: no torch mismatch reported
    line = _one_line(rc, captured.err, "malformed corpus: ", problem)
    assert line.startswith(f"malformed corpus: {os.path.join(str(bad), name)}: ")


def test_reader_validates_the_corpus_before_importing_torch(reader, small_corpus, tmp_path,
                                                            capsys):
    """The load phase runs first: a malformed corpus is reported even where torch is absent."""
    bad = tmp_path / "bad"
    shutil.copytree(small_corpus, bad)
    _truncate(bad / f"{STEM}.json")
    saved = sys.modules.get("torch")
    sys.modules["torch"] = None  # import torch now raises ImportError
    try:
        rc = reader.main([str(bad)])
    finally:
        if saved is None:
            del sys.modules["torch"]
        else:
            sys.modules["torch"] = saved
    _usage_error(capsys, rc, "malformed corpus", f"{STEM}.json")


@pytest.mark.parametrize("option", ["--rtol-forward", "--rtol-backward"])
@pytest.mark.parametrize("value", ["-1", "nan", "0"])
def test_reader_rejects_a_non_positive_tolerance(reader, small_corpus, option, value, capsys):
    with pytest.raises(SystemExit) as e:
        reader.main([str(small_corpus), option, value])
    assert e.value.code == 2
    assert "expected a finite positive number" in capsys.readouterr().err


@pytest.mark.slow
def test_reader_truncated_case_json_is_malformed_not_a_mismatch(small_corpus, tmp_path):
    pytest.importorskip("torch")
    bad = tmp_path / "bad"
    shutil.copytree(small_corpus, bad)
    _truncate(bad / f"{STEM}.json")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, SCRIPT, str(bad)], capture_output=True, text=True,
                       env=env, cwd=str(tmp_path), timeout=600)
    line = _one_line(r.returncode, r.stderr, "malformed corpus", f"{STEM}.json",
                     "JSONDecodeError")
    assert "MISMATCH" not in r.stdout and "ERROR" not in r.stdout and "torch raised" not in line
