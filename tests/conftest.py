"""Test-suite setup: CPU only, a persistent compile cache shared with subprocesses, the shared data directory."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Subprocesses started by tests (multi-device, multi-process, kill-and-resume) inherit these.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# One configurable data directory; CI and developers point it at ../shared/data.
os.environ.setdefault("MIXER_ZOO_DATA", str(REPO.parent / "shared" / "data"))
