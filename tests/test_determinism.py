"""Results do not depend on the thread count, the serial/parallel build, or
the memory layout; importing normref compiles nothing."""
import subprocess
import sys

import numba
import numpy as np
import pytest

import normref
from normref.kernels import _dispatch as dispatch

CALLS = [
    ("batch_norm", lambda x, w, b: ((x, None, None, w, b, True), {})),
    ("group_norm", lambda x, w, b: ((x, 4, w, b), {})),
    ("layer_norm", lambda x, w, b: ((x, x.shape[-1:], np.ones(x.shape[-1]), None), {})),
    ("instance_norm", lambda x, w, b: ((x, None, None, w, b), {})),
    ("rms_norm", lambda x, w, b: ((x, x.shape[-1:], np.ones(x.shape[-1])), {})),
    ("mean_variance_norm", lambda x, w, b: ((x,), {})),
]


# offset 7: one statistics pass about 0; 1e9: the second pass about the mean
@pytest.mark.parametrize("offset", [7.0, 1e9])
@pytest.mark.parametrize("name,make", CALLS, ids=[c[0] for c in CALLS])
def test_thread_count_and_serial_build_give_identical_bits(name, make, offset, monkeypatch):
    rng = np.random.default_rng(5)
    # 61440 elements: parallel path; rows of 20: a lane tail of 4
    x = rng.standard_normal((16, 8, 24, 20)) * 3 + offset
    assert x.size >= dispatch.PARALLEL_MIN_SIZE
    w, b = rng.standard_normal(8), rng.standard_normal(8)
    dy = rng.standard_normal(x.shape)
    f = getattr(normref, name)
    args, kw = make(x, w, b)

    def run():
        y, pb = normref.vjp(f, *args, **kw)
        return [y] + [g for g in pb(dy) if g is not None]

    before = numba.get_num_threads()
    try:
        numba.set_num_threads(2)
        two = run()
        numba.set_num_threads(1)
        one = run()
    finally:
        numba.set_num_threads(before)
    monkeypatch.setattr(dispatch, "PARALLEL_MIN_SIZE", 1 << 62)  # force the serial build
    serial = run()
    for a, b_, c in zip(two, one, serial):
        np.testing.assert_array_equal(a, b_)
        np.testing.assert_array_equal(a, c)


def test_import_compiles_nothing():
    code = (
        "import normref, pkgutil, importlib\n"
        "from numba.core.dispatcher import Dispatcher\n"
        "import normref.kernels as kp\n"
        "n = seen = 0\n"
        "for m in pkgutil.iter_modules(kp.__path__):\n"
        "    mod = importlib.import_module('normref.kernels.' + m.name)\n"
        "    for obj in vars(mod).values():\n"
        "        ds = [obj] if isinstance(obj, Dispatcher) else [\n"
        "            getattr(obj, a) for a in ('serial', 'parallel') if isinstance(getattr(obj, a, None), Dispatcher)]\n"
        "        for d in ds:\n"
        "            seen += 1\n"
        "            n += len(d.signatures)\n"
        "print(n, seen)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    compiled, seen = map(int, out.stdout.split())
    assert seen >= 10 and compiled == 0
