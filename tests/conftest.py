"""Test-suite setup: CPU only, a persistent compile cache shared with subprocesses.

Forecasting data comes from `$MIXER_ZOO_DATA` when it is set (CI sets it), else from the library's own default
(`~/.cache/mixer_zoo`, downloaded there when missing): the tests assume no folder beside the checkout.
"""

import argparse
import collections
import http.server
import os
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Subprocesses started by tests (multi-device, multi-process, kill-and-resume) inherit these.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")


@pytest.fixture
def server():
    """Serves `files` (path -> bytes) on 127.0.0.1; a path in `truncated` announces its size but sends half."""
    files, truncated, hits = {}, set(), collections.Counter()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits[self.path] += 1
            data = files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2] if self.path in truncated else data)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield argparse.Namespace(
        url=f"http://127.0.0.1:{httpd.server_address[1]}", files=files, truncated=truncated, hits=hits
    )
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def softs_run(tmp_path_factory):
    """(workdir, results) of `softs.py:quicktest` (20 steps of SOFTS on ETTh1), trained once per test session."""
    from train import train_and_evaluate
    from train.configs import softs

    workdir = tmp_path_factory.mktemp("softs_quicktest")
    config = softs.get_config("quicktest")
    config.data.num_threads = 1
    results = train_and_evaluate(config, workdir)
    return workdir, results
