r"""Jacobian structure of batch, layer and RMS norm (theory item 7).

For one statistics group of :math:`m` values with :math:`\sigma^2 = \mathrm{Var}[x] + \epsilon`
and :math:`\hat x = (x - \mu)/\sigma`, the Jacobian of batch (per channel) and
layer norm (per sample) with scale :math:`\gamma` is

.. math::

    J = \frac{\gamma}{\sigma}\Big(I - \frac{\mathbf 1\mathbf 1^\top}{m}
        - \frac{\hat x\hat x^\top}{m}\Big),

symmetric, with null space :math:`\mathrm{span}\{\mathbf 1, \hat x\}` at
:math:`\epsilon = 0` and the other :math:`m - 2` eigenvalues equal to
:math:`\gamma/\sigma`; RMS norm: :math:`J = \frac{g}{r}(I - \hat x\hat x^\top/m)`,
null space :math:`\mathrm{span}\{\hat x\}`, other eigenvalues :math:`g/r`.
The rows below take ``J`` from :func:`normref.jacobian` (the closed-form block
assembly) and measure each statement with ``eps = 0``.
"""
from __future__ import annotations

import numpy as np

from .. import jacobian
from ..activations.batch_norm import batch_norm
from ..activations.layer_norm import layer_norm
from ..activations.rms_norm import rms_norm
from .claims import Alternative, Claim, register_claims

SOURCE_BN = "Ioffe & Szegedy 2015 (arXiv:1502.03167); theory item 7"
SOURCE_RMS = "Zhang & Sennrich 2019 (arXiv:1910.07467); theory item 7"


def _asym(J, scale):
    return float(np.abs(J - J.T).max() / scale)


def _null_residual(J, null, scale):
    """max over the stated null vectors of ||J v|| / (||v|| scale), and the k smallest |eigenvalues|."""
    nul = max(float(np.linalg.norm(J @ v) / (np.linalg.norm(v) * scale)) for v in null)
    ev = np.linalg.eigvalsh(0.5 * (J + J.T))
    small = np.sort(np.abs(ev))[:len(null)].max() / scale
    return max(nul, float(small))


def _rows(prefix, J, null, value, source, what, *, wrong_sym=(), wrong_null=(), wrong_values=()):
    r"""The three rows of one group, with their alternatives.

    ``wrong_sym``: (label, matrix) -- a Jacobian with a wrong term whose asymmetry the
    symmetric row must reject; ``wrong_null``: (label, matrix or null vectors) -- a wrong
    Jacobian (or a wrong null space, given as vectors) whose residual the null-space
    row must reject; ``wrong_values``: (label, value) -- wrong eigenvalue predictions.
    """
    scale = abs(value)
    sym = _asym(J, scale)
    nul = _null_residual(J, null, scale)
    ev = np.sort(np.linalg.eigvalsh(0.5 * (J + J.T)))
    k = len(null)
    order = np.argsort(np.abs(ev))
    rest = ev[order[k:]]
    null_alts = []
    for label, obj in wrong_null:
        if isinstance(obj, np.ndarray) and obj.ndim == 2 and obj.shape == J.shape:
            null_alts.append(Alternative(label, 0.0, _null_residual(obj, null, scale)))
        else:   # a wrong null space: the residual of J on those vectors
            null_alts.append(Alternative(label, 0.0, max(
                float(np.linalg.norm(J @ v) / (np.linalg.norm(v) * scale)) for v in obj)))
    return [
        Claim(f"{prefix}.symmetric", f"{what}: J = J^T (max |J - J^T| / |gamma/sigma|)", source,
              0.0, sym, 1e-14,
              alternatives=tuple(Alternative(lb, 0.0, _asym(M, scale)) for lb, M in wrong_sym)),
        Claim(f"{prefix}.null_space", f"{what}: J v = 0 for v in the stated null space (relative)",
              source, 0.0, nul, 1e-12, alternatives=tuple(null_alts)),
        Claim(f"{prefix}.eigenvalues", f"{what}: the other {J.shape[0] - k} eigenvalues equal gamma/sigma "
              "(worst one shown)", source, float(value),
              float(rest[np.argmax(np.abs(rest - value))]), 1e-12, relative=True,
              alternatives=tuple(Alternative(lb, float(v)) for lb, v in wrong_values)),
    ]


def _standardize_alternatives(x, gamma):
    """Wrong Jacobians of a standardizer of one group ``x`` (scale ``gamma``)."""
    m = x.size
    mu, sigma = x.mean(), np.sqrt(np.var(x))
    xhat = (x - mu) / sigma
    one = np.ones(m)
    I = np.eye(m)
    c = gamma / sigma
    # d sigma / dx taken as x / (m sigma) (x for x - mean): an asymmetric wrong term
    wrong_var = c * (I - np.outer(one, one) / m - np.outer(xhat, x / sigma) / m)
    # sigma treated as a constant: only the mean is differentiated
    no_var = c * (I - np.outer(one, one) / m)
    s_unb = np.sqrt(np.var(x, ddof=1))
    return dict(
        wrong_sym=[("d sigma/dx with x in place of x - mean", wrong_var)],
        wrong_null=[("sigma treated as a constant: J = (gamma/sigma)(I - 1 1^T/m)", no_var),
                    ("d sigma/dx with x in place of x - mean", wrong_var)],
        wrong_values=[("gamma / sigma with the unbiased (m - 1) variance", gamma / s_unb),
                      ("gamma / sigma^2", gamma / sigma ** 2),
                      ("(gamma / sigma)(1 - 1/m), the diagonal entry", c * (1 - 1 / m))])


@register_claims("jacobian_structure")
def claims():
    rng = np.random.default_rng(7)
    out = []
    m, C, gamma = 12, 3, 1.7
    x = rng.standard_normal((m, C)) * 2.0 + 0.5
    J = jacobian(batch_norm, x, None, None, np.full(C, gamma), None, True, 0.1, 0.0, wrt=0)
    J = J.reshape(m * C, m * C)
    idx = np.arange(m) * C  # channel 0
    xc = x[:, 0]
    sigma = np.sqrt(np.var(xc))
    xhat = (xc - xc.mean()) / sigma
    Jc = J[np.ix_(idx, idx)]
    out += _rows("item7.batch_norm", Jc, [np.ones(m), xhat], gamma / sigma,
                 SOURCE_BN, f"batch norm, one channel of m={m}", **_standardize_alternatives(xc, gamma))
    leak = float(np.abs(J[np.ix_(idx, np.setdiff1d(np.arange(m * C), idx))]).max())
    within = float(np.abs(Jc - np.diag(np.diag(Jc))).max())
    out.append(Claim("item7.batch_norm.channels_independent", "batch norm: no coupling between channels "
                     "(max |J| across channels)", SOURCE_BN, 0.0, leak, 0.0,
                     alternatives=(Alternative("channels coupled like the entries within a channel "
                                               "(max off-diagonal |J| of channel 0)", within),)))
    n = 10
    xl = rng.standard_normal((2, n)) - 1.0
    Jl = jacobian(layer_norm, xl, (n,), None, None, 0.0, wrt=0).reshape(2 * n, 2 * n)[:n, :n]
    sl = np.sqrt(np.var(xl[0]))
    out += _rows("item7.layer_norm", Jl, [np.ones(n), (xl[0] - xl[0].mean()) / sl], 1.0 / sl,
                 "Ba, Kiros & Hinton 2016 (arXiv:1607.06450); theory item 7", f"layer norm, one sample of m={n}",
                 **_standardize_alternatives(xl[0], 1.0))
    g = 0.8
    xr = rng.standard_normal((2, n)) + 0.3
    Jr = jacobian(rms_norm, xr, (n,), np.full(n, g), 0.0, wrt=0).reshape(2 * n, 2 * n)[:n, :n]
    r = np.sqrt(np.mean(xr[0] ** 2))
    x0 = xr[0]
    xh = x0 / r
    one = np.ones(n)
    sd = np.sqrt(np.var(x0))
    out += _rows("item7.rms_norm", Jr, [xh], g / r, SOURCE_RMS, f"RMS norm, one sample of m={n}",
                 # d r/dx = x / (m r); the wrong term puts 1 in place of x (asymmetric)
                 wrong_sym=[("d r/dx with 1 in place of x", (g / r) * (np.eye(n) - np.outer(xh, one) / n))],
                 wrong_null=[("r treated as a constant: J = (g/r) I", (g / r) * np.eye(n)),
                             ("layer norm's null space span{1, xhat}", [one, xh])],
                 wrong_values=[("g / sigma (the centered standard deviation)", g / sd),
                               ("g / r^2", g / r ** 2)])
    return out
