r"""Invariance of normalized layers: Ba et al.'s Table 1 and scale invariance.

Two computations on normref's exact derivatives (theory items 1 and 2).

**Invariance table** (Ba, Kiros & Hinton 2016, *Layer Normalization*,
arXiv:1607.06450, Table 1).  A layer maps a batch :math:`X \in \mathbb R^{N
\times d_{in}}` (one training case per row) through a weight matrix
:math:`W \in \mathbb R^{d_{out} \times d_{in}}` to the normalized summed
inputs

.. math::

    h = \mathrm{norm}(A), \qquad A = X W^\top \in \mathbb R^{N \times d_{out}}

(gain 1, bias 0: the affine recovery is fixed, and no nonlinearity is
applied because the table is about the normalized summed inputs).  Six
transformations are applied, with a random :math:`s > 0` and a random
:math:`c`:

=========================== ======================================================
``weight_matrix_rescaling``   :math:`W \to s W`
``weight_matrix_recentering`` :math:`W \to W + \mathbf 1 c^\top` (every row gets c)
``weight_vector_rescaling``   one row :math:`w_i \to s\,w_i`
``dataset_rescaling``         :math:`X \to s X`
``dataset_recentering``       :math:`X \to X + \mathbf 1 c^\top` (every case gets c)
``single_case_rescaling``     one row :math:`x_n \to s\,x_n`
=========================== ======================================================

and the layer is *invariant* to a transformation when
:math:`\max|h' - h| \le \mathrm{rtol}\,\max|h|` on every draw (fresh
:math:`X, W` and fresh transformation parameters each draw; scale factors
:math:`s = e^{\pm u}`, :math:`u \sim U(0.5, 2.3)`, so never close to 1).
The answer is computed, never typed in; :data:`PAPER_TABLE1` holds the paper's
rows only to be compared with (the claims of :func:`invariance_claims`).

How each registered normalizer is put on :math:`A` is its own module's
``layer=`` fact (a :class:`normref.layer_call.LayerCall`; :func:`table_layer`),
with the options the fact gives for this geometry (``LayerCall.table``):
batch_norm training mode with the :math:`d_{out}` features as channels;
layer_norm and rms_norm over :math:`d_{out}`; group_norm and batch_group_norm
with 3 groups of the :math:`d_{out} = 12` features (no spatial axis);
instance_norm on :math:`A` viewed as :math:`(N, C{=}3, L{=}4)`;
positional_norm on :math:`(N, C{=}d_{out})`; ghost_batch_norm with virtual
batches of 4 of the :math:`N = 8` cases; mean_variance_norm with
``axes=(0,)``; local_response_norm on :math:`(N, d_{out}, 1)`, size 3,
torch defaults; normalize with ``dim=1``; the batch-whitening family
(pca, zca, cholesky whitening, iter_norm) in training mode with groups of 4
of the 12 features, each group whitened over the 8 cases, and
group_whitening with 3 groups of 4 features per case; weight_norm is a weight
normalizer, applied as Ba et al. do: :math:`h = X\,\mathrm{wn}(V, g)^\top`
with :math:`V` playing :math:`W` and a fixed gain :math:`g_i \in [0.5, 1.5]`.
A user's plain callable ``f(x)`` on an ``(N, features)`` array is applied as
:math:`h = f(X W^\top)`.

*eps*: with :math:`\epsilon > 0` a standardization is only approximately
scale invariant (:math:`\sigma/\sqrt{\sigma^2+\epsilon}` changes with the
scale).  Every normalizer whose signature has an ``eps`` is therefore run
with the table's ``eps`` (default ``0.0``: exact invariance; the random data
has no zero-variance group); for ``normalize`` eps is the clamp
``max(||a||, eps)``, inactive either way for these data; local_response_norm
has no eps, its constant ``k = 1`` is part of the definition (and is why it
is not scale invariant).

**Scale invariance of the loss** (theory item 1; Arora, Li & Lyu 2019,
*Theoretical analysis of auto rate-tuning by batch normalization*, Lemma 2.4;
van Laarhoven 2017).  For a weight vector :math:`w` feeding BN / LN / WN and
:math:`L(w) = \tfrac12\lVert \mathrm{norm}(w; X) - t\rVert^2`:

.. math::

    L(a w) = L(w),\quad \nabla L(a w) = \nabla L(w)/a,\quad
    \nabla^2 L(a w) = \nabla^2 L(w)/a^2 \quad (a > 0),

    \langle w, \nabla L(w)\rangle = 0,\qquad \nabla^2 L(w)\,w = -\nabla L(w).

Hence :math:`w^\top \nabla^2 L\, w = 0`: the curvature along :math:`w` is
zero, and at a stationary point (here: a zero-residual minimum,
:math:`t = \mathrm{norm}(w; X)`) :math:`\nabla^2 L\, w = 0` -- the Hessian is
singular along :math:`w`, its condition number is infinite, and the
meaningful condition number is that of the Hessian restricted to the
orthogonal complement of the invariance directions (:math:`w^\perp` for BN and
WN; for LN also the re-centering directions :math:`\mathbf 1 c^\top`, since
LN is invariant to those too).  Gradients are measured with
:func:`normref.vjp` (numba path), Hessians with ``autograd.hessian`` of the
same loss written with the registry's autograd reference.  BN: one unit,
:math:`w \in \mathbb R^4`, :math:`a = X w` normalized over the batch of 8;
LN: :math:`w = \mathrm{vec}(W)`, :math:`W \in \mathbb R^{4\times 3}`,
normalized over the 4 units of each of 5 cases; WN: one unit,
:math:`y = g\,X v/\lVert v\rVert`, :math:`w = v \in \mathbb R^4`.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..layer_call import TABLE_CASES, TABLE_FEATURES
from ..registry import REGISTRY
from .claims import Alternative, Claim, register_claims

__all__ = [
    "TRANSFORMATIONS",
    "PAPER_TABLE1",
    "table_layer",
    "layer_invariances",
    "LossProblem",
    "invariance_table",
    "scale_invariance_measurements",
    "scale_invariance_claims",
    "invariance_claims",
    "theory_claims",
]

TRANSFORMATIONS = (
    "weight_matrix_rescaling",
    "weight_matrix_recentering",
    "weight_vector_rescaling",
    "dataset_rescaling",
    "dataset_recentering",
    "single_case_rescaling",
)

#: Ba, Kiros & Hinton 2016, Table 1 ("Invariance properties under the
#: normalization methods"), for comparison only -- never used to fill a table.
PAPER_TABLE1 = {
    "batch_norm": dict(zip(TRANSFORMATIONS, (True, False, True, True, True, False))),
    "weight_norm": dict(zip(TRANSFORMATIONS, (True, False, True, False, False, False))),
    "layer_norm": dict(zip(TRANSFORMATIONS, (True, True, False, True, False, True))),
}

SOURCE_TABLE1 = "Ba, Kiros & Hinton 2016 (Layer Normalization, arXiv:1607.06450), Table 1"
SOURCE_ITEM1 = (
    "Arora, Li & Lyu 2019 (ICLR, auto rate-tuning by BN), Lemma 2.4; "
    "van Laarhoven 2017 (arXiv:1706.05350)"
)

# layer geometry of the table: d_out = 12 = 3 groups of 4 (the options each module's
# ``layer=`` fact gives in ``LayerCall.table`` are for this geometry)
N_CASES, D_IN, D_OUT = TABLE_CASES, 5, TABLE_FEATURES


def _scale(rng):
    """A positive factor away from 1: exp(+-U(0.5, 2.3)), i.e. in [0.1, 0.61] u [1.65, 10]."""
    return float(np.exp(rng.choice((-1.0, 1.0)) * rng.uniform(0.5, 2.3)))


def _transform(kind, X, W, rng):
    X, W = X.copy(), W.copy()
    if kind == "weight_matrix_rescaling":
        W *= _scale(rng)
    elif kind == "weight_matrix_recentering":
        W += rng.standard_normal(W.shape[1])[None, :]
    elif kind == "weight_vector_rescaling":
        W[rng.integers(W.shape[0])] *= _scale(rng)
    elif kind == "dataset_rescaling":
        X *= _scale(rng)
    elif kind == "dataset_recentering":
        X += rng.standard_normal(X.shape[1])[None, :]
    elif kind == "single_case_rescaling":
        X[rng.integers(X.shape[0])] *= _scale(rng)
    else:
        raise ValueError(f"unknown transformation {kind!r}; expected one of {TRANSFORMATIONS}")
    return X, W


def layer_invariances(layer, *, n_draws=3, n_params=2, rtol=1e-9, seed=0,
                      n_cases=N_CASES, d_in=D_IN, d_out=D_OUT, detail=False):
    r"""Which of :data:`TRANSFORMATIONS` leave ``layer(X, W)`` unchanged.

    ``layer`` is any callable ``(X (N, d_in), W (d_out, d_in)) -> array``.  For
    each of ``n_draws`` random :math:`X, W` (standard normal, seeded) and
    ``n_params`` random transformation parameters each, the relative change
    :math:`\max|h' - h| / \max|h|` is computed; the transformation is an
    invariance when every one is ``<= rtol``.  With ``detail=True`` returns
    ``(table, worst)`` where ``worst[kind]`` is the largest relative change seen.
    """
    rng = np.random.default_rng(seed)
    worst = {k: 0.0 for k in TRANSFORMATIONS}
    for _ in range(n_draws):
        X = rng.standard_normal((n_cases, d_in))
        W = rng.standard_normal((d_out, d_in))
        h = np.asarray(layer(X, W), dtype=np.float64)
        ref = float(np.max(np.abs(h)))
        for kind in TRANSFORMATIONS:
            for _ in range(n_params):
                X2, W2 = _transform(kind, X, W, rng)
                h2 = np.asarray(layer(X2, W2), dtype=np.float64)
                change = float(np.max(np.abs(h2 - h))) / max(ref, 1e-300)
                if not np.isfinite(change):
                    change = np.inf
                worst[kind] = max(worst[kind], change)
    table = {k: bool(worst[k] <= rtol) for k in TRANSFORMATIONS}
    return (table, worst) if detail else table


def table_layer(spec, *, eps=0.0):
    r"""``layer(X, W)`` of the registered normalizer ``spec`` (a Spec or a name) in the
    table's geometry: its ``layer=`` fact with the fact's ``table`` options, and
    ``eps`` given to every normalizer whose signature has one; a normalizer without
    a layer fact is tried as :math:`f(X W^\top)` (plus ``eps``)."""
    from ..registry import spec_of

    spec = spec_of(spec) if isinstance(spec, str) else spec
    kw = {} if eps is None or spec.slot("eps") is None else {"eps": eps}
    if spec.layer is not None:
        return spec.layer.pre_activation_layer(spec.function, **{**spec.layer.table, **kw})
    f = spec.function

    def layer(X, W):
        return f(X @ W.T, **kw)

    return layer


def _callable_layer(f):
    def layer(X, W):
        return f(X @ W.T)

    return layer


def _default_names():
    return [n for n, s in REGISTRY.items() if s.family in ("activations", "weights")]


def _subjects(normalizers, eps):
    """``[(key, layer, registered, has_fact)]`` for the entries of ``normalizers``."""
    from ..registry import _BY_FUNCTION

    out, seen = [], set()
    for item in normalizers:
        if isinstance(item, str):
            if item not in REGISTRY:
                raise ValueError(f"invariance_table: {item!r} is not a registered normalizer; "
                                 f"registered: {', '.join(sorted(REGISTRY))} (or pass a callable "
                                 f"f(x) on an (N, features) array)")
            spec = REGISTRY[item]
        elif callable(item):
            try:
                spec = _BY_FUNCTION.get(item)
            except TypeError:  # unhashable callable
                spec = None
        else:
            raise TypeError(f"invariance_table: normalizers must hold registered names, registered "
                            f"functions or callables f(x), got {type(item).__name__} {item!r:.60}")
        if isinstance(item, str) or spec is not None:
            key, layer, fact = spec.name, table_layer(spec, eps=eps), spec.layer is not None
        else:
            key = getattr(item, "__name__", None)
            if not isinstance(key, str):
                raise TypeError(f"invariance_table: the callable {item!r:.60} has no __name__ "
                                f"to key its row by")
            layer, fact = _callable_layer(item), True
        if key in seen:
            raise ValueError(f"invariance_table: two entries are keyed {key!r}")
        seen.add(key)
        out.append((key, layer, fact))
    return out


def invariance_table(normalizers=None, *, eps=0.0, n_draws=3, rtol=1e-9, seed=0, detail=False):
    r"""``{key: {transformation: bool}}``, computed on random draws (module docstring).

    ``normalizers``: an iterable of registered names, registered functions
    (``normref.layer_norm``) and plain callables ``f(x)`` acting on an
    ``(N, features)`` array -- e.g. a user's autograd.numpy layer norm; each row
    is keyed by the registered name or by ``f.__name__``.  Default: every
    registered activation or weight normalizer.

    A registered normalizer is applied to the layer's summed inputs as its
    module's ``layer=`` fact says (:class:`normref.layer_call.LayerCall`, with
    the fact's ``table`` options for this geometry, :data:`D_OUT` = 12
    features of :data:`N_CASES` = 8 cases); ``eps`` (default 0: exact
    invariances, the random data has no zero-variance group) is given to
    every one whose signature has an ``eps`` -- with :math:`\epsilon > 0` the
    rescalings are only approximate invariances.  A plain callable is applied
    as :math:`f(X W^\top)` with its own constants.  A registered normalizer
    without a layer fact is tried as :math:`f(X W^\top)` with its defaults and
    the table's eps (skipped with a warning when that call fails, unless it
    was named explicitly).  The same ``seed`` gives every row the same data.

    ValueError for a name that is not registered (listing the registered
    names), TypeError for an entry that is neither a name nor callable.
    """
    explicit = normalizers is not None
    if isinstance(normalizers, str) or callable(normalizers):
        normalizers = [normalizers]
    items = list(normalizers) if explicit else _default_names()
    out, details = {}, {}
    for key, layer, fact in _subjects(items, eps):
        try:
            tab, worst = layer_invariances(layer, n_draws=n_draws, rtol=rtol, seed=seed,
                                           detail=True)
        except Exception as e:  # no layer fact and the default call does not fit
            if explicit or fact:
                raise
            warnings.warn(f"invariance_table: skipped {key!r} (no layer= fact, and f(X W^T) "
                          f"failed): {e}")
            continue
        out[key], details[key] = tab, worst
    return (out, details) if detail else out


# ---------------------------------------------------------------------------
# item 1: scale invariance of a loss in w
# ---------------------------------------------------------------------------

class LossProblem:
    """A loss L(w) = 1/2 ||y(w) - t||^2 in a weight vector w (a namespace).

    Attributes: ``name``, ``w`` (the point), ``desc`` (one line for the claim
    text), ``y(w)`` and ``grad(w, t)`` on the numba path (normref.vjp),
    ``L_ref(w, t)`` the same loss through the autograd reference (for
    ``autograd.hessian``), ``jac(w)`` = dy/dw (normref.jacobian chained
    through the linear map), ``invariant_dirs(w)`` a matrix whose columns span
    the directions the loss is invariant along.  Any object with these
    attributes works (a test builds a plain linear unit this way).
    """


def _bn_problem(rng, eps=0.0):
    import autograd.numpy as anp

    import normref

    X = rng.standard_normal((8, 4))
    bn, ref = normref.batch_norm, REGISTRY["batch_norm"].reference
    kw = dict(training=True, eps=eps)
    p = LossProblem()
    p.name, p.w = "batch_norm", rng.standard_normal(4)
    p.desc = f"w (4) -> batch_norm(X w) over a batch of 8, eps={eps:g}"
    p.y = lambda w: bn((X @ w)[:, None], None, None, **kw)[:, 0]

    def grad(w, t):
        y, pb = normref.vjp(bn, (X @ w)[:, None], None, None, **kw)
        return X.T @ pb(y - t[:, None])[0][:, 0]

    p.grad = grad
    p.L_ref = lambda w, t: 0.5 * anp.sum((ref(anp.dot(X, w)[:, None], None, None, **kw)[:, 0] - t) ** 2)
    p.jac = lambda w: normref.jacobian(bn, (X @ w)[:, None], None, None, **kw)[:, 0, :, 0] @ X
    p.invariant_dirs = lambda w: w[:, None]
    return p


def _ln_problem(rng):
    import autograd.numpy as anp

    import normref

    d_out, d_in = 4, 3
    X = rng.standard_normal((5, d_in))
    ln, ref = normref.layer_norm, REGISTRY["layer_norm"].reference
    p = LossProblem()
    p.name, p.w = "layer_norm", rng.standard_normal(d_out * d_in)
    p.desc = "w = vec(W), W (4x3) -> layer_norm(X W^T) over the 4 units, 5 cases, eps=0"
    p.y = lambda w: ln(X @ w.reshape(d_out, d_in).T, (d_out,), eps=0.0).ravel()

    def grad(w, t):
        y, pb = normref.vjp(ln, X @ w.reshape(d_out, d_in).T, (d_out,), eps=0.0)
        dA = pb(y - t.reshape(y.shape))[0]
        return (dA.T @ X).ravel()

    p.grad = grad

    def L_ref(w, t):
        A = anp.dot(X, anp.transpose(anp.reshape(w, (d_out, d_in))))
        return 0.5 * anp.sum((anp.ravel(ref(A, (d_out,), eps=0.0)) - t) ** 2)

    p.L_ref = L_ref

    def jac(w):
        J = normref.jacobian(ln, X @ w.reshape(d_out, d_in).T, (d_out,), eps=0.0)
        # dA[n, i] / dW[j, k] = delta_ij X[n, k]
        J = J.reshape(-1, X.shape[0], d_out)  # (N*d_out, N, d_out)
        return np.einsum("rni,nk->rik", J, X).reshape(-1, d_out * d_in)

    p.jac = jac

    def dirs(w):
        recenter = [np.kron(np.ones(d_out), np.eye(d_in)[k]) for k in range(d_in)]
        return np.stack([w] + recenter, axis=1)

    p.invariant_dirs = dirs
    return p


def _wn_problem(rng):
    import autograd.numpy as anp

    import normref

    X = rng.standard_normal((8, 4))
    g = np.array([[1.3]])
    wn, ref = normref.weight_norm, REGISTRY["weight_norm"].reference
    p = LossProblem()
    p.name, p.w = "weight_norm", rng.standard_normal(4)
    p.desc = "w = v (4) -> y = X weight_norm(v, g=1.3)^T, batch of 8"
    p.y = lambda w: X @ wn(w[None, :], g)[0]

    def grad(w, t):
        Wn, pb = normref.vjp(wn, w[None, :], g)
        r = X @ Wn[0] - t
        return pb((r @ X)[None, :])[0][0]

    p.grad = grad
    p.L_ref = lambda w, t: 0.5 * anp.sum((anp.dot(X, ref(anp.reshape(w, (1, -1)), g)[0]) - t) ** 2)
    p.jac = lambda w: X @ normref.jacobian(wn, w[None, :], g)[0, :, 0, :]
    p.invariant_dirs = lambda w: w[:, None]
    return p


_PROBLEMS = {"batch_norm": _bn_problem, "layer_norm": _ln_problem, "weight_norm": _wn_problem}


def _complement_basis(D):
    """Orthonormal basis of the orthogonal complement of span(columns of D)."""
    Q, _ = np.linalg.qr(D, mode="complete")
    r = np.linalg.matrix_rank(D)
    return Q[:, r:]


def scale_invariance_measurements(name, *, seed=0, scales=None, problem=None):
    r"""Measured residuals of theory item 1 for ``name`` in batch_norm / layer_norm / weight_norm.

    Returns a dict of relative residuals (each predicted 0) and the two
    condition numbers on the complement of the invariance directions:

    * ``loss``: :math:`\max_a |L(a w) - L(w)| / |L(w)|`;
    * ``grad``: :math:`\max_a \lVert a\nabla L(a w) - \nabla L(w)\rVert / \lVert\nabla L(w)\rVert`;
    * ``hessian``: :math:`\max_a \lVert a^2 H(a w) - H(w)\rVert_F / \lVert H(w)\rVert_F`;
    * ``euler``: :math:`|\langle w, \nabla L\rangle| / (\lVert w\rVert \lVert\nabla L\rVert)`;
    * ``hw``: :math:`\lVert H w + \nabla L\rVert / \lVert\nabla L\rVert`;
    * ``curvature_w``: :math:`|w^\top H w| / (\lVert w\rVert^2 \lVert H\rVert_2)`;
    * ``null_at_min``: at :math:`t = y(w)`, :math:`\lVert H w\rVert / (\lVert w\rVert\lVert H\rVert_2)`;
    * ``kappa_pred`` / ``kappa_meas``: at the zero-residual minimum
      :math:`H = J^\top J` (Gauss--Newton is exact there), so the condition
      number of :math:`P^\top H P` (:math:`P` an orthonormal basis of the
      complement) is predicted from normref's Jacobian :math:`J` as
      :math:`\kappa(J P)^2` and measured from the autograd Hessian.

    Targets :math:`t` away from the minimum are standard normal; scale factors
    ``scales`` default to three seeded values in :math:`[0.1, 10]`.
    ``problem`` (a callable ``rng -> problem``, default the built-in one for
    ``name``) lets a test feed another layer, e.g. one that is not invariant.
    """
    import autograd

    rng = np.random.default_rng(seed)
    p = (problem or _PROBLEMS[name])(rng)
    w = p.w
    t = rng.standard_normal(p.y(w).shape)
    if scales is None:
        scales = [_scale(rng) for _ in range(3)]

    def L(w_):
        return 0.5 * float(np.sum((p.y(w_) - t) ** 2))

    H = lambda w_, t_: np.asarray(autograd.hessian(p.L_ref)(w_, t_))  # noqa: E731
    L0, g0, H0 = L(w), p.grad(w, t), H(w, t)
    La = [L(a * w) for a in scales]
    ga = [p.grad(a * w, t) for a in scales]
    Ha = [H(a * w, t) for a in scales]
    ng, nH = np.linalg.norm(g0), np.linalg.norm(H0)
    m = {"desc": p.desc, "scales": list(scales), "w": w}
    m["loss"] = max(abs(l_ - L0) for l_ in La) / abs(L0)
    m["grad"] = max(np.linalg.norm(a * g_ - g0) for a, g_ in zip(scales, ga)) / ng
    m["hessian"] = max(np.linalg.norm(a * a * H_ - H0) for a, H_ in zip(scales, Ha)) / nH
    m["euler"] = abs(w @ g0) / (np.linalg.norm(w) * ng)
    m["hw"] = np.linalg.norm(H0 @ w + g0) / ng
    m["curvature_w"] = abs(w @ H0 @ w) / (w @ w * np.linalg.norm(H0, 2))
    # the same residuals for the wrong formulas (theory item 1, "Alternatives"):
    # a loss homogeneous of degree k has L(aw) = a^k L, grad L(aw) = a^(k-1) grad L,
    # H(aw) = a^(k-2) H, <w, g> = k L, H w = (k-1) g, w^T H w = k (k-1) L; the
    # claim is k = 0, the alternatives k = 1 and k = 2 (and the sign of H w = -g)
    m["alt"] = {
        "loss": {k: max(abs(l_ - a ** k * L0) for a, l_ in zip(scales, La)) / abs(L0)
                 for k in (1, 2)},
        "grad": {k: max(np.linalg.norm(a ** (1 - k) * g_ - g0) for a, g_ in zip(scales, ga)) / ng
                 for k in (1, -1)},
        "hessian": {k: max(np.linalg.norm(a ** (2 - k) * H_ - H0) for a, H_ in zip(scales, Ha)) / nH
                    for k in (1, 2)},
        "euler": {1: abs(w @ g0 - L0) / (np.linalg.norm(w) * ng)},
        "hw": {"zero": np.linalg.norm(H0 @ w) / ng, "sign": np.linalg.norm(H0 @ w - g0) / ng},
        "curvature_w": {2: abs(w @ H0 @ w - 2 * L0) / (w @ w * np.linalg.norm(H0, 2))},
    }
    # zero-residual minimum: t = y(w)
    tm = p.y(w)
    Hm = H(w, tm)
    m["null_at_min"] = np.linalg.norm(Hm @ w) / (np.linalg.norm(w) * np.linalg.norm(Hm, 2))
    u = rng.standard_normal(w.shape)   # a direction the loss is not invariant along
    m["alt"]["null_at_min"] = {"random": np.linalg.norm(Hm @ u) / (np.linalg.norm(u)
                                                                  * np.linalg.norm(Hm, 2))}
    P = _complement_basis(p.invariant_dirs(w))
    m["complement_dim"] = P.shape[1]
    s = np.linalg.svd(p.jac(w) @ P, compute_uv=False)
    m["kappa_pred"] = float((s[0] / s[-1]) ** 2)
    m["kappa_pred_unsquared"] = float(s[0] / s[-1])
    ev = np.linalg.eigvalsh(P.T @ Hm @ P)
    m["kappa_meas"] = float(ev[-1] / ev[0])
    m["kappa_full"] = float(np.linalg.cond(Hm))
    Pw = _complement_basis(w.reshape(-1, 1))     # w-perp only
    evw = np.linalg.eigvalsh(Pw.T @ Hm @ Pw)
    m["kappa_w_perp"] = float(evw[-1] / abs(evw[0]))   # evw[0] is a rounding-size null value
    return m


def scale_invariance_claims(names=("batch_norm", "layer_norm", "weight_norm"), *, seed=0,
                            tol=1e-10, problems=None):
    """Claim rows of theory item 1 for each name (see :func:`scale_invariance_measurements`).

    Residuals are relative (stated in each row) and compared with 0 to the
    absolute ``tol``; the condition-number row compares two numbers to 1e-8
    relative.  ``problems`` maps a name to a problem factory, overriding (or
    adding to) the built-in BN / LN / WN problems -- tests pass a layer that
    is not scale invariant and see its rows fail.
    """
    problems = problems or {}
    rows = []
    for name in names:
        m = scale_invariance_measurements(name, seed=seed, problem=problems.get(name))
        d = m["desc"]
        comp = ("w-perp" if m["complement_dim"] == len(m["w"]) - 1
                else "the complement of the invariance directions span{w, 1 c^T} "
                     "(LN is also re-centering invariant)")
        spec = [
            ("loss_scale_invariance", "loss",
             f"L(a w) = L(w) for a > 0; measured max_a |L(aw)-L(w)|/|L(w)| over a in "
             f"{['%.3g' % a for a in m['scales']]} [{d}]"),
            ("grad_scaling", "grad",
             "grad L(a w) = grad L(w)/a; measured max_a ||a grad L(aw) - grad L(w)||/||grad L(w)||"
             f" (normref.vjp) [{d}]"),
            ("hessian_scaling", "hessian",
             "Hess L(a w) = Hess L(w)/a^2; measured max_a ||a^2 H(aw) - H(w)||_F/||H(w)||_F"
             f" (autograd.hessian through the reference) [{d}]"),
            ("grad_orthogonal_w", "euler",
             f"<w, grad L(w)> = 0; measured |<w,g>|/(||w|| ||g||) [{d}]"),
            ("hessian_w_equals_minus_grad", "hw",
             f"Hess L(w) w = -grad L(w); measured ||H w + g||/||g|| [{d}]"),
            ("zero_curvature_along_w", "curvature_w",
             "w^T Hess L(w) w = 0 (H w = -g is orthogonal to w); measured |w^T H w|/(||w||^2 ||H||_2)"
             f" [{d}]"),
            ("hessian_singular_along_w", "null_at_min",
             "at a stationary point (zero-residual minimum t = y(w)) Hess L w = 0: the Hessian is "
             f"singular along w (full cond = {m['kappa_full']:.3g}); measured ||H w||/(||w|| ||H||_2) [{d}]"),
        ]
        alt_labels = {
            "loss": {1: "degree 1: L(a w) = a L(w)", 2: "degree 2: L(a w) = a^2 L(w)"},
            "grad": {1: "grad L(a w) = grad L(w) (exponent 0)",
                     -1: "grad L(a w) = grad L(w)/a^2 (the Hessian's exponent)"},
            "hessian": {1: "Hess L(a w) = Hess L(w)/a (the gradient's exponent)",
                        2: "Hess L(a w) = Hess L(w) (exponent 0)"},
            "euler": {1: "Euler with degree 1: <w, grad L> = L(w)"},
            "hw": {"zero": "H w = 0 (true only at a stationary point)",
                   "sign": "H w = +grad L (sign)"},
            "curvature_w": {2: "degree 2: w^T H w = 2 L(w)"},
            "null_at_min": {"random": "no invariance: ||H u||/(||u|| ||H||_2) along a random u"},
        }
        for key, field, text in spec:
            alts = tuple(Alternative(alt_labels[field][k], 0.0, float(v))
                         for k, v in m["alt"][field].items())
            rows.append(Claim(f"item1.{key}.{name}", text, SOURCE_ITEM1, 0.0, float(m[field]), tol,
                              alternatives=alts))
        kalts = [Alternative("kappa(J P), not squared", m["kappa_pred_unsquared"]),
                 Alternative("kappa of the full Hessian (no projection)", m["kappa_full"])]
        if m["complement_dim"] < len(m["w"]) - 1:
            kalts.append(Alternative("kappa on w-perp only (forgetting the re-centering "
                                     "directions)", m["kappa_w_perp"]))
        rows.append(Claim(
            f"item1.condition_number_complement.{name}",
            "the Hessian at the zero-residual minimum is singular along w, so its condition number "
            f"is taken on {comp} (dimension {m['complement_dim']}): predicted kappa(J P)^2 from "
            "normref.jacobian (Gauss-Newton, exact at zero residual), measured from the eigenvalues "
            f"of P^T Hess P (autograd) [{d}]",
            SOURCE_ITEM1, m["kappa_pred"], m["kappa_meas"], 1e-8, relative=True,
            alternatives=tuple(kalts)))
    return rows


def invariance_claims(names=("batch_norm", "weight_norm", "layer_norm"), *, seed=0, table=None):
    """One Claim per Table-1 cell: predicted = the paper's entry, measured = computed."""
    if table is None:
        table = invariance_table(names, seed=seed)
    word = {True: "invariant", False: "not invariant"}
    rows = []
    for name in names:
        for kind in TRANSFORMATIONS:
            rows.append(Claim(
                f"item2.invariance_table.{name}.{kind}",
                f"{name} layer output h = norm(X W^T) under {kind.replace('_', ' ')} "
                "(computed on random draws, rtol 1e-9, eps=0)",
                SOURCE_TABLE1, word[PAPER_TABLE1[name][kind]], word[table[name][kind]], 0.0,
                alternatives=(Alternative("the opposite cell",
                                          word[not PAPER_TABLE1[name][kind]]),)))
    return rows


@register_claims("invariance")
def theory_claims():
    """Items 1 and 2 (Table 1 rows of BN / WN / LN); deterministic seeds."""
    return scale_invariance_claims() + invariance_claims()
