r"""Second-order conformance: frameworks' Hessians through normalization layers.

The network
-----------
A small regression network with one normalization layer,

.. math::

    h = x W_1^\top,\qquad z = \mathrm{norm}(h;\ \gamma, \beta),\qquad
    o = \tanh(z)\, W_2^\top,\qquad
    L(\theta) = \tfrac12 \lVert o - t \rVert^2,

with :math:`x \in \mathbb R^{N\times D}`, :math:`t \in \mathbb R^{N\times K}`
fixed (seeded) and the parameter vector
:math:`\theta = (\operatorname{vec} W_1, \gamma, \beta, \operatorname{vec} W_2)`
(``affine``: True for both :math:`\gamma, \beta`, False for neither,
``"weight"`` or ``"bias"`` for one of them; RMS norm has no :math:`\beta`).
``norm`` is batch norm (training mode, statistics over the batch), layer norm, group norm (two groups of the hidden channels) or RMS
norm (Ioffe & Szegedy 2015; Ba et al. 2016; Wu & He 2018; Zhang & Sennrich
2019).  The block :math:`\partial^2 L / \partial\gamma\,\partial W_1` mixes
the norm's gain with the previous layer's weights: it exists only because
the normalizer's output depends on both.

The oracle
----------
:func:`oracle_hessian` is :math:`\nabla^2 L` of the network written with
normref's independent autograd reference (:mod:`normref.reference`),
differentiated twice by autograd (reverse over reverse);
:func:`oracle_hvp` is autograd's Hessian-vector product
:math:`\nabla^2 L\, v`.  The oracle is itself verified against central
differences of normref's *exact* gradient (:func:`exact_gradient`:
:func:`normref.vjp` of the normalizer chained by hand through the linear
layers and tanh), Richardson-extrapolated:

.. math::

    D(s) = \frac{\nabla L(\theta + s e_j) - \nabla L(\theta - s e_j)}{2s},\qquad
    R(s) = \frac{4 D(s/2) - D(s)}{3} = \nabla^2 L\, e_j + O(s^4),

with :math:`s = 2^{-7}, 2^{-8}, 2^{-9}` (powers of two: :math:`\theta \pm s e_j`
is exact up to one rounding).  The uncertainty of :math:`R(2^{-8})` is
estimated by :math:`\max|R(2^{-7}) - R(2^{-8})|` (its truncation error is
16 times smaller than the difference; the observed error is 1/30 to 1/15 of
the estimate on every network, seeds 0-2) plus the rounding of the quotient,
:math:`64\,\epsilon \max|\nabla L| / 2^{-9}` (:func:`fd_hessian`, which
returns the symmetric part of :math:`R`).  This verifies the oracle to about
:math:`10^{-8}` of its entries; agreement at the rounding level is then
corroborated by the independent frameworks that pass.

The judgement
-------------
A candidate's Hessian (or stacked HVPs) is judged in float64 by
:func:`normref.testing.conformance.judge.judge`: errors in ulps at the scale
:math:`\max(|H_{ij}|, \operatorname{rms}(H), f_{ij})`, tolerance
:math:`b_{\text{backward}}\,\kappa` ulps (:func:`normref.tolerance.tolerance`)
with :math:`\kappa` the conditioning of the normalizer's input :math:`h`
(:func:`normref.tolerance.conditioning`).  The floor :math:`f` is the size
of the terms a Hessian entry sums: the Gauss-Newton part
:math:`J^\top J` has terms :math:`|J|^\top |J|` (:math:`J = \partial o /
\partial\theta`), which the entry can cancel; for an HVP,
:math:`(|H| + |J|^\top|J|)\,|v|` (the rule of
:func:`normref.tolerance.rounding_scale`).  Every row also reports the worst
element relative to the largest entry of the expected matrix.  Documented
framework failures are the entries of ``normref/testing/known/second_order.json``
(:func:`load_second_order_known`; the format is :mod:`normref.testing.conformance.known`'s,
with a ``framework`` per entry, a case pattern on :attr:`Network.label` and a
check pattern on the method name).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..tolerance import DERIVATIVE_ULPS, EPS, conditioning
from .conformance.known import load_second_order_discrepancies, match_known

__all__ = ["NORMALIZERS", "Network", "network", "oracle_hessian", "oracle_hvp", "exact_gradient",
           "fd_hessian", "Row", "judge_matrix", "torch_candidates", "jax_candidates",
           "second_order_rows", "format_rows", "load_second_order_known", "FRAMEWORKS"]

NORMALIZERS = ("batch_norm", "layer_norm", "group_norm", "rms_norm")
FRAMEWORKS = ("torch", "jax")
#: the affine variants: both gain and bias, neither, only the gain, only the bias
AFFINES = (True, False, "weight", "bias")
_LABEL = {True: "affine", False: "plain", "weight": "weight", "bias": "bias"}
_EPS_NORM = {"batch_norm": 1e-5, "layer_norm": 1e-5, "group_norm": 1e-5, "rms_norm": 1e-6}
_GROUPS = 2


@dataclasses.dataclass(frozen=True)
class Network:
    """One network of the module docstring: its data and parameter layout.

    ``blocks`` -- ``((name, shape), ...)`` in the order of the parameter
    vector ``theta``; ``x``, ``t`` -- input and target; ``eps`` -- the norm's.
    """

    normalizer: str
    affine: bool | str
    seed: int
    x: np.ndarray
    t: np.ndarray
    theta: np.ndarray
    blocks: tuple
    eps: float

    @property
    def label(self):
        return f"{self.normalizer}/{_LABEL[self.affine]}/s{self.seed}"

    @property
    def hidden(self):
        return self.blocks[0][1][0]

    def slices(self):
        """``{block name: slice of theta}``."""
        out, o = {}, 0
        for name, shape in self.blocks:
            n = int(np.prod(shape))
            out[name] = slice(o, o + n)
            o += n
        return out

    def unpack(self, theta):
        """``{name: block}`` of any array-like supporting slicing and reshape
        (NumPy, autograd boxes, torch and jax tensors)."""
        return {name: theta[s].reshape(shape) for (name, shape), s in
                zip(self.blocks, self.slices().values())}


def has_variant(normalizer, affine):
    """Whether ``affine`` is a distinct variant of ``normalizer`` (RMS norm: True, False only)."""
    return normalizer != "rms_norm" or affine in (True, False)


def network(normalizer, affine=True, seed=0, n=8, d=4, hidden=6, k=2):
    """The seeded :class:`Network` (``hidden`` must be even: group norm uses two groups)."""
    if normalizer not in NORMALIZERS:
        raise ValueError(f"normalizer must be one of {NORMALIZERS}, got {normalizer!r}")
    if not any(affine is a or affine == a and isinstance(a, str) for a in AFFINES) \
            or not has_variant(normalizer, affine):
        raise ValueError(f"affine must be one of {AFFINES} (rms_norm: True or False), got {affine!r}")
    if hidden % _GROUPS:
        raise ValueError(f"hidden={hidden} must be divisible by {_GROUPS}")
    rng = np.random.default_rng([seed, 0x5EC0, NORMALIZERS.index(normalizer),
                                 {True: 1, False: 0, "weight": 2, "bias": 3}[affine]])
    blocks = [("W1", (hidden, d))]
    if affine in (True, "weight"):
        blocks.append(("gamma", (hidden,)))
    if affine in (True, "bias") and normalizer != "rms_norm":
        blocks.append(("beta", (hidden,)))
    blocks.append(("W2", (k, hidden)))
    size = sum(int(np.prod(s)) for _, s in blocks)
    theta = rng.standard_normal(size)
    if affine in (True, "weight"):  # a gain around 1, as trained networks have
        lay = dict(zip([b[0] for b in blocks], range(len(blocks))))
        o = sum(int(np.prod(s)) for _, s in blocks[:lay["gamma"]])
        theta[o:o + hidden] = 1.0 + 0.3 * theta[o:o + hidden]
    return Network(normalizer, affine, int(seed), rng.standard_normal((n, d)),
                   rng.standard_normal((n, k)), theta, tuple(blocks), _EPS_NORM[normalizer])


def _norm_args(net, h, gamma, beta):
    """Positional arguments of normref's (and the reference's) normalizer on ``h``."""
    H = net.hidden
    if net.normalizer == "batch_norm":
        return (h, None, None, gamma, beta, True, 0.1, net.eps)
    if net.normalizer == "layer_norm":
        return (h, (H,), gamma, beta, net.eps)
    if net.normalizer == "group_norm":
        return (h, _GROUPS, gamma, beta, net.eps)
    return (h, (H,), gamma, net.eps)


def _reference_output(net):
    """``theta -> o`` in autograd.numpy through :mod:`normref.reference`."""
    import autograd.numpy as anp
    from .. import reference

    fn = getattr(reference, net.normalizer)

    def output(theta):
        p = net.unpack(theta)
        z = fn(*_norm_args(net, anp.dot(net.x, p["W1"].T), p.get("gamma"), p.get("beta")))
        return anp.dot(anp.tanh(z), p["W2"].T)
    return output


def _reference_loss(net):
    import autograd.numpy as anp

    output = _reference_output(net)
    return lambda theta: 0.5 * anp.sum((output(theta) - net.t) ** 2)


def oracle_hessian(net):
    """:math:`\\nabla^2 L(\\theta)`, shape ``(P, P)``: autograd twice through the reference."""
    import autograd

    return np.asarray(autograd.hessian(_reference_loss(net))(net.theta), dtype=np.float64)


def oracle_hvp(net, v):
    """:math:`\\nabla^2 L(\\theta)\\, v` for each row of ``v`` (shape ``(m, P)`` or ``(P,)``):
    autograd's reverse-over-reverse Hessian-vector product through the reference."""
    import autograd

    hvp = autograd.hessian_vector_product(_reference_loss(net))
    v = np.asarray(v, dtype=np.float64)
    rows = np.atleast_2d(v)
    out = np.stack([np.asarray(hvp(net.theta, r), dtype=np.float64) for r in rows])
    return out if v.ndim == 2 else out[0]


def output_jacobian(net):
    """:math:`J = \\partial o / \\partial \\theta`, shape ``(N*K, P)`` (autograd, reference)."""
    import autograd

    J = autograd.jacobian(_reference_output(net))(net.theta)
    return np.asarray(J, dtype=np.float64).reshape(-1, net.theta.size)


def exact_gradient(net, theta=None):
    r""":math:`\nabla L(\theta)` from normref's exact first derivatives.

    The normalizer's pullback is :func:`normref.vjp`; the rest is the chain
    rule by hand: :math:`\delta o = o - t`, :math:`\nabla W_2 = \delta o^\top a`,
    :math:`\delta z = (\delta o\, W_2) \odot (1 - a^2)`, the normalizer's VJP
    gives :math:`\delta h, \delta\gamma, \delta\beta`, and
    :math:`\nabla W_1 = \delta h^\top x`.
    """
    from ..autodiff import vjp
    from ..registry import REGISTRY

    theta = net.theta if theta is None else np.asarray(theta, dtype=np.float64)
    p = net.unpack(theta)
    fn = REGISTRY[net.normalizer].function
    args = _norm_args(net, net.x @ p["W1"].T, p.get("gamma"), p.get("beta"))
    z, pullback = vjp(fn, *args)
    a = np.tanh(z)
    do = a @ p["W2"].T - net.t
    grads = pullback((do @ p["W2"]) * (1.0 - a * a))
    slot = {"batch_norm": (3, 4), "layer_norm": (2, 3), "group_norm": (2, 3),
            "rms_norm": (2, None)}[net.normalizer]
    g = {"W1": grads[0].T @ net.x, "W2": do.T @ a}
    names = [b[0] for b in net.blocks]
    if "gamma" in names:
        g["gamma"] = grads[slot[0]]
    if "beta" in names:
        g["beta"] = grads[slot[1]]
    return np.concatenate([np.ravel(g[name]) for name, _ in net.blocks])


def fd_hessian(net, steps=(2.0 ** -7, 2.0 ** -8, 2.0 ** -9)):
    """``(H_fd, uncertainty)``: Richardson-extrapolated central differences of
    :func:`exact_gradient` (module docstring) and the bound on their error
    (a scalar: the same for every entry)."""
    P = net.theta.size
    D = []
    for s in steps:
        cols = np.empty((P, P))
        for j in range(P):
            e = np.zeros(P)
            e[j] = s
            cols[:, j] = (exact_gradient(net, net.theta + e) - exact_gradient(net, net.theta - e)) / (2 * s)
        D.append(cols)
    R1 = (4 * D[1] - D[0]) / 3
    R2 = (4 * D[2] - D[1]) / 3
    gmax = float(np.abs(exact_gradient(net)).max())
    unc = float(np.abs(R1 - R2).max()) + DERIVATIVE_ULPS * EPS * max(gmax, 1.0) / steps[-1]
    return 0.5 * (R2 + R2.T), unc


# ------------------------------------------------------------------ judgement
@dataclasses.dataclass
class Row:
    """One line of the second-order report."""

    framework: str
    method: str
    network: str
    normalizer: str
    affine: bool | str
    worst_ulps: float
    tolerance_ulps: float
    worst_rel: float       # |actual - expected| / max|expected| at the worst element
    index: tuple | None
    block: str
    expected: float
    actual: float
    status: str            # pass, fail, xfail, xpass, error
    reason: str = ""
    issue: str | None = None

    def as_dict(self):
        d = dataclasses.asdict(self)
        d["index"] = list(self.index) if self.index is not None else None
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _case(net):
    """The normalizer call on the network's pre-activation, as a conformance case
    (its conditioning is the judge's :math:`\\kappa`)."""
    from .conformance.cases import ConformCase

    p = net.unpack(net.theta)
    args = _norm_args(net, net.x @ p["W1"].T, p.get("gamma"), p.get("beta"))
    return ConformCase(label=net.label, args=args, id=net.label, name=net.normalizer)


def judge_matrix(net, expected, actual, floor, check="backward:hessian"):
    """The :class:`~normref.testing.conformance.judge.Verdict` of ``actual`` against
    ``expected`` (module docstring: scale floor ``floor``, :math:`\\kappa` of the norm's input)."""
    from ..registry import REGISTRY
    from .conformance.judge import judge

    case = _case(net)
    kappa = conditioning(REGISTRY[net.normalizer], case, "float64")
    return judge(case, expected, actual, "float64", check, cond=kappa,
                 floor=np.asarray(floor, dtype=np.float64))


def _block_of(net, j):
    for name, s in net.slices().items():
        if s.start <= j < s.stop:
            return name
    return "?"


def hvp_directions(net, m=3):
    """``m`` seeded standard-normal directions, shape ``(m, P)``."""
    rng = np.random.default_rng([net.seed, 0x4B5, net.theta.size])
    return rng.standard_normal((m, net.theta.size))


# ------------------------------------------------------------------ candidates
def _torch_loss(net):
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(net.x, dtype=torch.float64)
    t = torch.as_tensor(net.t, dtype=torch.float64)
    H = net.hidden

    def loss(theta):
        p = net.unpack(theta)
        h = x @ p["W1"].T
        g, b = p.get("gamma"), p.get("beta")
        if net.normalizer == "batch_norm":
            z = F.batch_norm(h, None, None, g, b, training=True, momentum=0.1, eps=net.eps)
        elif net.normalizer == "layer_norm":
            z = F.layer_norm(h, (H,), g, b, net.eps)
        elif net.normalizer == "group_norm":
            z = F.group_norm(h, _GROUPS, g, b, net.eps)
        else:
            z = F.rms_norm(h, (H,), g, net.eps)
        return 0.5 * ((torch.tanh(z) @ p["W2"].T - t) ** 2).sum()
    return loss


def torch_candidates():
    """``{method: (kind, compute(net) -> ndarray)}`` for PyTorch; kind ``"hessian"`` returns
    ``(P, P)``, ``"hvp"`` the HVPs along :func:`hvp_directions`, shape ``(m, P)``."""
    import torch
    from torch import func

    def th(net):
        return torch.as_tensor(net.theta, dtype=torch.float64)

    def stacked_hvp(net):
        f, p = _torch_loss(net), th(net)
        V = torch.as_tensor(hvp_directions(net), dtype=torch.float64)
        return torch.stack([func.jvp(func.grad(f), (p,), (v,))[1] for v in V])

    def autograd_hvp(net):
        f, p = _torch_loss(net), th(net)
        V = torch.as_tensor(hvp_directions(net), dtype=torch.float64)
        return torch.stack([torch.autograd.functional.hvp(f, p, v)[1] for v in V])

    return {
        "torch.func.hessian": ("hessian", lambda n: func.hessian(_torch_loss(n))(th(n))),
        "torch.func.jacrev(jacrev)": ("hessian", lambda n: func.jacrev(func.jacrev(_torch_loss(n)))(th(n))),
        "torch.func.jacrev(grad)": ("hessian", lambda n: func.jacrev(func.grad(_torch_loss(n)))(th(n))),
        "torch.func.jacfwd(grad)": ("hessian", lambda n: func.jacfwd(func.grad(_torch_loss(n)))(th(n))),
        "torch.func.jvp(grad) HVP": ("hvp", stacked_hvp),
        "torch.autograd.functional.hessian": (
            "hessian", lambda n: torch.autograd.functional.hessian(_torch_loss(n), th(n))),
        "torch.autograd.functional.hvp": ("hvp", autograd_hvp),
    }


def _jax_norm(net, h, g, b):
    """The normalizer in jax.numpy, the textbook formula (biased variance)."""
    import jax.numpy as jnp

    if net.normalizer == "rms_norm":
        z = h / jnp.sqrt(jnp.mean(h * h, axis=-1, keepdims=True) + net.eps)
        return z if g is None else z * g
    if net.normalizer == "batch_norm":
        axes, hh = (0,), h
    elif net.normalizer == "layer_norm":
        axes, hh = (-1,), h
    else:
        axes, hh = (-1,), h.reshape(h.shape[0], _GROUPS, -1)
    mu = jnp.mean(hh, axis=axes, keepdims=True)
    var = jnp.mean((hh - mu) ** 2, axis=axes, keepdims=True)
    z = ((hh - mu) / jnp.sqrt(var + net.eps)).reshape(h.shape)
    if g is not None:
        z = z * g
    return z if b is None else z + b


def _flax_norm(net, h, g, b):
    """The normalizer as a ``flax.linen`` layer applied with the given scale and bias."""
    import flax.linen as nn

    kw = dict(epsilon=net.eps, use_scale=g is not None, dtype=h.dtype, param_dtype=h.dtype)
    params = {}
    if g is not None:
        params["scale"] = g
    if net.normalizer == "rms_norm":
        return nn.RMSNorm(**kw).apply({"params": params}, h)
    kw["use_bias"] = b is not None
    if b is not None:
        params["bias"] = b
    if net.normalizer == "layer_norm":
        return nn.LayerNorm(**kw).apply({"params": params}, h)
    if net.normalizer == "group_norm":
        return nn.GroupNorm(num_groups=_GROUPS, **kw).apply({"params": params}, h)
    layer = nn.BatchNorm(use_running_average=False, momentum=0.9, **kw)
    import jax.numpy as jnp
    stats = {"mean": jnp.zeros(h.shape[-1], h.dtype), "var": jnp.ones(h.shape[-1], h.dtype)}
    z, _ = layer.apply({"params": params, "batch_stats": stats}, h, mutable=["batch_stats"])
    return z


def _jax_loss(net, norm):
    import jax.numpy as jnp

    x, t = jnp.asarray(net.x), jnp.asarray(net.t)

    def loss(theta):
        p = net.unpack(theta)
        z = norm(net, x @ p["W1"].T, p.get("gamma"), p.get("beta"))
        return 0.5 * jnp.sum((jnp.tanh(z) @ p["W2"].T - t) ** 2)
    return loss


def jax_candidates():
    """:func:`torch_candidates` for JAX: ``jax.hessian``, ``jacrev(grad)`` and the
    forward-over-reverse HVP ``jvp(grad)``, of the network in jax.numpy and with
    ``flax.linen`` norm layers, each under ``jax.jit`` (one XLA program per call,
    as users run them; eager dispatch of the nested transforms is 10x slower).
    Enables ``jax_enable_x64`` (float64)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    def th(net):
        return jnp.asarray(net.theta, dtype=jnp.float64)

    def hvp(norm):
        def run(net):
            f, p = _jax_loss(net, norm), th(net)
            V = jnp.asarray(hvp_directions(net))
            return jax.jit(jax.vmap(lambda v: jax.jvp(jax.grad(f), (p,), (v,))[1]))(V)
        return run

    def dense(transform, norm):
        return lambda net: jax.jit(transform(_jax_loss(net, norm)))(th(net))

    out = {}
    for tag, norm in (("jnp", _jax_norm), ("flax", _flax_norm)):
        out[f"jax.hessian [{tag}]"] = ("hessian", dense(jax.hessian, norm))
        out[f"jax.jacrev(grad) [{tag}]"] = (
            "hessian", dense(lambda f: jax.jacrev(jax.grad(f)), norm))
        out[f"jax.jvp(grad) HVP [{tag}]"] = ("hvp", hvp(norm))
    return out


# ------------------------------------------------------------------ report
def load_second_order_known(path=None):
    """The validated entries of ``normref/testing/known/second_order.json`` (or ``path``):
    the first-order keys plus ``framework`` per entry; ``cases`` match
    :attr:`Network.label`, ``checks`` the method, ``dtypes`` is ``["float64"]``
    (:func:`normref.testing.conformance.known.load_second_order_discrepancies`)."""
    return load_second_order_discrepancies(path)


def _candidates(framework):
    if framework == "torch":
        return torch_candidates()
    if framework == "jax":
        return jax_candidates()
    raise ValueError(f"framework must be one of {FRAMEWORKS}, got {framework!r}")


def second_order_rows(frameworks=FRAMEWORKS, normalizers=NORMALIZERS, affines=AFFINES,
                      seeds=(0,), methods=None, known=None, candidates=None):
    """Judge every candidate method on every network; a list of :class:`Row`.

    ``candidates`` -- ``{framework: {method: (kind, compute)}}`` overriding the
    built-in ones (tests inject deliberately wrong candidates); ``methods`` --
    restrict to these method names; ``known`` -- the discrepancy entries
    (default :func:`load_second_order_known`): a matching failure or error is
    ``xfail``, a matching pass ``xpass``.  Affine variants a normalizer lacks
    (:func:`has_variant`) are left out.
    """
    known = load_second_order_known() if known is None else known
    cands = {fw: (candidates or {}).get(fw) or _candidates(fw) for fw in frameworks}
    rows = []
    for name in normalizers:
        for affine in [a for a in affines if has_variant(name, a)]:
            for seed in seeds:
                net = network(name, affine, seed)
                H = oracle_hessian(net)
                J = output_jacobian(net)
                gn = np.abs(J).T @ np.abs(J)
                V = hvp_directions(net)
                HV = oracle_hvp(net, V)
                hv_floor = (np.abs(V) @ (np.abs(H) + gn).T)
                Hmax = {"hessian": float(np.abs(H).max()), "hvp": None}
                for fw in frameworks:
                    for method, (kind, compute) in cands[fw].items():
                        if methods is not None and method not in methods:
                            continue
                        rows.append(_row(net, fw, method, kind, compute, H, gn, HV, hv_floor,
                                         Hmax, known))
    return rows


def _row(net, fw, method, kind, compute, H, gn, HV, hv_floor, Hmax, known):
    expected, floor = (H, gn) if kind == "hessian" else (HV, hv_floor)
    base = dict(framework=fw, method=method, network=net.label, normalizer=net.normalizer,
                affine=net.affine)
    try:
        actual = np.asarray(compute(net), dtype=np.float64)
        v = judge_matrix(net, expected, actual, floor)
    except Exception as e:  # noqa: BLE001  (a crashing candidate is a result, not a crash)
        entry = match_known(known, fw, net.normalizer, net.label, "float64", method)
        msg = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
        return Row(**base, worst_ulps=math.inf, tolerance_ulps=math.nan, worst_rel=math.inf,
                   index=None, block="", expected=math.nan, actual=math.nan,
                   status="error" if entry is None else "xfail",
                   reason=msg if entry is None else f"{entry['reason']} [{msg}]",
                   issue=None if entry is None else entry["issue"])
    m = float(np.abs(expected).max()) or 1.0
    rel = abs(v.actual - v.expected) / m if v.index is not None else math.inf
    if kind == "hessian" and v.index is not None:
        block = f"{_block_of(net, v.index[0])}x{_block_of(net, v.index[1])}"
    else:
        block = f"direction {v.index[0]}, {_block_of(net, v.index[1])}" if v.index else ""
    status = "pass" if v.passed else "fail"
    entry = match_known(known, fw, net.normalizer, net.label, "float64", method)
    reason, issue = v.note, None
    if entry is not None:
        status = "xfail" if status == "fail" else "xpass"
        reason, issue = entry["reason"], entry["issue"]
    return Row(**base, worst_ulps=v.worst_ulps, tolerance_ulps=v.tolerance_ulps, worst_rel=rel,
               index=v.index, block=block, expected=v.expected, actual=v.actual, status=status,
               reason=reason, issue=issue)


def format_rows(rows):
    """The rows as a text table (one line per framework x method x network) and a total."""
    heads = ("framework", "method", "network", "worst ulps", "tolerance", "worst/max|H|",
             "at (block)", "status")
    body = [(r.framework, r.method, r.network, f"{r.worst_ulps:.3g}", f"{r.tolerance_ulps:.3g}",
             f"{r.worst_rel:.2e}", f"{r.index} ({r.block})" if r.index is not None else "-",
             r.status) for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(heads)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*heads), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*b) for b in body]
    counts = {s: sum(r.status == s for r in rows) for s in ("pass", "fail", "xfail", "xpass", "error")}
    lines.append("total: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    seen = {}
    for r in rows:
        if r.status in ("fail", "error", "xfail", "xpass") and r.reason:
            first = r.reason not in seen
            seen.setdefault(r.reason, f"{r.method} {r.network}")
            why = r.reason if first else f"the reason of {seen[r.reason]}"
            lines.append(f"  {r.status.upper()} {r.framework} {r.method} {r.network}: {why}"
                         + (f" ({r.issue})" if r.issue and first else ""))
    return "\n".join(lines)
