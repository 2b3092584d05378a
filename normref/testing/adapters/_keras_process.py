"""The Keras worker subprocess as seen from the parent: start, framed pickled requests, timeouts, restart, shutdown (used by :mod:`normref.testing.adapters.keras`)."""
from __future__ import annotations
import os
import select
import struct
import subprocess
import sys
import tempfile
import time
import weakref

_HEADER = struct.Struct(">Q")


class KerasWorkerError(RuntimeError):
    """The Keras worker died, timed out or sent a malformed answer."""


# -- the worker process ---------------------------------------------------------------

def _stop_process(proc, log):
    """Finalizer: ask the worker to stop, then make sure it is gone."""
    try:
        if proc.poll() is None:
            try:
                body = _frame({"op": "stop"})
                proc.stdin.write(body)
                proc.stdin.flush()
            except (OSError, ValueError):
                pass
            try:  # nothing to flush in the worker: a short grace, then the kill
                proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    finally:
        for f in (proc.stdin, proc.stdout):
            try:
                f.close()
            except (OSError, ValueError):
                pass
        try:
            log.close()
        except (OSError, ValueError):
            pass


def _frame(obj):
    import pickle

    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


class _Worker:
    """One ``_keras_worker`` subprocess for one Keras backend (started on demand)."""

    def __init__(self, backend, start_timeout=300.0, timeout=120.0, env=None):
        self.backend = backend
        self.extra_env = dict(env or {})
        self.start_timeout = float(start_timeout)
        self.timeout = float(timeout)
        self.proc = None
        self.info = None
        self.starts = 0
        self._log = None
        self._finalizer = None

    # lifecycle -------------------------------------------------------------------
    @property
    def pid(self):
        return None if self.proc is None else self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _env(self):
        import normref

        env = dict(os.environ)
        env["KERAS_BACKEND"] = self.backend
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        env.setdefault("JAX_PLATFORMS", "cpu")
        if self.backend == "jax":
            env["JAX_ENABLE_X64"] = "1"
        env.update(self.extra_env)
        root = os.path.dirname(os.path.dirname(os.path.abspath(normref.__file__)))
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in
                                                      env.get("PYTHONPATH", "").split(os.pathsep)
                                                      if p])
        return env

    def start(self):
        self.close()
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "normref.testing.adapters._keras_worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            env=self._env(), close_fds=True)
        self.starts += 1
        self._finalizer = weakref.finalize(self, _stop_process, self.proc, self._log)
        ready = self._read(self.start_timeout, "starting")
        if not isinstance(ready, dict) or ready.get("op") != "ready":
            self._kill()
            raise KerasWorkerError(f"the keras-{self.backend} worker sent {ready!r} "
                                   f"instead of its ready message")
        self.info = ready
        return ready

    def close(self):
        if self._finalizer is not None:
            self._finalizer()  # runs _stop_process once
            self._finalizer = None
        self.proc = None

    def _kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def _stderr_tail(self, n=1500):
        if self._log is None:
            return ""
        try:
            self._log.flush()
            self._log.seek(0, os.SEEK_END)
            size = self._log.tell()
            self._log.seek(max(0, size - n))
            text = self._log.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""
        return text

    def _died(self, doing):
        code = None
        if self.proc is not None:
            try:  # its pipe closed: it is exiting (or hung with a closed stdout)
                code = self.proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                pass
        tail = self._stderr_tail()
        pid = self.pid
        self._kill()
        self.close()
        msg = f"the keras-{self.backend} worker (pid {pid}) died while {doing}"
        if code is not None:
            msg += f" (exit code {code})"
        if tail:
            msg += f"; its last output: {tail[-600:]}"
        return KerasWorkerError(msg)

    # i/o ---------------------------------------------------------------------------
    def _read_exact(self, n, deadline, doing):
        fd = self.proc.stdout.fileno()
        chunks, got = [], 0
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0:
                pid = self.pid
                self._kill()
                self.close()
                raise KerasWorkerError(f"the keras-{self.backend} worker (pid {pid}) did not "
                                       f"answer within {self.timeout:g} s while {doing}; "
                                       f"killed")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                if self.proc.poll() is not None:
                    raise self._died(doing)
                continue
            chunk = os.read(fd, n - got)
            if not chunk:
                raise self._died(doing)
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _read(self, timeout, doing):
        import pickle

        deadline = time.monotonic() + timeout
        (n,) = _HEADER.unpack(self._read_exact(_HEADER.size, deadline, doing))
        body = self._read_exact(n, deadline, doing)
        try:
            return pickle.loads(body)
        except Exception as e:  # noqa: BLE001
            pid = self.pid
            self._kill()
            self.close()
            raise KerasWorkerError(f"the keras-{self.backend} worker (pid {pid}) sent an "
                                   f"unreadable answer while {doing}: {e}") from e

    def request(self, req, doing="running a case"):
        """Send ``req`` and return the answer (starting the worker if needed)."""
        if not self.alive():
            self.start()
        try:
            self.proc.stdin.write(_frame(req))
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise self._died(doing) from None
        return self._read(self.timeout, doing)


# -- reading a normref call -----------------------------------------------------------

