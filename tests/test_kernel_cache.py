"""numba's on-disk cache never serves a kernel compiled from older helper sources.

numba keys a cached function by its own source file only, so a kernel of
normref.kernels.lp that calls the pair arithmetic of normref.kernels.scaled
would keep the old helper after an edit to scaled.py alone;
:func:`normref.kernels.restamp` keys every entry to the sources of the whole
package as well.  Every step runs in a fresh interpreter on a private copy of
the package (with its own ``__pycache__``), as a user's processes would.
"""
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import normref

pytestmark = pytest.mark.slow

# ||(3, 4)||_2 = 5 through lp_norm_rows (serial build), which returns _ldexp(Nm, eN)
PROBE = textwrap.dedent("""
    import sys
    import numpy as np
    from normref.kernels import lp
    assert lp.__file__.startswith(sys.argv[1]), lp.__file__
    if len(sys.argv) > 2:             # imported now; compute when told to
        print("ready", flush=True)
        sys.stdin.readline()
    norms, _ = lp.lp_norm_rows(np.array([[3.0, 4.0]]), 2.0)
    print(repr(float(norms[0])), sum(lp.lp_norm_rows.serial.stats.cache_hits.values()), flush=True)
""")
HELPER_OLD = "    return math.ldexp(m, e)\n"
HELPER_NEW = "    return math.ldexp(m, e + 1)\n"    # the edited helper doubles every result


def test_edit_to_a_shared_helper_is_never_served_stale(tmp_path):
    root = tmp_path / "site"
    shutil.copytree(os.path.dirname(normref.__file__), root / "normref",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    env.pop("NUMBA_DISABLE_JIT", None)
    cmd = [sys.executable, "-c", PROBE, str(root)]

    def run():
        out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        value, hits = out.stdout.split()
        return float(value), int(hits)

    assert run() == (5.0, 0)                        # compiled and saved
    # a process that imported the sources as they are now, and compiles later
    old = subprocess.Popen(cmd + ["wait"], env=env, cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        if old.stdout.readline().strip() != "ready":
            pytest.fail(old.communicate(timeout=600)[1])
        value, hits = run()
        assert value == 5.0 and hits > 0            # the cache is in use

        helper = root / "normref" / "kernels" / "scaled.py"
        text = helper.read_text()
        assert text.count(HELPER_OLD) == 1
        helper.write_text(text.replace(HELPER_OLD, HELPER_NEW))
        assert run() == (10.0, 0)                   # lp.py unchanged, its kernel recompiled

        # the older process compiles its own sources now and saves them ...
        out, err = old.communicate("go\n", timeout=600)
        assert old.returncode == 0, err
        assert float(out.split()[0]) == 5.0
    finally:
        if old.poll() is None:
            old.kill()
            old.wait()
    # ... which no process with the edited sources loads
    assert run() == (10.0, 0)
    value, hits = run()
    assert value == 10.0 and hits > 0                # and the new entry is cached again


def _dispatchers(obj):
    from numba.core.dispatcher import Dispatcher
    if isinstance(obj, Dispatcher):
        return [obj]
    return [d for d in (getattr(obj, "serial", None), getattr(obj, "parallel", None))
            if isinstance(d, Dispatcher)]


def test_every_module_calling_sibling_jit_functions_is_restamped():
    """A kernel module that uses a jitted function of another module must end with
    ``restamp(globals())``: then every cached dispatcher it defines carries the digest."""
    import importlib
    import pkgutil

    import normref.kernels as kp

    checked = 0
    for info in pkgutil.iter_modules(kp.__path__):
        mod = importlib.import_module("normref.kernels." + info.name)
        here = [d for obj in vars(mod).values() for d in _dispatchers(obj)]
        own = [d for d in here if d.py_func.__module__ == mod.__name__]
        if not own or len(own) == len(here):
            continue                            # no jitted function from a sibling module
        for d in own:
            stamp = d._cache._cache_file._source_stamp
            assert isinstance(stamp, tuple) and stamp[-1] == kp.SOURCE_DIGEST, (mod.__name__, d)
            checked += 1
    assert checked >= 20
