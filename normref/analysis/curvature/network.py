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

import warnings
from dataclasses import replace

import numpy as np
import autograd
from autograd.differential_operators import make_hvp
from scipy.sparse.linalg import LinearOperator

from ...nets import _canonical_loss, _loss_value_and_cotangent, output_hessians
from .condition import condition_number
from .kfac import DEFAULT_DAMPING, KFACFactor, KFACPreconditioner, kfac_factors_of
from .matrices import _jhj, fisher_from_jacobian

__all__ = ["NetworkCurvature", "KFACFactor", "KINDS"]

#: curvature kinds of :meth:`NetworkCurvature.matrix` / :meth:`NetworkCurvature.operator`
KINDS = ("hessian", "gauss_newton", "fisher", "empirical_fisher")


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

    def output_factors(self, kind="gauss_newton"):
        r"""``(C, keep)``: the eigen-factorization :math:`H_n = \sum_j c_{nj}
        c_{nj}^\top` of ``kind``'s output Hessians (``C[n, :, j]`` is
        :math:`c_{nj}`, shape ``(N, K, K)``) and which factors count
        (eigenvalue above ``1e-12`` of the largest; not e.g. the softmax's
        :math:`\mathbf 1`)."""
        lam, V = np.linalg.eigh(self.output_hessians(kind))
        lam = np.clip(lam, 0.0, None)
        return V * np.sqrt(lam)[:, None, :], lam > 1e-12 * max(lam.max(), 1e-300)

    def output_rank(self, kind="gauss_newton"):
        """``m``, the number of output factors :math:`c_{nj}` that count (the size
        of :meth:`gram`): the rank of ``kind``'s matrix is at most ``m``."""
        return int(self.output_factors(kind)[1].sum())

    def gram(self, kind="gauss_newton", metric=None):
        r"""The dual of a Gauss-Newton-type ``kind``: with :math:`H_n = \sum_j c_{nj}
        c_{nj}^\top` (:meth:`output_factors`, the factors that count),
        :math:`B` the :math:`m \times P` matrix of rows
        :math:`c_{nj}^\top J_n / \sqrt N` and :math:`M = B^\top B`, the
        ``LinearOperator`` :math:`B D^2 B^\top` (:math:`m \times m`; ``metric`` a
        positive vector :math:`D`, default 1): the output-space Gram matrix (the
        empirical NTK weighted by the loss).  Its nonzero eigenvalues are exactly
        those of :math:`D M D`, and every invariance direction (:math:`J d = 0`)
        is absent by construction; each product is one backward and one forward
        pass, as for :meth:`operator`."""
        if kind not in ("gauss_newton", "fisher", "empirical_fisher"):
            raise ValueError(f"gram: kind must be a Gauss-Newton type "
                             f"('gauss_newton', 'fisher', 'empirical_fisher'), got {kind!r}")
        C, keep = self.output_factors(kind)
        C = C / np.sqrt(self.N)
        n_idx, j_idx = np.nonzero(keep)
        m = n_idx.size
        D2 = None if metric is None else np.asarray(metric, dtype=np.float64) ** 2
        net, x, tr, N, K = self.net, self.x, self._trace, self.N, self.K
        count = [0]

        def mv(u):
            count[0] += 1
            W = np.zeros((N, K, K))
            W[n_idx, :, j_idx] = C[n_idx, :, j_idx] * np.ravel(u)[:, None]
            g = tr.backward(W.sum(axis=2))[1]
            if D2 is not None:
                g = D2 * g
            _, jv = net.jvp(x, g)
            return np.einsum("mk,mk->m", C[n_idx, :, j_idx], jv[n_idx])

        op = _CountingOperator((m, m), mv)
        op._count = count
        return op

    # -- invariances and condition numbers
    def invariances(self):
        """:func:`~normref.analysis.curvature.invariances.network_invariances` here."""
        from .invariances import network_invariances

        return network_invariances(self.net, self.x, self.loss)

    def condition(self, kind="gauss_newton", method="dense", *, invariances=True, metric=True,
                  preconditioner="kfac", space="primal", **kwargs):
        r""":func:`~normref.analysis.curvature.condition_number` of ``kind`` with the
        network's invariance directions projected out (``invariances=True``, the
        default; False: none, the threshold decides) in the scale metric
        :math:`D M D` (``metric=True``).  ``method="dense"`` builds the matrix,
        the iterative methods use :meth:`operator`; ``kwargs`` go to
        ``condition_number`` (``tol``, ``maxiter``, ``ncv``, ``block_size``, ...).

        ``space="dual"`` (Gauss-Newton types): the condition number of the
        :meth:`gram` instead, i.e. of :math:`DMD` on its range, the one that is
        finite when the batch has fewer outputs than the network parameters
        (:math:`m < P`, where the primal matrix is singular beyond the
        invariances); eigenvalues below ``rtol`` (default 1e-10) of the largest
        are excluded and reported, as for any matrix without a null space.

        ``preconditioner``: ``"kfac"`` (default) gives ``"lobpcg"`` and
        ``"shift-invert"`` the :meth:`preconditioner` of a Gauss-Newton-type
        ``kind`` (none for ``"hessian"``: the positive definite K-FAC inverse is
        no approximation of an indefinite Hessian's, and slowed shift-invert's
        MINRES from 9 s to 24 s on a 63-parameter network), None none, or a
        ``LinearOperator`` approximating :math:`M^{-1}`."""
        if space not in ("primal", "dual"):
            raise ValueError(f"space must be 'primal' or 'dual', got {space!r}")
        if space == "dual":
            D = self.invariances().metric() if metric else None
            G = self.gram(kind, metric=D)
            Md = G.matmat(np.eye(G.shape[0])) if method == "dense" else G
            rep = condition_number(Md, method=method, **kwargs)
            return replace(rep, metric=D is not None, space="dual")
        M = self.matrix(kind) if method == "dense" else self.operator(kind)
        if isinstance(preconditioner, str):
            if preconditioner != "kfac":
                raise ValueError(f"preconditioner must be 'kfac', None or a LinearOperator, "
                                 f"got {preconditioner!r}")
            use = method in ("lobpcg", "shift-invert") and kind != "hessian"
            preconditioner = self.preconditioner(kind) if use else None
        if preconditioner is not None:
            kwargs["preconditioner"] = preconditioner
        inv = self.invariances()
        D = inv.metric() if metric else None
        if not invariances:
            return condition_number(M, method=method, metric=D, **kwargs)
        U = inv.basis(metric=False)
        if kind != "hessian" and self.output_rank(kind) < self.P - U.shape[1]:
            warnings.warn(f"{kind}: the batch gives {self.output_rank(kind)} output "
                          f"directions, fewer than the {self.P - U.shape[1]} parameter "
                          f"directions kept, so the matrix is singular there and kappa is "
                          f"not finite; space='dual' gives kappa on its range",
                          RuntimeWarning, stacklevel=2)
        return condition_number(M, null_space=U if U.shape[1] else None, method=method,
                                metric=D, labels=inv.labels, **kwargs)

    # -- K-FAC
    def kfac(self, kind="fisher"):
        """A :class:`~normref.analysis.curvature.kfac.KFACFactor` per Linear layer for
        ``kind`` in ``"gauss_newton"``, ``"fisher"``, ``"empirical_fisher"``
        (``"empirical"`` is accepted)."""
        return kfac_factors_of(self, kind)

    def preconditioner(self, kind="gauss_newton", damping=DEFAULT_DAMPING):
        """:class:`~normref.analysis.curvature.kfac.KFACPreconditioner` of ``kind``."""
        return KFACPreconditioner(self, kind, damping)


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
