r"""The conformance kit: judge a framework's normalizers against normref.

Pieces
------
* :class:`ConformCase` and :func:`catalogue` -- every registered normalizer's
  variants (random shapes and hyper-parameters over several seeds, training /
  eval, affine or not, channels-last, and every row of the adversarial table
  for which normref gives a number), each with a stable id
  ``"<normalizer>/<variant>/s<seed>"`` from which :func:`case_from_id`
  rebuilds it bit for bit.
* :func:`round_to` / :func:`expected_outputs` / :func:`judge` -- dtype-aware
  judgement (below).
* :func:`run_conformance` -- runs an adapter
  (:mod:`normref.testing.adapters`) over the catalogue and classifies each
  check as pass / fail / xfail / xpass / skip / error against the known
  discrepancies file (``known_discrepancies.json`` next to this module).
* :func:`format_table` / :func:`results_json` -- the report; the CLI is
  ``python -m normref conform --target torch``.
* :func:`assert_conforms` -- the same judgement inside anyone's pytest.

Conventions are configured, not judged
--------------------------------------
An adapter's ``prepare`` rewrites each case into normref's options for its
framework (momentum direction, biased running variance, LRN window, eps on
the standard deviation, per-group GroupNorm scale); normref then computes
*that* function, so a convention difference never shows as an error.

Dtype-aware judgement
---------------------
For a target dtype :math:`T` (float16, float32 or float64) every float array
argument is first rounded to :math:`T` (:func:`round_to`): the framework and
normref see exactly the same values, and normref computes in float64 on them
(an exact upcast).  The error of element :math:`i` is counted in units in the
last place of :math:`T` at the scale of the output:

.. math::

    u_i = \frac{|a_i - e_i|}{\operatorname{spacing}_T\bigl(\max(|e_i|, s)\bigr)},
    \qquad s = \sqrt{\tfrac{1}{n}\textstyle\sum_j e_j^2}
    \ \text{(finite } e_j\text{)},

so an output that is (nearly) zero is judged at the magnitude of the whole
output, not at its own tiny spacing.  ``spacing`` is ``numpy.spacing`` in
:math:`T`.  NaN positions must coincide exactly (a NaN expected and produced
costs nothing; a NaN on only one side costs :math:`\infty`), as must
infinities.  The check passes when

.. math::

    \max_i u_i \le b \cdot \kappa, \qquad
    b = 16 \text{ (forward, state)},\ 64 \text{ (backward)},

where :math:`\kappa` is the conditioning of the case
(:func:`case_conditioning`): for normalizers that subtract a mean
(shift-sensitive: batch, instance, layer, group, positional, batch-group,
ghost batch and mean-variance normalization) it is the larger of
:func:`normref.check.case_cond`, :math:`1 + \max|x| / \sigma_{\min}` with
:math:`\sigma_{\min}` the standard deviation of the tightest statistics
group, and :math:`1 + \max|x| / \min_g \sqrt{\sigma_g^2 + \epsilon}` (a
constant group) -- the factor by which any algorithm working in :math:`T`
(even a correct two-pass one) may amplify the rounding of the centring --
and :math:`\kappa = 1` for the others (RMS, Lp, weight norm, LRN), whose
condition number is :math:`O(1)`.  Subnormal inputs multiply
:math:`\kappa` by :math:`\text{tiny}_T / \operatorname{rms}(x)`.  The
conditioning is one number per case (its worst group), so a badly
conditioned group loosens the whole case.

Backward checks use a larger scale where the gradient cancels: element
:math:`i` is judged at :math:`\max(|e_i|, s, t_i)` with
:math:`t = |J|^\top |\delta y|` (:func:`vjp_scale`), the size of the terms a
floating-point VJP sums.

A case is skipped for a dtype that cannot hold its inputs (1e300 in
float32, float64 subnormals in float32).
"""
from __future__ import annotations

import dataclasses
import fnmatch
import inspect
import json
import math
import os
import sys
import tempfile
import zlib
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..registry import REGISTRY, Case

__all__ = [
    "ConformCase",
    "Verdict",
    "Result",
    "ROWS_NOT_CASES",
    "SHIFT_SENSITIVE",
    "TOLERANCE_BASE",
    "catalogue",
    "case_from_id",
    "variants",
    "bound_arguments",
    "round_to",
    "as_dtype",
    "case_conditioning",
    "vjp_scale",
    "expected_outputs",
    "judge",
    "run_conformance",
    "load_known_discrepancies",
    "format_table",
    "results_json",
    "assert_conforms",
]

#: base tolerance, in ulps of the target dtype, per kind of check
TOLERANCE_BASE = {"forward": 16.0, "backward": 64.0, "state": 16.0}

#: normalizers that subtract a mean: tolerance scaled by case_cond
SHIFT_SENSITIVE = frozenset({
    "batch_norm", "instance_norm", "layer_norm", "group_norm", "positional_norm",
    "batch_group_norm", "ghost_batch_norm", "mean_variance_norm",
})

#: adversarial.md rows that are not comparison cases, and why
ROWS_NOT_CASES = {
    "3": "constant group with eps = 0: normref raises ValueError (0/0) by design; "
         "there is no number to compare with",
    "4": "batch-norm training with one value per channel (N=1, no spatial axes): normref "
         "raises ValueError like PyTorch; the legal N=1 with spatial axes IS a case "
         "(variant n1_spatial)",
    "5": "instance-norm training with one spatial element: normref raises ValueError",
    "11": "integer / bool / complex input: normref raises TypeError; nothing to compare",
    "13": "weight / bias shape mismatch: normref raises ValueError",
    "14": "num_groups <= 0 or not dividing C: normref raises ValueError",
    "18": "zero weight in weight norm: normref raises ValueError by default",
    "21": "covered by every backward check: a NaN gradient where normref's is finite "
          "costs infinite ulps",
}


# ---------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------

def _seed_of(text):
    return zlib.crc32(text.encode("utf-8"))


@dataclass(frozen=True)
class ConformCase(Case):
    """A catalogue case: a :class:`normref.registry.Case` with an identity.

    ``id``           -- ``"<normalizer>/<variant>/s<seed>"``, rebuilt by :func:`case_from_id`;
    ``name``         -- the registered normalizer;
    ``row``          -- the adversarial.md row (``"1"``, ``"2"``, ...) or None;
    ``conventions``  -- the convention keywords an adapter applied (reports, exports);
    ``dtype``        -- the dtype the float arguments are representable in
                        (set by :func:`round_to`; ``"float64"`` for a raw case).
    """

    id: str = ""
    name: str = ""
    row: str | None = None
    conventions: Mapping[str, Any] = field(default_factory=dict)
    dtype: str = "float64"

    def cotangent(self, shape):
        """The cotangent of this case for an output of ``shape``.

        Standard normal, seeded from the id (stable across runs and
        machines), rounded to :attr:`dtype` so that the framework, given it
        cast to its dtype, and normref use the same values.  Never all ones:
        a constant cotangent hides the mean-subtraction terms of a backward.
        """
        shape = tuple(int(s) for s in np.atleast_1d(np.asarray(shape, dtype=np.int64))) \
            if np.ndim(shape) else ((int(shape),) if not isinstance(shape, tuple) else shape)
        rng = np.random.default_rng([_seed_of(self.id or self.label), 0xC07])
        g = rng.standard_normal(shape)
        return g.astype(self.dtype).astype(np.float64)


def bound_arguments(case):
    """``{parameter name: value}`` of the call, defaults filled in.

    Adapters use it to read a case without caring whether an argument was
    passed positionally or by keyword.
    """
    spec = REGISTRY[case.name]
    sig = inspect.signature(spec.function)
    ba = sig.bind(*case.args, **dict(case.kwargs))
    ba.apply_defaults()
    return dict(ba.arguments)


# -- random building blocks ---------------------------------------------------

def _spatial(rng, lo=0, hi=2, smin=2, smax=4):
    nd = int(rng.integers(lo, hi + 1))
    return tuple(int(s) for s in rng.integers(smin, smax + 1, size=nd))


def _data(rng, shape):
    """Gaussian data with a random spread and a small random centre."""
    return rng.standard_normal(shape) * float(rng.uniform(0.5, 2.0)) + float(rng.uniform(-1, 1))


def _eps(rng):
    return float(rng.choice([1e-5, 1e-3, 0.1]))


def _momentum(rng):
    return float(np.round(rng.uniform(0.05, 0.5), 3))


# Each base builder returns (args list, kwargs dict, mutates tuple, group0),
# where group0 indexes one statistics group of the input (for rows 2 and 6).

def _bn_base(rng, o):
    n = o.get("n")
    N = int(rng.integers(2, 5)) if n is None else n
    C = int(rng.integers(2, 6))
    sp = o.get("spatial") or _spatial(rng, 0 if N >= 2 else 1, 2)
    if not sp and N < 4:
        N = 4
    x = _data(rng, (N, C) + sp)
    training, stats, rm, rv, w, b = _running_and_affine(rng, C, o)
    args = [x, rm, rv, w, b, training, _momentum(rng), _eps(rng)]
    kwargs = {}
    group0 = (slice(None), 0)
    if o.get("channels_last"):
        args[0] = np.ascontiguousarray(np.moveaxis(x, 1, -1))
        kwargs["channel_axis"] = -1
        group0 = (Ellipsis, 0)
    mutates = (1, 2) if training and stats else ()
    return args, kwargs, mutates, group0


def _in_base(rng, o):
    N = int(rng.integers(1, 4)) if o.get("n") is None else o["n"]
    C = int(rng.integers(1, 5))
    sp = _spatial(rng, 1, 2, 2, 5)
    x = _data(rng, (N, C) + sp)
    mode = o.get("running", "none")
    rm = rng.standard_normal(C) * 0.5 if mode != "none" else None
    rv = rng.uniform(0.5, 2.0, C) if mode != "none" else None
    affine = o.get("affine", True)
    w = rng.standard_normal(C) + 1.0 if affine else None
    b = rng.standard_normal(C) if affine else None
    use_input_stats = mode != "eval"
    args = [x, rm, rv, w, b, use_input_stats, _momentum(rng), _eps(rng)]
    mutates = (1, 2) if mode == "update" else ()
    return args, {}, mutates, (0, 0)


def _ln_base(rng, o):
    lead = tuple(int(s) for s in rng.integers(1, 5, size=int(rng.integers(1, 3))))
    if o.get("n") is not None:
        lead = (o["n"],) + lead[1:]
    norm = tuple(int(s) for s in rng.integers(2, 9, size=int(rng.integers(1, 3))))
    x = _data(rng, lead + norm)
    affine = o.get("affine", True)
    w = rng.standard_normal(norm) + 1.0 if affine else None
    b = rng.standard_normal(norm) if affine else None
    return [x, norm, w, b, _eps(rng)], {}, (), (0,) * len(lead)


def _gn_base(rng, o):
    N = int(rng.integers(1, 4)) if o.get("n") is None else o["n"]
    G = int(rng.integers(1, 4))
    k = int(rng.integers(1, 4))
    C = G * k
    sp = _spatial(rng, 0 if k > 1 else 1, 2)
    x = _data(rng, (N, C) + sp)
    pshape = (G,) if o.get("group_affine") else (C,)
    affine = o.get("affine", True)
    w = rng.standard_normal(pshape) + 1.0 if affine else None
    b = rng.standard_normal(pshape) if affine else None
    kwargs = {"affine": "group"} if o.get("group_affine") else {}
    return [x, G, w, b, _eps(rng)], kwargs, (), (0, slice(0, k))


def _rms_base(rng, o):
    lead = tuple(int(s) for s in rng.integers(1, 5, size=int(rng.integers(1, 3))))
    if o.get("n") is not None:
        lead = (o["n"],) + lead[1:]
    norm = tuple(int(s) for s in rng.integers(2, 9, size=int(rng.integers(1, 3))))
    x = _data(rng, lead + norm)
    w = rng.standard_normal(norm) + 1.0 if o.get("affine", True) else None
    eps = None if o.get("eps_none") else _eps(rng)
    return [x, norm, w, eps], {}, (), (0,) * len(lead)


def _pono_base(rng, o):
    N = int(rng.integers(1, 4)) if o.get("n") is None else o["n"]
    C = int(rng.integers(2, 7))
    sp = _spatial(rng, 0, 2)
    x = _data(rng, (N, C) + sp)
    return [x, _eps(rng)], {}, (), (0, slice(None)) + (0,) * len(sp)


def _bgn_base(rng, o):
    N = int(rng.integers(2, 4)) if o.get("n") is None else o["n"]
    G = int(rng.integers(1, 4))
    k = int(rng.integers(1, 3))
    C = G * k
    sp = _spatial(rng, 0, 2)
    x = _data(rng, (N, C) + sp)
    affine = o.get("affine", True)
    w = rng.standard_normal(C) + 1.0 if affine else None
    b = rng.standard_normal(C) if affine else None
    return [x, G, w, b, _eps(rng)], {}, (), (slice(None), slice(0, k))


def _running_and_affine(rng, C, o):
    """(training, stats, running_mean, running_var, weight, bias) of a batch-norm-like variant."""
    training = o.get("training", True)
    stats = o.get("stats", True) or not training
    rm = rng.standard_normal(C) * 0.5 if stats else None
    rv = rng.uniform(0.5, 2.0, C) if stats else None
    affine = o.get("affine", True)
    w = rng.standard_normal(C) + 1.0 if affine else None
    b = rng.standard_normal(C) if affine else None
    return training, stats, rm, rv, w, b


def _gbn_base(rng, o):
    v = int(rng.integers(2, 4))
    N = v * int(rng.integers(1, 4)) if o.get("n") is None else o["n"]
    C = int(rng.integers(1, 5))
    sp = _spatial(rng, 0, 1)
    x = _data(rng, (N, C) + sp)
    training, stats, rm, rv, w, b = _running_and_affine(rng, C, o)
    args = [x, v, rm, rv, w, b, training, _momentum(rng), _eps(rng)]
    mutates = (2, 3) if training and stats else ()
    return args, {}, mutates, (slice(0, v), 0)


_MVN_AXES = [((0, 2, 3), 4), ((2, 3), 4), ((1,), 3), ((0, -1), 3), ((1, 2), 3)]


def _mvn_base(rng, o):
    axes, nd = _MVN_AXES[int(rng.integers(len(_MVN_AXES)))]
    shape = [int(rng.integers(2, 5)) for _ in range(nd)]
    if o.get("n") is not None:
        shape[0] = o["n"]
    x = _data(rng, tuple(shape))
    kwargs = {"eps_placement": "variance"} if o.get("eps_variance") else {}
    red = {a % nd for a in axes}
    group0 = tuple(slice(None) if i in red else 0 for i in range(nd))
    eps = float(rng.choice([1e-9, 1e-5, 1e-3]))
    return [x, axes, eps], kwargs, (), group0


def _lrn_base(rng, o):
    N = int(rng.integers(1, 3)) if o.get("n") is None else o["n"]
    C = int(rng.integers(2, 8))
    sp = _spatial(rng, 1, 2)
    x = _data(rng, (N, C) + sp)
    size = o.get("size") or int(rng.choice([1, 3, 5]))
    alpha = float(np.round(rng.uniform(1e-4, 1.0), 4))
    beta = float(np.round(rng.uniform(0.5, 1.5), 3))
    k = float(np.round(rng.uniform(0.5, 2.0), 3))
    return [x, size, alpha, beta, k], {}, (), (0,)


def _normalize_base(rng, o):
    N = int(rng.integers(1, 4)) if o.get("n") is None else o["n"]
    shape = (N, int(rng.integers(2, 6))) + _spatial(rng, 0, 1)
    x = _data(rng, shape)
    p = o.get("p", float(rng.choice([1.0, 2.0, 3.0])))
    dim = int(rng.integers(1, len(shape))) if o.get("dim") is None else o["dim"]
    eps = o.get("eps", 1e-12)
    group0 = tuple(slice(None) if i == dim else 0 for i in range(len(shape)))
    return [x, p, dim, eps], {}, (), group0


def _wn_base(rng, o):
    shape = (int(rng.integers(2, 6)), int(rng.integers(2, 6))) + _spatial(rng, 0, 2, 1, 3)
    v = _data(rng, shape)
    dim = o.get("dim", 0)
    if dim is None:
        g = np.array(float(rng.uniform(0.5, 2.0)))
        group0 = (Ellipsis,)
    else:
        d = dim % len(shape)
        gshape = tuple(s if i == d else 1 for i, s in enumerate(shape))
        g = rng.standard_normal(gshape) + 1.5
        group0 = tuple(slice(None) if i != d else 0 for i in range(len(shape)))
    return [v, g, dim], {}, (), group0


def _whitening_data(rng, N, C, sp):
    """Correlated channels: Gaussian data mixed by a random matrix near I."""
    mix = np.eye(C) + 0.5 * rng.standard_normal((C, C))
    return np.einsum("dc,nc...->nd...", mix, _data(rng, (N, C) + sp))


def _identity_cov_block(rng, g, reps):
    """A (g, 4 * reps) block with covariance exactly I: orthogonal +-1 rows (row 17)."""
    H = np.array([[1.0, 1.0], [1.0, -1.0]])
    while H.shape[0] < g + 1:
        H = np.kron(H, np.array([[1.0, 1.0], [1.0, -1.0]]))
    rows = H[1:g + 1]  # orthogonal to the all-ones row: centred, norms equal
    return np.tile(rows, (1, reps)) * float(rng.choice([1.0, 2.0, 0.5]))


def _bw_base(rng, o):
    """Batch whitening (pca / zca / cholesky / iter_norm)."""
    g = int(rng.integers(1, 4))
    nb = int(rng.integers(1, 3))
    C = g * nb
    sp = _spatial(rng, 0, 1)
    n = o.get("n")
    N = max(int(rng.integers(3, 7)), g + 1) if n is None else n
    if o.get("rank_deficient"):  # fewer observations than features (row 16)
        g, nb, sp = 4, 1, ()
        C, N = 4, 3
    x = _whitening_data(rng, N, C, sp)
    if o.get("identity_cov"):  # covariance exactly proportional to I (row 17)
        g, nb, sp = int(rng.integers(2, 4)), 1, ()
        C = g
        blk = _identity_cov_block(rng, g, 1)
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
    eps = 0.1 if o.get("rank_deficient") else _eps(rng)
    args = [x, rm, rc, w, b, training, _momentum(rng), eps]
    kwargs = {"group_size": g}
    if o.get("T") is not None:
        kwargs["T"] = o["T"]
    mutates = (1, 2) if training and o.get("stats") else ()
    return args, kwargs, mutates, (slice(None), slice(0, g))


def _iter_norm_base(rng, o):
    return _bw_base(rng, {**o, "T": int(rng.choice([1, 3, 5, 7]))})


def _gw_base(rng, o):
    N = int(rng.integers(1, 4)) if o.get("n") is None else o["n"]
    G = int(rng.integers(1, 4))
    k = int(rng.integers(1, 4))
    sp = (max(2, -(-(G + 1) // k)),) if o.get("rank_deficient") is None else ()
    x = _data(rng, (N, G * k) + sp)
    if o.get("rank_deficient"):  # per sample: G = 4 groups of one value (row 16)
        G, k = 4, 1
        x = _data(rng, (N, 4, 2))
    w = b = None
    if o.get("affine", True):
        w, b = rng.standard_normal(G * k) + 1.0, rng.standard_normal(G * k)
    eps = 0.1 if o.get("rank_deficient") else _eps(rng)
    kwargs = {"method": o.get("method", "iter_norm")}
    return [x, G, w, b, eps], kwargs, (), (0,)


_BASES = {
    "pca_whitening": _bw_base,
    "zca_whitening": _bw_base,
    "cholesky_whitening": _bw_base,
    "iter_norm": _iter_norm_base,
    "group_whitening": _gw_base,
    "batch_norm": _bn_base,
    "instance_norm": _in_base,
    "layer_norm": _ln_base,
    "group_norm": _gn_base,
    "rms_norm": _rms_base,
    "positional_norm": _pono_base,
    "batch_group_norm": _bgn_base,
    "ghost_batch_norm": _gbn_base,
    "mean_variance_norm": _mvn_base,
    "local_response_norm": _lrn_base,
    "normalize": _normalize_base,
    "weight_norm": _wn_base,
}

#: index of the eps argument (positional) per normalizer, for row 19
_EPS_SLOT = {
    "batch_norm": 7, "instance_norm": 7, "layer_norm": 4, "group_norm": 4, "rms_norm": 3,
    "positional_norm": 1, "batch_group_norm": 4, "ghost_batch_norm": 8,
    "mean_variance_norm": 2,
}
_MOMENTUM_SLOT = {"batch_norm": 6, "instance_norm": 6, "ghost_batch_norm": 7}

#: random variants: name -> (options, number of seeds)
_RANDOM = {
    "batch_norm": {
        "train_affine": {}, "train_plain": {"affine": False},
        "train_nostats": {"stats": False}, "eval_affine": {"training": False},
        "eval_plain": {"training": False, "affine": False},
        "channels_last_train": {"channels_last": True},
        "channels_last_eval": {"channels_last": True, "training": False},
    },
    "instance_norm": {
        "affine": {}, "plain": {"affine": False}, "running_update": {"running": "update"},
        "running_eval": {"running": "eval"},
    },
    "layer_norm": {"affine": {}, "plain": {"affine": False}},
    "group_norm": {"affine": {}, "plain": {"affine": False},
                   "group_affine": {"group_affine": True}},
    "rms_norm": {"affine": {}, "plain": {"affine": False}, "eps_none": {"eps_none": True}},
    "positional_norm": {"random": {}},
    "batch_group_norm": {"affine": {}, "plain": {"affine": False}},
    "ghost_batch_norm": {"train_affine": {}, "train_nostats": {"stats": False},
                         "eval": {"training": False}},
    "mean_variance_norm": {"random": {}, "eps_variance": {"eps_variance": True}},
    "local_response_norm": {"random": {}},
    "normalize": {"p2": {"p": 2.0}, "p1": {"p": 1.0}, "p3": {"p": 3.0},
                  "pinf": {"p": math.inf}},
    "weight_norm": {"dim0": {"dim": 0}, "dim1": {"dim": 1}, "dim_last": {"dim": -1},
                    "dim_none": {"dim": None}},
    **{n: {"train_affine": {}, "train_plain": {"affine": False},
           "train_running": {"stats": True}, "eval": {"training": False},
           "coloring": {"coloring": True}}
       for n in ("pca_whitening", "zca_whitening", "cholesky_whitening", "iter_norm")},
    "group_whitening": {"iter_norm": {}, "zca": {"method": "zca"},
                        "plain": {"affine": False}},
}
RANDOM_SEEDS = 3
ADVERSARIAL_SEEDS = 1

#: adversarial variants: name -> (adversarial.md row, applies to)
_ALL = frozenset(_BASES)
_STANDARDIZERS = SHIFT_SENSITIVE
_WHITENING = frozenset({"pca_whitening", "zca_whitening", "cholesky_whitening", "iter_norm",
                        "group_whitening"})
_ADVERSARIAL = {
    "offset1e4": ("1", _ALL),
    "offset1e8": ("1", _STANDARDIZERS),
    "const_group": ("2", _STANDARDIZERS | {"rms_norm", "normalize"}),
    "n1_spatial": ("4", frozenset({"batch_norm"})),
    "nan_group": ("6", _ALL),
    # (pca_whitening: data far below sqrt(eps) leave Sigma = eps I to rounding, a
    # repeated eigenvalue where PCA's eigenvectors have no derivative: it raises)
    "tiny1e-30": ("7", _ALL - {"weight_norm", "normalize", "local_response_norm", "pca_whitening"}),
    "subnormal32": ("8", _ALL - {"weight_norm", "normalize", "pca_whitening"}),
    "subnormal64": ("8", _ALL - {"weight_norm", "normalize", "pca_whitening"}),
    "empty_batch": ("9", _ALL - {"weight_norm"}),
    "noncontiguous": ("10", _ALL),
    "float16": ("12", _ALL),
    "huge1e30": ("15", _ALL),
    "huge1e300": ("15", _ALL),
    "neg_eps_momentum": ("19", frozenset(_EPS_SLOT) - {"mean_variance_norm"}),
    "rank_deficient": ("16", _WHITENING),
    "identity_cov": ("17", _WHITENING - {"pca_whitening", "group_whitening"}),
    "lrn_size2": ("20", frozenset({"local_response_norm"})),
    "lrn_size4": ("20", frozenset({"local_response_norm"})),
    "lrn_size6": ("20", frozenset({"local_response_norm"})),
}

# variant -> (base options, transform of the built case)
_ADV_OPTIONS = {
    "n1_spatial": {"n": 1, "spatial": (2, 3)},
    "empty_batch": {"n": 0},
    "rank_deficient": {"rank_deficient": True},
    "identity_cov": {"identity_cov": True},
    "lrn_size2": {"size": 2},
    "lrn_size4": {"size": 4},
    "lrn_size6": {"size": 6},
}


def variants(name):
    """``{variant: (adversarial row or None, number of seeds)}`` of a normalizer."""
    if name not in _BASES:
        raise ValueError(f"no conformance variants for {name!r}; known: {', '.join(sorted(_BASES))}")
    out = {v: (None, RANDOM_SEEDS) for v in _RANDOM[name]}
    for v, (row, names) in _ADVERSARIAL.items():
        if name in names:
            out[v] = (row, ADVERSARIAL_SEEDS)
    return out


def _noncontiguous(x):
    """A non-contiguous view (reversed last axis of a strided buffer) with x's values."""
    if x.ndim == 0 or x.size == 0:
        return x
    shape = x.shape[:-1] + (2 * x.shape[-1],)
    buf = np.zeros(shape)
    view = buf[..., ::-2]
    view[...] = x
    return view


def _with_var_margin(name, args, kwargs, eps):
    """Scale the input until every group variance exceeds -eps (row 19 is legal)."""
    fn = REGISTRY[name].function
    for _ in range(8):
        try:
            a = tuple(np.copy(v) if isinstance(v, np.ndarray) else v for v in args)
            fn(*a, **kwargs)
            return args
        except ValueError:
            args[0] = args[0] * 2.0
    return args


def _build(name, variant, seed):
    spec_variants = variants(name)
    if variant not in spec_variants:
        raise ValueError(
            f"unknown variant {variant!r} of {name}; known: {', '.join(spec_variants)}"
        )
    row = spec_variants[variant][0]
    rng = np.random.default_rng([_seed_of(f"{name}/{variant}"), seed])
    opts = dict(_RANDOM[name].get(variant, {}))
    opts.update(_ADV_OPTIONS.get(variant, {}))
    if name == "rms_norm" and variant not in _RANDOM[name]:
        opts.setdefault("eps_none", False)
    args, kwargs, mutates, group0 = _BASES[name](rng, opts)
    x = args[0]
    if variant == "offset1e4":
        x = x + 1e4
    elif variant == "offset1e8":
        x = x + 1e8
    elif variant == "const_group":
        x = x.copy()
        x[group0] = 0.0 if name in ("rms_norm", "normalize") else float(np.round(rng.uniform(-2, 2), 3))
    elif variant == "nan_group":
        x = x.copy()
        sub = x[group0]
        idx = np.unravel_index(int(rng.integers(max(np.size(sub), 1))), np.shape(sub))
        sub[idx] = np.nan
        x[group0] = sub
    elif variant == "tiny1e-30":
        x = x * 1e-30
    elif variant == "subnormal32":
        x = x * 1e-40
    elif variant == "subnormal64":
        x = x * 1e-310
    elif variant == "noncontiguous":
        x = _noncontiguous(x)
    elif variant == "float16":
        x = x.astype(np.float16)
    elif variant == "huge1e30":
        x = x * 1e30
    elif variant == "huge1e300":
        x = x * 1e300
    args[0] = x
    if variant == "neg_eps_momentum":
        args[_EPS_SLOT[name]] = -0.5
        if name in _MOMENTUM_SLOT:
            args[_MOMENTUM_SLOT[name]] = -1.2
        args[0] = args[0] * 3.0
        args = _with_var_margin(name, args, kwargs, -0.5)
    case_id = f"{name}/{variant}/s{seed}"
    return ConformCase(
        label=case_id, args=tuple(args), kwargs=dict(kwargs), mutates=tuple(mutates),
        id=case_id, name=name, row=row,
    )


def case_from_id(case_id: str) -> ConformCase:
    """Rebuild the case ``"<normalizer>/<variant>/s<seed>"`` from its id alone.

    Any non-negative seed is valid (the catalogue uses the first few);
    ValueError for an unknown normalizer, variant or malformed id.
    """
    if not isinstance(case_id, str):
        raise TypeError(f"case_id must be a string, got {type(case_id).__name__}")
    parts = case_id.split("/")
    if len(parts) != 3 or not parts[2].startswith("s") or not parts[2][1:].isdigit():
        raise ValueError(
            f"malformed case id {case_id!r}: expected '<normalizer>/<variant>/s<seed>', "
            f"e.g. 'layer_norm/offset1e4/s0'"
        )
    name, variant, seed = parts[0], parts[1], int(parts[2][1:])
    if name not in REGISTRY or name not in _BASES:
        raise ValueError(
            f"unknown normalizer {name!r} in case id {case_id!r}; known: {', '.join(sorted(_BASES))}"
        )
    return _build(name, variant, seed)


def catalogue(names=None) -> list:
    """Every case of the named normalizers (all registered ones by default).

    Random variants come with seeds ``s0 .. s{RANDOM_SEEDS-1}``, adversarial
    ones with ``s0``; ids are sorted by normalizer, in the order of
    :func:`variants`.
    """
    import normref  # noqa: F401  (registers every normalizer)

    if names is None:
        names = [n for n in sorted(REGISTRY) if n in _BASES]
    elif isinstance(names, str):
        names = [names]
    out = []
    for n in names:
        if n not in REGISTRY or n not in _BASES:
            raise ValueError(
                f"unknown normalizer {n!r}; known: {', '.join(sorted(_BASES))}"
            )
        for v, (_, nseeds) in variants(n).items():
            for s in range(nseeds):
                out.append(_build(n, v, s))
    return out


# ---------------------------------------------------------------------------
# rounding, expected values, judgement
# ---------------------------------------------------------------------------

_DTYPES = ("float16", "float32", "float64")


def _check_dtype(dtype):
    d = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if d not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
    return d


def _same_layout(a, dtype):
    """``a`` cast to ``dtype`` in an array with a's memory layout (strides pattern).

    Keeps non-contiguous and negative-stride views non-contiguous (row 10).
    """
    target = np.dtype(dtype)
    if a.flags.c_contiguous or a.size == 0 or a.ndim == 0:
        return np.ascontiguousarray(a.astype(target))
    if a.flags.f_contiguous:
        return np.asfortranarray(a.astype(target))
    if any(s % a.itemsize for s in a.strides):
        return np.ascontiguousarray(a.astype(target))
    es = [s // a.itemsize for s in a.strides]
    span = 1 + sum(abs(s) * (n - 1) for s, n in zip(es, a.shape))
    offset = sum(abs(s) * (n - 1) for s, n in zip(es, a.shape) if s < 0)
    buf = np.zeros(span, dtype=target)
    view = np.lib.stride_tricks.as_strided(
        buf[offset:], shape=a.shape, strides=[s * target.itemsize for s in es]
    )
    view[...] = a.astype(target)
    return view


def _map_float_arrays(case, fn):
    def conv(a):
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            return fn(a)
        return a

    args = tuple(conv(a) for a in case.args)
    kwargs = {k: conv(v) for k, v in dict(case.kwargs).items()}
    return args, kwargs


def round_to(case, dtype):
    """The case with every float array argument rounded to ``dtype``.

    Each array is cast to ``dtype`` and back to float64 (same layout), so
    normref computes in float64 on exactly the values the framework sees;
    scalars (eps, momentum, alpha ...) stay Python floats.  The returned case
    records ``dtype`` (its cotangent is rounded likewise, and ``eps=None``
    of rms_norm means that dtype's machine epsilon).
    """
    dtype = _check_dtype(dtype)
    args, kwargs = _map_float_arrays(
        case, lambda a: _same_layout(_same_layout(a, dtype), np.float64)
    )
    return dataclasses.replace(case, args=args, kwargs=kwargs, dtype=dtype)


def as_dtype(case, dtype):
    """The float array arguments of ``case`` as NumPy arrays of ``dtype`` (layout kept)."""
    dtype = _check_dtype(dtype)
    args, kwargs = _map_float_arrays(case, lambda a: _same_layout(a, dtype))
    return dataclasses.replace(case, args=args, kwargs=kwargs, dtype=dtype)


def _representable(case, dtype):
    """None, or why rounding to ``dtype`` changes the case (overflow / underflow to 0)."""
    info = np.finfo(dtype)
    for i, a in enumerate(case.args):
        if isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.size:
            a64 = a.astype(np.float64)
            fin = np.isfinite(a64)
            big = np.abs(a64[fin]).max(initial=0.0)
            if big > float(info.max):
                return f"argument {i} holds {big:.3g}, beyond the {dtype} range"
            nz = a64[fin & (a64 != 0)]
            if nz.size and np.abs(nz).min() < float(info.smallest_subnormal) / 2:
                return f"argument {i} holds values that underflow to 0 in {dtype}"
    return None


def _expected_call(case):
    """(function, args, kwargs) for normref on the case (input in its dtype, stats copied)."""
    spec = REGISTRY[case.name]
    args = list(case.fresh_args())
    x = args[0]
    if isinstance(x, np.ndarray) and x.dtype.kind == "f" and case.dtype != "float64":
        # exact: the values are representable; rms_norm's eps=None then means finfo(dtype).eps
        args[0] = x.astype(case.dtype)
    return spec.function, args, dict(case.kwargs)


def expected_outputs(case):
    """normref's answer for the (rounded) case, in float64.

    Returns ``(y, grads, state)``: the forward, ``{slot: VJP}`` for
    ``case.cotangent(y.shape)`` over every differentiable positional slot,
    and ``{slot: running statistics after the call}`` for the slots the case
    mutates (run on copies: the case is left intact).  ``grads`` is a string
    instead -- the reason -- when the VJP has no finite exact value (it
    overflows float64, or the function is not differentiable there: normref's
    ValueError); gradients are then not judged.
    """
    from ..autodiff import vjp

    fn, args, kwargs = _expected_call(case)
    y, pullback = vjp(fn, *args, **kwargs)
    y = np.asarray(y, dtype=np.float64)
    try:
        g = pullback(case.cotangent(y.shape))
    except ValueError as e:
        g, grads = None, f"no exact VJP: {e}"
    if g is not None:
        grads = {i: np.asarray(v, dtype=np.float64) for i, v in enumerate(g) if v is not None}
    state = {i: np.asarray(args[i], dtype=np.float64).copy() for i in case.mutates
             if args[i] is not None}
    return y, grads, state


@dataclass
class Verdict:
    """The judgement of one check (see the module docstring for the rule)."""

    check: str
    dtype: str
    worst_ulps: float
    tolerance_ulps: float
    index: tuple | None
    expected: float
    actual: float
    passed: bool
    note: str = ""

    def __str__(self):
        where = "" if self.index is None else f" at index {self.index}"
        s = (f"{self.check} [{self.dtype}]: {self.worst_ulps:.4g} ulps (tolerance "
             f"{self.tolerance_ulps:.4g}){where}: expected {self.expected!r}, got {self.actual!r}")
        return s + (f" ({self.note})" if self.note else "")


def _kind(check):
    return check.split(":", 1)[0]


def _finite_input(case):
    """The case with non-finite inputs replaced by the finite mean (judge the clean groups)."""
    x = np.asarray(case.args[0], dtype=np.float64)
    if np.all(np.isfinite(x)):
        return case, x
    fin = x[np.isfinite(x)]
    x = np.where(np.isfinite(x), x, fin.mean() if fin.size else 0.0)
    return dataclasses.replace(case, args=(x,) + tuple(case.args[1:])), x


def case_conditioning(case):
    r"""The :math:`\kappa` of the module docstring for this (rounded) case.

    For shift-sensitive normalizers the larger of
    :func:`normref.check.case_cond` and :math:`1 + \max|x| / \min_g d_g`
    with :math:`d_g = \sqrt{\sigma_g^2 + \epsilon}` (or
    :math:`\sigma_g + \epsilon` for eps on the standard deviation) -- a
    constant group is judged at the amplification :math:`|x|/\sqrt\epsilon`
    that any rounding of its mean suffers.  For every normalizer, inputs in
    the subnormal range of the case's dtype, where each operation carries an
    absolute rather than relative rounding error, multiply :math:`\kappa` by
    :math:`\text{tiny}_T / \operatorname{rms}(x)`.
    """
    x = np.asarray(case.args[0], dtype=np.float64) if case.args else np.zeros(0)
    if x.size == 0:
        return 1.0
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        return _conditioning(case)


def _conditioning(case):
    x = np.asarray(case.args[0], dtype=np.float64)
    case, x = _finite_input(case)
    kappa = 1.0
    if case.name in SHIFT_SENSITIVE:
        from ..check import case_cond, cond

        spec = REGISTRY[case.name]
        try:
            kappa = float(case_cond(spec, case))
            plan = spec.bind(*case.fresh_args(), **case.kwargs)
            eps = getattr(plan, "eps", None)
            if hasattr(plan, "group_var") and getattr(plan, "fixed", None) is None and eps is not None:
                var = np.asarray(plan.group_var(), dtype=np.float64).ravel()
                var = var[np.isfinite(var)]
                with np.errstate(invalid="ignore"):
                    den = (np.sqrt(var) + eps) if getattr(plan, "eps_outside", False) \
                        else np.sqrt(np.maximum(var + eps, 0.0))
                den = den[den > 0]
                if den.size:
                    kappa = max(kappa, 1.0 + float(np.max(np.abs(x))) / float(den.min()))
        except Exception:  # noqa: BLE001  (conditioning is advisory; never crash the judgement)
            kappa = float(cond(x))
    nz = np.abs(x[x != 0])
    if nz.size:
        tiny = float(np.finfo(case.dtype).tiny)
        rms = float(np.sqrt(np.mean(np.square(nz / nz.max())))) * float(nz.max())
        if 0 < rms < tiny:
            kappa *= tiny / rms
    return kappa if math.isfinite(kappa) and kappa >= 1.0 else 1.0


def vjp_scale(case, slot):
    r"""Componentwise size of the terms of the VJP of argument ``slot``:
    :math:`t = |J_k|^\top |\delta y|`, with :math:`\delta y` the case's
    cotangent.

    A floating-point VJP is a sum of products :math:`J_{ik}\,\delta y_i`;
    its rounding error is a few ulps of :math:`t`, not of the (possibly
    cancelled) result.  For the input gradient of a centring normalizer the
    intermediate terms have size
    :math:`\operatorname{rms}(\delta y)\max(1, \operatorname{rms}(y))/\operatorname{std}(x)`
    even where :math:`J` itself cancels (a group of two values has
    :math:`J \approx 0`), so :math:`t` is at least that.
    Backward checks are judged at :math:`\max(|e_i|, s, t_i)`.
    """
    with np.errstate(over="ignore", invalid="ignore", under="ignore", divide="ignore"):
        return _vjp_scale(case, slot)


def _vjp_scale(case, slot):
    from ..autodiff import jacobian

    case, _ = _finite_input(case)
    fn, args, kwargs = _expected_call(case)
    y = np.asarray(fn(*[a.copy() if isinstance(a, np.ndarray) else a for a in args], **kwargs))
    if y.size == 0:
        return None
    J = np.asarray(jacobian(fn, *args, wrt=slot, **kwargs), dtype=np.float64)
    pshape = J.shape[y.ndim:]
    dy = np.abs(case.cotangent(y.shape)).ravel()
    Jm = np.nan_to_num(np.abs(J.reshape(y.size, -1)), nan=0.0, posinf=0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        t = np.nan_to_num(Jm.T @ dy, nan=0.0, posinf=0.0)
        if case.name in SHIFT_SENSITIVE and slot == 0:
            # intermediate terms dy * w / sigma of a centred backward, even where J cancels
            x = np.asarray(args[0], dtype=np.float64)
            sd = float(np.std(x)) if x.size else 1.0
            yf = y[np.isfinite(y)]
            ry = float(np.sqrt(np.mean(np.square(yf)))) if yf.size else 1.0
            inter = float(np.sqrt(np.mean(np.square(dy)))) * max(1.0, ry) / (sd if sd > 0 else 1.0)
            if math.isfinite(inter):
                t = np.maximum(t, inter)
    return t.reshape(pshape)


def judge(case, expected, actual, dtype, check, cond=None, floor=None) -> Verdict:
    """Judge ``actual`` (the framework's) against ``expected`` (normref's, float64).

    Errors in ulps of ``dtype`` at the scale of the output, tolerance
    ``TOLERANCE_BASE[kind] * cond`` (``cond`` defaults to
    :func:`case_conditioning`); NaN / Inf positions must match exactly.
    For ``"backward:<arg>"`` checks of a registered case the scale is also at
    least ``floor`` (default :func:`vjp_scale` of that argument).
    """
    dtype = _check_dtype(dtype)
    kind = _kind(check)
    if kind not in TOLERANCE_BASE:
        raise ValueError(f"check must be 'forward', 'backward:<arg>' or 'state:<arg>', got {check!r}")
    if cond is None:
        cond = case_conditioning(case)
    tol = TOLERANCE_BASE[kind] * float(cond)
    e = np.asarray(expected, dtype=np.float64)
    try:
        a_raw = np.asarray(actual)
        if a_raw.dtype.kind not in "fiu":
            raise TypeError(f"dtype {a_raw.dtype}")
        a = a_raw.astype(np.float64)
    except (TypeError, ValueError) as exc:
        return Verdict(check, dtype, math.inf, tol, None, math.nan, math.nan, False,
                       note=f"output is not a real array: {exc}")
    if a.shape != e.shape:
        return Verdict(check, dtype, math.inf, tol, None, math.nan, math.nan, False,
                       note=f"shape {a.shape}, expected {e.shape}")
    if e.size == 0:
        return Verdict(check, dtype, 0.0, tol, None, 0.0, 0.0, True, note="empty")
    fin = np.isfinite(e)
    m = float(np.abs(e[fin]).max()) if fin.any() else 0.0
    s = m * float(np.sqrt(np.mean(np.square(e[fin] / m)))) if m > 0 else 0.0
    if floor is None and kind == "backward" and case.name in REGISTRY:
        arg = check.split(":", 1)[1]
        sig = REGISTRY[case.name].signature
        if arg in sig and sig.index(arg) < len(case.args):
            try:
                floor = vjp_scale(case, sig.index(arg))
            except Exception:  # noqa: BLE001  (the floor only widens; never crash the judgement)
                floor = None
    with np.errstate(invalid="ignore", over="ignore"):
        scale = np.maximum(np.abs(np.where(fin, e, 0.0)), s)
        if floor is not None and np.shape(floor) == e.shape:
            scale = np.maximum(scale, floor)
        scale = np.minimum(scale, float(np.finfo(dtype).max)).astype(dtype)
        spacing = np.spacing(scale).astype(np.float64)
        diff = np.abs(a - e)
        ulps = np.where(fin, diff / spacing, 0.0)
    # non-finite expected values must be matched exactly (NaN with NaN, Inf with same Inf)
    nan_e, nan_a = np.isnan(e), np.isnan(a)
    inf_mismatch = (~fin & ~nan_e) & ~(a == e)
    finite_broken = fin & ~np.isfinite(a)
    bad = (nan_e != nan_a) | inf_mismatch | finite_broken
    ulps = np.where(bad, np.inf, ulps)
    ulps = np.where(np.isnan(ulps), np.inf, ulps)
    flat = int(np.argmax(ulps))
    idx = tuple(int(i) for i in np.unravel_index(flat, e.shape))
    worst = float(ulps.ravel()[flat])
    note = ""
    if bad.any():
        note = f"{int(bad.sum())} element(s) with NaN/Inf where normref has not (or vice versa)"
    return Verdict(check, dtype, worst, tol, idx, float(e[idx]), float(a[idx]),
                   bool(worst <= tol), note=note)


# ---------------------------------------------------------------------------
# known discrepancies
# ---------------------------------------------------------------------------

KNOWN_DISCREPANCIES_FILE = os.path.join(os.path.dirname(__file__), "known_discrepancies.json")
_KD_KEYS = ("framework", "normalizer", "case", "dtype", "check", "reason", "issue")


def load_known_discrepancies(path=None) -> list:
    """The entries of the known-discrepancies file (validated).

    Each entry: ``framework``, ``normalizer`` (fnmatch), ``case`` (fnmatch on
    the case id), ``dtype`` (``"*"`` for all), ``check`` (fnmatch, e.g.
    ``"forward"``, ``"backward:*"``), ``reason``, ``issue`` (str or None).
    """
    path = KNOWN_DISCREPANCIES_FILE if path is None else path
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    entries = data["discrepancies"] if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise ValueError(f"{path}: 'discrepancies' must be a list")
    for i, e in enumerate(entries):
        missing = [k for k in _KD_KEYS if k not in e]
        if missing:
            raise ValueError(f"{path}: entry {i} lacks {missing}: {e}")
        if not e["reason"]:
            raise ValueError(f"{path}: entry {i} has an empty reason")
    return entries


def _match_known(known, framework, normalizer, case_id, dtype, check):
    for e in known:
        if (e["framework"] == framework
                and fnmatch.fnmatchcase(normalizer, e["normalizer"])
                and fnmatch.fnmatchcase(case_id, e["case"])
                and (e["dtype"] in ("*", dtype))
                and fnmatch.fnmatchcase(check, e["check"])):
            return e
    return None


# ---------------------------------------------------------------------------
# running an adapter
# ---------------------------------------------------------------------------

@dataclass
class Result:
    """One check of one case in one dtype against one framework."""

    case_id: str
    framework: str
    normalizer: str
    check: str
    dtype: str
    verdict: Verdict | None
    status: str  # pass | fail | xfail | xpass | skip | error
    reason: str = ""


def _signature_name(name, slot):
    sig = REGISTRY[name].signature
    return sig[slot] if slot < len(sig) else f"arg{slot}"


class _Progress:
    def __init__(self, total, enabled, stream=None):
        self.total, self.n = total, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > 0
        self.width = 30

    def step(self, label=""):
        self.n += 1
        if not self.enabled:
            return
        done = int(self.width * self.n / self.total)
        bar = "#" * done + "." * (self.width - done)
        if getattr(self.stream, "isatty", lambda: False)():
            self.stream.write(f"\r[{bar}] {self.n}/{self.total} {label[:40]:<40}")
        elif self.n == self.total or (10 * self.n) // self.total != (10 * (self.n - 1)) // self.total:
            # a log file: one line per tenth
            self.stream.write(f"[{bar}] {self.n}/{self.total} {label}\n")
        self.stream.flush()

    def close(self):
        if self.enabled and getattr(self.stream, "isatty", lambda: False)():
            self.stream.write("\n")
            self.stream.flush()


def run_conformance(adapter, cases=None, dtypes=None, progress=True, known=None) -> list:
    """Run ``adapter`` over ``cases`` (the whole catalogue by default).

    For each case ``c = adapter.prepare(case)`` (None: the framework has no
    such op / variant, skipped); for each dtype of the adapter (intersected
    with ``dtypes``): the case rounded to the dtype, the framework run on the
    arrays of that dtype, normref on the rounded values, one :class:`Result`
    per check (forward, each backward slot the adapter returns, each state
    slot).  An adapter exception is an ``error`` result (``skip`` for
    :class:`~normref.testing.adapters.Unsupported`); a check matching a known
    discrepancy is ``xfail`` when it fails and ``xpass`` when it passes.
    ``progress``: a text bar on stderr (when stderr is a terminal, or
    ``progress="always"``).
    """
    from .adapters import Unsupported

    if cases is None:
        cases = catalogue()
    known = load_known_discrepancies() if known is None else known
    fw = adapter.framework
    run_dtypes = [d for d in adapter.dtypes if dtypes is None or d in dtypes]
    show = progress == "always" or (progress and getattr(sys.stderr, "isatty", lambda: False)())
    bar = _Progress(len(cases), show)
    results = []

    def classify(case_id, name, check, dtype, verdict, failed, reason=""):
        entry = _match_known(known, fw, name, case_id, dtype, check)
        if failed:
            status = "xfail" if entry else "fail"
        else:
            status = "xpass" if entry else "pass"
        if entry:
            reason = (reason + "; " if reason else "") + "known: " + entry["reason"] + (
                f" ({entry['issue']})" if entry.get("issue") else "")
        results.append(Result(case_id, fw, name, check, dtype, verdict, status, reason))

    for case in cases:
        bar.step(case.id)
        try:
            prepared = adapter.prepare(case)
        except Unsupported as e:
            prepared, why = None, str(e)
        except Exception as e:  # noqa: BLE001
            for dtype in run_dtypes:
                classify(case.id, case.name, "forward", dtype, None, True,
                         f"prepare raised {type(e).__name__}: {e}")
                if results[-1].status == "fail":
                    results[-1].status = "error"
            continue
        else:
            why = "no such op or variant in this framework"
        if prepared is None:
            for dtype in run_dtypes:
                results.append(Result(case.id, fw, case.name, "forward", dtype, None, "skip", why))
            continue
        for dtype in run_dtypes:
            skip = _representable(prepared, dtype)
            if skip:
                results.append(Result(case.id, fw, case.name, "forward", dtype, None, "skip", skip))
                continue
            rounded = round_to(prepared, dtype)
            try:
                y, egrads, estate = expected_outputs(rounded)
            except Exception as e:  # noqa: BLE001  (a catalogue bug: reported, never hidden)
                results.append(Result(case.id, fw, case.name, "forward", dtype, None, "error",
                                      f"normref raised {type(e).__name__}: {e}"))
                continue
            try:
                out = adapter.run(as_dtype(rounded, dtype), dtype)
            except Unsupported as e:
                results.append(Result(case.id, fw, case.name, "forward", dtype, None, "skip", str(e)))
                continue
            except Exception as e:  # noqa: BLE001
                msg = f"{type(e).__name__}: {e}".strip()
                classify(case.id, case.name, "forward", dtype, None, True, msg)
                if results[-1].status == "fail":
                    results[-1].status = "error"
                continue
            cond = case_conditioning(rounded)
            v = judge(rounded, y, out.y, dtype, "forward", cond=cond)
            classify(case.id, case.name, "forward", dtype, v, not v.passed, v.note)
            if adapter.gradients and out.grads:
                for slot in sorted(out.grads):
                    check = f"backward:{_signature_name(case.name, slot)}"
                    if isinstance(egrads, str):
                        results.append(Result(case.id, fw, case.name, check, dtype, None, "skip",
                                              egrads))
                        continue
                    if slot not in egrads:
                        classify(case.id, case.name, check, dtype, None, True,
                                 "the framework returns a gradient where normref has none")
                        continue
                    v = judge(rounded, egrads[slot], out.grads[slot], dtype, check, cond=cond)
                    classify(case.id, case.name, check, dtype, v, not v.passed, v.note)
            for slot in sorted(out.state or {}):
                check = f"state:{_signature_name(case.name, slot)}"
                if slot not in estate:
                    classify(case.id, case.name, check, dtype, None, True,
                             "the framework reports running statistics normref does not update")
                    continue
                v = judge(rounded, estate[slot], out.state[slot], dtype, check, cond=cond)
                classify(case.id, case.name, check, dtype, v, not v.passed, v.note)
    bar.close()
    return results


# ---------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------

STATUSES = ("pass", "fail", "xfail", "xpass", "skip", "error")


def format_table(results) -> str:
    """Framework x normalizer x check (forward / backward / state) x dtype.

    Columns: number of cases, the worst error in ulps with its tolerance
    (the check with the largest error / tolerance ratio), and how many
    checks had each status.
    """
    groups = {}
    for r in results:
        key = (r.framework, r.normalizer, _kind(r.check), r.dtype)
        g = groups.setdefault(key, {"cases": set(), "worst": None, **{s: 0 for s in STATUSES}})
        g["cases"].add(r.case_id)
        g[r.status] += 1
        v = r.verdict
        if v is not None and r.status in ("pass", "fail", "xfail", "xpass"):
            ratio = v.worst_ulps / v.tolerance_ulps if v.tolerance_ulps > 0 else math.inf
            if g["worst"] is None or ratio > g["worst"][0]:
                g["worst"] = (ratio, v.worst_ulps, v.tolerance_ulps)
    heads = ("framework", "normalizer", "check", "dtype", "cases", "worst ulps", "tolerance") + STATUSES
    rows = []
    kind_order = {"forward": 0, "backward": 1, "state": 2}
    for key in sorted(groups, key=lambda k: (k[0], k[1], kind_order.get(k[2], 9), k[3])):
        g = groups[key]
        if g["worst"] is None:
            wu, tl = "-", "-"
        else:
            wu = f"{g['worst'][1]:.3g}"
            tl = f"{g['worst'][2]:.3g}"
        rows.append(key + (str(len(g["cases"])), wu, tl) + tuple(str(g[s]) for s in STATUSES))
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(heads)]
    right = set(range(4, len(heads)))

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(heads), "-" * len(line(heads))]
    out += [line(r) for r in rows]
    totals = {s: sum(1 for r in results if r.status == s) for s in STATUSES}
    out.append("-" * len(line(heads)))
    out.append("total: " + ", ".join(f"{totals[s]} {s}" for s in STATUSES))
    return "\n".join(out)


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return repr(x)
    return x


def results_json(results) -> list:
    """The results as JSON-ready dicts (infinite / NaN floats as strings)."""
    out = []
    for r in results:
        d = {"case": r.case_id, "framework": r.framework, "normalizer": r.normalizer,
             "check": r.check, "dtype": r.dtype, "status": r.status, "reason": r.reason}
        v = r.verdict
        if v is not None:
            d.update({
                "worst_ulps": _jsonable(v.worst_ulps), "tolerance_ulps": _jsonable(v.tolerance_ulps),
                "index": list(v.index) if v.index is not None else None,
                "expected": _jsonable(v.expected), "actual": _jsonable(v.actual),
                "passed": v.passed,
            })
        out.append(d)
    return out


# ---------------------------------------------------------------------------
# assert_conforms
# ---------------------------------------------------------------------------

#: parameters that torch treats as buffers (not differentiable through autograd)
_TORCH_BUFFERS = frozenset({"running_mean", "running_var"})
_REPRO_INLINE_MAX = 64


def _literal(value, name, npz):
    """Python source that rebuilds ``value`` (arrays > 64 elements go to ``npz``)."""
    if isinstance(value, np.ndarray):
        dt = f"np.{value.dtype.name}" if value.dtype.kind in "fiub" else repr(value.dtype.str)
        if value.size == 0:
            return f"np.empty({value.shape!r}, dtype={dt})"
        if value.size <= _REPRO_INLINE_MAX and value.dtype.kind in "fiub":
            text = np.array2string(np.ascontiguousarray(value), precision=17, separator=", ",
                                   threshold=10**6, max_line_width=10**6,
                                   floatmode="maxprec")
            text = text.replace("nan", "nan").replace("inf", "inf")
            return f"np.array({text}, dtype={dt})"
        npz[name] = np.ascontiguousarray(value)
        return f"_data[{name!r}]"
    if isinstance(value, (float, np.floating)) and not math.isfinite(float(value)):
        return f"float({str(float(value))!r})"
    if isinstance(value, np.generic):
        return repr(value.item())
    if isinstance(value, tuple):
        inner = ", ".join(_literal(v, f"{name}_{i}", npz) for i, v in enumerate(value))
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v, f"{name}_{i}", npz) for i, v in enumerate(value)) + "]"
    return repr(value)


def _reproducer(candidate, name, args, kwargs, framework):
    """A copy-pasteable snippet that re-runs the failing assert_conforms call."""
    npz = {}
    arg_src = [_literal(a, f"arg{i}", npz) for i, a in enumerate(args)]
    kw_src = {k: _literal(v, f"kw_{k}", npz) for k, v in kwargs.items()}
    lines = ["import numpy as np", "from numpy import nan, inf",
             "from normref.testing import assert_conforms"]
    if npz:
        digest = zlib.crc32(b"".join(np.ascontiguousarray(v).tobytes() for v in npz.values()))
        path = os.path.join(tempfile.gettempdir(), f"normref_repro_{name}_{digest:08x}.npz")
        np.savez(path, **npz)
        lines.append(f"_data = np.load({path!r})")
    mod = getattr(candidate, "__module__", None)
    qual = getattr(candidate, "__qualname__", None)
    lines.append("try:")
    lines.append("    candidate")
    lines.append("except NameError:")
    if mod and qual and "<" not in qual and mod != "__main__":
        lines.append(f"    from {mod} import {qual.split('.')[0]} as candidate")
        if "." in qual:
            lines.append(f"    candidate = candidate.{qual.split('.', 1)[1]}")
    else:
        lines.append("    raise SystemExit('define candidate (your implementation) first')")
    call_args = ", ".join([repr(name)] + arg_src + [f"framework={framework!r}"]
                          + [f"{k}={v}" for k, v in kw_src.items()])
    lines.append(f"assert_conforms(candidate, {call_args})")
    return "\n".join(lines)


def _snapshot(value):
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (tuple, list)):
        return type(value)(_snapshot(v) for v in value)
    return value


def _dtype_name(dt, what):
    name = np.dtype(dt).name
    if name not in _DTYPES:
        raise TypeError(f"assert_conforms: {what} has dtype {name}; expected one of {_DTYPES}")
    return name


def _detect(candidate, args, kwargs):
    """('numpy', output) or ('torch', None): try the candidate on NumPy arrays."""
    try:
        out = candidate(*[_snapshot(a) for a in args], **{k: _snapshot(v) for k, v in kwargs.items()})
    except (TypeError, AttributeError) as e:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise TypeError(
                f"assert_conforms: the candidate rejected NumPy arrays ({type(e).__name__}: {e}) "
                f"and torch is not installed; pass framework='numpy' or 'torch'"
            ) from e
        return "torch", None
    if isinstance(out, np.ndarray):
        return "numpy", None
    if type(out).__module__.split(".")[0] == "torch":
        return "torch", None
    raise TypeError(
        f"assert_conforms: cannot detect the framework of the candidate: given NumPy arrays "
        f"it returned {type(out).__name__}; pass framework='numpy' or 'torch'"
    )


def _run_numpy(candidate, call_args, kwargs):
    y = candidate(*call_args, **kwargs)
    if not isinstance(y, np.ndarray):
        raise TypeError(
            f"assert_conforms(framework='numpy'): the candidate must return a NumPy array, "
            f"got {type(y).__name__}"
        )
    return y, None


def _run_torch(candidate, case, call_args, kwargs, diff_slots, y_shape):
    import torch

    def to_tensor(a, grad):
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            t = torch.from_numpy(np.ascontiguousarray(a).copy())
            if grad:
                t.requires_grad_(True)
            return t
        return a

    targs = [to_tensor(a, i in diff_slots) for i, a in enumerate(call_args)]
    tkw = {k: to_tensor(v, False) for k, v in kwargs.items()}
    y = candidate(*targs, **tkw)
    if not isinstance(y, torch.Tensor):
        raise TypeError(
            f"assert_conforms(framework='torch'): the candidate must return a torch.Tensor, "
            f"got {type(y).__name__}"
        )
    grads = {}
    leaves = [i for i in diff_slots if isinstance(targs[i], torch.Tensor)]
    if leaves:
        dy = torch.from_numpy(case.cotangent(tuple(y.shape))).to(y.dtype)
        if y.requires_grad:
            gs = torch.autograd.grad(y, [targs[i] for i in leaves], dy, allow_unused=True)
        else:
            gs = [None] * len(leaves)
        grads = {i: (None if g is None else g.detach().numpy()) for i, g in zip(leaves, gs)}
    # running statistics updated in place by the candidate
    for i in case.mutates:
        if isinstance(targs[i], torch.Tensor):
            call_args[i][...] = targs[i].detach().numpy()
    return y.detach().numpy(), grads


def assert_conforms(candidate, name, *args, framework=None, **kwargs):
    """Assert that ``candidate`` computes the normalizer ``name`` like normref.

    ``args`` / ``kwargs`` are those of the normref function ``name`` (NumPy
    arrays).  ``framework="numpy"``: the candidate takes and returns NumPy
    arrays; its forward (and running statistics it updates in place) are
    judged.  ``framework="torch"``: float arrays are converted to tensors
    (``requires_grad`` for the arguments normref differentiates in this call,
    except running statistics, which torch treats as buffers), and the
    forward plus every input gradient for the case's cotangent (through
    ``torch.autograd.grad``) are judged; a missing gradient is a failure.
    ``framework=None``: the candidate is called on NumPy arrays; a NumPy
    result means "numpy", a tensor result or a TypeError means "torch".

    Judgement as in :func:`judge`: errors in ulps of the candidate's output
    dtype (inputs rounded to it are what normref computes on: pass float32
    arrays to judge a float32 kernel), tolerance 16 (forward, state) or 64
    (backward) ulps times the case's conditioning.

    Raises AssertionError naming the normalizer, check, dtype, worst element
    (index, expected, actual), the error in ulps against the tolerance and a
    copy-pasteable reproducer (arrays of more than 64 elements are saved to
    an .npz in the temporary directory).
    """
    from ..autodiff import bind

    import normref  # noqa: F401  (registers every normalizer)

    if name not in REGISTRY:
        raise ValueError(f"assert_conforms: unknown normalizer {name!r}; registered: "
                         f"{', '.join(sorted(REGISTRY))}")
    if framework not in (None, "numpy", "torch"):
        raise ValueError(f"assert_conforms: framework must be 'numpy', 'torch' or None, got {framework!r}")
    if not args:
        raise TypeError(f"assert_conforms: give the arguments of normref.{name} after the name")
    spec = REGISTRY[name]
    original = ([_snapshot(a) for a in args], {k: _snapshot(v) for k, v in kwargs.items()})
    x = np.asarray(args[0])
    in_dtype = x.dtype.name if x.dtype.name in _DTYPES else "float64"

    # which positional arrays the call updates in place (running statistics)
    probe = [_snapshot(a) for a in args]
    spec.function(*probe, **{k: _snapshot(v) for k, v in kwargs.items()})
    mutates = tuple(
        i for i, (a, b) in enumerate(zip(args, probe))
        if isinstance(a, np.ndarray) and a.dtype.kind == "f"
        and not np.array_equal(a, b, equal_nan=True)
    )
    case = ConformCase(label=f"adhoc/{name}", args=tuple(original[0]), kwargs=dict(original[1]),
                       mutates=mutates, id=f"adhoc/{name}", name=name, dtype=in_dtype)

    if framework is None:
        framework, _ = _detect(candidate, original[0], original[1])

    y_exp, g_exp, s_exp = expected_outputs(case)
    _, _, slots = bind(spec.function, *case.fresh_args(), **case.kwargs)
    diff_slots = [i for i, s in enumerate(slots) if s is not None
                  and (framework != "torch" or s not in _TORCH_BUFFERS)]

    call_args = [_snapshot(a) for a in original[0]]
    call_kwargs = {k: _snapshot(v) for k, v in original[1].items()}
    if framework == "numpy":
        y, grads = _run_numpy(candidate, call_args, call_kwargs)
    else:
        y, grads = _run_torch(candidate, case, call_args, call_kwargs, diff_slots, y_exp.shape)

    cond = case_conditioning(case)
    verdicts = []
    out_dtype = _dtype_name(y.dtype, "the candidate's output")
    verdicts.append(judge(case, y_exp, y, out_dtype, "forward", cond=cond))
    if grads is not None and not isinstance(g_exp, str):  # (a str: no exact VJP exists)
        for i in diff_slots:
            check = f"backward:{_signature_name(name, i)}"
            g = grads.get(i)
            if g is None:
                verdicts.append(Verdict(check, out_dtype, math.inf, TOLERANCE_BASE["backward"] * cond,
                                        None, math.nan, math.nan, False,
                                        note="the candidate returns no gradient for this argument "
                                             "(None from torch.autograd.grad)"))
                continue
            verdicts.append(judge(case, g_exp[i], g, _dtype_name(g.dtype, check), check, cond=cond))
    for i, s in s_exp.items():
        check = f"state:{_signature_name(name, i)}"
        verdicts.append(judge(case, s, np.asarray(call_args[i]),
                              _dtype_name(np.asarray(call_args[i]).dtype, check), check, cond=cond))
    failed = [v for v in verdicts if not v.passed]
    if not failed:
        return
    failed.sort(key=lambda v: -(v.worst_ulps / v.tolerance_ulps if v.tolerance_ulps else math.inf))
    lines = [f"{name} does not conform to normref ({framework}, case {case.id}): "
             f"{len(failed)} of {len(verdicts)} checks fail"]
    for v in failed:
        where = "n/a" if v.index is None else str(v.index)
        lines.append(
            f"  {v.check} [{v.dtype}]: worst element {where}: expected {v.expected!r}, "
            f"actual {v.actual!r}; error {v.worst_ulps:.4g} ulps > tolerance "
            f"{v.tolerance_ulps:.4g} ulps ({TOLERANCE_BASE[_kind(v.check)]:g} x conditioning {cond:.3g})"
            + (f" -- {v.note}" if v.note else "")
        )
    lines.append("reproducer:")
    lines.append(_reproducer(candidate, name, original[0], original[1], framework))
    raise AssertionError("\n".join(lines))
