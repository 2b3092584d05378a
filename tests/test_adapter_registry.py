"""The adapter registry: plug-in adapters by entry point or register_adapter, read by the CLI."""
import numpy as np
import pytest

from normref import cli
from normref.testing import adapters as A


class _NumpyLayerNorm(A.Adapter):
    """A minimal adapter: a two-pass NumPy layer norm (the README's example shape)."""

    framework = "plugin-np"
    dtypes = ("float64",)

    @classmethod
    def available(cls):
        return True

    def prepare(self, case):
        return case if case.name == "layer_norm" else None

    def run(self, case, dtype):
        x, shape = case.args[0], case.args[1]
        k = 1 if np.isscalar(shape) else len(shape)
        axes = tuple(range(x.ndim - k, x.ndim))
        mu = x.mean(axis=axes, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
        eps = case.kwargs.get("eps", case.args[4] if len(case.args) > 4 else 1e-5)
        y = (x - mu) / np.sqrt(var + eps)
        w = case.args[2] if len(case.args) > 2 else case.kwargs.get("weight")
        b = case.args[3] if len(case.args) > 3 else case.kwargs.get("bias")
        if w is not None:
            y = y * w
        if b is not None:
            y = y + b
        return A.Outputs(y=y.astype(dtype))


@pytest.fixture
def plugin():
    A.register_adapter("plugin-np", _NumpyLayerNorm)
    yield "plugin-np"
    A.unregister_adapter("plugin-np")


def test_register_and_unregister(plugin):
    assert plugin in A.target_names()
    assert isinstance(A.get_adapter(plugin), _NumpyLayerNorm)
    with pytest.raises(ValueError, match="already registered"):
        A.register_adapter(plugin, _NumpyLayerNorm)
    A.register_adapter(plugin, _NumpyLayerNorm, replace=True)


def test_register_rejects_builtin_names_and_non_adapters():
    with pytest.raises(ValueError, match="built-in target"):
        A.register_adapter("torch", _NumpyLayerNorm)
    with pytest.raises(TypeError, match="subclass"):
        A.register_adapter("x-y", object)
    with pytest.raises(ValueError, match="non-empty"):
        A.register_adapter("", _NumpyLayerNorm)
    with pytest.raises(KeyError):
        A.unregister_adapter("never-registered")
    assert "x-y" not in A.target_names()


def test_cli_runs_and_lists_a_plugin_target(plugin, capsys):
    assert cli.main(["conform", "--list-targets"]) == 0
    out = capsys.readouterr().out
    assert "plugin-np" in out and "registered" in out and "torch" in out
    # the textbook two-pass formula squares 1e300-scale data: the one real failure
    with np.errstate(over="ignore", invalid="ignore"):
        rc = cli.main(["conform", "--target", plugin, "--names", "layer_norm", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "plugin-np  layer_norm  forward  float64     19" in out
    assert "total: 18 pass, 1 fail" in out
    assert "FAIL  plugin-np layer_norm/huge1e300/s0 [float64]" in out
    assert "ranking [float64]: 1. plugin-np" in out


def test_cli_rejects_an_unknown_target_listing_the_registry(capsys):
    assert cli.main(["conform", "--target", "nope"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice 'nope'" in err and "onnx-reference" in err


class _EntryPoint:
    def __init__(self, name, value, obj=None, error=None):
        self.name, self.value, self._obj, self._error = name, value, obj, error

    def load(self):
        if self._error:
            raise self._error
        return self._obj


def test_entry_point_plugins(monkeypatch):
    import importlib.metadata as md

    eps = [_EntryPoint("ep-good", "pkg.mod:Good", _NumpyLayerNorm),
           _EntryPoint("ep-broken", "pkg.broken:Adapter", error=ModuleNotFoundError("pkg.broken")),
           _EntryPoint("torch", "evil:Shadow", object)]  # built-in names cannot be taken

    def entry_points(group=None):
        assert group == A.ENTRY_POINT_GROUP
        return eps

    monkeypatch.setattr(md, "entry_points", entry_points)
    names = A.target_names()
    assert names[:len(A.ADAPTERS)] == A.ADAPTERS
    assert {"ep-good", "ep-broken"} <= set(names)
    assert isinstance(A.get_adapter("ep-good"), _NumpyLayerNorm)
    with pytest.raises(ImportError, match="failed to load: ModuleNotFoundError"):
        A.get_adapter("ep-broken")
    rows = {r[0]: r for r in A.describe_targets()}
    assert rows["ep-good"][1] == "entry point pkg.mod:Good" and rows["ep-good"][2] == "available"
    assert "failed to load" in rows["ep-broken"][2]
    assert rows["torch"][1] == "built-in"
