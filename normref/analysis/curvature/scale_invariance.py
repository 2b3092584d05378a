r"""Curvature of a scale-invariant unit (the curvature half of docs/theory.md
item 1): along the weight vector the Hessian's quadratic form vanishes, the
Gauss-Newton matrix is exactly singular, and its condition number is taken on
the orthogonal complement of ``w``.
"""
from __future__ import annotations

import numpy as np
import autograd
import autograd.numpy as anp

from ...registry import REGISTRY
from ..claims import Alternative, Claim
from .condition import DEFAULT_RTOL, condition_number
from .matrices import gauss_newton, hessian

__all__ = ["batch_norm_unit", "weight_norm_unit", "scale_invariant_curvature_claims"]

_SCALE = ("van Laarhoven 2017 (arXiv:1706.05350); Hoffer et al. 2018 "
          "(arXiv:1803.01814)")


# ---------------------------------------------------------------- item 1 (curvature)
def batch_norm_unit(X, w, eps=0.0):
    """``batch_norm(X w)``: one channel normalized over the batch (normref
    reference, training mode, no affine).  ``eps=0`` makes it exactly scale
    invariant in ``w``; with ``eps > 0`` the defect is of order eps / Var(Xw)."""
    bn = REGISTRY["batch_norm"].reference
    z = anp.reshape(anp.dot(X, w), (-1, 1))
    return anp.reshape(bn(z, None, None, None, None, True, 0.1, eps), (-1,))


def weight_norm_unit(X, w):
    """``tanh(X weight_norm(w, g=1))``: a unit whose weight is normalized
    (normref reference ``weight_norm``, ``dim=None``): scale invariant in ``w``."""
    wn = REGISTRY["weight_norm"].reference
    return anp.tanh(anp.dot(X, wn(w, np.ones(()), None)))


def scale_invariant_curvature_claims(unit=batch_norm_unit, name="batch_norm", *, N=32,
                                     d=6, seed=1):
    r"""Curvature rows of docs/theory.md item 1 for a weight vector ``w`` feeding a
    scale-invariant unit.

    Model: :math:`z = \mathrm{unit}(X, w) \odot a` (per-sample outputs),
    loss :math:`L = \frac1{2N}\|z - y\|^2`.  If
    :math:`\mathrm{unit}(X, c w) = \mathrm{unit}(X, w)` for :math:`c > 0`:

    * :math:`w^\top H w = 0` (reported relative to :math:`\|H\|_2\|w\|^2`),
    * :math:`H w = -\nabla L` (relative to :math:`\|\nabla L\|`),
    * the Gauss-Newton matrix has :math:`G w = 0` (relative to
      :math:`\|G\|_2\|w\|`) and its null vector is :math:`w` (|cos| = 1),
    * its condition number on the orthogonal complement of :math:`w`
      (``null_space=w``) equals the thresholded one (rtol 1e-10): the two
      treatments of the null space agree.

    ``unit`` must be autograd-differentiable.  A unit that is not scale
    invariant (``lambda X, w: X @ w``, or batch norm with ``eps > 0``) makes
    the rows fail.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, d)) + 0.5
    y = rng.standard_normal(N)
    a = 1.0 + 0.1 * rng.standard_normal(N)
    w = rng.standard_normal(d)

    def model(v):
        return unit(X, v) * a

    def loss(v):
        r = model(v) - y
        return 0.5 * anp.sum(r * r) / N

    H = hessian(loss, w)
    g = autograd.grad(loss)(w)
    G = gauss_newton(model, w, "squared")
    Hn, Gn = np.linalg.norm(H, 2), np.linalg.norm(G, 2)
    ev, V = np.linalg.eigh(G)
    cos = abs(V[:, 0] @ w) / np.linalg.norm(w)
    k_proj = condition_number(G, null_space=w)
    k_thr = condition_number(G)
    src = _SCALE
    # the alternatives (docs/theory.md item 1): the residual a wrong identity would leave
    ones = np.ones_like(w)
    L0 = float(loss(w))
    ng = np.linalg.norm(g)
    cos1 = abs(ones @ w) / (np.linalg.norm(ones) * np.linalg.norm(w))
    ev_all = np.abs(np.linalg.eigvalsh(G))
    k_keep = float(ev_all.max() / ev_all.min())          # the null eigenvalue kept
    k_ones = condition_number(G, null_space=ones).kappa  # w-perp replaced by 1-perp
    return [
        Claim(f"item1.hessian_quadratic_form_along_w.{name}",
              f"{name}: w^T H w = 0 (relative to ||H|| ||w||^2)", src, 0.0,
              float(abs(w @ H @ w) / (Hn * (w @ w))), 1e-12,
              alternatives=(Alternative("degree 2: w^T H w = 2 L(w)", 0.0,
                                        float(abs(w @ H @ w - 2 * L0) / (Hn * (w @ w)))),)),
        Claim(f"item1.hessian_w_equals_minus_grad.{name}",
              f"{name}: H w = -grad L (||H w + g|| / ||g||); so H is singular along w only "
              f"at a critical point", src, 0.0,
              float(np.linalg.norm(H @ w + g) / ng), 1e-10,
              alternatives=(Alternative("H w = 0 (true only at a stationary point)", 0.0,
                                        float(np.linalg.norm(H @ w) / ng)),
                            Alternative("H w = +grad L (sign)", 0.0,
                                        float(np.linalg.norm(H @ w - g) / ng)))),
        Claim(f"item1.gauss_newton_null_along_w.{name}",
              f"{name}: Gauss-Newton G w = 0 (||G w|| / (||G|| ||w||))", src, 0.0,
              float(np.linalg.norm(G @ w) / (Gn * np.linalg.norm(w))), 1e-12,
              alternatives=(Alternative("null along 1 (the input re-centering direction, not w)",
                                        0.0, float(np.linalg.norm(G @ ones)
                                                   / (Gn * np.linalg.norm(ones)))),)),
        Claim(f"item1.gauss_newton_null_vector_is_w.{name}",
              f"{name}: the eigenvector of G's smallest eigenvalue is w (|cos|)", src, 1.0,
              float(cos), 1e-10,
              alternatives=(Alternative("the null vector is 1: |cos| = |cos(1, w)|", float(cos1)),
                            Alternative("the null vector is the gradient (orthogonal to w): "
                                        "|cos| = 0", 0.0))),
        Claim(f"item1.kappa_complement_of_w.{name}",
              f"{name}: kappa(G) on the orthogonal complement of w (null_space=w: "
              f"{k_proj.kappa:.4g}) equals kappa with the rtol={DEFAULT_RTOL:g} threshold "
              f"({k_thr.n_excluded} eigenvalue(s) excluded)", src, k_thr.kappa, k_proj.kappa,
              1e-6, relative=True,
              alternatives=(Alternative("the null eigenvalue kept (dense kappa)", k_keep),
                            Alternative("restricted to 1-perp instead of w-perp", float(k_ones)))),
    ]
