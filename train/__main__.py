"""`python -m train [--config=FILE[:ARG]] [--workdir=DIR] [--config.key=value ...]`.

With no --config, trains the embedded default (a tiny MLP-Mixer on scikit-learn's digits, CPU, about a minute)
and prints its test accuracy.
"""

import json
import logging
import os
import sys
from pathlib import Path

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

_DEFAULT = str(Path(__file__).resolve().parent / "configs" / "default.py")
config_flags.DEFINE_config_file("config", _DEFAULT, "Training config file (a get_config(arg) Python file).")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results (default runs/<config name>).")


def _default_workdir(config_path: str) -> str:
    name, _, arg = config_path.partition(":")
    stem = Path(name).stem + (f"_{arg.replace(',', '_').replace('=', '')}" if arg else "")
    return str(Path("runs") / stem)


def main(argv):
    del argv
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path("~/.cache/mixer_zoo/jax_cache").expanduser()))
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax and grain log every save at INFO
    logging.getLogger("train").setLevel(logging.INFO)
    from train.trainer import train_and_evaluate  # after flags: jax must not start before the environment is set

    config = flags.FLAGS.config
    workdir = flags.FLAGS.workdir or _default_workdir(flags.FLAGS["config"].config_filename or _DEFAULT)
    try:
        results = train_and_evaluate(config, workdir)
    except (ValueError, TypeError, OSError, FloatingPointError) as e:
        if os.environ.get("MIXER_ZOO_TRACEBACK"):
            raise
        # Bad input: one clear message, no traceback (MIXER_ZOO_TRACEBACK=1 shows it).
        sys.stderr.write(f"error: {e}\n")
        sys.exit(1)
    summary = {k: results[k] for k in ("test_metrics", "val_metrics") if k in results}
    print(f"workdir: {workdir}")
    print(json.dumps(summary, indent=2, sort_keys=True))
    print(f"params sha256 (process {results['process_index']}): {results['params_digest']}")
    if "accuracy" in results.get("test_metrics", {}):
        print(f"test accuracy: {100 * results['test_metrics']['accuracy']:.2f}%")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
