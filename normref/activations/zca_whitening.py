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

    then the recovery: ``weight`` of shape (C,) scales each channel, or of
    shape (C/group_size, group_size, group_size) colors each group
    (:math:`Y = \Gamma \hat X`, Siarohin et al. 2019); ``bias`` (C,) shifts.

    Of all whitening matrices, ZCA's keeps the whitened data closest to the
    centred input in mean square; with ``group_size=1`` it is batch norm.

    Training (default, ``training=True``: there is no PyTorch op to mirror and
    whitening is mostly used with batch statistics): ``running_mean`` (C,)
    and ``running_cov`` (C/group_size, group_size, group_size), if given,
    are updated in place, ``new = (1 - momentum) old + momentum batch``,
    with the unbiased data covariance :math:`X_c X_c^\top/(m-1)` (eps not
    included) -- or, with ``running_estimate="whitening"``, the batch
    whitening matrix itself.  Eval (``training=False``): the whitening
    matrix is recomputed from ``running_cov + eps I`` (Huang et al. 2020's
    recommendation) or, with ``running_estimate="whitening"``, taken as
    ``running_cov``; the running estimates are then differentiable
    arguments (``running_cov`` through its symmetric part).

    Training with one observation per channel raises ValueError, as batch
    norm does; with ``eps=0`` a singular covariance raises ValueError.

    Numerics: corrected two-pass means, covariance from the centred data,
    eps on the covariance diagonal, float64.  Derivatives are exact: see
    :mod:`normref.whiten` (divided differences of l^-1/2, finite at repeated eigenvalues).

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
