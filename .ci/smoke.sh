#!/usr/bin/env bash
# Smoke of an installed wheel, run from a directory outside the checkout so that only the installed packages are
# importable: .ci/smoke.sh VENV [full]
#   always: the packages come from VENV's site-packages, the default job's quicktest through a config path
#           (train/configs/default.py, found in the package), train.forecast --help, and the registry harness
#           (tests/test_models.py) on mixer_ti2_8 and softs;
#   full:   also `python -m zoo` and a SOFTS quicktest named by its config (softs:quicktest, ETTh1 from
#           $MIXER_ZOO_DATA) followed by `python -m train.forecast` on that run.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="$(cd "$1" && pwd)"
full="${2:-}"
py="$venv/bin/python"
run_dir="$(mktemp -d)"
trap 'rm -rf "$run_dir"' EXIT
cd "$run_dir"
# The venv was installed with --no-compile: let the first process write the bytecode of what it imports.
unset PYTHONDONTWRITEBYTECODE
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}" JAX_COMPILATION_CACHE_DIR="$repo/.jax_cache"

"$py" - <<'EOF'
import sys
import sysconfig
from pathlib import Path

import checkpoints
import train
import zoo

site_packages = Path(sysconfig.get_paths()["purelib"]).resolve()
for module in (zoo, train, checkpoints):
    where = Path(module.__file__).resolve()
    assert site_packages in where.parents, f"{module.__name__} imported from {where}, not from the installed wheel"
print(f"installed packages in {site_packages} (Python {sys.version.split()[0]})")
EOF

"$py" -m train --config=train/configs/default.py:quicktest --workdir="$run_dir/default" > default.log 2>&1 \
  || { cat default.log; exit 1; }
grep -q "^test accuracy: " default.log || { cat default.log; exit 1; }
"$py" -m train.forecast --help > /dev/null
"$venv/bin/pytest" -q -p no:cacheprovider "$repo/tests/test_models.py" -k "mixer_ti2_8 or softs"

if [[ "$full" == full ]]; then
  "$py" -m zoo > zoo.md
  grep -q "^| \`softs\` | forecasting |" zoo.md || { cat zoo.md; exit 1; }
  "$py" -m train --config=softs:quicktest --workdir="$run_dir/softs" > softs.log 2>&1 || { cat softs.log; exit 1; }
  "$py" -m train.forecast --workdir "$run_dir/softs" --out "$run_dir/forecast" > forecast.log 2>&1 \
    || { cat forecast.log; exit 1; }
  test -s "$run_dir/forecast/forecast.png"
  test -s "$run_dir/forecast/metrics.json"
fi
echo "smoke passed: Python $("$py" -c 'import sys; print(sys.version.split()[0])') ${full:+(full) }in ${SECONDS} s"
