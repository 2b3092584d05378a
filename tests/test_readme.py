"""The README's Python examples run as written."""
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.mark.parametrize("i", range(len(_blocks())))
def test_readme_example_runs(i):
    code = _blocks()[i]
    if "import torch" in code:
        pytest.importorskip("torch")
    exec(compile(code, f"README.md[python block {i}]", "exec"), {})


def test_readme_names_the_two_commands():
    text = README.read_text()
    assert "pip install . && python -m normref check" in text
    assert 'pip install ".[test]" && python -m pytest' in text
