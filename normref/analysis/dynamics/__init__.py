r"""Training dynamics of scale-invariant weights (docs/theory.md items 3, 4, 5).

A weight vector :math:`w \in \mathbb{R}^d` that feeds a normalizer gives a
*scale-invariant* loss, :math:`L(a w) = L(w)` for :math:`a > 0`.  Then

.. math::

    \langle w, \nabla L(w) \rangle = 0, \qquad
    \nabla L(a w) = \nabla L(w) / a,

and plain (S)GD, SGD with weight decay, and SGD with momentum obey exact or
asymptotic laws for the norm and the direction of :math:`w`.  This module
builds such losses from normref normalizers (gradients by :func:`normref.vjp`,
exact to rounding), runs SGD with PyTorch's update rules, and returns one
:class:`~normref.analysis.claims.Claim` row per statement:

* item 3, norm growth (van Laarhoven 2017, arXiv:1706.05350; Hoffer et al.
  2018, arXiv:1803.01814): without weight decay and momentum,
  :math:`\lVert w_{t+1}\rVert^2 = \lVert w_t\rVert^2 + \eta^2 \lVert g_t\rVert^2`
  exactly, and the step turns :math:`w` by
  :math:`\tan\Delta_t = \eta_{\rm eff,t} \lVert \nabla L(\hat w_t)\rVert`
  with the effective learning rate :math:`\eta_{\rm eff,t} = \eta/\lVert w_t\rVert^2`.
* item 4, weight decay as an exponential learning rate (Li & Arora 2020,
  arXiv:1910.07454, ICLR 2020): with the same batches, SGD with weight decay
  :math:`\lambda` and learning rate :math:`\eta` equals
  :math:`(1 - \eta\lambda)^t` times SGD without weight decay and learning rate
  :math:`\tilde\eta_t = \eta (1 - \eta\lambda)^{-2t-1}` — exactly.
* item 5, spherical motion dynamics (Wan, Wang, Li, Zhang & Sun 2021,
  arXiv:2006.08419, NeurIPS 2021): with weight decay the angular update
  :math:`\Delta_t = \angle(w_t, w_{t+1})` approaches
  :math:`\sqrt{2\eta\lambda/(1+\mu)}` (momentum :math:`\mu`), and for
  :math:`\mu = 0` with :math:`\lVert\nabla L(\hat w)\rVert = C` on the unit
  sphere the norm converges to
  :math:`\lVert w^*\rVert^4 = \eta C^2 / (\lambda (2 - \eta\lambda))`.

Numerical choices
-----------------
* Normalization statistics use ``eps = 0``: with ``eps > 0``,
  :math:`\sqrt{\sigma^2(a z) + \epsilon} \ne a\sqrt{\sigma^2(z) + \epsilon}`, so
  the invariance (and every exact identity below) holds only up to a relative
  :math:`O(\epsilon / (a^2 \sigma^2))`.  ``eps = 0`` is safe because the data
  are Gaussian: every projection :math:`X_B w` of a batch has positive variance
  with probability one (and per-sample rows for layer norm likewise).
* All runs are float64 with fixed seeds; the mini-batches of a run are drawn
  once (:func:`random_batches`) and shared when two runs are compared.
* The runs make thousands of tiny normalizer calls (d <= 32, N = 32); numba's
  parallel kernels pay a thread launch per call, which on a loaded machine
  costs milliseconds.  :func:`sgd` and the claim functions therefore run with
  one numba thread (:func:`serial_numba`, restored on exit); results do not
  depend on the thread count.

Modules, by job: :mod:`~normref.analysis.dynamics.losses` (losses, problems,
batches), :mod:`~normref.analysis.dynamics.sgd` (the optimizer, angles,
schedules), :mod:`~normref.analysis.dynamics.norm_growth` (item 3),
:mod:`~normref.analysis.dynamics.exponential_lr` (item 4),
:mod:`~normref.analysis.dynamics.spherical_motion` (item 5).  Every public
name is importable from ``normref.analysis.dynamics``.
"""
from __future__ import annotations

from ..claims import register_claims
from .exponential_lr import SRC_LI_ARORA, exponential_lr_claim  # noqa: F401
from .losses import LOSS_KINDS, make_loss, make_problem, random_batches
from .norm_growth import SRC_NORM_GROWTH, effective_lr_claim, norm_growth_claim  # noqa: F401
from .sgd import Trajectory, angular_updates, li_arora_schedule, serial_numba, sgd
from .sgd import _serial
from .spherical_motion import (SRC_SMD, angular_update_claim,  # noqa: F401
                               angular_update_limit_claim, equilibrium_norm_average_claim,
                               equilibrium_norm_claim, equilibrium_norm_limit_claim, smd_ratios,
                               smd_run)
from .spherical_motion import _SMD_CACHE  # noqa: F401  (tests clear it)

__all__ = [
    "LOSS_KINDS",
    "make_loss",
    "make_problem",
    "random_batches",
    "sgd",
    "serial_numba",
    "smd_run",
    "Trajectory",
    "angular_updates",
    "li_arora_schedule",
    "norm_growth_claim",
    "effective_lr_claim",
    "exponential_lr_claim",
    "angular_update_claim",
    "equilibrium_norm_claim",
    "equilibrium_norm_average_claim",
    "angular_update_limit_claim",
    "equilibrium_norm_limit_claim",
    "smd_ratios",
    "dynamics_claims",
]


# -- provider ----------------------------------------------------------------------


@register_claims("dynamics")
@_serial
def dynamics_claims():
    """All rows of items 3, 4, 5 (deterministic seeds)."""
    rows = []
    for kind in ("batch_norm", "layer_norm", "weight_norm"):
        rows.append(norm_growth_claim(kind))
    for kind in ("batch_norm", "layer_norm", "weight_norm"):
        rows.append(effective_lr_claim(kind))
    for kind in ("batch_norm", "layer_norm", "weight_norm"):
        rows.append(exponential_lr_claim(kind))
    rows.append(angular_update_limit_claim(0.0))
    rows.append(angular_update_limit_claim(0.9))
    rows.append(equilibrium_norm_claim())
    rows.append(equilibrium_norm_limit_claim())
    return rows
