"""The golden corpus: ``normref.export`` / ``python -m normref export``."""
import ast
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from normref.export import case_filename, export_corpus
from normref.testing.conformance import catalogue, case_from_id, expected_outputs, round_to

NAMES = ["batch_norm", "layer_norm", "group_norm", "local_response_norm"]
SCRIPT = os.path.join(os.path.dirname(__file__), "read_corpus_numpy_only.py")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    paths = export_corpus(str(out), names=NAMES)
    return str(out), paths


def _index(directory):
    with open(os.path.join(directory, "index.json")) as fh:
        return json.load(fh)


def _load(directory, entry):
    with open(os.path.join(directory, entry["json"])) as fh:
        meta = json.load(fh)
    with np.load(os.path.join(directory, entry["npz"])) as z:
        arrays = {k: z[k] for k in z.files}
    return meta, arrays


def test_file_structure(corpus):
    directory, paths = corpus
    index = _index(directory)
    assert paths[-1] == os.path.join(directory, "index.json")
    assert all(os.path.isfile(p) for p in paths)
    # one npz + one json per (case, dtype), then the index
    assert len(paths) == 2 * len(index["cases"]) + 1
    assert sorted(os.listdir(directory)) == sorted(os.path.basename(p) for p in paths)
    assert index["dtypes"] == ["float64", "float32"]
    assert {e["normalizer"] for e in index["cases"]} == set(NAMES)
    e = next(e for e in index["cases"] if e["case"] == "layer_norm/offset1e4/s0"
             and e["dtype"] == "float32")
    assert e["npz"] == "layer_norm__offset1e4__s0.float32.npz"
    assert case_filename("layer_norm/offset1e4/s0", "float32") == "layer_norm__offset1e4__s0.float32"
    # float64-only inputs are not exported in float32, and say why
    skipped = {(s["case"], s["dtype"]) for s in index["skipped"]}
    assert ("layer_norm/huge1e300/s0", "float32") in skipped
    assert ("layer_norm/huge1e300/s0", "float64") not in skipped
    assert not any(e["case"] == "layer_norm/huge1e300/s0" and e["dtype"] == "float32"
                   for e in index["cases"])


def test_metadata_of_a_batch_norm_training_case(corpus):
    directory, _ = corpus
    entry = next(e for e in _index(directory)["cases"]
                 if e["case"] == "batch_norm/train_affine/s0" and e["dtype"] == "float32")
    meta, arrays = _load(directory, entry)
    case = case_from_id("batch_norm/train_affine/s0")
    assert meta["normalizer"] == "batch_norm" and meta["dtype"] == "float32"
    assert meta["normref"] == "0.1.0" and meta["numpy"] == np.__version__
    kinds = [(item["index"], item["kind"]) for item in meta["layout"]]
    assert [k for _, k in kinds][:5] == ["array"] * 5
    assert meta["layout"][5] == {"index": 5, "kind": "scalar", "value": True}
    assert meta["mutates"] == [1, 2] == list(case.mutates)
    assert meta["differentiable"] == [0, 3, 4]
    assert sorted(arrays) == ["arg0", "arg1", "arg2", "arg3", "arg4", "cotangent",
                              "state1", "state2", "vjp0", "vjp3", "vjp4", "y"]
    for i in range(5):
        assert arrays[f"arg{i}"].dtype == np.float32
    assert arrays["y"].dtype == np.float64 and list(arrays["y"].shape) == meta["y_shape"]
    assert meta["cond"] >= 1.0
    json.dumps(meta, allow_nan=False)  # plain JSON: no NaN/Inf in the metadata


def test_json_kwargs_and_shapes(corpus):
    directory, _ = corpus
    index = _index(directory)
    for entry in index["cases"]:
        if entry["normalizer"] != "layer_norm":
            continue
        meta, _ = _load(directory, entry)
        item = meta["layout"][1]
        # normalized_shape: a tuple in the call, a list of ints in JSON
        assert item["kind"] in ("shape", "scalar")
        if item["kind"] == "shape":
            assert all(isinstance(s, int) for s in item["value"])
    gn = next(e for e in index["cases"] if e["case"] == "group_norm/group_affine/s0")
    meta, _ = _load(directory, gn)
    assert meta["kwargs"] == {"affine": "group"}


def test_values_are_normrefs_bit_for_bit(corpus):
    directory, _ = corpus
    index = _index(directory)
    assert len(index["cases"]) > 100
    for entry in index["cases"]:
        meta, arrays = _load(directory, entry)
        case = round_to(case_from_id(entry["case"]), entry["dtype"])
        y, grads, state = expected_outputs(case)
        assert np.array_equal(arrays["y"], y, equal_nan=True), entry["case"]
        assert sorted(grads) == meta["differentiable"], entry["case"]
        for i, g in grads.items():
            assert np.array_equal(arrays[f"vjp{i}"], g, equal_nan=True), (entry["case"], i)
        if grads:
            assert np.array_equal(arrays["cotangent"], case.cotangent(y.shape))
        assert sorted(state) == meta["mutates"]
        for i, s in state.items():
            assert np.array_equal(arrays[f"state{i}"], s, equal_nan=True), (entry["case"], i)
        for item in meta["layout"]:
            a = case.args[item["index"]]
            if item["kind"] == "array":
                stored = arrays[item["value"]]
                assert stored.dtype == np.dtype(entry["dtype"])
                # the float64 values normref computed on, exactly
                assert np.array_equal(stored.astype(np.float64), a, equal_nan=True)
            elif item["kind"] == "none":
                assert a is None
            elif item["kind"] == "shape":
                assert tuple(item["value"]) == tuple(a)
            else:
                assert item["value"] == a


def test_cli_export(tmp_path):
    from normref.cli import main

    out = tmp_path / "c"
    assert main(["export", "--out", str(out), "--names", "layer_norm", "--dtype", "float64",
                 "--quiet"]) == 0
    index = _index(str(out))
    assert index["dtypes"] == ["float64"]
    assert {e["normalizer"] for e in index["cases"]} == {"layer_norm"}
    # every layer_norm case of the catalogue, once: 2 random variants x 3 seeds + 13 adversarial
    assert len(index["cases"]) == 19 == len(catalogue(["layer_norm"]))
    assert os.path.isfile(out / "layer_norm__affine__s2.float64.npz")


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="no normalizer named 'layer_nrom'"):
        export_corpus(str(tmp_path), names=["layer_nrom"])
    with pytest.raises(ValueError, match="dtypes: 'float8'"):
        export_corpus(str(tmp_path), names=["layer_norm"], dtypes=("float8",))


def test_reader_script_imports_no_normref():
    with open(SCRIPT) as fh:
        tree = ast.parse(fh.read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert "normref" not in imported
    assert imported <= {"__future__", "argparse", "fnmatch", "json", "math", "os", "sys",
                        "zipfile", "zlib", "numpy", "torch"}


def _run_script(directory):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, SCRIPT, directory], capture_output=True, text=True,
                          env=env, cwd=os.path.dirname(directory), timeout=600)


def test_pytorch_agrees_with_the_corpus(corpus):
    pytest.importorskip("torch")
    directory, _ = corpus
    proc = _run_script(directory)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert " 0 mismatching" in last
    checked = int(last.split(" cases checked")[0])
    assert checked > 100


def test_reader_script_catches_a_wrong_value(corpus, tmp_path):
    pytest.importorskip("torch")
    import shutil

    directory, _ = corpus
    bad = tmp_path / "bad"
    shutil.copytree(directory, bad)
    stem = bad / "layer_norm__affine__s0.float64"
    with np.load(str(stem) + ".npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["y"] = arrays["y"].copy()
    arrays["y"].flat[3] *= 1 + 1e-9  # far beyond float64 rounding, far below any rtol=1e-3
    np.savez(str(stem) + ".npz", **arrays)
    proc = _run_script(str(bad))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "MISMATCH layer_norm/affine/s0 [float64] forward" in proc.stdout
