"""Group whitening (Huang et al. 2021): per sample, decorrelate groups of channels."""
from __future__ import annotations

from .. import reference
from ..catalogue import Catalogue
from ..layer_call import LayerCall, REQUIRED
from ..registry import Case, Spec, register
from ..taxonomy import Area, AreaKind as A, Operation, OpKind as O, Recovery, RecoveryKind as R
from ._whitening import bind_group_whitening

__all__ = ["group_whitening"]


def _bind(input, num_groups, weight=None, bias=None, eps=1e-5, *, T=5, method="iter_norm",
          evaluation="spectral"):
    return bind_group_whitening(input, num_groups, weight, bias, eps, T=T, method=method,
                                evaluation=evaluation)


def group_whitening(input, num_groups, weight=None, bias=None, eps=1e-5, *, T=5, method="iter_norm",
                    evaluation="spectral"):
    r"""Group whitening: each sample's channel groups standardized and decorrelated.

    For one sample, the C channels (with their spatial positions) are split
    into G = ``num_groups`` groups of C/G channels, the rows of
    :math:`X \in \mathbb R^{G \times m}` (:math:`m = C/G \cdot H W`), and

    .. math::

        X_c = X - \mu \mathbf 1^\top, \qquad
        \Sigma = \tfrac1m X_c X_c^\top + \epsilon I, \qquad
        \hat X = W(\Sigma)\, X_c, \qquad y = \gamma \hat x + \beta

    with :math:`W` the IterNorm matrix of ``T`` Newton-Schulz steps
    (:math:`\Sigma_N = \Sigma/\mathrm{tr}\,\Sigma`, :math:`P_{k+1} = (3P_k -
    P_k^3\Sigma_N)/2`, :math:`W = P_T/\sqrt{\mathrm{tr}\,\Sigma}`), the
    paper's default, or ``method="zca"`` (:math:`\Sigma^{-1/2}`), ``"pca"``
    or ``"cholesky"``; ``evaluation`` as in :func:`normref.iter_norm`.  Like group norm it uses no batch statistics, so it
    has no running estimates and behaves the same in training and eval;
    ``weight`` and ``bias`` are per channel (C,).  With G = 1 it is layer
    norm over (C, H, W) up to eps (a 1 x 1 covariance).

    Numerics and derivatives as in :mod:`normref.whiten` (corrected two-pass
    means, covariance from centred data, eps on the diagonal, exact reverse
    and forward sweeps through the Newton-Schulz steps).

    Huang, Zhou, Liu, Zhu & Shao 2021, Group Whitening: Balancing Learning
    Efficiency and Representational Capacity, CVPR, arXiv:2009.13333.
    """
    return _bind(input, num_groups, weight, bias, eps, T=T, method=method,
                 evaluation=evaluation).forward()


#: the layer fact: each case, num_groups groups of its features decorrelated (3 of 4 in the table)
_LAYER = LayerCall(lambda x, w, b, o: (x, o["num_groups"], w, b), weight=2, bias=3,
                   options={"num_groups": REQUIRED}, table={"num_groups": 3})


def _strategy(draw, h):
    """Hypothesis draw of a call (``Spec.strategy``): full-rank groups without 2-value
    groups (their derivative is ~0, which finite differences cannot resolve), every method."""
    st = h.st
    G = draw(st.integers(1, 4))
    per = draw(st.integers(1, 3))
    spatial = draw(st.sampled_from([(), (2,), (2, 2)]))
    if per * h.prod(spatial) < max(G + 1, 3):
        spatial = (max(G + 1, 3),)
    N = draw(st.integers(1, 3))
    offset = draw(st.sampled_from([0.0, 1.0, 1e4]))
    scale = draw(st.sampled_from([1.0, 1e3, 2.0]) if offset == 1e4 else h.scales())
    x = draw(h.float_arrays((N, G * per) + spatial, offset=offset, scale=scale))
    w, b = h.affine(draw, (G * per,))
    kwargs = {"eps": draw(st.sampled_from([1e-5, 1e-3, 0.1])),
              "method": draw(st.sampled_from(["iter_norm", "zca", "cholesky", "pca"])),
              "T": draw(st.integers(0, 7))}
    return (x, G, w, b), kwargs


def _examples(rng):
    x = rng.standard_normal((2, 6, 2, 2))
    w, b = rng.uniform(0.5, 1.5, 6), rng.standard_normal(6)
    x2 = rng.standard_normal((3, 12))  # 3 groups of 4 values: full-rank 3 x 3 covariances
    return [
        Case("NCHW 3 groups affine", (x, 3, w, b)),
        Case("2d 3 groups", (x2, 3)),
        Case("T=2", (x, 2, w, None), {"T": 2}),
        Case("newton T=3", (x2, 2), {"T": 3, "evaluation": "newton"}),
        Case("zca 3 groups", (x, 3, None, b), {"method": "zca"}),
        Case("offset 1e3", (x2 + 1e3, 2)),
        Case("cholesky", (x, 2), {"method": "cholesky", "eps": 0.1}),
    ]


def _conformance_base(rng, o, h):
    """Conformance case: (N, G k, spatial) with at least G + 1 values per group; options
    ``method``, ``affine``, ``rank_deficient`` (G = 4 groups of one channel and 2 values)."""
    N = int(rng.integers(1, 4)) if o.get("n") is None else o["n"]
    G = int(rng.integers(1, 4))
    k = int(rng.integers(1, 4))
    sp = (max(2, -(-(G + 1) // k)),) if o.get("rank_deficient") is None else ()
    x = h.data(rng, (N, G * k) + sp)
    if o.get("rank_deficient"):  # per sample: G = 4 groups of one value (row 16)
        G, k = 4, 1
        x = h.data(rng, (N, 4, 2))
    w = b = None
    if o.get("affine", True):
        w, b = rng.standard_normal(G * k) + 1.0, rng.standard_normal(G * k)
    eps = 0.1 if o.get("rank_deficient") else h.eps(rng)
    kwargs = {"method": o.get("method", "iter_norm")}
    return [x, G, w, b, eps], kwargs, (), (0,)


register(Spec(
    name="group_whitening",
    function=group_whitening,
    bind=_bind,
    reference=reference.group_whitening,
    family="activations",
    nap=Area(A.GROUP, "group: per sample, G groups of (C/G, spatial), decorrelated across groups"),
    nop=Operation(O.WHITEN, "whiten: IterNorm (default) or ZCA / PCA / Cholesky across the G groups", centres=True, whitens=True),
    nrr=Recovery((R.AFFINE,), "affine per channel"),
    citation="Huang, Zhou, Liu, Zhu & Shao 2021, Group Whitening, CVPR, arXiv:2009.13333",
    examples=_examples,
    strategy=_strategy,
    layer=_LAYER,
    conventions={
        "num_groups": "G groups whitened against each other (positional, like group_norm)",
        "method": "iter_norm (default, T steps) | zca | pca | cholesky",
        "eps": "added to the covariance diagonal",
        "evaluation": "spectral (exact value of the iteration, default) | newton (the matrix iteration)",
    },
    differentiable=("input", "weight", "bias"),
    catalogue=Catalogue(
        base=_conformance_base,
        variants={"iter_norm": {}, "zca": {"method": "zca"}, "plain": {"affine": False}},
        exclude={"identity_cov": "the covariance is per sample over a group's channels: the "
                                 "base draws no exactly-identity covariance (row 17 is "
                                 "covered by the batch-whitening normalizers)"},
    ),
))
