r"""Theory on normref's exact derivatives: claims of the literature, computed.

Each submodule measures statements of papers on normalization with normref's
float64 forwards, VJPs and Jacobians (and autograd Hessians through the
:mod:`normref.reference` formulas), and returns :class:`Claim` rows --
statement, source, predicted value, measured value, tolerance -- that
``python -m normref check`` prints in its theory section:

* :mod:`~normref.analysis.invariance` -- Ba, Kiros & Hinton 2016, Table 1
  (:func:`invariance_table`: which weight / data transformations leave a
  normalized layer unchanged, measured for registered normalizers or any
  callable ``f(x)``), and the scale invariance of the loss in a weight vector
  (:math:`L(aw) = L(w)`, :math:`\nabla L(aw) = \nabla L(w)/a`,
  :math:`\nabla^2 L\,w = -\nabla L`; Arora, Li & Lyu 2019);
* :mod:`~normref.analysis.curvature` -- Hessians, Gauss-Newton and Fisher
  matrices, K-FAC factors and condition numbers of normalized units;
* :mod:`~normref.analysis.dynamics` -- SGD on scale-invariant losses: weight
  norm growth, effective learning rate, angular updates and their equilibrium;
* :mod:`~normref.analysis.signal` -- gradient explosion with depth in batch-norm
  networks (Yang et al. 2019: the :math:`(B-2)/(B-3)` per-layer growth);
* :mod:`~normref.analysis.stochasticity` -- the stochastic normalization
  disturbance of batch norm and batch whitening, and the conditioning that
  whitening buys;
* :mod:`~normref.analysis.structure` -- the closed-form Jacobian structure of
  batch, layer and RMS norm (null spaces, symmetric projections);
* :mod:`~normref.analysis.claims` -- :class:`Claim`, the provider registry and
  :func:`all_claims`.

The public functions of every submodule are importable from here
(``from normref.analysis import invariance_table``).  Importing this package
imports autograd (the Hessians); ``import normref`` itself does not import it.
"""
from __future__ import annotations

# (in the order of claims.ANALYSIS_MODULES: the order their claim providers register)
from .claims import CLAIM_PROVIDERS, Claim, all_claims, register_claims
from .invariance import (
    PAPER_TABLE1,
    TRANSFORMATIONS,
    LossProblem,
    invariance_claims,
    invariance_table,
    layer_invariances,
    scale_invariance_claims,
    scale_invariance_measurements,
    table_layer,
    theory_claims,
)
from .curvature import (
    ConditionReport,
    as_operator,
    batch_norm_unit,
    condition_number,
    curvature_claims,
    exact_moment_sample,
    fisher,
    fisher_condition,
    gauss_newton,
    hessian,
    hidden_normalizer,
    input_conditioning_claims,
    input_mean_fisher_claims,
    kfac_block,
    kfac_factors,
    normalization_fisher_claims,
    normalizer_gauss_newton,
    scale_invariant_curvature_claims,
    weight_norm_unit,
)
from .dynamics import (
    Trajectory,
    angular_update_claim,
    angular_updates,
    dynamics_claims,
    effective_lr_claim,
    equilibrium_norm_average_claim,
    equilibrium_norm_claim,
    exponential_lr_claim,
    li_arora_schedule,
    make_loss,
    make_problem,
    norm_growth_claim,
    random_batches,
    serial_numba,
    sgd,
    smd_run,
)
from .structure import claims as jacobian_structure_claims
from .signal import (
    GrowthMeasurement,
    bn_network,
    gradient_norms,
    growth_claims,
    measure_growth,
    predicted_growth,
    signal_claims,
)
from .stochasticity import (
    batch_whitening_names,
    correlated_data,
    snd,
    snd_claims,
    snd_table,
    stochasticity_claims,
    whitening_conditioning_claims,
)

__all__ = [
    # claims
    "Claim", "CLAIM_PROVIDERS", "all_claims", "register_claims",
    # invariance
    "TRANSFORMATIONS", "PAPER_TABLE1", "LossProblem", "invariance_table", "table_layer",
    "layer_invariances", "invariance_claims", "scale_invariance_measurements",
    "scale_invariance_claims", "theory_claims",
    # curvature
    "ConditionReport", "as_operator", "batch_norm_unit", "condition_number", "curvature_claims",
    "exact_moment_sample", "fisher", "fisher_condition", "gauss_newton", "hessian",
    "hidden_normalizer",
    "input_conditioning_claims", "input_mean_fisher_claims", "kfac_block", "kfac_factors",
    "normalization_fisher_claims", "normalizer_gauss_newton", "scale_invariant_curvature_claims",
    "weight_norm_unit",
    # dynamics
    "Trajectory", "angular_update_claim", "angular_updates", "dynamics_claims",
    "effective_lr_claim", "equilibrium_norm_average_claim", "equilibrium_norm_claim",
    "exponential_lr_claim", "li_arora_schedule", "make_loss", "make_problem", "norm_growth_claim",
    "random_batches", "serial_numba", "sgd", "smd_run",
    # signal
    "GrowthMeasurement", "bn_network", "gradient_norms", "growth_claims", "measure_growth",
    "predicted_growth", "signal_claims",
    # stochasticity
    "batch_whitening_names", "correlated_data", "snd", "snd_claims", "snd_table", "stochasticity_claims",
    "whitening_conditioning_claims",
    # structure
    "jacobian_structure_claims",
]
