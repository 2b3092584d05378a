r"""Sweeps on a Dask cluster: ``conform --dask`` and ``check --dask``.

A sweep is a list of independent *units* (conformance cases, or the example
draws of ``check``), cut into contiguous chunks; each chunk is one Dask task,
run on a worker process, and the chunks' results are concatenated in the
order of the units, so the report is the serial run's, line for line and
byte for byte (``--json``).

What travels to a worker is names and ids, never objects that hold a
framework: the target name (the worker builds the adapter with
:func:`normref.testing.adapters.get_adapter`, once per process), the case
ids (rebuilt bit for bit by
:func:`normref.testing.conformance.case_from_id`), the dtypes and the known
discrepancies as loaded by the client.  The worker runs the very function of
the serial run (:func:`~normref.testing.conformance.run_conformance`,
:func:`normref.check.check_unit`) on its chunk, so an adapter exception is
the same ``error`` result, an :class:`~normref.testing.adapters.Unsupported`
the same ``skip``, as serially.  A chunk whose worker process dies (Dask's
``KilledWorker``, after its retries) becomes one ``error`` result per case and
dtype naming the worker's death; an exception that escapes the serial
function (a bug) is re-raised here, as the serial run would raise it.

Chunking: :math:`\min(n, 4 w)` chunks for :math:`n` units on :math:`w`
worker threads -- about four tasks per thread, so a slow chunk does not
leave the others idle, while the scheduler's cost (milliseconds per task)
stays far below a chunk's (each conformance case runs a framework and
normref's exact VJP).

Identical numerics: normref's numba kernels give bit-identical results at
any thread count (one row per ``prange`` iteration), but a framework's need
not: torch 2.13 sums layer norm's weight and bias gradients differently with
``OMP_NUM_THREADS=1`` than with its default two threads on a two-core
machine (last-bit differences, which move the worst element of a check).
So the workers must have the client's thread setting -- the core count and
``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS``
(:data:`THREAD_VARIABLES`) -- and the client's packages.

* A LocalCluster started here (:func:`local_cluster`) does not receive
  Dask's default ``OMP_NUM_THREADS=1`` etc.
  (``distributed.nanny.pre-spawn-environ``): its workers inherit this
  process's environment, and the variables Dask writes into it to spawn
  them are restored when the cluster closes.
* Before the sweep every worker builds the targets' adapters and reports its
  thread setting and the versions of the Python packages it has loaded
  (:func:`check_software`); a worker that differs from the client (another
  normref, NumPy or framework version; ``dask worker``'s default
  ``OMP_NUM_THREADS=1`` against an unset one here) is refused with the
  differences named, since its results would not be the serial run's.

Nothing else is set in a worker: it computes exactly what the serial run
computes.
"""
from __future__ import annotations

import contextlib
import os
import platform
import re
import sys

__all__ = ["PIP", "LOCAL", "THREAD_VARIABLES", "DaskUnavailable", "require_distributed",
           "check_address", "local_cluster", "cluster", "check_software", "split", "map_chunks",
           "conform_on_cluster", "units_on_cluster"]

#: the install line named when Dask's distributed scheduler is missing
PIP = 'pip install "normref[dask]"'

#: the ``address`` of :func:`cluster` that starts a LocalCluster (``--dask`` with no value)
LOCAL = None

#: tasks per worker thread (see the module docstring)
CHUNKS_PER_THREAD = 4

#: the environment variables that set the frameworks' thread pools (OpenMP, MKL, OpenBLAS)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class DaskUnavailable(ImportError):
    """``distributed`` cannot be imported; the message names :data:`PIP`."""


def require_distributed():
    """The ``distributed`` module, or :class:`DaskUnavailable` naming :data:`PIP`."""
    try:
        import distributed
    except ImportError as e:
        raise DaskUnavailable(f"sweeps on a Dask cluster need Dask's distributed scheduler: "
                              f"{PIP} ({e})") from None
    return distributed


def check_address(address):
    """``address`` if it reads as a scheduler address, else ValueError.

    Accepted: ``scheme://...`` (``tcp://HOST:8786``, ``tls://...``; Dask
    checks the scheme when connecting) or ``HOST:PORT``.  Anything else --
    typically a normalizer name taken as the value of ``--dask`` -- is
    refused before any connection is tried.
    """
    if not isinstance(address, str) or not (
            "://" in address or re.fullmatch(r"[^\s:/]+:\d+|\[[0-9a-fA-F:]+\]:\d+", address)):
        raise ValueError(f"{address!r} is not a scheduler address: expected tcp://HOST:PORT "
                         f"or HOST:PORT (e.g. tcp://127.0.0.1:8786)")
    return address


@contextlib.contextmanager
def local_cluster(n_workers=None):
    """A LocalCluster of ``n_workers`` (default ``os.cpu_count()``) worker
    processes of one thread each, whose environment is this process's.

    Dask's default ``distributed.nanny.pre-spawn-environ`` would start them
    with ``OMP_NUM_THREADS=1`` (and MKL, OpenBLAS likewise), which changes how
    a framework splits its reductions (torch 2.13's layer-norm weight and
    bias gradients round differently with one thread than with two): those
    variables are left as they are here.  Dask writes the variables it does
    set (``MALLOC_TRIM_THRESHOLD_``, ``PYTHONHASHSEED``) into this process's
    environment to spawn the workers; they are restored, and the cluster
    closed, when the block exits, whichever way.
    """
    distributed = require_distributed()
    import dask

    saved = dict(os.environ)
    local = None
    try:
        spawn_env = dict(dask.config.get("distributed.nanny.pre-spawn-environ") or {})
        spawn_env.update({k: None for k in THREAD_VARIABLES})
        with dask.config.set({"distributed.nanny.pre-spawn-environ": spawn_env}):
            local = distributed.LocalCluster(n_workers=n_workers or os.cpu_count() or 1,
                                             threads_per_worker=1, processes=True,
                                             dashboard_address=None)
        yield local
    finally:
        if local is not None:
            local.close()
        for k in set(os.environ) - set(saved):
            del os.environ[k]
        os.environ.update(saved)


@contextlib.contextmanager
def cluster(address=LOCAL, targets=()):
    """A ``distributed.Client`` for the sweep: connected to the scheduler at
    ``address``, or to a :func:`local_cluster` of ``os.cpu_count()`` workers
    when ``address`` is None (closed when the block exits: return, exception
    or interrupt); its workers checked by :func:`check_software` (against this
    process as it was before the cluster started) with the adapters of
    ``targets`` built.

    Errors: :class:`DaskUnavailable`; ValueError for a malformed address or a
    worker unlike this process; OSError (one line, after Dask's connect
    timeout ``distributed.comm.timeouts.connect``) for a scheduler that cannot
    be reached.
    """
    distributed = require_distributed()
    here = _loaded_versions(), _threads_setting()
    with contextlib.ExitStack() as stack:
        if address is LOCAL:
            client = stack.enter_context(distributed.Client(stack.enter_context(local_cluster())))
        else:
            check_address(address)
            try:
                client = distributed.Client(address)
            except OSError as e:
                raise OSError(f"cannot reach the Dask scheduler at {address}: "
                              f"{' '.join(str(e).split())}") from None
            stack.enter_context(client)
        if not client.nthreads():
            raise ValueError(f"the scheduler at {client.scheduler.address} has no workers: "
                             f"start them with dask worker {client.scheduler.address}")
        check_software(client, targets, here=here)
        yield client


def split(items, n_chunks):
    """``items`` in ``n_chunks`` contiguous chunks (sizes differing by at most one, none empty)."""
    items = list(items)
    n = max(1, min(int(n_chunks), len(items)))
    q, r = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        stop = start + q + (i < r)
        out.append(items[start:stop])
        start = stop
    return [c for c in out if c]


def _threads(client):
    return max(1, sum(client.nthreads().values()))


def map_chunks(client, fn, chunks, *args, on_done=None):
    """``[fn(chunk, *args) for chunk in chunks]``, each call a task on the cluster.

    Results come back in the order of ``chunks`` whatever order the tasks
    finish in; ``on_done(i)`` is called as chunk ``i`` finishes (a progress
    bar).  ``fn`` must be importable on the workers (a module-level function
    of normref).  A task whose worker dies raises ``KilledWorker`` from the
    returned chunk slot: ``map_chunks`` returns it *as the result* (the caller
    decides how to report it); any other exception propagates.
    """
    distributed = require_distributed()
    futures = [client.submit(fn, chunk, *args, pure=False) for chunk in chunks]
    index = {f.key: i for i, f in enumerate(futures)}
    out = [None] * len(futures)
    try:
        for f in distributed.as_completed(futures):
            i = index[f.key]
            try:
                out[i] = f.result()
            except distributed.KilledWorker as e:
                out[i] = e
            if on_done is not None:
                on_done(i)
    finally:
        for f in futures:
            f.release()
    return out


# -- the software every worker runs -------------------------------------------------

def _loaded_versions():
    """``{top-level module: __version__}`` of the loaded packages that declare one."""
    out = {"python": platform.python_version()}
    for name, mod in list(sys.modules.items()):
        if "." in name or name.startswith("_") or mod is None:
            continue
        try:
            v = mod.__dict__.get("__version__")
        except Exception:  # noqa: BLE001  (an odd module object: not a version)
            continue
        if isinstance(v, str):
            out[name] = v
    return out


def _threads_setting():
    """What sets the frameworks' thread pools here: the core count and :data:`THREAD_VARIABLES`."""
    out = {"cores": str(os.cpu_count())}
    out.update({k: os.environ.get(k, "unset") for k in THREAD_VARIABLES})
    return out


def _software(targets):
    """(worker side) build each target's adapter; return ``(error or None, package
    versions, thread setting)``."""
    import normref  # noqa: F401  (registers every normalizer)

    error = None
    for target in targets:
        try:
            _worker_adapter(target)
        except Exception as e:  # noqa: BLE001  (reported to the client, one line)
            error = f"cannot build the {target!r} adapter: {type(e).__name__}: {e}"
            break
    return error, _loaded_versions(), _threads_setting()


def check_software(client, targets=(), here=None):
    """ValueError unless every worker of ``client`` can reproduce this process's serial run.

    Each worker builds the adapters of ``targets`` (by name, as the sweep
    will) and reports the versions of the packages it has loaded and its
    thread setting (:func:`_threads_setting`).  A package loaded on both
    sides must have the same version, and the thread settings must be equal:
    the frameworks' reductions depend on their thread counts.  ``here``: this
    process's ``(versions, thread setting)`` to compare with (now by default).
    """
    import normref  # noqa: F401  (registers every normalizer)

    here, threads = here or (_loaded_versions(), _threads_setting())
    problems = []
    for worker, (error, theirs, their_threads) in sorted(client.run(_software,
                                                                    list(targets)).items()):
        if error:
            problems.append(f"worker {worker}: {error}")
            continue
        diff = [f"{k} {theirs[k]} (here {here[k]})" for k in sorted(set(here) & set(theirs))
                if here[k] != theirs[k]]
        diff += [f"{k}={their_threads.get(k)} (here {threads[k]})" for k in threads
                 if their_threads.get(k) != threads[k]]
        if diff:
            problems.append(f"worker {worker} runs {', '.join(diff)}")
    if problems:
        raise ValueError(
            "the cluster cannot reproduce the serial run: " + "; ".join(problems)
            + ". Workers need this machine's packages and thread setting (same core count; "
            + ", ".join(THREAD_VARIABLES) + " as here: dask worker sets them to 1 unless "
            "they are set when it starts)")


# -- conform ------------------------------------------------------------------------

_ADAPTERS = {}


def _worker_adapter(target):
    """The adapter of ``target`` in this (worker) process, built once by name."""
    if target not in _ADAPTERS:
        from .testing.adapters import get_adapter

        _ADAPTERS[target] = get_adapter(target)
    return _ADAPTERS[target]


def _conform_chunk(case_ids, target, dtypes, known):
    """(worker side) :func:`run_conformance` of ``target`` on the cases ``case_ids``."""
    from .testing.conformance import case_from_id, run_conformance

    cases = [case_from_id(i) for i in case_ids]
    return run_conformance(_worker_adapter(target), cases, dtypes=dtypes, progress=False,
                           known=known)


def _died(case_ids, framework, run_dtypes, error):
    from .testing.conformance import Result

    why = f"the Dask worker running this case died ({type(error).__name__}: " \
          f"{' '.join(str(error).split())})"
    return [Result(i, framework, i.split("/")[0], "forward", d, None, "error", why)
            for i in case_ids for d in run_dtypes]


def conform_on_cluster(client, adapter, target, case_ids, dtypes=None, progress=False,
                       known=None):
    """The results of ``run_conformance(adapter, cases, dtypes)``, computed on the cluster.

    ``adapter`` is the client's instance of ``target`` (for its framework name
    and dtypes only: workers build their own by name); ``case_ids`` the
    catalogue's ids in order; ``progress`` as for :func:`run_conformance`.
    The list is equal, element for element and in order, to the serial run's.
    """
    from .testing.conformance import load_known_discrepancies
    from .testing.conformance.runner import _Progress

    known = load_known_discrepancies() if known is None else known
    chunks = split(case_ids, CHUNKS_PER_THREAD * _threads(client))
    show = progress == "always" or (progress and getattr(sys.stderr, "isatty", lambda: False)())
    bar = _Progress(len(case_ids), show)

    def done(i):
        for _ in chunks[i]:
            bar.step(chunks[i][-1])

    try:
        parts = map_chunks(client, _conform_chunk, chunks, target, dtypes, known, on_done=done)
    finally:
        bar.close()
    run_dtypes = [d for d in adapter.dtypes if dtypes is None or d in dtypes]
    results = []
    for chunk, part in zip(chunks, parts):
        results += _died(chunk, adapter.framework, run_dtypes, part) \
            if isinstance(part, BaseException) else part
    return results


# -- check --------------------------------------------------------------------------

def _apply_each(chunk, fn):
    """(worker side) ``[fn(*unit) for unit in chunk]``."""
    return [fn(*unit) for unit in chunk]


def units_on_cluster(client, fn, units):
    """``[fn(*u) for u in units]`` on the cluster, in order (``fn`` module-level).

    A chunk whose worker died raises its ``KilledWorker`` here: ``check`` has
    no per-unit report for it.
    """
    chunks = split(units, CHUNKS_PER_THREAD * _threads(client))
    out = []
    for part in map_chunks(client, _apply_each, chunks, fn):
        if isinstance(part, BaseException):
            raise part
        out += part
    return out
