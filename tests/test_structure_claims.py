"""Theory item 7 as claim rows (normref.analysis.structure)."""
import numpy as np

from normref.analysis import structure
from normref.analysis.claims import all_claims


def test_item7_rows_pass_with_their_figures():
    rows = {c.id: c for c in all_claims(["jacobian_structure"])}
    assert len(rows) == 10
    assert all(c.passed for c in rows.values()), [c for c in rows.values() if not c.passed]
    assert rows["item7.batch_norm.symmetric"].measured < 1e-15
    assert rows["item7.batch_norm.channels_independent"].measured == 0.0
    bn = rows["item7.batch_norm.eigenvalues"]
    assert abs(bn.measured - bn.predicted) / bn.predicted < 1e-13


def test_rows_fail_for_a_matrix_without_the_structure():
    rng = np.random.default_rng(0)
    m = 6
    A = rng.standard_normal((m, m))  # neither symmetric nor with the null space
    rows = structure._rows("t", A, [np.ones(m)], 1.0, "test", "random matrix")
    assert not any(c.passed for c in rows)
    # the stated structure with eps > 0 is not a null space for xhat
    x = rng.standard_normal(m)
    s = np.sqrt(np.var(x) + 0.5)
    xh = (x - x.mean()) / s
    J = (np.eye(m) - 1 / m - np.outer(xh, xh) / m) / s
    rows = structure._rows("t", J, [np.ones(m), xh], 1 / s, "test", "eps > 0")
    assert rows[0].passed and not rows[1].passed
