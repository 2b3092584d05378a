r"""Exact null-space bases for the invariances of a :class:`normref.nets.MLP`,
and the scale metric that makes condition numbers reparametrization-proof.

A direction :math:`d` in parameter space is an *invariance* when the loss is
constant along it (translation: :math:`L(\theta + t d) = L(\theta)`) or along
the ray through it (scale: :math:`L(a\,\theta_g) = L(\theta_g)`).  Translation
directions are exact null vectors of the Hessian, Gauss-Newton and Fisher
matrices (:math:`H d = 0`, :math:`J d = 0`); scale directions are exact null
vectors of the Gauss-Newton and Fisher matrices (:math:`J\theta_g = 0`) and of
the Hessian's quadratic form (:math:`\theta_g^\top H \theta_g = 0`,
:math:`H\theta_g = -\nabla_g L`), docs/theory.md item 1.

The families, found for *any* registered normalizer through its ``layer=``
fact (the layer calls it; nothing here knows a normalizer by name):

* **shift** -- a Linear layer with bias feeding a Norm: bias directions
  :math:`c \in \mathbb R^F` with :math:`f(A + \mathbf 1 c^\top) = f(A)`
  (batch norm: every feature; layer norm: :math:`c \propto \mathbf 1`;
  group norm: constant per group);
* **row shift** -- the weights of that Linear layer, :math:`W \to W + s c^\top`
  for every :math:`c`, when :math:`f(A + u s^\top) = f(A)` for a per-sample
  shift :math:`u` (layer norm, group norm: :math:`s` constant on a group);
  probed with a fixed random :math:`u`;
* **re-centring** -- a Norm's affine bias :math:`\beta` feeding (through an
  identity activation or directly) a Linear layer whose output enters a
  centring Norm: :math:`\beta \to \beta + u` shifts the next summed inputs by
  :math:`W u` in every row, an invariance when :math:`W u` is a shift direction;
* **scale** -- the rows of a Linear layer ``(W, b)`` feeding a Norm, scaled
  by :math:`s \in \mathbb R^F`: :math:`f(A\,\mathrm{diag}(s)) = f(A)`; the
  direction is :math:`(\mathrm{diag}(s) W, \mathrm{diag}(s) b)`
  (batch norm: every row; layer norm: all rows at once);
* **homogeneous scale** -- when the Norm's invariant scalings include the
  uniform one (:math:`A \to aA`), scaling a source upstream -- a Linear
  layer's :math:`(W, b)` or a Norm's affine parameters -- reached through
  positively homogeneous activations (:data:`HOMOGENEOUS`: ReLU, identity;
  :math:`\phi(az) = a\phi(z)`, :math:`a > 0`) together with the biases of
  the Linear layers on the way scales that input by :math:`a`; one direction
  per source (BN -> ReLU -> Linear -> BN: the first BN's :math:`(\gamma,
  \beta)` with the Linear's bias).  These are scale directions (exact
  null vectors of :math:`J`); they get no scale-metric group;
* **unit rescaling** -- a unit between a source (a Linear layer's row of
  :math:`(W, b)`, a Norm's per-feature :math:`(\gamma_f, \beta_f)`) and the
  next Linear layer through positively homogeneous activations: the
  source's row times :math:`a`, the next weight's column :math:`f` divided by
  :math:`a`, the network's classical ReLU symmetry (Neyshabur et al. 2015,
  Path-SGD, arXiv:1506.02617); tangent ``(row, -column)``, exact whatever
  ``eps``;
* **softmax shift** -- with ``"softmax_ce"`` and a final Linear layer, the
  logits' common shift: :math:`b \to b + t\mathbf 1` and
  :math:`W \to W + \mathbf 1 c^\top` (:math:`d_\text{in} + 1` directions).

Each Norm's subspaces are measured, not assumed: the normalizer's exact JVP
(:func:`normref.jvp`) at the layer's actual input maps each candidate
feature direction (:math:`\mathbf 1 e_j^\top` for shift,
:math:`A_{:j} e_j^\top` for scale) to an output tangent; the invariant
subspace is the null space of that :math:`NF \times F` matrix (SVD, singular
values below ``sqrt(machine eps) * largest``, 1.5e-8: exact invariances give
round-off, :math:`\sim 10^{-16}`).  The scale test runs with ``eps=0`` when
the normalizer takes an ``eps`` (then scale invariance is exact), so that
eps-*approximate* invariances are included by construction: with
:math:`\epsilon > 0` the scale direction's eigenvalue is
:math:`O(\epsilon/\sigma^2)`, not zero, and a relative eigenvalue threshold
cannot tell it from a small genuine curvature.

**Scale metric.**  A scale-invariant group :math:`\theta_g` (one row for
batch norm, the whole layer for layer norm: the connected blocks of the
projector onto the scale subspace) has :math:`\partial L/\partial\theta_g`
homogeneous of degree :math:`-1` and second derivatives of degree
:math:`-2`, so :math:`\kappa` of the raw matrix changes when
:math:`\theta_g \to a\theta_g` although the network does not.  In the
coordinates :math:`u_g = \theta_g / \|\theta_g\|` the curvature is
:math:`D M D` with :math:`D = \mathrm{diag}(\|\theta_g\|)` on group
:math:`g` (1 elsewhere), invariant under the rescaling (exactly with
``eps=0``); the null space in these coordinates is :math:`D^{-1}U`
(van Laarhoven 2017, arXiv:1706.05350; Hoffer et al. 2018, "Norm matters",
arXiv:1803.01814: the effective step on the sphere).
"""
from __future__ import annotations

import numpy as np

from ...autodiff import jvp as _jvp
from ...nets import Activation, Linear, Norm
from .condition import orthonormal_basis

__all__ = ["Invariances", "network_invariances", "NULL_RTOL", "SCALE_FAMILIES", "HOMOGENEOUS"]

#: families whose directions are orbit tangents :math:`d = s \odot \theta` of a scaling
#: :math:`\theta_i \to a^{s_i}\theta_i` (:math:`s_i \in \{0, \pm1\}`): null for
#: :math:`J`, and for the Hessian :math:`H d = -s \odot \nabla L` (0 at a critical point);
#: the others are translations, :math:`H d = 0` and :math:`L(\theta + t d) = L(\theta)`
SCALE_FAMILIES = ("scale", "homogeneous", "unit_rescale")

#: relative singular-value threshold of the invariance probes (sqrt of float64 eps)
NULL_RTOL = float(np.sqrt(np.finfo(np.float64).eps))


class Invariances:
    """The invariance directions of a network at ``theta``.

    ``directions``: list of ``(label, vector)``, vectors of length P;
    ``scale_groups``: list of index arrays (the parameters of each
    scale-invariant group); :meth:`basis` the orthonormal null basis in
    the raw (``metric=False``) or scale-metric coordinates; :meth:`metric` the
    diagonal :math:`D`."""

    def __init__(self, theta, directions, scale_groups):
        self.theta = np.asarray(theta, dtype=np.float64)
        self.directions = list(directions)
        self.scale_groups = [np.asarray(g) for g in scale_groups]

    @property
    def labels(self):
        return tuple(lbl for lbl, _ in self.directions)

    def metric(self):
        D = np.ones(self.theta.size)
        for g in self.scale_groups:
            nrm = np.linalg.norm(self.theta[g])
            if nrm > 0:
                D[g] = nrm
        return D

    def basis(self, metric=True):
        """Orthonormal ``(P, r)`` basis of the null space (``r = 0``: none)."""
        if not self.directions:
            return np.zeros((self.theta.size, 0))
        U = np.stack([v for _, v in self.directions], axis=1)
        if metric:
            U = U / self.metric()[:, None]
        return orthonormal_basis(U)

    @staticmethod
    def is_scale(label):
        """True for an orbit tangent of a scaling (:data:`SCALE_FAMILIES`)."""
        return label.split("[")[0] in SCALE_FAMILIES

    def counts(self):
        out = {}
        for lbl, _ in self.directions:
            fam = lbl.split("[")[0]
            out[fam] = out.get(fam, 0) + 1
        return out

    def __repr__(self):
        return f"Invariances({self.counts()}, {len(self.scale_groups)} scale groups)"


def _null(M, scale=None):
    """Null space of ``M`` (columns of V): singular values <= NULL_RTOL * ``scale``
    (default: the largest singular value)."""
    if M.size == 0:
        return np.zeros((M.shape[1], 0))
    if M.shape[0] < M.shape[1]:
        M = np.vstack([M, np.zeros((M.shape[1] - M.shape[0], M.shape[1]))])
    _, s, Vt = np.linalg.svd(M, full_matrices=False)
    top = (s.max() if s.size else 0.0) if scale is None else scale
    rank = int((s > NULL_RTOL * top).sum()) if top > 0 else 0
    return Vt[rank:].T


#: largest probe matrix (entries) decomposed at once; beyond it the null space is found
#: on a subset of the samples' outputs and verified on all of them
PROBE_ENTRIES = 4_000_000


def _norm_probe(norm, A, family):
    """Null space (F, r) of the normalizer's JVP over the candidate feature directions.

    Candidate ``j`` is the tangent whose column ``j`` is ``V[:, j]`` (ones for
    shift, a fixed generic per-sample shift for row shift, ``A[:, j]`` for
    scale) and whose other columns are 0; its exact JVP, divided by
    ``|V[:, j]|``, is column ``j`` of the probe matrix.  The Jacobian's scale
    is the JVP norm of a generic unit tangent orthogonal to every candidate
    (the candidates have disjoint supports, so that is a per-column
    projection).  When ``N F^2`` exceeds :data:`PROBE_ENTRIES` the SVD sees
    the outputs of a fixed subset of samples (every JVP still runs on the
    whole batch, so batch statistics are exact); each null vector found is
    then checked on *all* outputs, and a failed check repeats the probe on
    all of them.
    """
    N, F = A.shape
    view = norm._view(A.shape)
    kwargs = dict(norm.kwargs)
    if family == "scale" and "eps" in norm.spec.signature:
        kwargs["eps"] = 0.0
    args = norm._call_args(A.reshape(view), norm.params)
    if family == "shift":
        V = np.ones((N, F))
    elif family == "row_shift":
        V = np.repeat(np.random.default_rng(777).standard_normal(N)[:, None], F, axis=1)
    else:
        V = np.array(A, dtype=np.float64)
    vn = np.sqrt((V * V).sum(axis=0))
    ref = np.random.default_rng(12345).standard_normal((N, F))
    ok = vn > 0
    ref[:, ok] -= V[:, ok] * ((ref[:, ok] * V[:, ok]).sum(axis=0) / vn[ok] ** 2)
    ref /= np.linalg.norm(ref)

    def jvp(t):
        nonlocal kwargs
        tangents = [None] * len(args)
        tangents[0] = t.reshape(view)
        try:
            _, dy = _jvp(norm.spec.function, args, tangents, **kwargs)
        except (ValueError, ZeroDivisionError, FloatingPointError):
            if "eps" not in kwargs or kwargs["eps"] != 0.0:
                raise
            kwargs = dict(norm.kwargs)          # eps=0 refused: probe at the layer's eps
            _, dy = _jvp(norm.spec.function, args, tangents, **kwargs)
        return np.asarray(dy, dtype=np.float64).reshape(N, F)

    def probe(rows):
        M = np.empty((rows.size * F, F))
        t = np.zeros((N, F))
        for j in range(F):
            t[:, j] = V[:, j]
            M[:, j] = jvp(t)[rows].ravel() / max(vn[j], 1e-300)
            t[:, j] = 0.0
        return _null(M, np.linalg.norm(jvp(ref)[rows]))

    if N * F * F <= PROBE_ENTRIES:
        return probe(np.arange(N))
    n_sub = max(2, PROBE_ENTRIES // (F * F))
    rows = np.sort(np.random.default_rng(4242).choice(N, size=min(N, n_sub), replace=False))
    Vn = probe(rows)
    scale = np.linalg.norm(jvp(ref))
    for r in range(Vn.shape[1]):
        t = V * (Vn[:, r] / np.maximum(vn, 1e-300))[None, :]
        if np.linalg.norm(jvp(t)) > NULL_RTOL * scale * np.linalg.norm(t):
            return probe(np.arange(N))
    return Vn


def _groups(V, F):
    """Connected blocks of the projector V V^T, if their indicators span V; else None."""
    if V.shape[1] == 0:
        return []
    Pm = np.abs(V @ V.T) > NULL_RTOL
    seen, groups = np.zeros(F, bool), []
    for i in range(F):
        if seen[i] or not Pm[i, i]:
            continue
        stack, comp = [i], []
        seen[i] = True
        while stack:
            k = stack.pop()
            comp.append(k)
            for m in np.flatnonzero(Pm[k] & ~seen):
                seen[m] = True
                stack.append(m)
        groups.append(sorted(comp))
    if len(groups) != V.shape[1]:
        return None
    return groups


#: activations positively homogeneous of degree 1: phi(a z) = a phi(z) for a > 0
HOMOGENEOUS = ("relu", "identity")


def _homogeneous_paths(layers, k, offsets, P):
    """Scale directions through degree-1 activations into the Linear ``k - 1``
    feeding the scale-invariant Norm ``k``: scaling a source layer (a Linear's
    ``(W, b)`` or a Norm's affine parameters) and the biases of the Linear
    layers between it and Norm ``k`` by the same factor scales Norm ``k``'s
    input uniformly, which it ignores.  One direction per source on the chain."""
    out = []
    biases = []                               # parameter index ranges scaled along the chain

    def source(j, layer):                     # scale all of the layer's parameters + biases
        off = offsets(j)
        d = np.zeros(P)
        for name in layer.param_names:
            d[off[name]:off[name] + layer.params[name].size] = layer.params[name].ravel()
        for lo, val in biases:
            d[lo:lo + val.size] = val
        out.append((f"homogeneous[{j}->{k}]", d))

    j = k - 1
    while j >= 0:
        layer = layers[j]
        if isinstance(layer, Linear):
            if j < k - 1:
                source(j, layer)
            if "bias" in layer.params:       # the chain continues: W (a h) + a b = a (W h + b)
                biases.append((offsets(j)["bias"], layer.params["bias"].ravel()))
        elif isinstance(layer, Activation):
            if layer.kind not in HOMOGENEOUS:
                break
        else:
            if isinstance(layer, Norm) and layer.affine and layer.params:
                source(j, layer)
            break
        j -= 1
    return out


def _unit_rows(src, off):
    """``rows(f)``: the ``(indices, values)`` of unit ``f``'s outgoing-scale parameters
    of a source layer (a Linear's row ``f`` of ``(W, b)``; a Norm's per-feature
    affine ``(gamma_f, beta_f)``), or None when the layer has no per-unit parameters."""
    if isinstance(src, Linear):
        W = src.params["weight"]
        b = src.params.get("bias")

        def rows(f):
            out = [(off["weight"] + f * W.shape[1] + np.arange(W.shape[1]), W[f])]
            if b is not None:
                out.append((off["bias"] + f, b[f]))
            return out

        return rows
    if isinstance(src, Norm) and src.affine and src.per_feature:
        return lambda f: [(off[n] + f, src.params[n][f]) for n in src.param_names]
    return None


def network_invariances(net, x, loss="squared"):
    """The :class:`Invariances` of ``net`` on the batch ``x`` at its current parameters."""
    theta = net.params
    P = theta.size
    tr = net.trace(np.asarray(x, dtype=np.float64))
    layers = net.layers
    offsets = net.offsets().__getitem__
    directions, scale_groups = [], []

    for k, norm in enumerate(layers):
        if not isinstance(norm, Norm) or k == 0 or not isinstance(layers[k - 1], Linear):
            continue
        lin = layers[k - 1]
        off = offsets(k - 1)
        A = tr.inputs[k]
        F = A.shape[1]
        W = lin.params["weight"]
        Vs = _norm_probe(norm, A, "shift")
        if "bias" in lin.params:
            for r in range(Vs.shape[1]):
                d = np.zeros(P)
                d[off["bias"]:off["bias"] + F] = Vs[:, r]
                directions.append((f"shift[{k}:{r}]", d))
        # row shift: W -> W + s c^T moves row n of A by (x_n . c) s
        Vr = _norm_probe(norm, A, "row_shift")
        for r in range(Vr.shape[1]):
            for c in range(W.shape[1]):
                d = np.zeros(P)
                d[off["weight"]:off["weight"] + W.size] = np.outer(Vr[:, r], np.eye(W.shape[1])[c]).ravel()
                directions.append((f"row_shift[{k}:{r},{c}]", d))
        # re-centring: a Norm's affine bias -> (identity) -> this Linear
        j = k - 2
        while j >= 0 and isinstance(layers[j], Activation) and layers[j].kind == "identity":
            j -= 1
        prev = layers[j] if j >= 0 else None
        if (Vs.shape[1] and isinstance(prev, Norm) and "bias" in prev.params
                and prev.params["bias"].shape == (lin.d_in,)):
            Pc = np.eye(F) - Vs @ Vs.T
            Ur = _null(Pc @ W)
            pb = offsets(j)["bias"]
            for r in range(Ur.shape[1]):
                d = np.zeros(P)
                d[pb:pb + lin.d_in] = Ur[:, r]
                directions.append((f"recentre[{j}->{k}:{r}]", d))
        # scale
        Vc = _norm_probe(norm, A, "scale")
        groups = _groups(Vc, F)
        blocks = ([np.isin(np.arange(F), g).astype(float) for g in groups] if groups is not None
                  else [Vc[:, r] for r in range(Vc.shape[1])])
        # homogeneous: uniform column scaling reached through degree-1 activations
        # (the probe's coordinates are columns of A of unit norm: A -> aA is c ~ |A_:j|)
        uni = np.linalg.norm(A, axis=0)
        uni = uni / max(np.linalg.norm(uni), 1e-300)
        if Vc.shape[1] and np.linalg.norm(uni - Vc @ (Vc.T @ uni)) <= NULL_RTOL:
            for label, d in _homogeneous_paths(layers, k, offsets, P):
                directions.append((label, d))
        for r, s in enumerate(blocks):
            d = np.zeros(P)
            d[off["weight"]:off["weight"] + W.size] = (s[:, None] * W).ravel()
            if "bias" in lin.params:
                d[off["bias"]:off["bias"] + F] = s * lin.params["bias"]
            directions.append((f"scale[{k}:{r}]", d))
            if groups is not None:
                rows = np.flatnonzero(s)
                idx = (off["weight"] + rows[:, None] * W.shape[1]
                       + np.arange(W.shape[1])[None, :]).ravel()
                if "bias" in lin.params:
                    idx = np.concatenate([idx, off["bias"] + rows])
                scale_groups.append(idx)
    # unit rescaling through degree-1 activations: (row f of a source) * a, (column f of
    # the next Linear) / a
    for t, lin in enumerate(layers):
        if not isinstance(lin, Linear):
            continue
        j = t - 1
        while j >= 0 and isinstance(layers[j], Activation) and layers[j].kind in HOMOGENEOUS:
            j -= 1
        if j < 0 or j == t - 1 and isinstance(layers[j], Linear):
            continue                           # no source, or Linear -> Linear (no unit)
        rows = _unit_rows(layers[j], offsets(j))
        if rows is None:
            continue
        off_t = offsets(t)
        Wt = lin.params["weight"]
        for f in range(lin.d_in):
            d = np.zeros(P)
            for idx, val in rows(f):
                d[idx] = val
            d[off_t["weight"] + f:off_t["weight"] + Wt.size:Wt.shape[1]] = -Wt[:, f]
            directions.append((f"unit_rescale[{j}->{t}:{f}]", d))
    # softmax shift of the logits
    last = len(layers) - 1
    while last >= 0 and isinstance(layers[last], Activation) and layers[last].kind == "identity":
        last -= 1
    if loss in ("softmax_ce", "xent") and last >= 0 and isinstance(layers[last], Linear):
        lin = layers[last]
        off = offsets(last)
        K, d_in = lin.d_out, lin.d_in
        for c in range(d_in):
            d = np.zeros(P)
            d[off["weight"] + c:off["weight"] + K * d_in:d_in] = 1.0
            directions.append((f"softmax_shift[W:{c}]", d))
        if "bias" in lin.params:
            d = np.zeros(P)
            d[off["bias"]:off["bias"] + K] = 1.0
            directions.append(("softmax_shift[b]", d))
    return Invariances(theta, directions, scale_groups)
