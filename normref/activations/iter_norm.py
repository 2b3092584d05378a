"""IterNorm: whitening by Newton-Schulz iterations (Huang et al. 2019)."""
from __future__ import annotations

from ._whitening import bind_batch_whitening, register_batch_whitening

__all__ = ["iter_norm"]


def iter_norm(input, running_mean=None, running_cov=None, weight=None, bias=None, training=True,
              momentum=0.1, eps=1e-5, *, group_size=None, T=5, evaluation="spectral",
              running_estimate="covariance", running_cov_unbiased=True):
    r"""Iterative normalization: approximate ZCA whitening by T Newton-Schulz steps.

    For each group of ``group_size`` channels (all C by default), observed
    over the batch and spatial positions as the columns of
    :math:`X \in \mathbb R^{d \times m}` (:math:`m = N \cdot H W`):

    .. math::

        X_c = X - \mu \mathbf 1^\top, \qquad
        \Sigma = \tfrac1m X_c X_c^\top + \epsilon I = D \Lambda D^\top, \qquad
        \Sigma_N = \Sigma / \mathrm{tr}\,\Sigma, \quad P_0 = I, \quad P_{k+1} = \tfrac12 (3 P_k - P_k^3 \Sigma_N), \quad \hat X = \frac{P_T}{\sqrt{\mathrm{tr}\,\Sigma}} X_c

    An eigenvalue :math:`\lambda` of :math:`\Sigma_N` becomes
    :math:`\lambda p_T(\lambda)^2 \le 1` in the whitened covariance
    (:math:`p_0 = 1, p_{k+1} = (3p_k - \lambda p_k^3)/2`), which tends to 1
    as T grows: IterNorm converges to ZCA.  ``T`` (default 5) steps; the
    paper's default group is 64 channels.

    ``evaluation="spectral"`` (default) computes the iteration's exact value
    :math:`P_T = D\, p_T(\Lambda_N) D^\top` in the eigenbasis of
    :math:`\Sigma_N`: the ground truth for every T.  ``evaluation="newton"``
    runs the matrix iteration as frameworks do (and differentiates through
    its T steps); for an ill-conditioned :math:`\Sigma_N` and large T that
    iteration drifts from the exact value (rounding breaks the commutation
    of the iterates with :math:`\Sigma_N`, and the uncoupled Newton
    iteration amplifies it).

    With ``eps=0`` only a zero trace raises ValueError (IterNorm never
    inverts).  Derivatives (exact, :mod:`normref.whiten`): divided
    differences of p_T (spectral), or forward and reverse sweeps through the
    T steps and the trace (newton).

    Recovery, running estimates, eval mode and numerics are shared by the
    batch-whitening family (appended below from
    :data:`normref.activations._whitening.BATCH_DOC`).

    Huang, Zhou, Zhu, Liu & Shao 2019, Iterative Normalization: Beyond Standardization towards Efficient Whitening, CVPR, arXiv:1904.03441
    """
    return bind_batch_whitening("iter_norm", "iter_norm",
                                input, running_mean, running_cov, weight, bias,
                                training, momentum, eps, group_size=group_size,
                                T=T,
                                evaluation=evaluation,
                                running_estimate=running_estimate,
                                running_cov_unbiased=running_cov_unbiased).forward()


register_batch_whitening(
    iter_norm, "iter_norm",
    nop="whiten: Newton-Schulz iterations on the trace-normalized covariance",
    citation="Huang, Zhou, Zhu, Liu & Shao 2019, Iterative Normalization: Beyond Standardization towards Efficient Whitening, CVPR, arXiv:1904.03441",
    iterative=True,
)
