"""Sweeps on a Dask cluster (normref.distributed, ``conform --dask`` / ``check --dask``,
``--seeds``): the cluster's report is the serial run's, byte for byte.

One LocalCluster of two single-threaded worker processes serves the module
(started by :func:`normref.distributed.local_cluster`, as ``--dask`` without an
address starts its own); the tests join it by its address, as a user joins a
scheduler started with ``dask scheduler``.
"""
from __future__ import annotations

import os
import re
import socket
from types import SimpleNamespace

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from normref import distributed as nd  # noqa: E402
from normref.cli import main  # noqa: E402
from normref.testing.conformance import case_from_id, catalogue, variants  # noqa: E402

NAMES = ["layer_norm", "rms_norm"]


#: this process's thread setting before the module's cluster started
_THREADS_BEFORE = {}


@pytest.fixture(scope="module")
def cluster():
    _THREADS_BEFORE.update(nd._threads_setting())
    with nd.local_cluster(2) as local:
        yield local


def _run(capsys, argv):
    """(exit status, stdout, stderr) of ``python -m normref ARGV``, run in this process."""
    capsys.readouterr()
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _conform(capsys, path, *extra, names=NAMES):
    argv = ["conform", "--target", "torch", "--names", *names, "--json", str(path), "--quiet",
            *extra]
    rc, out, err = _run(capsys, argv)
    return rc, out, path.read_bytes()


# -- conform --------------------------------------------------------------------------

def test_conform_on_the_cluster_writes_the_serial_json(cluster, tmp_path, capsys):
    pytest.importorskip("torch")
    rc_s, out_s, serial = _conform(capsys, tmp_path / "serial.json")
    rc_d, out_d, dask = _conform(capsys, tmp_path / "dask.json", "--dask",
                                 cluster.scheduler_address)
    statuses = set(re.findall(rb'"status": "(\w+)"', serial))
    assert {b"pass", b"xfail"} <= statuses, statuses  # a real report, with known discrepancies
    assert serial.count(b'"case":') == len(re.findall(rb'"case": "(?:layer|rms)_norm/', serial)) \
        > 200
    assert dask == serial
    assert (rc_d, out_d) == (rc_s, out_s)


def test_plain_dask_starts_a_local_cluster_and_closes_it(cluster, tmp_path, capsys, monkeypatch):
    """``--dask`` without an address: :func:`local_cluster` with its defaults (here
    replaced by the module's cluster, to spare a second start-up), left on exit."""
    pytest.importorskip("torch")
    import contextlib

    calls = []

    @contextlib.contextmanager
    def fake_local_cluster(n_workers=None):
        calls.append(("enter", n_workers))
        try:
            yield cluster
        finally:
            calls.append(("exit", n_workers))

    monkeypatch.setattr(nd, "local_cluster", fake_local_cluster)
    rc_s, out_s, serial = _conform(capsys, tmp_path / "serial.json", names=["rms_norm"])
    rc_d, out_d, dask = _conform(capsys, tmp_path / "dask.json", "--dask", names=["rms_norm"])
    assert calls == [("enter", None), ("exit", None)]
    assert (rc_d, out_d, dask) == (rc_s, out_s, serial)


def test_local_cluster_settings_and_cleanup(monkeypatch):
    """One single-threaded worker process per core, Dask's OMP/MKL/OpenBLAS=1 not
    imposed; closed and this process's environment restored even on an exception."""
    made = []

    class FakeCluster:
        def __init__(self, **kwargs):
            self.kwargs, self.closed = kwargs, 0
            # the environment a Nanny would spawn its worker with under this configuration
            self.spawn_env = distributed.nanny._get_env_variables(
                "distributed.nanny.pre-spawn-environ")
            os.environ["PYTHONHASHSEED"] = "6640"  # what a Nanny writes here to spawn
            made.append(self)

        def close(self):
            self.closed += 1

    monkeypatch.setattr(distributed, "LocalCluster", FakeCluster)
    for k in ("PYTHONHASHSEED",) + nd.THREAD_VARIABLES:
        monkeypatch.delenv(k, raising=False)
    before = dict(os.environ)
    with pytest.raises(KeyboardInterrupt):
        with nd.local_cluster():
            raise KeyboardInterrupt
    (c,) = made
    assert c.kwargs == {"n_workers": os.cpu_count(), "threads_per_worker": 1, "processes": True,
                        "dashboard_address": None}
    assert not set(nd.THREAD_VARIABLES) & set(c.spawn_env)  # unset here: unset there
    assert "MALLOC_TRIM_THRESHOLD_" in c.spawn_env  # Dask's other defaults kept
    assert c.closed == 1
    assert dict(os.environ) == before


def test_workers_inherit_this_process_threads(cluster):
    """Not Dask's OMP_NUM_THREADS=1 (torch's layer-norm weight gradient rounds
    differently with it), and this process left as it was."""
    with distributed.Client(cluster) as client:
        seen = client.run(nd._threads_setting)
    assert len(seen) == 2
    assert all(s == _THREADS_BEFORE for s in seen.values()), seen
    assert nd._threads_setting() == _THREADS_BEFORE


def test_an_adapter_exception_on_a_worker_is_the_serial_error(cluster, tmp_path, capsys):
    """The adapter raising on one case: the same ``error`` result (and exit 1) on the
    cluster as serially."""
    pytest.importorskip("torch")

    def patch(on):
        from normref.testing.adapters import torch as ta

        if on:
            ta.TorchAdapter._unpatched = ta.TorchAdapter.run

            def run(self, case, dtype):
                if case.id == "rms_norm/offset1e4/s0":
                    raise RuntimeError("injected failure")
                return ta.TorchAdapter._unpatched(self, case, dtype)

            ta.TorchAdapter.run = run
        else:
            ta.TorchAdapter.run = ta.TorchAdapter._unpatched
            del ta.TorchAdapter._unpatched

    extra = ["--dtype", "float32"]
    with distributed.Client(cluster) as client:
        patch(True)
        client.run(patch, True)
        try:
            rc_s, out_s, serial = _conform(capsys, tmp_path / "s.json", *extra, names=["rms_norm"])
            rc_d, out_d, dask = _conform(capsys, tmp_path / "d.json", *extra, "--dask",
                                         cluster.scheduler_address, names=["rms_norm"])
        finally:
            patch(False)
            client.run(patch, False)
    assert rc_s == 1
    assert "ERROR torch rms_norm/offset1e4/s0 [float32] forward -- RuntimeError: injected " \
           "failure" in out_s
    assert (rc_d, out_d, dask) == (rc_s, out_s, serial)


def test_a_dead_worker_is_an_error_result_per_case_and_dtype(monkeypatch):
    from normref.testing.adapters import get_adapter

    pytest.importorskip("torch")

    class Client:
        def nthreads(self):
            return {"tcp://w:1": 1}

    ids = ["rms_norm/base/s0", "rms_norm/base/s1", "layer_norm/base/s0"]
    monkeypatch.setattr(nd, "map_chunks", lambda client, fn, chunks, *a, on_done=None:
                        [distributed.KilledWorker("task-x", SimpleNamespace(address="tcp://w:1"),
                                                  3)] * len(chunks))
    res = nd.conform_on_cluster(Client(), get_adapter("torch"), "torch", ids, known=[])
    assert [(r.case_id, r.normalizer, r.dtype, r.check, r.status) for r in res] == [
        (i, i.split("/")[0], d, "forward", "error") for i in ids for d in ("float32", "float64")]
    assert all("worker running this case died (KilledWorker" in r.reason for r in res)


# -- check ----------------------------------------------------------------------------

def _check(capsys, *argv):
    rc, out, err = _run(capsys, ["check", *NAMES, *argv])
    # the run time is the one thing that differs
    return rc, re.sub(r"failures, [\d.]+ s", "failures, T s", out)


@pytest.mark.parametrize("seeds", [[], ["--seeds", "2"]], ids=["seeds1", "seeds2"])
def test_check_on_the_cluster_prints_the_serial_table(cluster, capsys, seeds):
    serial = _check(capsys, *seeds)
    assert serial[0] == 0 and "2 normalizers, 0 failures" in serial[1]
    assert _check(capsys, *seeds, "--dask", cluster.scheduler_address) == serial


def test_check_seeds_draws_new_cases():
    from normref.check import _examples, check_unit
    from normref.registry import REGISTRY

    spec = REGISTRY["layer_norm"]
    d0, d1 = _examples(spec, 0), _examples(spec, 1)
    assert len(d0) == len(d1) > 0
    assert all(not np.array_equal(a.args[0], b.args[0]) for a, b in zip(d0, d1))
    n0, w0, _, f0 = check_unit("layer_norm", 0)
    n1, w1, _, f1 = check_unit("layer_norm", 1)
    assert (n0, n1, f0, f1) == (len(d0), len(d1), [], [])
    assert w0 != w1


# -- --seeds on the catalogue ---------------------------------------------------------

def test_seeds_give_every_variant_seeds_s0_to_sN():
    default = catalogue(["rms_norm"])
    two = catalogue(["rms_norm"], seeds=2)
    plan = variants("rms_norm")
    assert [c.id for c in two] == [f"rms_norm/{v}/s{s}" for v in plan for s in (0, 1)]
    adversarial = [v for v, (row, _) in plan.items() if row is not None]
    assert adversarial
    for v in adversarial:  # one seed by default, two now
        assert sum(c.id.startswith(f"rms_norm/{v}/") for c in default) == 1
    assert len({c.id for c in two}) == len(two) == 2 * len(plan)
    for c in two:
        r = case_from_id(c.id)
        assert r.kwargs == c.kwargs
        assert all(np.array_equal(a, b, equal_nan=True) if isinstance(a, np.ndarray) else a == b
                   for a, b in zip(r.args, c.args))
    by_id = {c.id: c for c in two}
    for v in plan:  # s1 is a new draw, not a copy of s0
        a, b = by_id[f"rms_norm/{v}/s0"].args[0], by_id[f"rms_norm/{v}/s1"].args[0]
        assert a.size == 0 or not np.array_equal(a, b, equal_nan=True), v
    assert [c.id for c in catalogue(["rms_norm"], seeds=None)] == [c.id for c in default]
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="seeds must be a positive integer"):
            catalogue(["rms_norm"], seeds=bad)


def test_conform_seeds_sweeps_the_seeded_catalogue(tmp_path, capsys):
    pytest.importorskip("torch")
    path = tmp_path / "r.json"
    rc, out, err = _run(capsys, ["conform", "--target", "torch", "--names", "rms_norm",
                                 "--dtype", "float64", "--seeds", "2", "--json", str(path),
                                 "--quiet"])
    ids = list(dict.fromkeys(re.findall(r'"case": "([^"]+)"', path.read_text())))
    assert ids == [c.id for c in catalogue(["rms_norm"], seeds=2)]
    assert f"conform: torch: {len(ids)} cases" in err


# -- errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["0", "-3", "two", "1.5"])
@pytest.mark.parametrize("command", [["check", "rms_norm"], ["conform", "--target", "torch"]])
def test_bad_seeds_is_a_usage_error(capsys, command, value):
    rc, out, err = _run(capsys, [*command, "--seeds", value])
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert f"--seeds: invalid value {value!r}: expected a positive integer" in err


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("command", [["check", "rms_norm"],
                                     ["conform", "--target", "torch", "--names", "rms_norm"]])
def test_unreachable_scheduler_is_one_line(capsys, command):
    import dask

    address = f"tcp://127.0.0.1:{_closed_port()}"
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        rc, out, err = _run(capsys, [*command, "--dask", address])
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"--dask {address}: cannot reach the Dask scheduler at {address}" in lines[0]
    assert "Traceback" not in err


def test_malformed_addresses_are_refused_before_connecting(capsys):
    # a normalizer name after a bare --dask is taken as its value
    rc, out, err = _run(capsys, ["check", "--dask", "layer_norm"])
    assert rc == 2 and "--dask layer_norm: 'layer_norm' is not a scheduler address" in err
    assert "put the names before a bare --dask" in err and len(err.strip().splitlines()) == 1
    rc, out, err = _run(capsys, ["check", "rms_norm", "--dask", "foo://x:1"])
    assert rc == 2 and "--dask foo://x:1:" in err and "unknown address scheme 'foo'" in err
    assert len(err.strip().splitlines()) == 1


def test_missing_dask_names_the_extra(capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "distributed", None)
    for argv in (["check", "rms_norm", "--dask"],
                 ["conform", "--target", "torch", "--dask", "tcp://127.0.0.1:8786"]):
        rc, out, err = _run(capsys, argv)
        assert rc == 2 and out == ""
        assert 'pip install "normref[dask]"' in err and len(err.strip().splitlines()) == 1


def test_second_order_refuses_sweep_options(capsys):
    for opt in (["--dask"], ["--seeds", "2"]):
        rc, out, err = _run(capsys, ["conform", "--second-order", "--target", "torch", *opt])
        assert rc == 2 and f"{opt[0]}: --second-order" in err


def test_a_worker_unlike_this_process_is_refused():
    """Other package versions or thread settings on a worker, or a target it cannot
    build: ValueError naming the worker and the difference."""
    class Client:
        def __init__(self, edit):
            self.edit = edit

        def run(self, fn, *args):
            error, versions, threads = fn(*args)
            return {"tcp://10.0.0.7:4000": self.edit(error, dict(versions), dict(threads))}

    def older_numpy_one_thread(error, versions, threads):
        versions["numpy"] = "1.0.0"
        threads["OMP_NUM_THREADS"] = "17"
        return error, versions, threads

    nd.check_software(Client(lambda *r: r))  # itself: accepted
    with pytest.raises(ValueError) as e:
        nd.check_software(Client(older_numpy_one_thread))
    msg = str(e.value)
    assert "worker tcp://10.0.0.7:4000 runs numpy 1.0.0 (here " in msg
    assert f"OMP_NUM_THREADS=17 (here {os.environ.get('OMP_NUM_THREADS', 'unset')})" in msg
    with pytest.raises(ValueError, match="cannot build the 'no-such-target' adapter"):
        nd.check_software(Client(lambda *r: r), ["no-such-target"])


def test_split_keeps_order_and_balance():
    items = list(range(10))
    chunks = nd.split(items, 4)
    assert chunks == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    assert nd.split(items, 50) == [[i] for i in items]
    assert nd.split([], 4) == []
