r"""Curvature of a :class:`normref.nets.MLP`: Hessian, Gauss-Newton, true and
empirical Fisher, dense or matrix-free, and K-FAC factors collected by the
network itself.

:class:`NetworkCurvature` fixes a network, a batch ``(x, y)`` and a loss of the
one convention (:data:`normref.nets.LOSS_CONVENTION`),

.. math:: L(\theta) = \frac1N \sum_n \ell(f_n(\theta), y_n),

and gives, at the network's current parameters :math:`\theta`:

* ``hessian()`` -- :math:`\nabla^2 L`, ``autograd.hessian`` of
  :meth:`normref.nets.MLP.reference_loss` (the autograd.numpy twin built from
  :mod:`normref.reference`); ``operator("hessian")`` is its Hessian-vector
  product (``autograd`` ``make_hvp``: one forward and gradient tape, then one
  reverse pass per product);
* ``gauss_newton()`` -- :math:`G = \frac1N\sum_n J_n^\top H_n J_n` with
  :math:`J_n = \partial f_n/\partial\theta` from
  :meth:`~normref.nets.MLP.output_jacobian` (normref's exact VJPs, batch held
  fixed, so batch norm's coupling is included) and
  :math:`H_n = \nabla^2_z\ell` (:func:`normref.nets.output_hessians`);
  ``operator("gauss_newton")`` computes :math:`\frac1N J^\top (H (J v))` with
  :math:`Jv` from :meth:`~normref.nets.MLP.jvp` (forward mode,
  :func:`normref.jvp` for the normalizers) and :math:`J^\top u` from one
  backward pass (:func:`normref.vjp`): no autograd, no dense Jacobian;
* ``fisher()`` -- the true Fisher of the loss's likelihood (softmax for
  ``"softmax_ce"``; Gaussian :math:`\mathcal N(f_n, \sigma^2 I)` for the squared
  losses, :math:`\sigma^2 = 1` for ``"squared"`` and :math:`K/2` for
  ``"mse"``, the variances for which :math:`\ell = -\log p` up to a constant):
  dense from its definition (:func:`~normref.analysis.curvature.fisher`), and
  as an operator the Gauss-Newton product with the likelihood's
  :math:`H_n` (:math:`F = G` for these likelihoods, Martens 2020, JMLR 21);
* ``fisher(empirical=True)`` -- :math:`\hat F = \frac1N\sum_n g_n g_n^\top`,
  :math:`g_n = J_n^\top r_n`, :math:`r_n = \nabla_z\ell(f_n, y_n)`: a
  Gauss-Newton matrix with the rank-one :math:`H_n = r_n r_n^\top`, which is
  how its operator is computed;
* ``kfac(kind)`` -- K-FAC factors (Martens & Grosse 2015) of every Linear
  layer: :math:`A = \frac1N\sum_n \bar a_n \bar a_n^\top` from the layer's
  inputs (``[a, 1]`` with a bias) and :math:`B = \frac1N\sum_n\sum_j
  \delta_{nj}\delta_{nj}^\top`, where :math:`\delta_{\cdot j}` is the
  back-propagated pre-activation gradient of the output cotangent
  :math:`N c_{nj}` and :math:`H_n = \sum_j c_{nj} c_{nj}^\top`
  (eigen-factorization of the ``kind``'s output Hessian).  For ``"fisher"``
  this is the exact expectation over the model's outputs (no sampling);
  for ``"empirical"`` the single cotangent :math:`r_n`.  With batch norm,
  :math:`\delta` includes the batch coupling (the backward of the whole
  batch), the usual practice.
"""
from __future__ import annotations

import numpy as np
import autograd
from autograd.differential_operators import make_hvp
from scipy.sparse.linalg import LinearOperator

from ...nets import Linear, _canonical_loss, _loss_value_and_cotangent, output_hessians
from .condition import condition_number
from .matrices import _jhj, fisher_from_jacobian

__all__ = ["NetworkCurvature", "KFACFactor", "KINDS"]

#: curvature kinds of :meth:`NetworkCurvature.matrix` / :meth:`NetworkCurvature.operator`
KINDS = ("hessian", "gauss_newton", "fisher", "empirical_fisher")


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

    def __repr__(self):
        return f"KFACFactor(layer={self.layer}, A{self.A.shape}, B{self.B.shape})"


class NetworkCurvature:
    """Curvature of ``net`` on the batch ``(x, y)`` under ``loss`` at ``theta``
    (default: the network's current parameters, which are then used throughout)."""

    def __init__(self, net, x, y, loss="squared", theta=None):
        self.net, self.loss = net, _canonical_loss(loss)
        self.x = np.asarray(x, dtype=np.float64)
        self.y = y
        if theta is not None:
            net.set_params(theta)
        self.theta = net.params
        self.P = self.theta.size
        self._trace = net.trace(self.x)
        self.z = self._trace.output
        self.N, self.K = self.z.shape

    # -- ingredients
    def loss_value(self):
        return _loss_value_and_cotangent(self.z, self.y, self.loss)[0]

    def residuals(self):
        r""":math:`r_n = \nabla_z \ell(f_n, y_n)`, shape ``(N, K)``."""
        return self.N * _loss_value_and_cotangent(self.z, self.y, self.loss)[1]

    def likelihood(self):
        """``(name, sigma2)`` of the output model whose ``-log p`` is the loss."""
        if self.loss == "softmax_ce":
            return "softmax", 1.0
        return "gaussian", (1.0 if self.loss == "squared" else self.K / 2.0)

    def output_hessians(self, kind="gauss_newton"):
        r"""The per-sample :math:`H_n` (N, K, K) whose Gauss-Newton form is ``kind``."""
        if kind == "gauss_newton":
            return np.asarray(output_hessians(self.z, self.loss, self.y))
        if kind == "fisher":
            name, s2 = self.likelihood()
            if name == "softmax":
                return np.asarray(output_hessians(self.z, "softmax_ce"))
            return np.broadcast_to(np.eye(self.K) / s2, (self.N, self.K, self.K))
        if kind == "empirical_fisher":
            r = self.residuals()
            return np.einsum("nk,nl->nkl", r, r)
        raise ValueError(f"no output Hessian for kind {kind!r}")

    def jacobian(self):
        """Per-sample output Jacobians ``(N, K, P)`` (normref's exact VJPs)."""
        return self.net.output_jacobian(self.x)

    def reference_loss(self, theta):
        return self.net.reference_loss(theta, self.x, self.y, self.loss)

    # -- dense matrices
    def hessian(self):
        H = autograd.hessian(self.reference_loss)(self.theta)
        return np.asarray(H, dtype=np.float64).reshape(self.P, self.P)

    def gauss_newton(self, kind="gauss_newton"):
        J = self.jacobian()
        return _jhj(J, self.output_hessians(kind)) / self.N

    def fisher(self, empirical=False):
        name, s2 = self.likelihood()
        targets = None
        if empirical:
            targets = (np.asarray(self.y).reshape(self.N, self.K) if name == "gaussian"
                       else _labels(self.y, self.z.shape))
        return fisher_from_jacobian(self.z, self.jacobian(), likelihood=name, targets=targets,
                                    empirical=empirical, sigma2=s2)

    def matrix(self, kind):
        if kind == "hessian":
            return self.hessian()
        if kind == "gauss_newton":
            return self.gauss_newton()
        if kind == "fisher":
            return self.fisher()
        if kind == "empirical_fisher":
            return self.fisher(empirical=True)
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    # -- operators
    def operator(self, kind):
        """``kind`` as a symmetric ``LinearOperator`` (P x P); ``.matvecs`` counts products."""
        P = self.P
        count = [0]
        if kind == "hessian":
            hvp, _ = make_hvp(self.reference_loss)(self.theta)

            def mv(v):
                count[0] += 1
                return np.asarray(hvp(np.asarray(v, dtype=np.float64).ravel()), dtype=np.float64)

        elif kind in ("gauss_newton", "fisher", "empirical_fisher"):
            Hz = self.output_hessians(kind)
            net, x, tr, N = self.net, self.x, self._trace, self.N

            def mv(v):
                count[0] += 1
                _, jv = net.jvp(x, np.asarray(v, dtype=np.float64).ravel())
                u = np.einsum("nkl,nl->nk", Hz, jv) / N
                return tr.backward(u)[1]

        else:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        op = _CountingOperator((P, P), mv)
        op._count = count
        return op

    # -- invariances and condition numbers
    def invariances(self):
        """:func:`~normref.analysis.curvature.invariances.network_invariances` here."""
        from .invariances import network_invariances

        return network_invariances(self.net, self.x, self.loss)

    def condition(self, kind="gauss_newton", method="dense", *, invariances=True, metric=True,
                  **kwargs):
        r""":func:`~normref.analysis.curvature.condition_number` of ``kind`` with the
        network's invariance directions projected out (``invariances=True``, the
        default; False: none, the threshold decides) in the scale metric
        :math:`D M D` (``metric=True``).  ``method="dense"`` builds the matrix,
        the iterative methods use :meth:`operator`; ``kwargs`` go to
        ``condition_number`` (``tol``, ``maxiter``, ``ncv``, ``block_size``, ...)."""
        M = self.matrix(kind) if method == "dense" else self.operator(kind)
        if not invariances:
            D = self.invariances().metric() if metric else None
            return condition_number(M, method=method, metric=D, **kwargs)
        inv = self.invariances()
        U = inv.basis(metric=False)
        return condition_number(M, null_space=U if U.shape[1] else None, method=method,
                                metric=inv.metric() if metric else None, labels=inv.labels,
                                **kwargs)

    # -- K-FAC
    def kfac(self, kind="fisher"):
        """A :class:`KFACFactor` per Linear layer for ``kind`` in ``"gauss_newton"``,
        ``"fisher"``, ``"empirical_fisher"`` (``"empirical"`` is accepted)."""
        if kind == "empirical":
            kind = "empirical_fisher"
        Hz = self.output_hessians(kind)
        lam, V = np.linalg.eigh(Hz)                       # H_n = V diag(lam) V^T
        C = V * np.sqrt(np.clip(lam, 0.0, None))[:, None, :]   # columns c_nj
        tr = self._trace
        lin = [k for k, layer in enumerate(self.net.layers) if isinstance(layer, Linear)]
        Bs = {k: 0.0 for k in lin}
        for j in range(self.K):
            _, _, outs = tr.backward(C[:, :, j], params=False)
            for k in lin:
                d = outs[k]           # delta_nj: the backward of the cotangent c_nj
                Bs[k] = Bs[k] + d.T @ d / self.N
        starts, i = {}, 0
        for k, layer in enumerate(self.net.layers):
            starts[k] = i
            i += layer.n_params
        out = []
        for k in lin:
            layer = self.net.layers[k]
            a = tr.inputs[k]
            bias = "bias" in layer.params
            if bias:
                a = np.concatenate([a, np.ones((a.shape[0], 1))], axis=1)
            out.append(KFACFactor(k, a.T @ a / self.N, np.asarray(Bs[k]), bias, starts[k]))
        return out


class _CountingOperator(LinearOperator):
    def __init__(self, shape, mv):
        super().__init__(dtype=np.float64, shape=shape)
        self._mv = mv

    def _matvec(self, v):
        return self._mv(np.ravel(v))

    def _rmatvec(self, v):
        return self._mv(np.ravel(v))

    @property
    def matvecs(self):
        return self._count[0]


def _labels(y, shape):
    y = np.asarray(y)
    if y.ndim == 1 and np.issubdtype(y.dtype, np.integer):
        return y
    return np.asarray(y).reshape(shape).argmax(axis=1)
