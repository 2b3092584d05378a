"""Hypothesis strategies for normalizer tests.

Arrays are generated from a drawn integer seed through numpy (``offset +
scale * standard_normal``), not element by element: shrinking then acts on
the seed, shapes and hyper-parameters, and a draw costs microseconds.  Sizes
stay small (at most ``max_size`` elements, 200 by default) so that dense
Jacobians and finite differences stay cheap.

:func:`normalizer_cases` draws complete valid calls ``(args, kwargs)`` of a
registered normalizer by name, following the public signatures.  Calls that
update running statistics in place (batch norm and ghost batch norm in
training, instance norm with running statistics) get fresh arrays in every
example, but a test that calls the function more than once should copy them
(``normref.registry.Case.fresh_args`` does the same for registry examples).
"""
from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

__all__ = [
    "shapes",
    "group_counts",
    "eps_values",
    "offsets",
    "scales",
    "float_arrays",
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


# -- per-normalizer cases -------------------------------------------------------


def _affine(draw, shape):
    """(weight, bias): each None or an array of ``shape`` (weight around 1)."""
    w = b = None
    if draw(st.booleans()):
        w = draw(float_arrays(shape, offset=1.0, scale=0.5))
    if draw(st.booleans()):
        b = draw(float_arrays(shape))
    return w, b


def _data(draw, shape):
    return draw(float_arrays(shape, offset=offsets(), scale=scales()))


@st.composite
def _batch_norm(draw):
    training = draw(st.booleans())
    shape = draw(shapes(2, 4, max_side=5))
    if training and shape[0] * math.prod(shape[2:]) < 2:
        shape = (2,) + shape[1:]  # more than one value per channel
    C = shape[1]
    x = _data(draw, shape)
    rm = draw(float_arrays((C,)))
    rv = draw(_positive_arrays((C,)))
    w, b = _affine(draw, (C,))
    kwargs = {
        "training": training,
        "momentum": draw(st.sampled_from([0.1, 0.01, 0.5])),
        "eps": draw(eps_values()),
    }
    return (x, rm, rv, w, b), kwargs


@st.composite
def _layer_like(draw, rms=False):
    shape = draw(shapes(1, 4, max_side=6, max_size=MAX_SIZE // 2))
    k = draw(st.integers(1, len(shape)))
    normalized_shape = shape[len(shape) - k:]
    if math.prod(normalized_shape) < 2:
        shape = shape[: len(shape) - 1] + (2,)
        normalized_shape = normalized_shape[:-1] + (2,)
    x = _data(draw, shape) if not rms else draw(float_arrays(shape, scale=scales()))
    w, b = _affine(draw, normalized_shape)
    if rms:
        eps = draw(st.one_of(st.none(), eps_values()))
        return (x, normalized_shape, w), {"eps": eps}
    return (x, normalized_shape, w, b), {"eps": draw(eps_values())}


@st.composite
def _group_norm(draw):
    N = draw(st.integers(1, 3))
    G = draw(st.integers(1, 4))
    per = draw(st.integers(1, 3))
    C = G * per
    spatial = draw(shapes(0, 2, max_side=4, max_size=max(1, MAX_SIZE // (N * C))))
    if per * math.prod(spatial) < 2:
        spatial = spatial + (2,) if not spatial else (spatial[0] + 1,) + spatial[1:]
    shape = (N, C) + tuple(spatial)
    x = _data(draw, shape)
    affine = draw(st.sampled_from(["channel", "group"]))
    w, b = _affine(draw, (C,) if affine == "channel" else (G,))
    kwargs = {"eps": draw(eps_values())}
    if affine == "group":
        kwargs["affine"] = "group"
    return (x, G, w, b), kwargs


@st.composite
def _instance_norm(draw):
    N = draw(st.integers(1, 3))
    C = draw(st.integers(1, 4))
    spatial = draw(shapes(1, 2, max_side=5, max_size=max(2, MAX_SIZE // (N * C))))
    if math.prod(spatial) < 2:
        spatial = (2,) + tuple(spatial[1:])
    x = _data(draw, (N, C) + tuple(spatial))
    rm = rv = None
    if draw(st.booleans()):
        rm = draw(float_arrays((C,)))
        rv = draw(_positive_arrays((C,)))
    w, b = _affine(draw, (C,))
    return (x, rm, rv, w, b), {"use_input_stats": True, "eps": draw(eps_values())}


@st.composite
def _positional_norm(draw):
    shape = draw(shapes(2, 4, max_side=5, max_size=MAX_SIZE // 2))
    if shape[1] < 2:
        shape = (shape[0], 2) + shape[2:]
    return (_data(draw, shape),), {"eps": draw(eps_values())}


@st.composite
def _batch_group_norm(draw):
    N = draw(st.integers(1, 3))
    G = draw(st.integers(1, 4))
    per = draw(st.integers(1, 3))
    C = G * per
    spatial = draw(shapes(0, 2, max_side=4, max_size=max(1, MAX_SIZE // (N * C))))
    if N * per * math.prod(spatial) < 2:
        N = 2
    x = _data(draw, (N, C) + tuple(spatial))
    w, b = _affine(draw, (C,))
    return (x, G, w, b), {"eps": draw(eps_values())}


@st.composite
def _ghost_batch_norm(draw):
    vb = draw(st.integers(1, 4))
    chunks = draw(st.integers(1, 3))
    C = draw(st.integers(1, 4))
    spatial = draw(shapes(0, 2, max_side=4, max_size=max(1, MAX_SIZE // (vb * chunks * C))))
    if vb * math.prod(spatial) < 2:
        vb = 2
    x = _data(draw, (vb * chunks, C) + tuple(spatial))
    rm = rv = None
    if draw(st.booleans()):
        rm = draw(float_arrays((C,)))
        rv = draw(_positive_arrays((C,)))
    w, b = _affine(draw, (C,))
    kwargs = {"training": True, "momentum": 0.1, "eps": draw(eps_values())}
    return (x, vb, rm, rv, w, b), kwargs


@st.composite
def _mean_variance_norm(draw):
    shape = draw(shapes(4, 4, max_side=4, max_size=MAX_SIZE // 2))
    axes = draw(st.sampled_from([(0, 2, 3), (2, 3), (1, 2, 3), (0, 1, 2, 3), (1,)]))
    if math.prod(shape[a] for a in axes) < 2:
        shape = tuple(s if a != axes[-1] else max(s, 2) for a, s in enumerate(shape))
    x = _data(draw, shape)
    placement = draw(st.sampled_from(["std", "variance"]))
    eps = draw(st.sampled_from([1e-9, 1e-5, 1e-3]))
    return (x, axes, eps), {"eps_placement": placement}


@st.composite
def _local_response_norm(draw):
    shape = draw(shapes(3, 4, max_side=5))
    C = shape[1]
    size = draw(st.integers(1, C + 1))
    x = draw(float_arrays(shape, scale=scales()))
    kwargs = {
        "alpha": draw(st.sampled_from([1e-4, 1e-2, 0.5])),
        "beta": draw(st.sampled_from([0.75, 0.5, 1.0])),
        "k": draw(st.sampled_from([1.0, 2.0, 0.5])),
    }
    return (x, size), kwargs


@st.composite
def _normalize(draw):
    shape = draw(shapes(1, 4, max_side=5))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    p = draw(st.sampled_from([2.0, 1.0, 3.0]))
    x = draw(float_arrays(shape, scale=scales()))
    return (x,), {"p": p, "dim": dim, "eps": 1e-12}


@st.composite
def _weight_norm(draw):
    shape = draw(shapes(1, 4, max_side=5))
    dim = draw(st.one_of(st.none(), st.integers(0, len(shape) - 1)))
    v = draw(float_arrays(shape))
    if dim is None:
        g = np.asarray(draw(st.floats(0.5, 2.0)))
    else:
        gshape = tuple(s if a == dim else 1 for a, s in enumerate(shape))
        g = draw(float_arrays(gshape, offset=1.0, scale=0.3))
    return (v, g), {"dim": dim}


def _spd(rng, d, ridge=1.0):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + ridge * np.eye(d)


@st.composite
def _batch_whitening(draw, iterative=False):
    """Full-rank groups (more observations than features: autograd's eigh
    reference is undefined at the repeated zero eigenvalues of a
    rank-deficient covariance), eps in {1e-5, 1e-3, 0.1}, per-channel affine
    or a coloring matrix, training or eval with running estimates."""
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
        rc = np.stack([_spd(rng, g) for _ in range(nb)]) * float(np.var(x))
    return (x, rm, rc, w, b), kwargs


@st.composite
def _group_whitening(draw):
    G = draw(st.integers(1, 4))
    per = draw(st.integers(1, 3))
    spatial = draw(st.sampled_from([(), (2,), (2, 2)]))
    if per * math.prod(spatial) < max(G + 1, 3):  # full rank, and no 2-value groups
        spatial = (max(G + 1, 3),)                  # (derivative ~0: FD cannot resolve it)
    N = draw(st.integers(1, 3))
    offset = draw(st.sampled_from([0.0, 1.0, 1e4]))
    scale = draw(st.sampled_from([1.0, 1e3, 2.0]) if offset == 1e4 else scales())
    x = draw(float_arrays((N, G * per) + spatial, offset=offset, scale=scale))
    w, b = _affine(draw, (G * per,))
    kwargs = {"eps": draw(st.sampled_from([1e-5, 1e-3, 0.1])),
              "method": draw(st.sampled_from(["iter_norm", "zca", "cholesky", "pca"])),
              "T": draw(st.integers(0, 7))}
    return (x, G, w, b), kwargs


NORMALIZERS = {
    "batch_norm": _batch_norm,
    "layer_norm": lambda: _layer_like(False),
    "group_norm": _group_norm,
    "instance_norm": _instance_norm,
    "rms_norm": lambda: _layer_like(True),
    "positional_norm": _positional_norm,
    "batch_group_norm": _batch_group_norm,
    "ghost_batch_norm": _ghost_batch_norm,
    "mean_variance_norm": _mean_variance_norm,
    "local_response_norm": _local_response_norm,
    "normalize": _normalize,
    "weight_norm": _weight_norm,
    "pca_whitening": _batch_whitening,
    "zca_whitening": _batch_whitening,
    "cholesky_whitening": _batch_whitening,
    "iter_norm": lambda: _batch_whitening(iterative=True),
    "group_whitening": _group_whitening,
}


def normalizer_cases(name):
    """Valid calls ``(args, kwargs)`` of the normalizer registered as ``name``.

    Hyper-parameters respect each signature's constraints: C a multiple of
    the drawn ``num_groups`` (group / batch-group norm), N a multiple of
    ``virtual_batch_size`` (ghost batch norm), more than one value per
    channel in batch-norm training and per statistics group elsewhere, a
    positive running variance.  Inputs use :func:`offsets` and :func:`scales`
    (except where the op is not shift invariant: LRN, normalize, weight norm,
    RMS norm draw centred data).
    """
    try:
        return NORMALIZERS[name]()
    except KeyError:
        raise KeyError(
            f"no strategy for {name!r}; available: {', '.join(sorted(NORMALIZERS))}"
        ) from None
