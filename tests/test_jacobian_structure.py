"""Jacobian structure of batch, layer and RMS norm (theory item 7).

Batch norm, one channel of m values: J = (gamma/sigma)(I - 1 1^T/m - xhat xhat^T/m),
symmetric, null space span{1, xhat}, the other m - 2 eigenvalues gamma/sigma
(sigma = sqrt(var + eps)).  Layer norm: the same per sample.  RMS norm:
J = (g/rms)(I - xhat xhat^T/m), null space span{xhat}, other eigenvalues g/rms.
With eps > 0 the xhat direction is not null: its eigenvalue is
(gamma/sigma) eps / (var + eps), checked too.  The Jacobians come from normref.jacobian (closed-form blocks) and are checked
against these statements, not against a copy of the formula.
"""
import numpy as np
import pytest

import normref


def _spectrum_checks(J, eigenpairs, value, m):
    """J symmetric; J v = lam v for the given (v, lam); the other eigenvalues = value."""
    scale = abs(value)
    np.testing.assert_allclose(J, J.T, rtol=0, atol=1e-14 * np.abs(J).max())
    for v, lam in eigenpairs:
        np.testing.assert_allclose(J @ v, lam * v, rtol=0, atol=1e-13 * scale * np.linalg.norm(v))
    ev = np.linalg.eigvalsh(0.5 * (J + J.T))
    known = sorted(lam for _, lam in eigenpairs)
    # remove the known eigenvalues (closest matches), the rest all equal `value`
    ev = list(ev)
    for lam in known:
        ev.pop(int(np.argmin([abs(e - lam) for e in ev])))
    np.testing.assert_allclose(ev, value, rtol=1e-12)
    assert len(ev) == m - len(eigenpairs)


@pytest.mark.parametrize("m,gamma,eps,offset", [(8, 1.0, 1e-5, 0.0), (32, 2.5, 1e-3, 1e4), (5, -0.7, 0.0, 3.0)])
def test_batch_norm_channel_jacobian(m, gamma, eps, offset):
    rng = np.random.default_rng(m)
    C = 3
    x = rng.standard_normal((m, C)) * 1.7 + offset
    w = np.full(C, gamma)
    J = normref.jacobian(normref.batch_norm, x, None, None, w, None, True, 0.1, eps, wrt=0)
    J = J.reshape(m * C, m * C)
    for c in range(C):
        idx = np.arange(m) * C + c
        block = J[np.ix_(idx, idx)]
        # channels do not interact
        others = np.setdiff1d(np.arange(m * C), idx)
        assert np.all(J[np.ix_(idx, others)] == 0)
        xc = x[:, c]
        var = np.var(xc)
        sigma = np.sqrt(var + eps)
        xhat = (xc - xc.mean()) / sigma
        # eps = 0: null space span{1, xhat}; eps > 0: xhat has eigenvalue
        # (gamma / sigma) * eps / (var + eps)
        lam = gamma / sigma * eps / (var + eps)
        if eps == 0:
            assert lam == 0
        _spectrum_checks(block, [(np.ones(m), 0.0), (xhat, lam)], gamma / sigma, m)


@pytest.mark.parametrize("m,eps", [(6, 1e-5), (16, 0.1), (9, 0.0)])
def test_layer_norm_sample_jacobian(m, eps):
    rng = np.random.default_rng(m)
    x = rng.standard_normal((4, m)) * 3 - 2
    J = normref.jacobian(normref.layer_norm, x, (m,), None, None, eps, wrt=0).reshape(4 * m, 4 * m)
    for n in range(4):
        idx = np.arange(n * m, (n + 1) * m)
        assert np.count_nonzero(J[idx][:, np.setdiff1d(np.arange(4 * m), idx)]) == 0
        var = np.var(x[n])
        sigma = np.sqrt(var + eps)
        xhat = (x[n] - x[n].mean()) / sigma
        lam = eps / (var + eps) / sigma
        _spectrum_checks(J[np.ix_(idx, idx)], [(np.ones(m), 0.0), (xhat, lam)], 1.0 / sigma, m)


@pytest.mark.parametrize("m,g,eps", [(5, 1.0, 1e-6), (12, 3.0, 1e-2), (7, 0.5, 0.0)])
def test_rms_norm_jacobian(m, g, eps):
    rng = np.random.default_rng(m)
    x = rng.standard_normal((2, m)) + 0.5
    J = normref.jacobian(normref.rms_norm, x, (m,), np.full(m, g), eps, wrt=0).reshape(2 * m, 2 * m)
    for n in range(2):
        idx = np.arange(n * m, (n + 1) * m)
        ms = np.mean(x[n] ** 2)
        rms = np.sqrt(ms + eps)
        xhat = x[n] / rms
        lam = g / rms * eps / (ms + eps)
        _spectrum_checks(J[np.ix_(idx, idx)], [(xhat, lam)], g / rms, m)
        # centering is not in the null space of RMS norm
        assert np.linalg.norm(J[np.ix_(idx, idx)] @ np.ones(m)) > 1e-3 / rms


def test_per_element_gamma_breaks_symmetry_but_keeps_null_space():
    """With elementwise gamma (layer norm weight) J = diag(gamma) A: not symmetric,
    same null space {1, xhat}."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 7)), rng.uniform(0.5, 2, 7)
    J = normref.jacobian(normref.layer_norm, x, (7,), w, None, 0.0, wrt=0).reshape(7, 7)
    assert not np.allclose(J, J.T)
    sigma = np.sqrt(np.var(x))
    xhat = (x[0] - x.mean()) / sigma
    np.testing.assert_allclose(J @ np.ones(7), 0, atol=1e-13)
    np.testing.assert_allclose(J @ xhat, 0, atol=1e-13)
