"""Hypothesis strategies for normalizer tests.

Arrays are generated from a drawn integer seed through numpy (``offset +
scale * standard_normal``), not element by element: shrinking then acts on
the seed, shapes and hyper-parameters, and a draw costs microseconds.  Sizes
stay small (at most ``max_size`` elements, 200 by default) so that dense
Jacobians and finite differences stay cheap.

:func:`normalizer_cases` draws complete valid calls ``(args, kwargs)`` of a
registered normalizer by name, from the ``strategy`` hook its Spec declares
(``strategy(draw, h) -> (args, kwargs)``, ``h`` = :data:`HELPERS`: the
normalizer's module holds its own draws and never imports hypothesis).  Calls that
update running statistics in place (batch norm and ghost batch norm in
training, instance norm with running statistics) get fresh arrays in every
example, but a test that calls the function more than once should copy them
(``normref.registry.Case.fresh_args`` does the same for registry examples).
"""
from __future__ import annotations

import math
import types
from collections.abc import Mapping

import numpy as np
from hypothesis import strategies as st

__all__ = [
    "shapes",
    "group_counts",
    "eps_values",
    "offsets",
    "scales",
    "float_arrays",
    "positive_arrays",
    "affine",
    "data",
    "running_stats",
    "layer_like",
    "spd",
    "batch_whitening",
    "HELPERS",
    "normalizer_cases",
    "NORMALIZERS",
]

MAX_SIZE = 200


def shapes(min_rank=2, max_rank=4, min_side=1, max_side=6, max_size=MAX_SIZE):
    """Array shapes of rank in ``[min_rank, max_rank]``, sides in ``[min_side, max_side]``,
    at most ``max_size`` elements."""
    if min_side > 0 and min_side ** min_rank > max_size:
        raise ValueError(
            f"no shape of rank >= {min_rank} with sides >= {min_side} has at most "
            f"{max_size} elements"
        )

    @st.composite
    def _shapes(draw):
        rank = draw(st.integers(min_rank, max_rank))
        out = []
        for axis in range(rank):
            used = math.prod(out)
            rest = rank - axis - 1
            # leave room for the remaining axes at their minimum side
            room = max_size // (used * max(min_side, 1) ** rest)
            hi = max(min(max_side, room), min_side)
            out.append(draw(st.integers(min_side, hi)))
        return tuple(out)

    return _shapes()


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def group_counts(num_channels):
    """Valid ``num_groups`` for ``num_channels`` channels: its divisors."""
    if num_channels < 1:
        raise ValueError(f"num_channels must be positive, got {num_channels}")
    return st.sampled_from(_divisors(num_channels))


def eps_values():
    """eps hyper-parameters: the common defaults and log-uniform positive values."""
    return st.one_of(
        st.sampled_from([1e-5, 1e-3, 1e-6, 0.1]),
        st.floats(-12.0, 0.0).map(lambda e: float(10.0 ** e)),
    )


def offsets():
    """Data offsets, including the large ones that break one-pass variances."""
    return st.sampled_from([0.0, 1.0, -1.0, 1e4, -1e4, 1e8])


def scales():
    """Data spreads (standard deviations), from tiny to large."""
    return st.sampled_from([1.0, 1e-3, 1e3, 0.5, 2.0])


def _maybe(value_or_strategy):
    if isinstance(value_or_strategy, st.SearchStrategy):
        return value_or_strategy
    return st.just(value_or_strategy)


def float_arrays(shape, offset=0.0, scale=1.0):
    """float64 arrays ``offset + scale * N(0, 1)`` of ``shape``, from a drawn seed.

    ``shape``, ``offset`` and ``scale`` may be values or strategies.
    """

    @st.composite
    def _arrays(draw):
        shp = tuple(draw(_maybe(shape)))
        off = float(draw(_maybe(offset)))
        sc = float(draw(_maybe(scale)))
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        return off + sc * rng.standard_normal(shp)

    return _arrays()


def _positive_arrays(shape):
    @st.composite
    def _arrays(draw):
        seed = draw(st.integers(0, 2**32 - 1))
        return np.random.default_rng(seed).uniform(0.5, 2.0, size=shape)

    return _arrays()


# -- helpers for the per-normalizer strategies ---------------------------------
#
# A normalizer module declares ``strategy=_strategy`` in its Spec, with
# ``def _strategy(draw, h) -> (args, kwargs)``; ``h`` is :data:`HELPERS`
# below, so the module never imports hypothesis or normref.testing.  The
# helpers taking ``draw`` draw directly (they are plain functions, called from
# inside the one ``st.composite`` that :func:`normalizer_cases` builds).


def positive_arrays(shape):
    """float64 arrays of ``shape`` uniform in [0.5, 2] (running variances), from a drawn seed."""

    @st.composite
    def _arrays(draw):
        seed = draw(st.integers(0, 2**32 - 1))
        return np.random.default_rng(seed).uniform(0.5, 2.0, size=shape)

    return _arrays()


def affine(draw, shape):
    """(weight, bias): each None or an array of ``shape`` (weight around 1)."""
    w = b = None
    if draw(st.booleans()):
        w = draw(float_arrays(shape, offset=1.0, scale=0.5))
    if draw(st.booleans()):
        b = draw(float_arrays(shape))
    return w, b


def data(draw, shape):
    """Input data ``offset + scale * N(0, 1)`` with :func:`offsets` and :func:`scales`."""
    return draw(float_arrays(shape, offset=offsets(), scale=scales()))


def running_stats(draw, C):
    """(running_mean, running_var) of C channels: standard normal and uniform in [0.5, 2]."""
    return draw(float_arrays((C,))), draw(positive_arrays((C,)))


def layer_like(draw, rms=False):
    """A call of layer norm (``rms=False``: ``(x, normalized_shape, w, b), {eps}``) or of
    RMS norm (``rms=True``: ``(x, normalized_shape, w), {eps or None}``, centred data):
    ``normalized_shape`` the trailing k axes, at least two elements."""
    shape = draw(shapes(1, 4, max_side=6, max_size=MAX_SIZE // 2))
    k = draw(st.integers(1, len(shape)))
    normalized_shape = shape[len(shape) - k:]
    if math.prod(normalized_shape) < 2:
        shape = shape[: len(shape) - 1] + (2,)
        normalized_shape = normalized_shape[:-1] + (2,)
    x = data(draw, shape) if not rms else draw(float_arrays(shape, scale=scales()))
    w, b = affine(draw, normalized_shape)
    if rms:
        eps = draw(st.one_of(st.none(), eps_values()))
        return (x, normalized_shape, w), {"eps": eps}
    return (x, normalized_shape, w, b), {"eps": draw(eps_values())}


def spd(rng, d, ridge=1.0):
    """A random symmetric positive definite ``d x d`` matrix ``A A^T / d + ridge I``."""
    a = rng.standard_normal((d, d))
    return a @ a.T / d + ridge * np.eye(d)


def channel_groups(draw, over_batch=False):
    """``(N, G, C, spatial)`` of a grouped-channel call: G groups of C / G channels, at least
    two values per statistics group -- per (n, g) (group norm; the spatial shape grows), or,
    ``over_batch``, per g over the batch (batch-group norm; N grows)."""
    N = draw(st.integers(1, 3))
    G = draw(st.integers(1, 4))
    per = draw(st.integers(1, 3))
    C = G * per
    spatial = tuple(draw(shapes(0, 2, max_side=4, max_size=max(1, MAX_SIZE // (N * C)))))
    if over_batch:
        if N * per * math.prod(spatial) < 2:
            N = 2
    elif per * math.prod(spatial) < 2:
        spatial = spatial + (2,) if not spatial else (spatial[0] + 1,) + spatial[1:]
    return N, G, C, spatial


def batch_whitening(draw, iterative=False):
    """A call of a batch-whitening normalizer ``(x, rm, rc, w, b), kwargs``.

    Full-rank groups (more observations than features: autograd's eigh
    reference is undefined at the repeated zero eigenvalues of a
    rank-deficient covariance), eps in {1e-5, 1e-3, 0.1}, per-channel affine
    or a coloring matrix, training or eval with running estimates;
    ``iterative`` adds IterNorm's ``T`` in [0, 7]."""
    g = draw(st.integers(1, 4))
    nb = draw(st.integers(1, 2))
    C = g * nb
    spatial = draw(st.sampled_from([(), (2,), (2, 2)]))
    S = math.prod(spatial)
    N = draw(st.integers(max(2, -(-(g + 1) // S)), 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    mix = np.eye(C) + 0.5 * rng.standard_normal((C, C))
    x = np.einsum("dc,nc...->nd...", mix, rng.standard_normal((N, C) + spatial))
    # (offset 1e4 only with unit or larger spread: at 1e4 +- 1e-3 central
    # differences lose 7 digits to the offset and cannot judge the derivative)
    offset = draw(st.sampled_from([0.0, 1.0, -3.0, 1e4]))
    x = offset + draw(st.sampled_from([1.0, 1e3] if offset == 1e4 else [1.0, 1e-3, 1e3])) * x
    kind = draw(st.sampled_from(["none", "affine", "coloring"]))
    w = b = None
    if kind == "affine":
        w, b = rng.uniform(0.5, 1.5, C), rng.standard_normal(C)
    elif kind == "coloring":
        w = np.stack([np.eye(g) + 0.3 * rng.standard_normal((g, g)) for _ in range(nb)])
    kwargs = {"eps": draw(st.sampled_from([1e-5, 1e-3, 0.1])), "group_size": g}
    if iterative:
        kwargs["T"] = draw(st.integers(0, 7))
    rm = rc = None
    if draw(st.booleans()):
        kwargs["training"] = False
        rm = rng.standard_normal(C) + float(np.mean(x))
        rc = np.stack([spd(rng, g) for _ in range(nb)]) * float(np.var(x))
    return (x, rm, rc, w, b), kwargs


#: The helper namespace ``h`` handed to every ``Spec.strategy(draw, h)``.
#: ``st`` is hypothesis.strategies itself (``h.st.integers``, ``h.st.sampled_from``,
#: ``h.st.booleans``, ...); strategies (draw them with ``draw(...)``): ``shapes``,
#: ``group_counts``, ``eps_values``, ``offsets``, ``scales``, ``float_arrays``,
#: ``positive_arrays``; draws (call them with ``draw`` first): ``affine``, ``data``,
#: ``running_stats``, ``layer_like``, ``batch_whitening``, ``channel_groups``; ``spd(rng, d)`` a
#: matrix; ``MAX_SIZE`` the element budget; ``prod`` = math.prod.
HELPERS = types.SimpleNamespace(
    st=st, MAX_SIZE=MAX_SIZE, prod=math.prod, shapes=shapes, group_counts=group_counts, eps_values=eps_values,
    offsets=offsets, scales=scales, float_arrays=float_arrays, positive_arrays=positive_arrays,
    affine=affine, data=data, running_stats=running_stats, layer_like=layer_like, spd=spd,
    batch_whitening=batch_whitening, channel_groups=channel_groups,
)


def _with_strategy():
    import normref  # noqa: F401  (the built-in normalizers register on import)
    from ..registry import REGISTRY

    return {name: spec for name, spec in REGISTRY.items() if spec.strategy is not None}


def normalizer_cases(name):
    """Valid calls ``(args, kwargs)`` of the normalizer registered as ``name``.

    Built from the ``strategy`` hook of its Spec (``strategy(draw, h)``, ``h`` =
    :data:`HELPERS`), declared in the normalizer's own module.  The built-in
    hooks respect each signature's constraints: C a multiple of the drawn
    ``num_groups`` (group / batch-group norm), N a multiple of
    ``virtual_batch_size`` (ghost batch norm), more than one value per channel
    in batch-norm training and per statistics group elsewhere, a positive
    running variance.  Inputs use :func:`offsets` and :func:`scales` (except
    where the op is not shift invariant: LRN, normalize, weight norm, RMS norm
    draw centred data).

    KeyError (message "no strategy for ...") when ``name`` is not registered or
    its Spec has no strategy hook.
    """
    specs = _with_strategy()
    if name not in specs:
        from ..registry import REGISTRY

        why = ("its Spec declares no strategy hook" if name in REGISTRY
               else "no normalizer is registered under that name")
        raise KeyError(f"no strategy for {name!r} ({why}); available: {', '.join(sorted(specs))}")
    hook = specs[name].strategy

    @st.composite
    def _cases(draw):
        return hook(draw, HELPERS)

    return _cases()


class _Strategies(Mapping):
    """Read-only view ``name -> () -> strategy`` of the registered normalizers that
    declare a strategy hook (computed from the registry on every access)."""

    def __getitem__(self, name):
        if name not in _with_strategy():
            raise KeyError(name)
        return lambda: normalizer_cases(name)

    def __iter__(self):
        return iter(_with_strategy())

    def __len__(self):
        return len(_with_strategy())

    def __repr__(self):
        return f"NORMALIZERS({sorted(self)})"


#: ``name -> () -> strategy`` for every registered normalizer with a ``strategy``
#: hook: a view of the registry, not a list of its own.
NORMALIZERS = _Strategies()
