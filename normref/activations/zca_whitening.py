"""ZCA whitening: decorrelated batch normalization (Huang et al. 2018)."""
from __future__ import annotations

from ._whitening import bind_batch_whitening, register_batch_whitening

__all__ = ["zca_whitening"]


def zca_whitening(input, running_mean=None, running_cov=None, weight=None, bias=None, training=True,
                  momentum=0.1, eps=1e-5, *, group_size=None, running_estimate="covariance",
                  running_cov_unbiased=True):
    r"""ZCA whitening over the batch (decorrelated batch normalization).

    For each group of ``group_size`` channels (all C by default), observed
    over the batch and spatial positions as the columns of
    :math:`X \in \mathbb R^{d \times m}` (:math:`m = N \cdot H W`):

    .. math::

        X_c = X - \mu \mathbf 1^\top, \qquad
        \Sigma = \tfrac1m X_c X_c^\top + \epsilon I = D \Lambda D^\top, \qquad
        \hat X = D \Lambda^{-1/2} D^\top X_c = \Sigma^{-1/2} X_c

    Of all whitening matrices, ZCA's keeps the whitened data closest to the
    centred input in mean square; with ``group_size=1`` it is batch norm.

    With ``eps=0`` a singular covariance raises ValueError.  Derivatives
    (exact, :mod:`normref.whiten`): divided differences of l^-1/2, finite at
    repeated eigenvalues.

    Recovery, running estimates, eval mode and numerics are shared by the
    batch-whitening family (appended below from
    :data:`normref.activations._whitening.BATCH_DOC`).

    Huang, Yang, Lang & Deng 2018, Decorrelated Batch Normalization, CVPR, arXiv:1804.08450
    """
    return bind_batch_whitening("zca", "zca_whitening",
                                input, running_mean, running_cov, weight, bias,
                                training, momentum, eps, group_size=group_size,
                                running_estimate=running_estimate,
                                running_cov_unbiased=running_cov_unbiased).forward()


register_batch_whitening(
    zca_whitening, "zca",
    nop="whiten: ZCA, W = D Lambda^-1/2 D^T",
    citation="Huang, Yang, Lang & Deng 2018, Decorrelated Batch Normalization, CVPR, arXiv:1804.08450",
)
