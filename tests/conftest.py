"""Test-suite setup: CPU only, a persistent compile cache shared with subprocesses.

Forecasting data comes from `$MIXER_ZOO_DATA` when it is set (CI sets it), else from the library's own default
(`~/.cache/mixer_zoo`, downloaded there when missing): the tests assume no folder beside the checkout.
"""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Subprocesses started by tests (multi-device, multi-process, kill-and-resume) inherit these.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
