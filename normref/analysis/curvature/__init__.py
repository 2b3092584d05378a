r"""Curvature: exact Hessians, Gauss-Newton and Fisher matrices, K-FAC factors,
matrix-free operators and condition numbers that say what they exclude.

Second derivatives come from autograd applied to a scalar loss written in
``autograd.numpy`` with normref's reference formulas
(``normref.registry.REGISTRY[name].reference``); first derivatives of a single
normalizer can also come from normref's fast path (:func:`normref.jvp` /
:func:`normref.vjp`, see :func:`normalizer_gauss_newton`).  Everything is
float64.

Conventions
-----------
* Parameters are one flat float64 vector ``w`` of size :math:`P`; matrices
  are :math:`P \times P`.
* A *model* maps ``w`` to outputs ``z`` of shape ``(N, K)`` (``(N,)`` is
  read as ``K = 1``), one row per sample.
* **The loss convention** (one for the package and :mod:`normref.nets`,
  :data:`normref.nets.LOSS_CONVENTION`): a mean over the batch of a
  per-sample loss,

  .. math::

      L(w) = \frac1N \sum_n \ell(z_n(w), y_n),\qquad
      \ell_\text{squared} = \tfrac12\|z_n - y_n\|^2 \;(H_n = I),\qquad
      \ell_\text{xent} = -\log\operatorname{softmax}(z_n)_{y_n}
      \;(H_n = \mathrm{diag}(p_n) - p_n p_n^\top),

  so every curvature matrix carries the factor :math:`1/N`.  ``"squared"``
  (``output_hessian="squared"``) and ``"softmax"`` / ``"softmax_ce"`` /
  ``"xent"`` mean these everywhere; nets' ``"mse"`` (PyTorch's mean over
  :math:`N K` entries) is :math:`\tfrac2K\,\ell_\text{squared}`, accepted
  by name (:math:`H_n = \tfrac2K I`) and never silently mixed with it.  With a normalizer that mixes
  samples (batch norm) :math:`z_n` depends on the whole batch; the per-sample
  Jacobian :math:`J_n = \partial z_n / \partial w` is still well defined and
  includes that coupling.
* Gauss-Newton: :math:`G = \frac1N \sum_n J_n^\top H_n J_n` with
  :math:`H_n = \nabla^2_z \ell(z_n)`.
* True Fisher: :math:`F = \frac1N \sum_n \mathbb{E}_{y \sim p(y|z_n)}
  [g_{n,y} g_{n,y}^\top]` with :math:`g_{n,y} = \nabla_w(-\log p(y|z_n))`;
  empirical Fisher: the same with the observed targets instead of the
  expectation.  For a softmax (categorical) or a Gaussian output model the
  true Fisher equals the Gauss-Newton matrix of the matching loss
  (Martens 2020, "New insights and perspectives on the natural gradient
  method", JMLR 21); :func:`fisher` computes it from its definition (the sum
  over classes), so the equality is a check, not an assumption.
* K-FAC (Martens & Grosse, ICML 2015, arXiv:1503.05671): for a linear layer
  :math:`s = W a` (``W`` of shape ``(out, in)``) the Fisher block of
  :math:`\mathrm{vec}(W)` is approximated by a Kronecker product of
  :math:`A = \mathbb{E}[a a^\top]` and :math:`B = \mathbb{E}[\delta\delta^\top]`,
  :math:`\delta = \partial \ell / \partial s`.  With NumPy's row-major
  ``W.ravel()`` the block is ``np.kron(B, A)``; docs/theory.md writes
  :math:`A \otimes B`, the same matrix up to a permutation (same spectrum).

Condition numbers
-----------------
:func:`condition_number` returns a :class:`ConditionReport`.  For a symmetric
matrix with eigenvalues :math:`\lambda_i` it reports

.. math::

    \kappa = \frac{\max_{i \in R} |\lambda_i|}{\min_{i \in R} |\lambda_i|},
    \qquad R = \{ i : |\lambda_i| > \mathrm{rtol}\cdot\max_j |\lambda_j| \}

on the subspace it keeps, and lists the excluded eigenvalues.  The null space
is treated one of two ways, always stated in the report:

* ``null_space=None``: eigenvalues with :math:`|\lambda| \le
  \mathrm{rtol}\,\max|\lambda|` are excluded (default ``rtol = 1e-10``,
  about :math:`10^6` times float64 round-off relative to the largest
  eigenvalue);
* ``null_space=U`` (columns spanning a subspace, e.g. ``w`` for a
  scale-invariant loss, docs/theory.md item 1): the matrix is restricted to the
  orthogonal complement :math:`Q^\top M Q` (``Q`` an orthonormal basis of
  :math:`U^\perp`) and, by default, nothing else is excluded
  (``rtol = 0``: only exact zeros), so a direction the caller forgot shows
  up as a huge :math:`\kappa`.

Scale invariance (docs/theory.md item 1): if :math:`L(a w) = L(w)` then
:math:`w^\top \nabla L(w) = 0` and :math:`\nabla^2 L(w)\, w = -\nabla L(w)`,
so the quadratic form vanishes along :math:`w` (:math:`w^\top H w = 0`) but
:math:`H w = 0` only at a critical point; the Gauss-Newton and Fisher
matrices of a scale-invariant model are exactly singular along :math:`w`
(:math:`J w = 0`).  Their condition number is therefore reported on the
orthogonal complement of :math:`w` (``null_space=w``).

Modules, by job:

* :mod:`~normref.analysis.curvature.matrices` -- Hessian, Gauss-Newton,
  Fisher, K-FAC, operators;
* :mod:`~normref.analysis.curvature.condition` -- :func:`condition_number`
  (dense, Lanczos, LOBPCG, shift-invert; null space deflated; convergence
  reported);
* :mod:`~normref.analysis.curvature.network` -- :class:`NetworkCurvature`:
  every matrix above, dense and matrix-free, its output-space Gram matrix
  (``space="dual"``), for any :class:`normref.nets.MLP`;
* :mod:`~normref.analysis.curvature.kfac` -- K-FAC factors collected by the
  network and the K-FAC preconditioner;
* :mod:`~normref.analysis.curvature.invariances` -- the exact null-space
  bases of a network's invariances and the scale metric;
* :mod:`~normref.analysis.curvature.input_conditioning` -- docs/theory.md item 6;
* :mod:`~normref.analysis.curvature.scale_invariance` -- item 1 (curvature);
* :mod:`~normref.analysis.curvature.normalization_fisher` -- normalization vs
  the Fisher condition number.

Every public name is importable from ``normref.analysis.curvature``.
"""
from __future__ import annotations

from ..claims import register_claims
from .condition import DEFAULT_RTOL, METHODS, ConditionReport, condition_number, orthonormal_basis
from .invariances import NULL_RTOL, SCALE_FAMILIES, Invariances, network_invariances
from .kfac import DEFAULT_DAMPING, KFACPreconditioner
from .input_conditioning import exact_moment_sample, input_conditioning_claims
from .input_conditioning import _linear_unit_loss  # noqa: F401  (for proofs/)
from .matrices import (as_operator, fisher, fisher_from_jacobian, gauss_newton, hessian,
                       kfac_block, kfac_factors, normalizer_gauss_newton)
from .network import KINDS, KFACFactor, NetworkCurvature
from .normalization_fisher import (fisher_condition, hidden_normalizer,
                                   input_mean_fisher_claims, normalization_fisher_claims)
from .normalization_fisher import _init_params, _mlp  # noqa: F401  (the test MLP, for tests)
from .scale_invariance import batch_norm_unit, scale_invariant_curvature_claims, weight_norm_unit

__all__ = [
    "hidden_normalizer",
    "hessian",
    "gauss_newton",
    "fisher",
    "kfac_factors",
    "kfac_block",
    "as_operator",
    "normalizer_gauss_newton",
    "condition_number",
    "ConditionReport",
    "exact_moment_sample",
    "input_conditioning_claims",
    "scale_invariant_curvature_claims",
    "batch_norm_unit",
    "weight_norm_unit",
    "normalization_fisher_claims",
    "input_mean_fisher_claims",
    "fisher_condition",
    "curvature_claims",
    "DEFAULT_RTOL",
    "METHODS",
    "fisher_from_jacobian",
    "NetworkCurvature",
    "KFACFactor",
    "KFACPreconditioner",
    "DEFAULT_DAMPING",
    "orthonormal_basis",
    "SCALE_FAMILIES",
    "KINDS",
    "Invariances",
    "network_invariances",
    "NULL_RTOL",
]


@register_claims("curvature")
def curvature_claims():
    """All curvature rows: docs/theory.md item 6, the curvature half of item 1, and
    the normalization-vs-Fisher comparison (deterministic seeds)."""
    rows = input_conditioning_claims()
    rows += scale_invariant_curvature_claims(batch_norm_unit, "batch_norm")
    rows += scale_invariant_curvature_claims(weight_norm_unit, "weight_norm")
    rows += normalization_fisher_claims(input_mean=0.0)
    rows += input_mean_fisher_claims()
    return rows
