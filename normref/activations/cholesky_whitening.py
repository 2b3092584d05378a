"""Cholesky whitening of activations (Siarohin et al. 2019)."""
from __future__ import annotations

from ._whitening import bind_batch_whitening, register_batch_whitening

__all__ = ["cholesky_whitening"]


def cholesky_whitening(input, running_mean=None, running_cov=None, weight=None, bias=None, training=True,
                       momentum=0.1, eps=1e-5, *, group_size=None, running_estimate="covariance",
                       running_cov_unbiased=True):
    r"""Cholesky whitening over the batch: the inverse of the covariance's Cholesky factor.

    For each group of ``group_size`` channels (all C by default), observed
    over the batch and spatial positions as the columns of
    :math:`X \in \mathbb R^{d \times m}` (:math:`m = N \cdot H W`):

    .. math::

        X_c = X - \mu \mathbf 1^\top, \qquad
        \Sigma = \tfrac1m X_c X_c^\top + \epsilon I = D \Lambda D^\top, \qquad
        \Sigma = L L^\top, \qquad \hat X = L^{-1} X_c

    With ``eps=0`` a singular covariance raises ValueError.  Derivatives
    (exact, :mod:`normref.whiten`): through the Cholesky factor, with Phi the
    lower triangle and halved diagonal.

    Recovery, running estimates, eval mode and numerics are shared by the
    batch-whitening family (appended below from
    :data:`normref.activations._whitening.BATCH_DOC`).

    Siarohin, Sangineto & Sebe 2019, Whitening and Coloring Batch Transform for GANs, ICLR, arXiv:1806.00420
    """
    return bind_batch_whitening("cholesky", "cholesky_whitening",
                                input, running_mean, running_cov, weight, bias,
                                training, momentum, eps, group_size=group_size,
                                running_estimate=running_estimate,
                                running_cov_unbiased=running_cov_unbiased).forward()


register_batch_whitening(
    cholesky_whitening, "cholesky",
    nop="whiten: Cholesky, W = L^-1",
    citation="Siarohin, Sangineto & Sebe 2019, Whitening and Coloring Batch Transform for GANs, ICLR, arXiv:1806.00420",
)
