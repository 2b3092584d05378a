"""PCA whitening of activations (Desjardins et al. 2015)."""
from __future__ import annotations

from ._whitening import bind_batch_whitening, register_batch_whitening

__all__ = ["pca_whitening"]


def pca_whitening(input, running_mean=None, running_cov=None, weight=None, bias=None, training=True,
                  momentum=0.1, eps=1e-5, *, group_size=None, running_estimate="covariance",
                  running_cov_unbiased=True):
    r"""PCA whitening over the batch: decorrelate channel groups in the eigenbasis of their covariance.

    For each group of ``group_size`` channels (all C by default), observed
    over the batch and spatial positions as the columns of
    :math:`X \in \mathbb R^{d \times m}` (:math:`m = N \cdot H W`):

    .. math::

        X_c = X - \mu \mathbf 1^\top, \qquad
        \Sigma = \tfrac1m X_c X_c^\top + \epsilon I = D \Lambda D^\top, \qquad
        \hat X = \Lambda^{-1/2} D^\top X_c

    Eigenvalues are taken in descending order and each eigenvector's entry of
    largest magnitude is made positive, so the output is a function of the
    input; at repeated eigenvalues the eigenvectors are not unique and the
    derivatives raise ValueError where they would need them.

    With ``eps=0`` a singular covariance raises ValueError.  Derivatives
    (exact, :mod:`normref.whiten`): through the eigenvectors, 1 / (l_j - l_i).

    Recovery, running estimates, eval mode and numerics are shared by the
    batch-whitening family (appended below from
    :data:`normref.activations._whitening.BATCH_DOC`).

    Desjardins et al. 2015, Natural Neural Networks, NeurIPS, arXiv:1507.00210
    """
    return bind_batch_whitening("pca", "pca_whitening",
                                input, running_mean, running_cov, weight, bias,
                                training, momentum, eps, group_size=group_size,
                                running_estimate=running_estimate,
                                running_cov_unbiased=running_cov_unbiased).forward()


register_batch_whitening(
    pca_whitening, "pca",
    nop="whiten: PCA, W = Lambda^-1/2 D^T",
    citation="Desjardins et al. 2015, Natural Neural Networks, NeurIPS, arXiv:1507.00210",
)
