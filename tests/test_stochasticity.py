"""SND estimates and the whitening conditioning rows (docs/theory.md item 10, issue 5)."""
import numpy as np
import pytest

from normref.analysis import stochasticity as S


def test_snd_is_zero_when_every_batch_is_the_whole_dataset():
    X = S.correlated_data(16, 4)
    for name in ("batch_norm", "zca_whitening", "iter_norm"):
        assert S.snd(name, batch_size=16, data=X, n_points=3, n_draws=5) < 1e-13


def test_snd_matches_a_direct_estimate():
    X = S.correlated_data(64, 4, seed=3)
    got = S.snd("zca_whitening", batch_size=8, data=X, n_points=2, n_draws=10, seed=5)
    # the same draws, written out
    rng = np.random.default_rng(5)
    pts = rng.choice(64, size=2, replace=False)
    tot = 0.0
    for i in pts:
        others = np.delete(np.arange(64), i)
        outs = []
        for _ in range(10):
            idx = np.concatenate([[i], rng.choice(others, size=7, replace=False)])
            B = X[idx] - X[idx].mean(axis=0)
            l, D = np.linalg.eigh(B.T @ B / 8 + 1e-5 * np.eye(4))
            outs.append((D @ np.diag(l ** -0.5) @ D.T @ B[0]))
        outs = np.array(outs)
        tot += np.mean(np.linalg.norm(outs - outs.mean(axis=0), axis=1))
    assert got == pytest.approx(tot / 2, rel=1e-12)


def test_snd_rejects_bad_batch_sizes():
    with pytest.raises(ValueError, match="batch_size"):
        S.snd("batch_norm", batch_size=1, data=np.zeros((4, 2)))


def test_stochasticity_and_conditioning_claims_pass():
    rows = S.stochasticity_claims()
    ids = {r.id for r in rows}
    assert {"snd.zca_whitening.batch_size", "snd.cholesky_whitening.group_size", "snd.iter_norm.T",
            "conditioning.linear_unit.zca_whitening"} <= ids
    bad = [(r.id, r.predicted, r.measured) for r in rows if not r.passed]
    assert not bad, bad
    zca = next(r for r in rows if r.id == "conditioning.linear_unit.zca_whitening")
    assert 1.0 <= zca.measured < 1.01
