"""What a user outside this checkout has: the supported Python versions, the data directory the tests use, and
documentation that cites only the repository. (The wheel itself is built, installed alone and smoke-tested on
Python 3.12 and 3.13 by .ci/run and .ci/smoke.sh.)"""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[1]


def test_supported_python_versions_and_build_tool():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    supported = SpecifierSet(project["requires-python"])
    assert [v for v in ("3.10", "3.11.0", "3.12.1", "3.13.0", "3.14.0") if v in supported] == [
        "3.11.0", "3.12.1", "3.13.0"
    ]
    assert any(re.match(r"build\b", requirement) for requirement in project["optional-dependencies"]["test"])


def _data_dir_under_conftest(env) -> str:
    code = "import os, runpy; runpy.run_path('tests/conftest.py'); print(os.environ.get('MIXER_ZOO_DATA', '-'))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_tests_use_mixer_zoo_data_or_the_library_default(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MIXER_ZOO_DATA"}
    assert _data_dir_under_conftest(env) == "-"  # unset: train.data.timeseries falls back to ~/.cache/mixer_zoo
    assert _data_dir_under_conftest({**env, "MIXER_ZOO_DATA": str(tmp_path)}) == str(tmp_path)


def test_docs_cite_only_the_repository():
    docs = sorted((REPO / "docs").rglob("*.md"))
    for page in [REPO / "README.md", *docs]:
        text = page.read_text()
        for outside in ("../shared", "shared/docs", "shared/data"):
            assert outside not in text, f"{page.name} cites {outside}, which users do not have"
        for target in re.findall(r"\]\(([^)#\s]+)", text):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            resolved = (page.parent / target).resolve()
            assert REPO in resolved.parents and resolved.exists(), f"{page.name} links to {target}"
