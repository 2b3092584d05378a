"""normref.buffers: the private input copies of derivative calls are reused only
when nothing else refers to them, and reuse never changes a derivative."""
import numpy as np
import pytest

import normref
from normref import buffers

N = buffers.MIN_BYTES // 8 * 2  # large enough to be pooled


@pytest.fixture(autouse=True)
def empty_pool():
    buffers.clear()
    yield
    buffers.clear()


def _addr(a):
    return a.__array_interface__["data"][0]


def test_idle_buffer_is_reused_and_small_ones_are_not_pooled():
    a = buffers.scratch(N)
    where = _addr(a)
    del a
    assert buffers.idle_bytes() == N * 8
    b = buffers.scratch(N)
    assert _addr(b) == where and buffers.idle_bytes() == 0
    small = buffers.scratch(10)
    assert small.shape == (10,) and buffers.idle_bytes() == 0  # not kept at all
    del small
    assert buffers.idle_bytes() == 0


def test_a_buffer_with_a_live_view_is_not_reused():
    a = buffers.scratch(N)
    where = _addr(a)
    view = a.reshape(2, -1)[:, ::3]  # any view keeps its base referenced
    del a
    b = buffers.scratch(N)
    assert _addr(b) != where
    del view
    c = buffers.scratch(N)  # now idle
    assert _addr(c) == where
    assert _addr(b) != _addr(c)


def test_pool_size_is_bounded(monkeypatch):
    monkeypatch.setattr(buffers, "MAX_BYTES", 3 * N * 8)
    held = [buffers.scratch(N) for _ in range(5)]  # all in use
    assert len(buffers._POOL) == 3  # the oldest two dropped from the pool, still held here
    assert all(h.shape == (N,) for h in held)
    del held
    assert buffers.idle_bytes() == 3 * N * 8
    buffers.clear()
    assert buffers.idle_bytes() == 0


def test_live_pullbacks_never_share_a_copy_and_mutation_after_the_call_changes_nothing():
    rng = np.random.default_rng(0)
    shape = (8, 16, 64, 72)  # 589,824 values: the private copy comes from the pool
    assert np.prod(shape) * 8 >= buffers.MIN_BYTES
    x1, x2 = rng.standard_normal(shape) + 3.0, rng.standard_normal(shape) * 2.0
    dy = rng.standard_normal(shape)
    w, b = rng.uniform(0.5, 1.5, 16), rng.standard_normal(16)
    x1_0, x2_0 = x1.copy(), x2.copy()
    want1 = normref.vjp(normref.batch_norm, x1.copy(), None, None, w, b, True)[1](dy)
    want2 = normref.vjp(normref.group_norm, x2.copy(), 4, w, b)[1](dy)
    for _ in range(3):  # later rounds take the copies of the earlier, finished ones
        _, pb1 = normref.vjp(normref.batch_norm, x1, None, None, w, b, True)
        _, pb2 = normref.vjp(normref.group_norm, x2, 4, w, b)
        x1[...] = 1.0  # the caller's arrays change after the calls: the derivatives do not
        x2 *= 0.5
        for got, want in ((pb1(dy), want1), (pb2(dy), want2)):
            for g, h in zip(got, want):
                if h is not None:
                    np.testing.assert_array_equal(g, h)
        np.copyto(x1, x1_0)
        np.copyto(x2, x2_0)
        del pb1, pb2
    assert buffers.idle_bytes() >= 2 * x1.nbytes  # both copies returned, reusable
