"""The teaching notebooks in notebooks/: each .ipynb is paired with its jupytext
py:percent source, and each notebook executes without error (its cells hold
asserts with explicit tolerances) and produces at least one figure.

Needs the ``notebooks`` extra (``pip install ".[notebooks]"``); skipped without it.
The kernel is the interpreter running the tests: a kernelspec pointing at
``sys.executable`` is written to a temporary directory, so no installed
kernelspec (or network) is needed.
"""
import json
import pathlib
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))

#: seconds allowed for one cell (the slowest cell takes a few seconds)
CELL_TIMEOUT = 600


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 3, NOTEBOOKS


def _cells(nb):
    return [(c.cell_type, c.source) for c in nb.cells]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_ipynb_is_paired_and_stored_without_outputs(path):
    jupytext = pytest.importorskip("jupytext")
    nbformat = pytest.importorskip("nbformat")
    ipynb = path.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} is missing: run `jupytext --to ipynb {path.name}`"
    from_py = jupytext.read(path)
    stored = nbformat.read(ipynb, as_version=4)
    assert _cells(stored) == _cells(from_py), (
        f"{ipynb.name} is stale: regenerate it with `jupytext --to ipynb notebooks/{path.name}`")
    for cell in stored.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{ipynb.name} is stored with outputs; regenerate it from {path.name}")


def _zmq_has_curve():
    try:
        import zmq
        return bool(zmq.has("curve"))
    except Exception:
        return False


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    """A kernelspec directory whose "python3" kernel runs this interpreter."""
    pytest.importorskip("ipykernel")
    root = tmp_path_factory.mktemp("kernels")
    spec = root / "python3"
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (normref tests)",
        "language": "python",
        # lets a recent jupyter_client encrypt the kernel's sockets (CurveZMQ);
        # older versions ignore it
        "metadata": {"supported_encryption": ["curve"]},
    }))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, kernel_dir, tmp_path, monkeypatch):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("matplotlib")
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    # connection files and the like go to the temporary directory, not $HOME
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.delenv("MPLBACKEND", raising=False)

    nb = jupytext.read(path)
    ksm = KernelSpecManager(kernel_dirs=[str(kernel_dir)], ensure_native_kernel=False)
    assert ksm.get_kernel_spec("python3").argv[0] == sys.executable
    km = KernelManager(kernel_name="python3", kernel_spec_manager=ksm)
    if km.has_trait("transport_encryption") and _zmq_has_curve():
        km.transport_encryption = "auto"   # CurveZMQ on the kernel's local sockets
    work = tmp_path / "cwd"
    work.mkdir()
    client = nbclient.NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, allow_errors=False,
                                     resources={"metadata": {"path": str(work)}})
    start = time.perf_counter()
    try:
        # raises CellExecutionError, naming the cell, if any cell fails; cleanup_kc:
        # shut the kernel down afterwards (nbclient leaves a kernel it does not own running)
        client.execute(cleanup_kc=True)
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    elapsed = time.perf_counter() - start
    print(f"{path.name} executed in {elapsed:.1f} s")

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, [f"{o.ename}: {o.evalue}" for o in errors]
    pngs = [o for o in outputs if o.output_type in ("display_data", "execute_result")
            and "image/png" in o.get("data", {})]
    assert pngs, f"{path.name} produced no figure"
    # the notebooks write no files (figures are displayed, not saved)
    assert list(work.iterdir()) == [], list(work.iterdir())
