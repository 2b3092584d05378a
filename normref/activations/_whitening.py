"""Argument checking, running estimates and example cases shared by the whitening normalizers.

The operation itself (block view, whitening matrices, derivatives) is
:mod:`normref.whiten`; a whitening module only names its method.
"""
from __future__ import annotations

import functools
import numbers

import numpy as np

from ..catalogue import Catalogue
from ..numerics import (all_finite, as_float64, as_optional_float64, check_choice,
                        check_finite_scalar, check_flag)
from ..layer_call import LayerCall
from ..registry import Case, Spec, register
from ..taxonomy import Area, AreaKind as A, Operation, OpKind as O, Recovery, RecoveryKind as R
from ..whiten import EVALUATIONS, METHODS, BlockView, FixedWhitening, Whitening
from ._common import commit_updates, eps_value, input_array, positive_int, running_buffer

__all__ = ["bind_batch_whitening", "bind_group_whitening", "register_batch_whitening",
           "batch_examples", "batch_catalogue", "batch_conformance_base",
           "steps", "BATCH_CONVENTIONS", "BATCH_DOC"]

BATCH_CONVENTIONS = {
    "group_size": "channels whitened together; default all C (a 2-D (N, C) input whitens all C features)",
    "running_estimate": "covariance: running covariance, W recomputed at eval (Huang et al. 2020); "
                        "whitening: running average of whitening matrices (Huang et al. 2018/2019 code)",
    "running_cov_unbiased": "True: running covariance gets m/(m-1) Sigma_data (like BN's running_var); False: biased",
    "momentum": "PyTorch direction: new = (1 - m) old + m batch",
    "eps": "added to the covariance diagonal: Sigma = Xc Xc^T / m + eps I",
}


#: the part of every batch-whitening docstring that the four methods share
#: (appended to each function's own docstring by :func:`register_batch_whitening`)
BATCH_DOC = r"""
    Recovery: ``weight`` of shape (C,) scales each channel, or of shape
    (C/group_size, group_size, group_size) colors each group
    (:math:`Y = \Gamma \hat X`, Siarohin et al. 2019); ``bias`` (C,) shifts.

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
    arguments (``running_cov`` through its symmetric part).  Training with
    one observation per channel raises ValueError, as batch norm does.

    Numerics: corrected two-pass means, covariance from the centred data
    (exact power-of-two rescaling where it could overflow or underflow), eps
    on the covariance diagonal, float64.
"""


def steps(T):
    if isinstance(T, (bool, np.bool_)) or not isinstance(T, numbers.Integral):
        raise TypeError(f"T must be a non-negative integer (Newton-Schulz steps), got {T!r}")
    T = int(T)
    if T < 0:
        raise ValueError(f"T must be a non-negative integer (Newton-Schulz steps), got {T}")
    return T


def _evaluation(evaluation):
    return check_choice("evaluation", evaluation, EVALUATIONS)


def _recovery(weight, bias, C, B, d, allow_coloring):
    w = as_optional_float64("weight", weight)
    b = as_optional_float64("bias", bias)
    if w is not None:
        ok = w.shape == (C,) or (allow_coloring and w.shape == (B, d, d))
        if not ok:
            extra = f" or {(B, d, d)} (a coloring matrix per channel group)" if allow_coloring else ""
            raise ValueError(f"weight has shape {w.shape}, expected {(C,)} (one scale per channel){extra}")
    if b is not None and b.shape != (C,):
        raise ValueError(f"bias has shape {b.shape}, expected {(C,)} (one shift per channel)")
    return w, b


def _group_size(group_size, C):
    if group_size is None:
        return max(C, 1)  # (no channels: an empty output, one-channel blocks)
    g = positive_int("group_size", group_size)
    if C % g:
        raise ValueError(f"group_size={g} must divide the number of channels C={C}")
    return g


def bind_batch_whitening(method, name, input, running_mean=None, running_cov=None, weight=None,
                         bias=None, training=True, momentum=0.1, eps=1e-5, *, group_size=None, T=5,
                         evaluation="spectral", running_estimate="covariance",
                         running_cov_unbiased=True):
    """The Plan of a batch-whitening call (pca / zca / cholesky / iter_norm)."""
    x = input_array(input, 2)
    C = x.shape[1]
    g = _group_size(group_size, C)
    view = BlockView(x.shape, "batch", g)
    w, b = _recovery(weight, bias, C, view.B, g, True)
    eps = eps_value(eps)
    T = steps(T)
    evaluation = _evaluation(evaluation)
    check_choice("running_estimate", running_estimate, ("covariance", "whitening"))
    training = check_flag("training", training)
    unbiased = check_flag("running_cov_unbiased", running_cov_unbiased)
    momentum = check_finite_scalar("momentum", momentum)
    cov_shape = (view.B, g, g)
    if not training:
        for nm, buf in (("running_mean", running_mean), ("running_cov", running_cov)):
            if buf is None:
                raise ValueError(f"{nm} is required when training=False (eval mode uses running estimates)")
        rm = as_float64("running_mean", running_mean)
        rc = as_float64("running_cov", running_cov)
        if rm.shape != (C,):
            raise ValueError(f"running_mean has shape {rm.shape}, expected {(C,)}")
        if rc.shape != cov_shape:
            raise ValueError(f"running_cov has shape {rc.shape}, expected {cov_shape} "
                             f"(C/group_size blocks of group_size x group_size)")
        fixed = FixedWhitening(rm, rc, estimate=running_estimate)
        return Whitening(x, view, method, eps=eps, T=T, evaluation=evaluation, weight=w, bias=b,
                         fixed=fixed, name=name)
    if x.size and view.m == 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input of shape {x.shape}: "
            f"the batch covariance of one observation is undefined"
        )
    rm = None if running_mean is None else running_buffer("running_mean", running_mean, (C,))
    rc = None if running_cov is None else running_buffer(
        "running_cov", running_cov, cov_shape, "C/group_size blocks of group_size x group_size")

    def update(plan):
        if plan.empty:
            return
        updates = []
        for nm, buf, est in (("running_mean", rm, lambda: plan.mu.reshape(-1)),
                             ("running_cov", rc, lambda: plan.whitening_matrices()
                              if running_estimate == "whitening"
                              else plan.data_cov * (view.m / (view.m - 1) if unbiased else 1.0))):
            if buf is None:
                continue
            old, batch = buf.astype(np.float64), est()
            with np.errstate(over="ignore", invalid="ignore"):
                new = (1.0 - momentum) * old + momentum * batch
            updates.append((nm, buf, new, all_finite(old, batch)))
        commit_updates(name, updates)

    return Whitening(x, view, method, eps=eps, T=T, evaluation=evaluation, weight=w, bias=b, name=name,
                     on_forward=update if (rm is not None or rc is not None) else None)


def bind_group_whitening(input, num_groups, weight, bias, eps, *, T=5, method="iter_norm",
                         evaluation="spectral"):
    """The Plan of a group-whitening call (per sample, across channel groups)."""
    x = input_array(input, 2)
    C = x.shape[1]
    G = positive_int("num_groups", num_groups)
    if C % G:
        raise ValueError(f"num_groups={G} must divide the number of channels C={C} (input shape {x.shape})")
    check_choice("method", method, tuple(sorted(METHODS)))
    view = BlockView(x.shape, "sample", G)
    w, b = _recovery(weight, bias, C, view.B, G, False)
    return Whitening(x, view, method, eps=eps_value(eps), T=steps(T), evaluation=_evaluation(evaluation),
                     weight=w, bias=b, name="group_whitening")


#: PCA's eigenvectors have no derivative at a repeated eigenvalue (normref raises there)
_PCA_REPEATED = ("data far below sqrt(eps) leave Sigma = eps I up to rounding, a repeated "
                 "eigenvalue where PCA's eigenvectors have no derivative: normref raises")


def batch_conformance_base(rng, o, h, iterative=False):
    """Conformance case of a batch-whitening normalizer: correlated channels in groups of
    1-3, running statistics (eval: a random positive definite covariance), affine or
    coloring.  Options: ``training``, ``stats``, ``affine``, ``coloring``, ``n``,
    ``rank_deficient`` (N = 3 observations of 4 features, row 16), ``identity_cov``
    (covariance exactly proportional to I, row 17); iter_norm (``iterative``) also
    draws ``T`` in {1, 3, 5, 7}."""
    if iterative:
        o = {**o, "T": int(rng.choice([1, 3, 5, 7]))}
    g = int(rng.integers(1, 4))
    nb = int(rng.integers(1, 3))
    C = g * nb
    sp = h.spatial(rng, 0, 1)
    n = o.get("n")
    N = max(int(rng.integers(3, 7)), g + 1) if n is None else n
    if o.get("rank_deficient"):  # fewer observations than features (row 16)
        g, nb, sp = 4, 1, ()
        C, N = 4, 3
    x = h.whitening_data(rng, N, C, sp)
    if o.get("identity_cov"):  # covariance exactly proportional to I (row 17)
        g, nb, sp = int(rng.integers(2, 4)), 1, ()
        C = g
        blk = h.identity_cov_block(rng, g, 1)
        x = np.ascontiguousarray(blk.T) + float(rng.uniform(-1, 1))
        N = x.shape[0]
    training = o.get("training", True)
    rm = rc = None
    if not training:
        rm = rng.standard_normal(C) * 0.5
        a = rng.standard_normal((nb, g, g))
        rc = a @ np.swapaxes(a, 1, 2) / g + np.eye(g)
    elif o.get("stats"):
        rm, rc = np.zeros(C), np.tile(np.eye(g), (nb, 1, 1))
    w = b = None
    if o.get("coloring"):
        w = np.eye(g) + 0.3 * rng.standard_normal((nb, g, g))
        b = rng.standard_normal(C)
    elif o.get("affine", True):
        w, b = rng.standard_normal(C) + 1.0, rng.standard_normal(C)
    eps = 0.1 if o.get("rank_deficient") else h.eps(rng)
    args = [x, rm, rc, w, b, training, h.momentum(rng), eps]
    kwargs = {"group_size": g}
    if o.get("T") is not None:
        kwargs["T"] = o["T"]
    mutates = (1, 2) if training and o.get("stats") else ()
    return args, kwargs, mutates, (slice(None), slice(0, g))


def batch_catalogue(method, iterative=False):
    """The conformance catalogue entry of a batch-whitening normalizer (one base for all,
    parameterized by ``iterative``; PCA leaves out the inputs with repeated eigenvalues)."""
    exclude = {}
    if method == "pca":
        exclude = {"tiny1e-30": _PCA_REPEATED, "subnormal32": _PCA_REPEATED,
                   "subnormal64": _PCA_REPEATED,
                   "identity_cov": "a covariance proportional to I repeats every eigenvalue: "
                                   "PCA's eigenvectors are not unique (normref raises)"}
    return Catalogue(
        base=functools.partial(batch_conformance_base, iterative=iterative),
        variants={"train_affine": {}, "train_plain": {"affine": False},
                  "train_running": {"stats": True}, "eval": {"training": False},
                  "coloring": {"coloring": True}},
        exclude=exclude,
    )


def register_batch_whitening(function, method, *, nop, citation, iterative=False):
    """Register a batch-whitening normalizer: its Spec differs from its siblings'
    only in the method, the NOP text and the paper (iter_norm adds ``T`` and
    ``evaluation``)."""
    from .. import reference

    name = function.__name__
    function.__doc__ = function.__doc__.rstrip() + "\n" + BATCH_DOC
    conventions = dict(BATCH_CONVENTIONS)
    if iterative:
        conventions["T"] = "Newton-Schulz steps, default 5"
        conventions["evaluation"] = ("spectral (exact value of the iteration, default) | "
                                     "newton (the matrix iteration)")
    return register(Spec(
        name=name,
        function=function,
        bind=functools.partial(bind_batch_whitening, method, name),
        reference=getattr(reference, name),
        family="activations",
        nap=Area(A.BATCH, "batch: (N, spatial) per channel group of group_size channels", batch=True),
        nop=Operation(O.WHITEN, nop, centres=True, whitens=True),
        nrr=Recovery((R.AFFINE, R.COLORING), "affine per channel or coloring matrix per group"),
        citation=citation,
        examples=functools.partial(batch_examples, T=5 if iterative else None),
        strategy=functools.partial(batch_strategy, iterative=iterative),
        layer=BATCH_LAYER,
        conventions=conventions,
        differentiable=("input", "weight", "bias", "running_mean", "running_cov"),
        catalogue=batch_catalogue(method, iterative),
    ))


#: the layer fact of the batch-whitening family: training mode, the features as
#: channels whitened over the cases in groups of ``group_size`` (all by default,
#: 4 of the table's 12), per-channel affine
BATCH_LAYER = LayerCall(lambda x, w, b, o: (x, None, None, w, b, True), weight=3, bias=4,
                        table={"group_size": 4})


def batch_strategy(draw, h, iterative=False):
    """Hypothesis draw of a call of a batch-whitening normalizer (``Spec.strategy``; ``h`` =
    normref.testing.strategies.HELPERS, whose ``batch_whitening`` draw the family shares)."""
    return h.batch_whitening(draw, iterative=iterative)


def batch_examples(rng, T=None):
    """Example calls shared by the batch-whitening normalizers."""
    kw = {} if T is None else {"T": T}
    x2 = rng.standard_normal((10, 4)) @ (np.eye(4) + 0.5 * rng.standard_normal((4, 4)))
    x4 = rng.standard_normal((3, 4, 2, 2))
    w4, b4 = rng.uniform(0.5, 1.5, 4), rng.standard_normal(4)
    gam = np.stack([np.eye(2) + 0.3 * rng.standard_normal((2, 2)) for _ in range(2)])
    rm, rc = rng.standard_normal(4), np.eye(4) + 0.2 * (lambda a: a + a.T)(rng.standard_normal((4, 4)))
    rc2 = np.stack([np.eye(2) * 1.5 + 0.2 * (lambda a: a + a.T)(rng.standard_normal((2, 2)))
                    for _ in range(2)])
    return [
        Case("train 2d whole group", (x2, rm.copy(), rc[None].copy(), w4, b4, True), kw, mutates=(1, 2)),
        Case("train NCHW group 2 affine", (x4, None, None, w4, b4, True), {"group_size": 2, **kw}),
        Case("train coloring", (x4, None, None, gam, b4, True), {"group_size": 2, **kw}),
        Case("train offset 1e3", (x2 + 1e3, None, None, None, None, True), kw),
        Case("train eps 0.1 channels 3", (rng.standard_normal((6, 3, 2)), None, None, None, None, True),
             {"eps": 0.1, **kw}),
        Case("eval covariance", (x4, rm, rc2, w4, b4, False), {"group_size": 2, **kw}),
    ] + ([Case("newton T=3", (x4, None, None, w4, None, True),
               {"group_size": 2, "T": 3, "evaluation": "newton"})] if T is not None else [])
