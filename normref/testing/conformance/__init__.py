r"""The conformance kit: judge a framework's normalizers against normref.

Modules
-------
* :mod:`.cases` -- :class:`ConformCase` (a registered call with an id) and
  :func:`bound_arguments`;
* :mod:`.build` -- :func:`catalogue`, :func:`variants`, :func:`case_from_id`:
  every registered normalizer whose Spec declares a
  :class:`normref.catalogue.Catalogue` (its base case, random variants,
  adversarial exclusions and the rows only it takes, in its own module),
  crossed with the shared adversarial rows; each case has a stable id
  ``"<normalizer>/<variant>/s<seed>"`` from which :func:`case_from_id`
  rebuilds it bit for bit;  :mod:`.helpers` -- the shared draws (``h``)
  the bases use;
* :mod:`.rounding` -- :func:`round_to` / :func:`as_dtype`: a case in a target dtype;
* :mod:`.judge` -- :func:`expected_outputs` and :func:`judge`: dtype-aware
  judgement (below), with the tolerance and conditioning of
  :mod:`normref.tolerance` (shared with ``python -m normref check``);
* :mod:`.known` -- the known discrepancies, one file per target in
  ``normref/testing/known/`` (:func:`load_known_discrepancies`; the format and
  :func:`~.known.audit_known`, which lists stale and overlapping entries, are
  documented there);
* :mod:`.runner` -- :func:`run_conformance`: runs an adapter
  (:mod:`normref.testing.adapters`) over the catalogue and classifies each
  check as pass / fail / xfail / xpass / skip / error;
* :mod:`.report` -- :func:`format_table` / :func:`results_json`; the CLI is
  ``python -m normref conform --target torch``;
* :mod:`.asserting` -- :func:`assert_conforms`, the same judgement inside anyone's pytest.

Conventions are configured, not judged
--------------------------------------
An adapter's ``prepare`` rewrites each case into normref's options for its
framework (momentum direction, biased running variance, LRN window, eps on
the standard deviation, per-group GroupNorm scale); normref then computes
*that* function, so a convention difference never shows as an error.

Dtype-aware judgement
---------------------
For a target dtype :math:`T` (float16, float32 or float64) every float array
argument is first rounded to :math:`T` (:func:`round_to`): the framework and
normref see exactly the same values, and normref computes in float64 on them
(an exact upcast).  The error of element :math:`i` is counted in units in the
last place of :math:`T` at the scale of the output:

.. math::

    u_i = \frac{|a_i - e_i|}{\operatorname{spacing}_T\bigl(\max(|e_i|, s)\bigr)},
    \qquad s = \sqrt{\tfrac{1}{n}\textstyle\sum_j e_j^2}
    \ \text{(finite } e_j\text{)},

so an output that is (nearly) zero is judged at the magnitude of the whole
output, not at its own tiny spacing.  ``spacing`` is ``numpy.spacing`` in
:math:`T`.  NaN positions must coincide exactly (a NaN expected and produced
costs nothing; a NaN on only one side costs :math:`\infty`), as must
infinities.  The check passes when

.. math::

    \max_i u_i \le b \cdot \kappa, \qquad
    b = 16 \text{ (forward, state)},\ 64 \text{ (backward)},

where :math:`\kappa` is the conditioning of the element's statistics group
(below; :func:`element_cond`) or, for normalizers without per-group
statistics, of the case (:func:`case_conditioning`,
:func:`normref.tolerance.conditioning`): for
normalizers that subtract a mean and do not whiten (shift-sensitive,
``spec.centres and not spec.whitening``: batch, instance, layer, group,
positional, batch-group, ghost batch and mean-variance normalization) it is
the larger of :func:`normref.tolerance.case_cond`, :math:`1 + \max|x| / \sigma_{\min}` with
:math:`\sigma_{\min}` the standard deviation of the tightest statistics
group, and :math:`1 + \max|x| / \min_g \sqrt{\sigma_g^2 + \epsilon}` (a
constant group) -- the factor by which any algorithm working in :math:`T`
(even a correct two-pass one) may amplify the rounding of the centring --
and :math:`\kappa = 1` for the others (RMS, Lp, weight norm, LRN), whose
condition number is :math:`O(1)`.  Subnormal inputs multiply
:math:`\kappa` by :math:`\text{tiny}_T / \operatorname{rms}(x)`.  The
case's number is its worst group's; the judge uses it only where the
normalizer has no per-group statistics (composites, fixed running
statistics).

Element-level conditioning
--------------------------
For a standardization with batch statistics each element :math:`i` is
judged at its own group's

.. math::

    \kappa_g = 1 + \frac{\max_{j \in g} |x_j|}{d_g}, \qquad
    d_g = \sqrt{\sigma_g^2 + \epsilon}\ (\text{or } \sigma_g + \epsilon),

(:func:`normref.tolerance.element_conditioning`), so a well-conditioned row is
judged tightly even when another row of the case sits at offset 1e4 or is
constant.  A gradient element :math:`k` inherits the conditioning of the
output elements its VJP sums, weighted by the size of their terms,
:math:`\kappa_k = \sum_i |J_{ik}||\delta y_i|\kappa_i / \sum_i |J_{ik}||\delta y_i|`
(:func:`vjp_scale`): a layer norm's weight gradient sums every row, and one
ill-conditioned row loosens it by its share.  A constant group keeps
:math:`\kappa_g = 1 + |x|/\sqrt\epsilon`: real implementations round the
mean of identical values (PyTorch's float32 instance norm is 234 ulps off
on the catalogue's constant group, within that bound, beyond a bound of 1).

The dtype's limit
-----------------
Where the tolerance accepts an error as large as the value itself,
:math:`b\,\kappa_i\,\operatorname{spacing}_T(s_i) \ge s_i` (float32 at
offset 1e8: :math:`\kappa \approx 10^8`), no algorithm working in
:math:`T` can be judged for accuracy: such elements are judged for
robustness only (finite where normref is finite, NaN and Inf where it has
them) and counted in :attr:`Verdict.limited`.  A check made only of them has
the status ``limit`` (never ``pass``), so an all-zeros answer there is
reported as unmeasurable, not accepted.

Backward checks use a larger scale where the gradient cancels: element
:math:`i` is judged at :math:`\max(|e_i|, s, t_i)` with
:math:`t = |J|^\top |\delta y|` (:func:`vjp_scale`), the size of the terms a
floating-point VJP sums.

A case is skipped for a dtype that cannot hold its inputs (1e300 in
float32, float64 subnormals in float32).
"""
from __future__ import annotations

from ...catalogue import Catalogue  # noqa: F401  (re-exported)
from .asserting import assert_conforms
# (the names not in __all__ are re-exported for the CLI, export and tests)
from .build import (ADVERSARIAL, ADVERSARIAL_SEEDS, RANDOM_SEEDS, ROWS_NOT_CASES, Adversarial,
                    case_from_id, catalogue, catalogued, variants)  # noqa: F401
from .cases import ConformCase, bound_arguments
from .judge import (TOLERANCE_BASE, Verdict, case_conditioning, element_cond, expected_outputs,
                    judge, vjp_scale)
from .known import (KNOWN_DISCREPANCIES_DIR, KNOWN_DISCREPANCIES_FILE, audit_known,  # noqa: F401
                    load_known_discrepancies, match_known)
from .report import STATUSES, accuracy_rows, format_accuracy, format_table, results_json  # noqa: F401
from .rounding import as_dtype, representable as _representable, round_to  # noqa: F401
from .runner import Result, run_conformance, signature_name as _signature_name  # noqa: F401

__all__ = [
    "ConformCase",
    "Verdict",
    "Result",
    "ROWS_NOT_CASES",
    "SHIFT_SENSITIVE",
    "TOLERANCE_BASE",
    "catalogue",
    "case_from_id",
    "variants",
    "bound_arguments",
    "round_to",
    "as_dtype",
    "case_conditioning",
    "element_cond",
    "vjp_scale",
    "expected_outputs",
    "judge",
    "run_conformance",
    "load_known_discrepancies",
    "audit_known",
    "format_table",
    "results_json",
    "assert_conforms",
]


def __getattr__(name):
    """Names computed from the registry when read (a normalizer registered later counts):

    ``SHIFT_SENSITIVE`` -- the registered normalizers whose rounding grows with an offset
    (:func:`normref.tolerance.shift_sensitive`: they centre and do not whiten);
    ``_ALL`` -- the normalizers with a catalogue (:func:`catalogued`).
    """
    if name == "SHIFT_SENSITIVE":
        from ...registry import REGISTRY
        from ...tolerance import shift_sensitive

        catalogued()  # (imports normref: every built-in normalizer registered)
        return frozenset(n for n, s in REGISTRY.items() if shift_sensitive(s))
    if name == "_ALL":
        return frozenset(catalogued())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
