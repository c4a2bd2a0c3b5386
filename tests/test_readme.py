"""The README's model table is generated from the registry and must stay in sync with it."""

from pathlib import Path

from zoo.__main__ import readme_with_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_model_table_is_current():
    text = README.read_text()
    assert readme_with_table(text) == text, "regenerate with: python -m zoo --update-readme README.md"
