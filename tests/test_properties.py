"""Property tests: hypothesis draws shapes, groups, eps and offsets for every
normalizer; forward, VJP and JVP must match the reference and finite
differences within the same tolerances `python -m normref check` uses."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from normref.check import fd_errors, forward_error, jvp_error, vjp_error
from normref.registry import REGISTRY, Case
from normref.testing import strategies

# every registered normalizer whose Spec declares a strategy hook
NAMES = sorted(n for n, spec in REGISTRY.items() if spec.strategy is not None)

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _as_case(call):
    args, kwargs = call
    mutates = tuple(i for i, a in enumerate(args)
                    if i > 0 and isinstance(a, np.ndarray) and a.ndim == 1 and a.dtype == np.float64
                    and kwargs.get("training", args[5] if len(args) > 5 else None) is not False)
    return Case("drawn", tuple(args), dict(kwargs), mutates=mutates)


def _within(measure, what):
    err, tol = measure
    assert err <= tol, f"{what}: error {err:.3e} > tolerance {tol:.3e}"


def test_every_normalizer_has_a_strategy():
    ours = {n for n, sp in REGISTRY.items() if sp.function.__module__.startswith("normref.")}
    assert ours <= set(NAMES), ours - set(NAMES)
    assert set(strategies.NORMALIZERS) == set(NAMES)  # the mapping is a view of the registry


@pytest.mark.parametrize("name", NAMES)
def test_drawn_calls_match_reference_and_finite_differences(name):
    spec = REGISTRY[name]

    @SETTINGS
    @given(call=strategies.normalizer_cases(name))
    def check(call):
        case = _as_case(call)
        if np.asarray(case.args[0]).size == 0:
            return
        rng = np.random.default_rng(0)
        _within(forward_error(spec, case), "forward")
        _within(vjp_error(spec, case, rng), "vjp")
        _within(jvp_error(spec, case, rng), "jvp")
        vjp_fd, jvp_fd = fd_errors(spec, case, rng)
        _within(vjp_fd, "vjp vs finite differences")
        _within(jvp_fd, "jvp vs finite differences")

    check()


def test_a_normalizer_without_strategy_hook_gets_a_clear_error():
    import dataclasses

    from normref.registry import registered

    spec = dataclasses.replace(REGISTRY["layer_norm"], name="_no_strategy_norm", strategy=None,
                               function=lambda input, normalized_shape: input, user=True)
    with registered(spec):
        assert "_no_strategy_norm" not in strategies.NORMALIZERS
        with pytest.raises(KeyError, match="no strategy for '_no_strategy_norm'.*no strategy hook"):
            strategies.normalizer_cases("_no_strategy_norm")
    with pytest.raises(KeyError, match="no strategy for 'no_such_norm'.*no normalizer is registered"):
        strategies.normalizer_cases("no_such_norm")


def test_a_registered_strategy_hook_is_drawn_from():
    """A user's registration with a hook: it appears in the view and its draws reach the
    test through ``h`` (the helpers of normref.testing.strategies)."""
    import dataclasses

    from normref.registry import registered

    def hook(draw, h):
        n = draw(h.st.integers(2, 5))
        return (draw(h.float_arrays((n, 3))), (3,)), {"eps": draw(h.eps_values())}

    spec = dataclasses.replace(REGISTRY["layer_norm"], name="_hooked_norm", strategy=hook,
                               function=lambda input, normalized_shape, eps=1e-5: input, user=True)
    seen = []

    with registered(spec):
        assert "_hooked_norm" in strategies.NORMALIZERS

        @settings(max_examples=5, deadline=None, derandomize=True)
        @given(call=strategies.normalizer_cases("_hooked_norm"))
        def check(call):
            (x, shape), kwargs = call
            assert 2 <= x.shape[0] <= 5 and x.shape[1:] == shape and kwargs["eps"] > 0
            seen.append(x.shape)

        check()
    assert seen and "_hooked_norm" not in strategies.NORMALIZERS
