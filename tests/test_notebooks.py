"""The notebooks are valid notebooks whose code cells parse and use only public names."""

import ast
import json
from pathlib import Path

import pytest

import bigmali

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_code_parses_and_uses_public_api(path):
    nb = json.loads(path.read_text())
    assert nb["nbformat"] == 4
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    tree = ast.parse(code)
    used = {
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "bigmali"
    }
    assert used and used <= set(bigmali.__all__), used - set(bigmali.__all__)


def test_there_is_a_notebook():
    assert NOTEBOOKS
