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
from .claims import Claim, register_claims

SOURCE_BN = "Ioffe & Szegedy 2015 (arXiv:1502.03167); theory item 7"
SOURCE_RMS = "Zhang & Sennrich 2019 (arXiv:1910.07467); theory item 7"


def _rows(prefix, J, null, value, source, what):
    scale = abs(value)
    sym = float(np.abs(J - J.T).max() / scale)
    nul = max(float(np.linalg.norm(J @ v) / (np.linalg.norm(v) * scale)) for v in null)
    ev = np.sort(np.linalg.eigvalsh(0.5 * (J + J.T)))
    k = len(null)
    order = np.argsort(np.abs(ev))
    rest = ev[order[k:]]
    small = np.abs(ev[order[:k]]).max() / scale
    return [
        Claim(f"{prefix}.symmetric", f"{what}: J = J^T (max |J - J^T| / |gamma/sigma|)", source,
              0.0, sym, 1e-14),
        Claim(f"{prefix}.null_space", f"{what}: J v = 0 for v in the stated null space (relative)",
              source, 0.0, max(nul, float(small)), 1e-12),
        Claim(f"{prefix}.eigenvalues", f"{what}: the other {J.shape[0] - k} eigenvalues equal gamma/sigma "
              "(worst one shown)", source, float(value),
              float(rest[np.argmax(np.abs(rest - value))]), 1e-12, relative=True),
    ]


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
    out += _rows("item7.batch_norm", J[np.ix_(idx, idx)], [np.ones(m), xhat], gamma / sigma,
                 SOURCE_BN, f"batch norm, one channel of m={m}")
    leak = float(np.abs(J[np.ix_(idx, np.setdiff1d(np.arange(m * C), idx))]).max())
    out.append(Claim("item7.batch_norm.channels_independent", "batch norm: no coupling between channels "
                     "(max |J| across channels)", SOURCE_BN, 0.0, leak, 0.0))
    n = 10
    xl = rng.standard_normal((2, n)) - 1.0
    Jl = jacobian(layer_norm, xl, (n,), None, None, 0.0, wrt=0).reshape(2 * n, 2 * n)[:n, :n]
    sl = np.sqrt(np.var(xl[0]))
    out += _rows("item7.layer_norm", Jl, [np.ones(n), (xl[0] - xl[0].mean()) / sl], 1.0 / sl,
                 "Ba, Kiros & Hinton 2016 (arXiv:1607.06450); theory item 7", f"layer norm, one sample of m={n}")
    g = 0.8
    xr = rng.standard_normal((2, n)) + 0.3
    Jr = jacobian(rms_norm, xr, (n,), np.full(n, g), 0.0, wrt=0).reshape(2 * n, 2 * n)[:n, :n]
    r = np.sqrt(np.mean(xr[0] ** 2))
    out += _rows("item7.rms_norm", Jr, [xr[0] / r], g / r, SOURCE_RMS, f"RMS norm, one sample of m={n}")
    return out
