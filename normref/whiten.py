r"""NOP whiten: batch and group whitening over a block view, with exact derivatives.

Whitening goes beyond standardization: the features of a group are
decorrelated, not only centred and scaled.  For one block of :math:`d`
features observed :math:`m` times, :math:`X \in \mathbb R^{d\times m}`:

.. math::

    \mu = \tfrac1m X\mathbf 1, \quad X_c = X - \mu\mathbf 1^\top, \quad
    \Sigma = \tfrac1m X_c X_c^\top + \epsilon I = D\Lambda D^\top, \quad
    Z = W(\Sigma)\, X_c

with the whitening matrix :math:`W(\Sigma)` of the method:

=================== =============================================================== ======================
method              :math:`W(\Sigma)`                                               paper
=================== =============================================================== ======================
``pca``             :math:`\Lambda^{-1/2} D^\top` (eigenvalues descending,           Desjardins et al. 2015
                    each eigenvector's largest-magnitude entry positive)
``zca``             :math:`D\Lambda^{-1/2} D^\top = \Sigma^{-1/2}`                   Huang et al. 2018
``cholesky``        :math:`L^{-1}`, :math:`\Sigma = LL^\top`                         Siarohin et al. 2019
``iter_norm``       :math:`\Sigma_N = \Sigma/\mathrm{tr}\,\Sigma`, :math:`P_0 = I`,  Huang et al. 2019
                    :math:`P_{k+1} = (3P_k - P_k^3\Sigma_N)/2`,
                    :math:`W = P_T/\sqrt{\mathrm{tr}\,\Sigma}`
=================== =============================================================== ======================

PCA, ZCA and Cholesky satisfy :math:`W\Sigma W^\top = I` and differ by an
orthogonal factor; with :math:`\epsilon > 0` the whitened data covariance
:math:`W(\Sigma - \epsilon I)W^\top` is :math:`\mathrm{diag}(l/(l+\epsilon))`
in the eigenbasis (:math:`l` the eigenvalues of the data covariance).
IterNorm maps an eigenvalue :math:`\lambda` of :math:`\Sigma_N` to
:math:`\lambda p_T(\lambda)^2 \le 1` (theory item 9), converging to ZCA.

A :class:`BlockView` turns an (N, C, \*spatial) input into B such blocks:
batch whitening (``kind="batch"``) takes the channels in groups of
``group_size`` and observes them over the batch and spatial axes (block
:math:`(C/g,\ g,\ N\cdot S)`); group whitening (``kind="sample"``, Huang et
al. 2021) takes each sample's channels in G groups and decorrelates the
groups, observed over the group's channels and positions (block
:math:`(N,\ G,\ C/G\cdot S)`).

**Derivatives.**  Each method is a :class:`MatrixFunction` with the exact JVP
:math:`\dot\Sigma \mapsto \dot W` and its adjoint :math:`\bar W \mapsto
\bar\Sigma` (symmetrized, since :math:`\Sigma` is symmetric):

* ZCA (a spectral function :math:`g(l) = l^{-1/2}`):
  :math:`\dot W = D\,(G\circ D^\top\dot\Sigma D)\,D^\top` with the divided
  differences :math:`G_{ij} = (g(l_i) - g(l_j))/(l_i - l_j) =
  -1/(\sqrt{l_i}\sqrt{l_j}(\sqrt{l_i}+\sqrt{l_j}))`, written without the
  subtraction so that equal eigenvalues give the limit :math:`g'(l)` exactly
  (the gradient at :math:`\Sigma\propto I` is finite);
* PCA: :math:`\dot l = \mathrm{diag}(M)`, :math:`\dot D = D(F\circ M)`,
  :math:`M = D^\top\dot\Sigma D`, :math:`F_{ij} = 1/(l_j - l_i)`; the
  eigenvectors of a repeated eigenvalue are not differentiable, so a
  derivative that needs them raises ValueError (pairs whose numerator
  vanishes, as in the null space of a rank-deficient covariance, contribute
  their limit 0);
* Cholesky: :math:`\dot W = -\Phi(W\dot\Sigma W^\top)\,W`, :math:`\Phi` the
  lower triangle with the diagonal halved; adjoint
  :math:`\bar\Sigma = -W^\top\Phi(\bar W W^\top)W`;
* IterNorm: by default (``evaluation="spectral"``) the exact value of the
  iteration, :math:`P_T = D\,p_T(\Lambda_N)D^\top`, differentiated through
  the divided differences of :math:`p_T` (a recursion without cancellation,
  exact at repeated eigenvalues, bounded work for any T: see
  :mod:`normref.newton_schulz`); with
  ``evaluation="newton"`` the matrix iteration as frameworks run it, with
  the forward-mode recurrence through the T Newton-Schulz steps and the
  trace normalization and its exact reverse sweep over the saved
  :math:`P_k`.  The two agree to rounding while the iteration is stable;
  the uncoupled iteration loses the commutation of :math:`P_k` with
  :math:`\Sigma_N` to rounding and, for an ill-conditioned
  :math:`\Sigma_N`, amplifies it once converged (tests/test_whitening.py
  measures it).

Through the covariance and the centring,
:math:`\bar X_c = W^\top\bar Z + (\bar\Sigma + \bar\Sigma^\top)X_c/m`,
:math:`\bar X = \bar X_c(I - \mathbf 1\mathbf 1^\top/m)`.

Numerical choices: the mean by a corrected two pass (mean, then the mean of
the residual subtracted from the deviations), the covariance as a product of
the centred data (never :math:`E[xx^\top] - \mu\mu^\top`), eps added to the
diagonal of the covariance (inside every root and inverse), float64
throughout.  Exact power-of-two rescaling keeps every block in range: a block
whose deviations or :math:`\sqrt{|\epsilon|}` lie outside
:math:`[2^{-400}, 2^{400}]` is scaled by :math:`2^{-k}` (and its covariance by
:math:`4^{-k}`; :math:`Z` is unchanged), data near the float64 maximum is
centred at a quarter scale, and an eval-mode running covariance near the
limits is scaled the same way (:class:`~normref.whitening_matrices.ScaledMatrix`).
The derivatives are formed in an order whose intermediates stay finite for
any spread of the spectrum, and the input cotangent enters the linear core
in power-of-two bands (a huge recovery weight).  With
``eps = 0`` a numerically singular covariance (smallest eigenvalue below
:math:`d\cdot 2^{-52}` times the largest) raises ValueError for PCA, ZCA and
Cholesky; IterNorm only needs a positive trace.
"""
from __future__ import annotations

import numpy as np

from .kernels import whiten as K
from .limits import check_bytes
from .numerics import apply_banded
from .registry import Plan
from .newton_schulz import IterNorm, IterNormSpectral, newton_schulz_map, spectral_tables  # noqa: F401
from .whitening_matrices import PCA, ZCA, Cholesky, GivenMatrix, MatrixFunction, ScaledMatrix, _sym, _T

#: d x d stacks a whitening call holds at once (covariance, eigenvectors, W,
#: derivative temporaries): what the memory limit counts
_WORK_COPIES = 8

__all__ = ["BlockView", "MatrixFunction", "METHODS", "EVALUATIONS", "newton_schulz_map",
           "spectral_tables", "whitening_matrix", "Whitening", "FixedWhitening"]


#: the whitening methods (``method`` keyword); IterNorm's evaluation picks its class
METHODS = {"pca": PCA, "zca": ZCA, "cholesky": Cholesky, "iter_norm": IterNorm}

#: ways to evaluate IterNorm's matrix (``evaluation`` keyword)
EVALUATIONS = ("spectral", "newton")


def whitening_matrix(S, method, *, T=5, evaluation="spectral", what="covariance", eps=None,
                     scale=None):
    """The :class:`MatrixFunction` of ``method`` at the stacked SPD matrices ``S``.

    ``scale`` (per block, optional): the factor by which ``S`` was divided
    (power-of-two rescaling), used only to report true eigenvalues in errors.
    """
    cls = METHODS[method]
    if cls is IterNorm:
        cls = IterNormSpectral if evaluation == "spectral" else IterNorm
        return cls(S, T=T, what=what, eps=eps, scale=scale)
    return cls(S, what=what, eps=eps, scale=scale)


# ---------------------------------------------------------------------------
# block views: (N, C, *spatial) <-> (B, d, m)
# ---------------------------------------------------------------------------
class BlockView:
    """The partition of whitening: an input of shape (N, C, \\*spatial) as B blocks (d, m).

    ``kind="batch"``: channel groups of ``size`` channels, each observed over
    the batch and spatial positions: B = C / size, d = size, m = N * S.
    ``kind="sample"``: per sample, ``size`` groups of C / size channels, the
    groups decorrelated: B = N, d = size, m = C / size * S.
    """

    def __init__(self, shape, kind, size):
        self.shape = tuple(shape)
        self.kind = kind
        N, C = self.shape[0], self.shape[1]
        S = int(np.prod(self.shape[2:], dtype=np.int64))
        self.N, self.C, self.S = N, C, S
        if kind == "batch":
            self.B, self.d, self.m = C // size, size, N * S
        else:
            self.B, self.d, self.m = N, size, (C // size) * S
        self.affine_shape = (1, C) + (1,) * (len(self.shape) - 2)
        self.reduce_axes = (0,) + tuple(range(2, len(self.shape)))

    def to_blocks(self, a):
        a = np.asarray(a, dtype=np.float64)
        if self.kind == "batch":
            a = a.reshape(self.N, self.B, self.d, self.S).transpose(1, 2, 0, 3)
        return np.ascontiguousarray(a.reshape(self.B, self.d, self.m))

    def from_blocks(self, b):
        if self.kind == "batch":
            b = b.reshape(self.B, self.d, self.N, self.S).transpose(2, 0, 1, 3)
        return np.ascontiguousarray(b).reshape(self.shape)

    def channel_blocks(self, v):
        """A per-channel vector (C,) laid out on the blocks (batch kind): (B, d, 1)."""
        return np.asarray(v, dtype=np.float64).reshape(self.B, self.d, 1)


class FixedWhitening:
    """Eval-mode statistics: running mean (C,) and a running covariance (B, d, d)
    (the whitening matrix recomputed from it) or a running whitening matrix
    (used as it is).  ``names`` are their differentiable parameter names."""

    def __init__(self, mean, matrix, *, estimate="covariance", names=("running_mean", "running_cov")):
        self.mean = mean
        self.matrix = matrix
        self.estimate = estimate
        self.names = names


class Whitening(Plan):
    """A bound whitening call: block view + whitening method + recovery.

    Parameters
    ----------
    x : float64 input (N, C, \\*spatial).
    view : :class:`BlockView`.
    method : ``"pca" | "zca" | "cholesky" | "iter_norm"``; ``T`` for iter_norm.
    eps : added to the covariance diagonal.
    weight : per-channel scale (C,) or, for batch views, a coloring matrix per
        block (B, d, d) (``y = Gamma z + beta``, Siarohin et al. 2019).
    bias : per-channel shift (C,).
    fixed : :class:`FixedWhitening` for eval mode (None: batch statistics).
    on_forward : callback run after the forward (running-statistics updates).
    """

    def __init__(self, x, view, method, *, eps, T=5, evaluation="spectral", weight=None, bias=None,
                 fixed=None, on_forward=None, name="whitening"):
        self.x = x
        self.view = view
        self.method = method
        self.T = T
        self.evaluation = evaluation
        self.eps = float(eps)
        self.weight = weight
        self.coloring = weight is not None and weight.ndim == 3
        self.bias = bias
        self.fixed = fixed
        self.on_forward = on_forward
        self.name = name
        values = {"input": x}
        if weight is not None:
            values["weight"] = weight
        if bias is not None:
            values["bias"] = bias
        if fixed is not None:
            values[fixed.names[0]] = fixed.mean
            values[fixed.names[1]] = fixed.matrix
        self._values = values
        self.params = tuple(values)
        self.empty = x.size == 0
        check_bytes(f"{name}: the covariance and whitening matrices ({view.B} blocks of "
                    f"{view.d} x {view.d}, with their working copies)",
                    _WORK_COPIES * 8 * view.B * view.d * view.d,
                    "use a smaller group_size" if view.kind == "batch" else "use fewer groups")

    def keep_private(self):
        """The input is read only during the forward (the derivatives use the private
        centred blocks): only the recovery and running estimates need copies."""
        return tuple(n for n in self.params if n != "input")

    # -- forward ------------------------------------------------------------
    def _forward(self):
        v = self.view
        if self.empty:
            return np.zeros(self.x.shape)
        X = v.to_blocks(self.x)
        eye = np.eye(v.d)
        if self.fixed is None:
            S = self._batch_covariance(X)
            what = f"covariance of {self.name}"
            k_cov = self.k
        else:
            self.k = np.zeros(v.B, dtype=np.int64)
            self.scaled = False
            mu = v.channel_blocks(self.fixed.mean)[..., 0]
            self.Xc = X - mu[..., None]
            # exact power-of-two rescaling of running covariances near the
            # float64 limits (Sigma = 4^k Sigma_s, W(Sigma) = 2^-k W(Sigma_s))
            M = self.fixed.matrix
            top = np.maximum(np.abs(M).max(axis=(1, 2), initial=0.0), abs(self.eps))
            k_cov = self._exponents(np.sqrt(top))
            S = _sym(np.ldexp(M, -2 * k_cov[:, None, None])) + \
                np.ldexp(self.eps, -2 * k_cov)[:, None, None] * eye
            what = f"running covariance of {self.name}"
        # a block with NaN / inf data gets NaN output; the others are unaffected
        bad = ~np.isfinite(S).all(axis=(1, 2))
        with np.errstate(over="ignore"):  # (a message-only factor: inf for 1e300 data is fine)
            unscale = np.ldexp(1.0, 2 * k_cov)
        if self.fixed is not None and self.fixed.estimate == "whitening":
            self.fn = GivenMatrix(self.fixed.matrix)
        else:
            fn = whitening_matrix(np.where(bad[:, None, None], eye, S), self.method, T=self.T,
                                  evaluation=self.evaluation, what=what, eps=self.eps,
                                  scale=unscale)
            if self.fixed is not None and k_cov.any():
                fn = ScaledMatrix(fn, k_cov)
            if bad.any():
                fn.W = np.where(bad[:, None, None], np.nan, fn.W)
            self.fn = fn
        Z = self.fn.W @ self.Xc
        self.Z = Z
        Yb = self.weight @ Z if self.coloring else Z
        y = v.from_blocks(Yb)
        if self.weight is not None and not self.coloring:
            y = y * self.weight.reshape(v.affine_shape)
        if self.bias is not None:
            y = y + self.bias.reshape(v.affine_shape)
        return y

    @staticmethod
    def _exponents(ref):
        """Per block, ``k`` with ``ref < 2^k`` where ``ref`` (a magnitude) lies outside
        ``[2^-400, 2^400]``, else 0 (squares and sums stay far inside the float64 range)."""
        ok = np.isfinite(ref) & (ref > 0)
        k = np.frexp(np.where(ok, ref, 1.0))[1].astype(np.int64)
        return np.where(ok & ((ref < 2.0 ** -400) | (ref > 2.0 ** 400)), k, 0)

    def _batch_covariance(self, X):
        """Centre the blocks and form ``Sigma = Xc Xc^T / m + eps I``, rescaled where needed.

        Exact power-of-two rescaling: with ``Xc_s = 2^-k Xc`` and ``Sigma_s =
        4^-k Sigma``, ``Z = W(Sigma_s) Xc_s`` is the same Z as ``W(Sigma) Xc``.
        ``k`` comes from the larger of max|x - mean| and sqrt|eps| (so a
        constant block with a tiny eps is scaled too) and is 0 for blocks
        between 2^-400 and 2^400.  Blocks holding values near the float64
        maximum are centred at a quarter scale, so ``x - mean`` cannot
        overflow.
        """
        v = self.view
        top = np.abs(X).max(axis=(1, 2), initial=0.0)
        j = np.where(top >= 2.0 ** 1021, 2, 0)
        if j.any():
            X = np.ldexp(X, -j[:, None, None])
        Xc, mu = K.center_rows(X)
        self.mu = np.ldexp(mu, j[:, None]) if j.any() else mu
        amax = np.abs(Xc).max(axis=(1, 2), initial=0.0)
        with np.errstate(over="ignore"):
            ref = np.maximum(np.ldexp(amax, j), np.sqrt(abs(self.eps)))
        k = self._exponents(ref)
        self.k = k
        self.scaled = bool(k.any())
        if (j - k).any():
            Xc = np.ldexp(Xc, (j - k)[:, None, None])
        self.Xc = Xc
        G = K.gram(Xc) / v.m
        with np.errstate(over="ignore"):  # the covariance itself may overflow (huge data)
            self.data_cov = self._unscale(G, 2)
        return G + np.ldexp(self.eps, -2 * k)[:, None, None] * np.eye(v.d)

    def _unscale(self, a, power):
        """``a * 2^(power k)`` per block (exact); ``a`` itself when no block is rescaled."""
        if not self.scaled:
            return a
        return np.ldexp(a, power * self.k[:, None, None])

    # -- statistics for callers ---------------------------------------------
    def whitening_matrices(self):
        """The whitening matrix of every block, shape (B, d, d)."""
        if not hasattr(self, "fn"):
            self.forward()
        return self._unscale(self.fn.W, -1)

    def rounding_cond(self):
        """Sensitivity of the output to rounding: the largest block condition number."""
        self.forward()
        if self.empty:
            return 1.0
        return float(np.max(self.fn.kappa))

    # -- derivatives ----------------------------------------------------------
    def _zero_grads(self):
        return {k: np.zeros(np.shape(v)) for k, v in self._values.items()}

    def vjp(self, cotangent):
        self.forward()
        if self.empty:
            return self._zero_grads()
        v = self.view
        dy = np.asarray(cotangent, dtype=np.float64)
        grads = {}
        if self.bias is not None:
            grads["bias"] = dy.sum(axis=v.reduce_axes)
        if self.weight is not None and not self.coloring:
            z = v.from_blocks(self.Z)
            grads["weight"] = (dy * z).sum(axis=v.reduce_axes)
            dy = dy * self.weight.reshape(v.affine_shape)
        dZ = v.to_blocks(dy)
        if self.coloring:
            grads["weight"] = dZ @ _T(self.Z)
            dZ = _T(self.weight) @ dZ
        # the whitening core is linear in dZ, which a huge recovery weight makes
        # huge: apply it band by band (exact powers of two, numerics.apply_banded)
        grads.update(apply_banded(self._core_vjp, [dZ]))
        return grads

    def _core_vjp(self, dZ):
        """Cotangents of the input (and of the running estimates in eval) for ``dZ``."""
        v = self.view
        fn, Xc = self.fn, self.Xc
        dXc = _T(fn.W) @ dZ
        if self.fixed is None:
            dXc = dXc + (2.0 / v.m) * fn.vjp_apply(dZ, Xc)
            dX = self._unscale(dXc - dXc.mean(axis=-1, keepdims=True), -1)
            return {"input": v.from_blocks(dX)}
        return {"input": v.from_blocks(dXc),
                self.fixed.names[0]: -dXc.sum(axis=-1).reshape(-1),
                self.fixed.names[1]: fn.vjp(dZ @ _T(Xc))}

    def jvp(self, tangents):
        y = self.forward()
        if self.empty:
            return np.zeros(y.shape)
        v = self.view
        t = {k: (None if tangents.get(k) is None else np.asarray(tangents[k], dtype=np.float64))
             for k in self.params}
        fn, Xc = self.fn, self.Xc
        tX = t["input"]
        tXc = np.zeros_like(Xc) if tX is None else v.to_blocks(tX)
        if self.fixed is None:
            tXc = self._unscale(tXc - tXc.mean(axis=-1, keepdims=True), -1)
            tS = (tXc @ _T(Xc) + Xc @ _T(tXc)) / v.m
            tZ = fn.jvp_apply(tS, Xc) + fn.W @ tXc
        else:
            tm = t[self.fixed.names[0]]
            if tm is not None:
                tXc = tXc - v.channel_blocks(tm)
            tM = t[self.fixed.names[1]]
            tZ = fn.W @ tXc
            if tM is not None:
                tZ = tZ + fn.jvp_apply(tM, Xc)
        if self.coloring:
            tY = self.weight @ tZ
            if t.get("weight") is not None:
                tY = tY + t["weight"] @ self.Z
            ty = v.from_blocks(tY)
        else:
            ty = v.from_blocks(tZ)
            if self.weight is not None:
                ty = ty * self.weight.reshape(v.affine_shape)
                if t.get("weight") is not None:
                    ty = ty + v.from_blocks(self.Z) * t["weight"].reshape(v.affine_shape)
        if self.bias is not None and t.get("bias") is not None:
            ty = ty + t["bias"].reshape(v.affine_shape)
        return ty
