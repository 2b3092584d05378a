r"""Building the catalogue from the registry: variants, adversarial rows, case ids.

Every registered normalizer whose Spec carries a ``catalogue``
(:class:`normref.catalogue.Catalogue`, declared in the normalizer's own
module) has cases.  Its variants are

* the random ones, ``catalogue.variants`` (``RANDOM_SEEDS`` seeds each;
  ``catalogue(seeds=N)`` gives every variant, random or adversarial, N seeds);
* the shared adversarial ones of :data:`ADVERSARIAL` (``ADVERSARIAL_SEEDS``
  seed), each a row of the adversarial table applied to a case drawn by the
  normalizer's base: those whose trait requirement the Spec meets, minus
  ``catalogue.exclude`` (each exclusion with its reason);
* the adversarial ones only it takes, ``catalogue.only`` (batch norm's
  ``n1_spatial``, LRN's even windows).

A shared variant's trait requirement (``Adversarial.needs``) is a query of the
Spec (``spec.whitening``, ``spec.slot("eps")``, :func:`normref.tolerance.shift_sensitive`),
never a list of names.

A case id ``"<normalizer>/<variant>/s<seed>"`` seeds the generator of its
draws (:func:`seed_of`), so :func:`case_from_id` rebuilds the case bit for
bit from the id alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from ...registry import REGISTRY
from ...tolerance import shift_sensitive
from . import helpers
from .cases import ConformCase, seed_of

__all__ = ["Adversarial", "ADVERSARIAL", "ROWS_NOT_CASES", "RANDOM_SEEDS", "ADVERSARIAL_SEEDS",
           "catalogued", "variants", "case_from_id", "catalogue"]

RANDOM_SEEDS = 3
ADVERSARIAL_SEEDS = 1

#: docs/adversarial.md rows that are not comparison cases, and why
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


@dataclass(frozen=True)
class Adversarial:
    """A shared adversarial variant: a row of the adversarial table applied to a base case.

    ``transform(spec, args, kwargs, group0, rng) -> args`` rewrites the drawn
    call (``args`` a list); ``options`` are passed to the base (``{"n": 0}``
    for the empty batch); ``needs(spec)`` is the trait a normalizer must have
    for the row to mean anything, ``needs_doc`` says which and why.
    """

    row: str
    transform: Callable[..., list]
    options: Mapping[str, Any] = field(default_factory=dict)
    needs: Callable[[Any], bool] | None = None
    needs_doc: str = ""


def _on_input(fn):
    def transform(spec, args, kwargs, group0, rng):
        args[0] = fn(args[0])
        return args
    return transform


def _unchanged(spec, args, kwargs, group0, rng):
    """The base's own draw (the row is in the options the base received)."""
    return args


def _const_group(spec, args, kwargs, group0, rng):
    """Row 2: one statistics group constant (zero for a normalizer that does not centre,
    whose constant non-zero group is an ordinary input)."""
    x = args[0].copy()
    x[group0] = 0.0 if not spec.centres else float(np.round(rng.uniform(-2, 2), 3))
    args[0] = x
    return args


def _nan_group(spec, args, kwargs, group0, rng):
    """Row 6: one NaN in one statistics group (the other groups stay finite)."""
    x = args[0].copy()
    sub = x[group0]
    idx = np.unravel_index(int(rng.integers(max(np.size(sub), 1))), np.shape(sub))
    sub[idx] = np.nan
    x[group0] = sub
    args[0] = x
    return args


def _noncontiguous(x):
    """A non-contiguous view (reversed last axis of a strided buffer) with x's values."""
    if x.ndim == 0 or x.size == 0:
        return x
    shape = x.shape[:-1] + (2 * x.shape[-1],)
    buf = np.zeros(shape)
    view = buf[..., ::-2]
    view[...] = x
    return view


def _with_var_margin(spec, args, kwargs):
    """Scale the input until every group variance exceeds -eps (row 19 is legal)."""
    for _ in range(8):
        try:
            a = tuple(np.copy(v) if isinstance(v, np.ndarray) else v for v in args)
            spec.function(*a, **kwargs)
            return args
        except ValueError:
            args[0] = args[0] * 2.0
    return args


def _neg_eps_momentum(spec, args, kwargs, group0, rng):
    """Row 19: eps = -0.5 and momentum = -1.2 (legal values normref computes with),
    the input scaled until every group's variance exceeds 0.5."""
    args[spec.slot("eps")] = -0.5
    if spec.slot("momentum") is not None:
        args[spec.slot("momentum")] = -1.2
    args[0] = args[0] * 3.0
    return _with_var_margin(spec, args, kwargs)


#: the shared adversarial variants, in catalogue order
ADVERSARIAL = {
    "offset1e4": Adversarial("1", _on_input(lambda x: x + 1e4)),
    "offset1e8": Adversarial(
        "1", _on_input(lambda x: x + 1e8), needs=shift_sensitive,
        needs_doc="a normalizer that subtracts a mean and does not whiten: the row probes the "
                  "cancellation of the centring, which the judge's conditioning models for these "
                  "(1e4 keeps the others in row 1)"),
    "const_group": Adversarial(
        "2", _const_group, needs=lambda spec: not spec.whitening,
        needs_doc="a normalizer that does not whiten: a constant group has zero covariance, "
                  "Sigma = eps I, and the degenerate covariances are rows 16 and 17"),
    "nan_group": Adversarial("6", _nan_group),
    "tiny1e-30": Adversarial("7", _on_input(lambda x: x * 1e-30)),
    "subnormal32": Adversarial("8", _on_input(lambda x: x * 1e-40)),
    "subnormal64": Adversarial("8", _on_input(lambda x: x * 1e-310)),
    "empty_batch": Adversarial("9", _unchanged, options={"n": 0}),
    "noncontiguous": Adversarial("10", _on_input(_noncontiguous)),
    "float16": Adversarial("12", _on_input(lambda x: x.astype(np.float16))),
    "huge1e30": Adversarial("15", _on_input(lambda x: x * 1e30)),
    "huge1e300": Adversarial("15", _on_input(lambda x: x * 1e300)),
    "neg_eps_momentum": Adversarial(
        "19", _neg_eps_momentum,
        needs=lambda spec: spec.slot("eps") is not None and not spec.whitening,
        needs_doc="an eps argument, and no whitening: a negative eps makes Sigma + eps I "
                  "indefinite for data whose variance is below |eps|, where the whitening "
                  "matrix is undefined (normref raises)"),
    "rank_deficient": Adversarial(
        "16", _unchanged, options={"rank_deficient": True}, needs=lambda spec: spec.whitening,
        needs_doc="whitening: fewer observations than features per group (the base draws it)"),
    "identity_cov": Adversarial(
        "17", _unchanged, options={"identity_cov": True}, needs=lambda spec: spec.whitening,
        needs_doc="whitening: a covariance exactly proportional to I (the base draws it)"),
}


def _spec(name):
    import normref  # noqa: F401  (registers every normalizer)

    spec = REGISTRY.get(name)
    if spec is None or spec.catalogue is None:
        raise ValueError(f"no conformance variants for {name!r}; known: {', '.join(catalogued())}")
    return spec


def catalogued():
    """The registered normalizers that declare a catalogue, sorted."""
    import normref  # noqa: F401  (registers every normalizer)

    return [n for n in sorted(REGISTRY) if REGISTRY[n].catalogue is not None]


def _plan(spec):
    """``{variant: (row or None, seeds, base options, Adversarial or None)}``."""
    cat = spec.catalogue
    unknown = sorted(set(cat.exclude) - set(ADVERSARIAL))
    if unknown:
        raise ValueError(f"{spec.name}: catalogue.exclude names {unknown}, which are not shared "
                         f"adversarial variants ({', '.join(ADVERSARIAL)})")
    clash = sorted((set(cat.only) | set(cat.variants)) & set(ADVERSARIAL))
    if clash:
        raise ValueError(f"{spec.name}: catalogue variants {clash} reuse the names of shared "
                         f"adversarial variants")
    out = {v: (None, RANDOM_SEEDS, dict(o), None) for v, o in cat.variants.items()}
    for v, adv in ADVERSARIAL.items():
        if v in cat.exclude or (adv.needs is not None and not adv.needs(spec)):
            continue
        out[v] = (adv.row, ADVERSARIAL_SEEDS, dict(adv.options), adv)
    for v, (row, o) in cat.only.items():
        out[v] = (row, ADVERSARIAL_SEEDS, dict(o), None)
    return out


def variants(name):
    """``{variant: (adversarial row or None, number of seeds)}`` of a normalizer."""
    return {v: (row, n) for v, (row, n, _, _) in _plan(_spec(name)).items()}


def _build(spec, variant, seed):
    plan = _plan(spec)
    if variant not in plan:
        raise ValueError(f"unknown variant {variant!r} of {spec.name}; known: {', '.join(plan)}")
    row, _, opts, adv = plan[variant]
    rng = np.random.default_rng([seed_of(f"{spec.name}/{variant}"), seed])
    args, kwargs, mutates, group0 = spec.catalogue.base(rng, opts, helpers)
    args = list(args)
    if adv is not None:
        args = adv.transform(spec, args, kwargs, group0, rng)
    case_id = f"{spec.name}/{variant}/s{seed}"
    return ConformCase(
        label=case_id, args=tuple(args), kwargs=dict(kwargs), mutates=tuple(mutates),
        id=case_id, name=spec.name, row=row,
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
    try:
        spec = _spec(name)
    except ValueError:
        raise ValueError(
            f"unknown normalizer {name!r} in case id {case_id!r}; known: {', '.join(catalogued())}"
        ) from None
    return _build(spec, variant, seed)


def catalogue(names=None, seeds=None) -> list:
    """Every case of the named normalizers (all with a catalogue by default).

    By default random variants come with seeds ``s0 .. s{RANDOM_SEEDS-1}``,
    adversarial ones with ``s0``.  ``seeds=N`` (a positive integer) gives
    *every* variant, random and adversarial, the seeds ``s0 .. s{N-1}``: the
    catalogue of :math:`V` variants becomes :math:`N V` cases (the sweeps of
    ``conform --seeds N``), each id still rebuilt bit for bit by
    :func:`case_from_id`.  Cases are ordered by normalizer (in the order
    given), then variant (the order of :func:`variants`), then seed.
    """
    if seeds is not None and (isinstance(seeds, (bool, np.bool_))
                              or not isinstance(seeds, (int, np.integer)) or seeds < 1):
        raise ValueError(f"seeds must be a positive integer (seeds s0 .. s{{N-1}} per variant) "
                         f"or None (the catalogue's own), got {seeds!r}")
    if names is None:
        names = catalogued()
    elif isinstance(names, str):
        names = [names]
    out = []
    for n in names:
        spec = _spec(n)
        for v, (_, nseeds, _, _) in _plan(spec).items():
            for s in range(nseeds if seeds is None else int(seeds)):
                out.append(_build(spec, v, s))
    return out
