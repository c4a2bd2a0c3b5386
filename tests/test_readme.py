"""The README's model table is generated from the registry and must stay in sync with it."""

from pathlib import Path

from zoo.__main__ import readme_with_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_model_table_is_current():
    text = README.read_text()
    assert readme_with_table(text) == text, "regenerate with: python -m zoo --update-readme README.md"


def test_every_test_the_readme_cites_exists():
    """The guarantees table names the test that backs each row: each must be a test function in that file."""
    import ast
    import re

    cited = set(re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", README.read_text()))
    assert len(cited) >= 10
    for path, name in sorted(cited):
        tree = ast.parse((README.parent / path).read_text())
        functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert name in functions, f"README cites {path}::{name}, which does not exist"
