r"""K-FAC factors of a :class:`normref.nets.MLP`, collected by the network
itself, and the K-FAC preconditioner that makes smallest eigenvalues at scale
affordable.

**Factors** (Martens & Grosse 2015, arXiv:1503.05671).  For a Linear layer
with inputs :math:`a_n` (``[a, 1]`` with a bias) and the curvature ``kind``'s
per-sample output Hessian :math:`H_n = \sum_j c_{nj} c_{nj}^\top` (its
eigen-factorization), :math:`A = \frac1N\sum_n \bar a_n \bar a_n^\top` and
:math:`B = \frac1N\sum_n\sum_j \delta_{nj}\delta_{nj}^\top`, where
:math:`\delta_{\cdot j}` is the back-propagated pre-activation gradient of the
output cotangent :math:`N c_{\cdot j}`.  For ``"fisher"`` this is the exact
expectation over the model's outputs (no sampling); for
``"empirical_fisher"`` the single cotangent :math:`r_n`.  With batch norm,
:math:`\delta` includes the batch coupling (the backward of the whole batch),
the usual practice.

**Preconditioner.**  :class:`KFACPreconditioner` is a symmetric positive
definite approximation of :math:`M^{-1}` for :math:`M` the Gauss-Newton /
Fisher matrix of the network: block diagonal over layers,

* a Linear layer: :math:`(B \otimes A + \delta_\ell I)^{-1}`, applied in the
  factors' eigenbases (:math:`B = Q_B \Lambda_B Q_B^\top`,
  :math:`A = Q_A \Lambda_A Q_A^\top`, divide by
  :math:`\lambda_{B,i}\lambda_{A,j} + \delta_\ell`), with
  :math:`\delta_\ell = \mathrm{damping}\cdot\lambda_{B,\max}\lambda_{A,\max}`;
* a Norm's per-feature affine pair :math:`(\gamma_f, \beta_f)` (weight and
  bias of shape ``(F,)``): the 2x2 block of the same expectation,
  :math:`\frac1N\sum_{n,j}(\delta_{nfj}u_{nf},\,\delta_{nfj})^{\otimes 2}`
  with :math:`u = (y - \beta)/\gamma` the normalized activation
  (:math:`\delta` the cotangent of the Norm's output), damped by
  ``damping`` times the layer's largest diagonal entry;
* any other parameter: the identity scaled by the mean of those diagonals.

It needs only the :math:`K` backward passes of the factors.  A preconditioner
changes how fast LOBPCG converges, never what it converges to (the
eigenvalues are those of :math:`M`); on a 1,085-parameter batch-norm MLP it
brings :math:`\kappa(TM)` to about :math:`6.6\cdot10^3` from
:math:`2.1\cdot10^5` (benchmarks/curvature_scale.py prints the iterations).
"""
from __future__ import annotations

import numpy as np
from scipy.sparse.linalg import LinearOperator

from ...nets import Linear, Norm

__all__ = ["KFACFactor", "KFACPreconditioner", "kfac_factors_of", "DEFAULT_DAMPING"]

#: relative damping of :class:`KFACPreconditioner` (of each block's largest eigenvalue)
DEFAULT_DAMPING = 1e-8


class KFACFactor:
    """K-FAC factors of Linear layer ``layer`` (its index in the network):
    ``A`` (inputs, with a trailing 1 when ``bias``), ``B`` (pre-activation
    gradients); ``slice`` is the layer's parameter range; ``block()`` is the
    approximation of the curvature block of ``[vec(W), b]`` ordered as the
    network's flat parameters (row-major W, then b)."""

    def __init__(self, layer, A, B, bias, start):
        self.layer, self.A, self.B, self.bias = layer, A, B, bias
        d_out, d_in1 = B.shape[0], A.shape[0]
        self.slice = slice(start, start + d_out * d_in1)

    def block(self):
        d_out, d_in1 = self.B.shape[0], self.A.shape[0]
        K = np.kron(self.B, self.A)   # index (i, j) = i * d_in1 + j: row i of [W, b]
        if not self.bias:
            return K
        d_in = d_in1 - 1
        perm = [i * d_in1 + j for i in range(d_out) for j in range(d_in)]
        perm += [i * d_in1 + d_in for i in range(d_out)]
        return K[np.ix_(perm, perm)]

    def to_matrix(self, X):
        """Flat parameter rows ``X`` (size, m) -> ``[W, b]`` blocks (d_out, d_in1, m)."""
        d_out, d_in1 = self.B.shape[0], self.A.shape[0]
        m = X.shape[1]
        if not self.bias:
            return X.reshape(d_out, d_in1, m)
        nw = d_out * (d_in1 - 1)
        return np.concatenate([X[:nw].reshape(d_out, d_in1 - 1, m),
                               X[nw:].reshape(d_out, 1, m)], axis=1)

    def from_matrix(self, Z):
        d_out, d_in1, m = Z.shape
        if not self.bias:
            return Z.reshape(d_out * d_in1, m)
        return np.concatenate([Z[:, :-1].reshape(-1, m), Z[:, -1].reshape(-1, m)])

    def __repr__(self):
        return f"KFACFactor(layer={self.layer}, A{self.A.shape}, B{self.B.shape})"


def _kind(kind):
    return "empirical_fisher" if kind == "empirical" else kind


def _cotangent_outs(nc, kind):
    r"""For each factor column j of the output Hessians, the backward ``outs``
    (cotangents of every layer's output) of the cotangent :math:`c_{\cdot j}`."""
    C, _ = nc.output_factors(_kind(kind))
    for j in range(nc.K):
        yield nc._trace.backward(C[:, :, j], params=False)[2]


def kfac_factors_of(nc, kind="fisher"):
    """:class:`KFACFactor` of every Linear layer of ``nc.net`` (a
    :class:`~normref.analysis.curvature.NetworkCurvature`) for ``kind``."""
    return _collect(nc, kind)[0]


def _collect(nc, kind):
    net, tr, N = nc.net, nc._trace, nc.N
    lin = [k for k, layer in enumerate(net.layers) if isinstance(layer, Linear)]
    norms = [k for k, layer in enumerate(net.layers) if isinstance(layer, Norm)
             and layer.per_feature and "weight" in layer.params]
    outputs = {k: (tr.inputs[k + 1] if k + 1 < len(net.layers) else tr.output) for k in norms}
    u = {}
    for k in norms:
        w = net.layers[k].params["weight"]
        b = net.layers[k].params.get("bias", 0.0)
        safe = np.where(np.abs(w) > 1e-12, w, 1.0)
        u[k] = (outputs[k] - b) / safe
    Bs = {k: 0.0 for k in lin}
    S = {k: np.zeros((3, net.layers[k].features)) for k in norms}
    for outs in _cotangent_outs(nc, kind):
        for k in lin:
            d = outs[k]            # delta_nj: the backward of the cotangent c_nj
            Bs[k] = Bs[k] + d.T @ d / N
        for k in norms:
            d = outs[k]
            du = d * u[k]
            S[k] += np.stack([(du * du).sum(0), (du * d).sum(0), (d * d).sum(0)]) / N
    offsets = net.offsets()
    factors = []
    for k in lin:
        layer = net.layers[k]
        a = tr.inputs[k]
        bias = "bias" in layer.params
        if bias:
            a = np.concatenate([a, np.ones((a.shape[0], 1))], axis=1)
        factors.append(KFACFactor(k, a.T @ a / N, np.asarray(Bs[k]), bias,
                                  offsets[k]["weight"]))
    return factors, S


class KFACPreconditioner(LinearOperator):
    """SPD approximation of the inverse of ``kind``'s curvature of the network
    of ``nc`` (a :class:`~normref.analysis.curvature.NetworkCurvature`); see the
    module docstring.  ``damping`` is relative to each block's largest eigenvalue."""

    def __init__(self, nc, kind="gauss_newton", damping=DEFAULT_DAMPING):
        super().__init__(dtype=np.float64, shape=(nc.P, nc.P))
        if not damping > 0:
            raise ValueError(f"damping must be positive, got {damping!r}")
        self.kind, self.damping = _kind(kind), float(damping)
        factors, S = _collect(nc, self.kind)
        self._lin = []
        covered = np.zeros(nc.P, bool)
        diags = []
        for f in factors:
            lamA, QA = np.linalg.eigh(f.A)
            lamB, QB = np.linalg.eigh(f.B)
            lamA, lamB = np.clip(lamA, 0.0, None), np.clip(lamB, 0.0, None)
            den = np.outer(lamB, lamA)
            den += self.damping * max(den.max(), 1e-300)
            self._lin.append((f, QA, QB, den))
            covered[f.slice] = True
            diags.append(float(np.mean(np.diag(f.B)) * np.mean(np.diag(f.A))))
        self._norm = []
        offsets = nc.net.offsets()
        for k, s in S.items():
            layer = nc.net.layers[k]
            F = layer.features
            iw = offsets[k]["weight"] + np.arange(F)
            ib = offsets[k]["bias"] + np.arange(F) if "bias" in layer.params else None
            if ib is None:
                a = s[0] + self.damping * max(s[0].max(), 1e-300)
                self._norm.append((iw, None, a, None, None))
                covered[iw] = True
            else:
                dmp = self.damping * max(s[0].max(), s[2].max(), 1e-300)
                a, b, c = s[0] + dmp, s[1], s[2] + dmp
                self._norm.append((iw, ib, a, b, c))
                covered[iw] = covered[ib] = True
            diags.append(float(np.mean(s[0] + s[2]) / 2))
        self._rest = np.flatnonzero(~covered)
        self._rest_scale = max(float(np.mean(diags)) if diags else 1.0, 1e-300)

    def _matmat(self, X):
        X = np.asarray(X, dtype=np.float64).reshape(self.shape[0], -1)
        out = np.empty_like(X)
        for f, QA, QB, den in self._lin:
            Y = f.to_matrix(X[f.slice])
            Z = np.einsum("ai,ajm,jb->ibm", QB, Y, QA, optimize=True) / den[:, :, None]
            out[f.slice] = f.from_matrix(np.einsum("ia,ajm,bj->ibm", QB, Z, QA, optimize=True))
        for iw, ib, a, b, c in self._norm:
            if ib is None:
                out[iw] = X[iw] / a[:, None]
                continue
            det = a * c - b * b
            xw, xb = X[iw], X[ib]
            out[iw] = (c[:, None] * xw - b[:, None] * xb) / det[:, None]
            out[ib] = (a[:, None] * xb - b[:, None] * xw) / det[:, None]
        out[self._rest] = X[self._rest] / self._rest_scale
        return out

    def _matvec(self, x):
        return self._matmat(np.reshape(x, (-1, 1)))[:, 0]

    _rmatvec = _matvec

    def _adjoint(self):
        return self
