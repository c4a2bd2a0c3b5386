"""`python -m train [--config=FILE[:ARG]] [--workdir=DIR] [--config.key=value ...]`.

With no --config, trains the embedded default (a tiny MLP-Mixer on scikit-learn's digits, CPU, about a minute)
and prints its test accuracy. FILE is a config file; when no such file exists, a config shipped with the package
is found by its name: `--config=softs:ETTh1`, `--config=softs.py:ETTh1` and `--config=train/configs/softs.py:ETTh1`
all work from an installed wheel, outside the checkout. A training length on the command line
(`--config.total_steps=N` or `--config.total_epochs=E`) replaces the file's (the other is cleared).
"""

import json
import logging
import os
import re
import sys
from pathlib import Path

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

_DEFAULT = str(Path(__file__).resolve().parent / "configs" / "default.py")


def _define_flags() -> None:
    """--config and --workdir. ml_collections applies the `--config.x=y` overrides while defining the flag."""
    if "config" in flags.FLAGS:
        return
    config_flags.DEFINE_config_file("config", _DEFAULT, "Training config file (a get_config(arg) Python file).")
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results (default runs/<config name>).")


def _override_error(error: Exception, argv: list[str]) -> str:
    """One line for a `--config.x=y` that names no field (ml_collections' KeyError, with its did-you-mean)."""
    text = str(error)
    key = re.search(r"([A-Za-z_]\w*)", text)
    key = key[1] if key else text
    close = re.search(r'Did you mean "(\w+)"', text)
    overrides = [a.split("=", 1)[0].lstrip("-") for a in argv if a.lstrip("-").startswith("config.")]
    named = next((o for o in overrides if key in o.split(".")), f"config...{key}")
    hint = f" (did you mean --{named.rsplit('.', 1)[0]}.{close[1]}?)" if close else ""
    return f"--{named}: the config has no field {key!r}{hint}"


def _drop_orbax_errors(record: logging.LogRecord) -> bool:
    """False for error records of orbax's threads and of the asyncio tasks they run."""
    if record.levelno < logging.ERROR:
        return True
    orbax = f"{os.sep}orbax{os.sep}"
    if orbax in record.pathname:
        return False
    exc = record.exc_info[1] if record.exc_info else None
    if _write_failure_echo(exc) or _write_failure_echo(ValueError(record.getMessage())):
        return False
    if record.name == "asyncio":  # "Task exception was never retrieved": the traceback names orbax's files
        trace = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        return orbax not in record.getMessage() + trace
    return True


def _closed_loop(exc) -> bool:
    return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"


def _write_failure_echo(exc) -> bool:
    """A tensorstore write error surfacing again from a finished future or callback after the failed save
    (`ValueError: OUT_OF_RANGE: Error writing ... [os_error_code='27']`): already reported as CheckpointWriteError."""
    return isinstance(exc, ValueError) and "Error writing" in str(exc) and "os_error_code" in str(exc)


def _teardown_noise(exc) -> bool:
    return _closed_loop(exc) or _write_failure_echo(exc)


def _quiet_closed_loops(hook):
    """tensorstore's callbacks into orbax's finished event loops, after a failed write: nothing to report."""
    return lambda kind, exc, tb: None if _teardown_noise(exc) else hook(kind, exc, tb)


def _quiet_closed_loops_unraisable(hook):
    """The same for exceptions Python can only print ("Exception ignored in ..."), e.g. from a future's __del__."""
    return lambda unraisable: None if _teardown_noise(unraisable.exc_value) else hook(unraisable)


def _default_workdir(config_path: str) -> str:
    name, _, arg = config_path.partition(":")
    stem = Path(name).stem + (f"_{arg.replace(',', '_').replace('=', '')}" if arg else "")
    return str(Path("runs") / stem)


# glibc malloc: at most 2 arenas (mallopt M_ARENA_MAX), set before JAX starts its threads. Every thread that
# allocates (XLA's pools, grain's prefetch threads) otherwise gets an arena of its own, up to 8 per core, each
# keeping what it freed. Measured on 2 cores, 400 steps of the default run, /usr/bin/time -v: peak 771/797 ->
# 706/679 MiB, 1304/1236 -> 1097/1299 examples/s (no change beyond the noise). Fixed trim and mmap thresholds
# (MALLOC_TRIM_THRESHOLD_/MALLOC_MMAP_THRESHOLD_=131072) took ~60 MiB more but cost 40% of the throughput: not set.
# A user's MALLOC_ARENA_MAX wins.
_MALLOPT = {"MALLOC_ARENA_MAX": (-8, 2)}
_malloc_configured = False


def _configure_malloc() -> None:
    global _malloc_configured
    if _malloc_configured or not sys.platform.startswith("linux"):
        return
    _malloc_configured = True
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return
    for variable, (param, value) in _MALLOPT.items():
        if variable not in os.environ:
            mallopt(param, value)


def configure_environment() -> None:
    """The process-wide settings of a run, made before JAX starts (idempotent)."""
    _configure_malloc()
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path("~/.cache/mixer_zoo/jax_cache").expanduser()))


def main(argv):
    del argv
    configure_environment()
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax and grain log every save at INFO
    if not os.environ.get("MIXER_ZOO_TRACEBACK"):
        # A failed checkpoint write is reported once, as CheckpointWriteError; orbax's background threads would
        # also log it, with a traceback, once per thread.
        for handler in logging.getLogger().handlers:
            handler.addFilter(_drop_orbax_errors)
        sys.excepthook = _quiet_closed_loops(sys.excepthook)
        sys.unraisablehook = _quiet_closed_loops_unraisable(sys.unraisablehook)
    logging.getLogger("train").setLevel(logging.INFO)
    from train import config as config_lib
    from train.guard import TrainingInterrupted
    from train.trainer import train_and_evaluate  # after flags: jax must not start before the environment is set

    config_flag = flags.FLAGS["config"]
    workdir = flags.FLAGS.workdir or _default_workdir(config_flag.config_filename or _DEFAULT)
    try:
        # A length given on the command line (--config.total_steps or --config.total_epochs) wins over the file's.
        overridden = config_flags.get_override_values(config_flag)
        config = config_lib.prefer_command_line_length(config_flag.value, overridden)
        results = train_and_evaluate(config, workdir)
    except TrainingInterrupted as e:
        sys.stderr.write(f"stopped: {e}\n")
        sys.exit(128 + e.signum)
    except KeyboardInterrupt:
        sys.stderr.write(f"stopped: interrupted before the first step; nothing of {workdir} was changed by it\n")
        sys.exit(130)
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


def _find_config_in_argv(argv: list[str]) -> list[str]:
    """argv with the value of --config (`--config=X` or `--config X`) passed through `find_config_file`."""
    from train.config import find_config_file

    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--":
            break
        for prefix in ("--config=", "-config="):
            if arg.startswith(prefix):
                out[i] = prefix + find_config_file(arg.removeprefix(prefix))
        if arg in ("--config", "-config") and i + 1 < len(out):
            out[i + 1] = find_config_file(out[i + 1])
    return out


def run():
    configure_environment()  # before the config file is loaded: it imports JAX
    sys.argv = _find_config_in_argv(sys.argv)
    try:  # the flags are parsed here, once (app.run is handed the result), so that a bad override is one line
        _define_flags()
        remaining = flags.FLAGS(sys.argv)
    except (AttributeError, KeyError) as e:  # an override naming no field
        if os.environ.get("MIXER_ZOO_TRACEBACK"):
            raise
        sys.stderr.write(f"error: {_override_error(e, sys.argv)}\n")
        sys.exit(2)
    except flags.Error as e:  # a value of the wrong type, an unknown flag
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    app.run(main, flags_parser=lambda argv: remaining)


if __name__ == "__main__":
    run()
