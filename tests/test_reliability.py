"""What a careless or hostile user cannot break: one trainer per workdir, a resumed run keeps its own config,
SIGTERM/SIGINT save before exiting, a time-based checkpoint cadence, metric rows that survive a kill, and
numbers a run cannot use rejected before anything is built."""

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time

import pytest
from trainer_utils import REPO, read_results, run_train

import checkpoints
from train import config as config_lib
from train import guard
from train.configs import default
from train.trainer import train_and_evaluate
from train.writers import JsonlWriter


def quick(**changes):
    config = default.get_config("quicktest")
    for key, value in changes.items():
        target = config
        *parents, leaf = key.split("__")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return config


# ---------------------------------------------------------------------------------------------------------------
# One trainer per workdir.


def test_a_second_trainer_on_a_workdir_stops_with_one_line_naming_the_owner(tmp_path):
    with guard.workdir_lock(tmp_path):
        proc = run_train(["--config=train/configs/default.py:quicktest", f"--workdir={tmp_path}"])
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: workdir {tmp_path} is in use by another training run (pid {os.getpid()}")
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "config.json").exists()


def test_the_lock_dies_with_its_owner(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from train import guard; import time\nwith guard.workdir_lock({str(tmp_path)!r}): "
            "print('locked', flush=True); time.sleep(600)",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(guard.WorkdirInUseError, match=f"pid {holder.pid}"), guard.workdir_lock(tmp_path):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with guard.workdir_lock(tmp_path):  # a crashed run never blocks its restart
        pass


# ---------------------------------------------------------------------------------------------------------------
# A resumed run keeps its own config.


def test_resuming_with_a_config_that_changes_the_run_is_refused_and_config_json_is_kept(tmp_path):
    first = train_and_evaluate(quick(total_steps=10, checkpoint__every_steps=5), tmp_path)
    stored = (tmp_path / "config.json").read_bytes()
    with pytest.raises(ValueError) as e:
        train_and_evaluate(quick(total_steps=10, optim__lr=0.5, seed=3), tmp_path)
    message = str(e.value)
    assert "optim.lr: 0.002 -> 0.5" in message and "seed: 0 -> 3" in message
    assert "--config.resume_changes=optim.lr,seed" in message
    assert (tmp_path / "config.json").read_bytes() == stored

    # Logging cadence cannot change the result: free. A longer run is accepted when asked for, and recorded.
    again = train_and_evaluate(quick(total_steps=10, log_every_steps=3), tmp_path)
    assert again["params_digest"] == first["params_digest"]
    longer = train_and_evaluate(quick(total_steps=12, resume_changes="total_steps"), tmp_path)
    assert longer["steps"] == 12
    (record,) = [json.loads(line) for line in (tmp_path / "resumes.jsonl").read_text().splitlines()]
    assert record["step"] == 10 and record["changes"] == {"total_steps": [10, 12]}
    assert (tmp_path / "config.json").read_bytes() == stored


def test_time_based_checkpoints_bound_the_loss(tmp_path):
    # every_minutes tiny: a save after every step although the config's own cadence is only the end.
    train_and_evaluate(quick(total_steps=6, checkpoint__every_minutes=1e-9, checkpoint__max_to_keep=10), tmp_path)
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [1, 2, 3, 4, 5, 6]


# ---------------------------------------------------------------------------------------------------------------
# Signals.


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_finishes_the_step_saves_and_exits_with_its_own_status(tmp_path, sig):
    args = [
        "--config=train/configs/default.py",
        f"--workdir={tmp_path}",
        "--config.optim.schedule.warmup_epochs=0",
        "--config.total_steps=5000",
        "--config.total_epochs=0",
        "--config.log_every_steps=1",
    ]
    env = {**os.environ, "MIXER_ZOO_DATA": os.environ.get("MIXER_ZOO_DATA", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "train", *args],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.exists() and '"train/loss"' in metrics.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)  # rows are flushed as they are written: visible while the run is alive
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 128 + sig, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"stopped: {signal.Signals(sig).name} at step ") and "Traceback" not in stderr
    step = int(last.split(" at step ")[1].split(":")[0])
    assert 0 < step < 5000
    assert str(step) in {p.name for p in (tmp_path / "checkpoints").iterdir()}
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert max(r.get("step", 0) for r in rows) == step  # every row up to the stop is on disk

    resumed = run_train(
        [
            *args[:-3],
            "--config.total_steps=" + str(step + 3),
            "--config.total_epochs=0",
            "--config.resume_changes=total_steps",
        ]
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert read_results(tmp_path)["steps"] == step + 3


def test_metric_rows_are_on_disk_before_the_writer_closes(tmp_path):
    writer = JsonlWriter(tmp_path / "metrics.jsonl")
    writer.write_scalars(7, {"loss": 1.5}, prefix="train")
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["train/loss"] == 1.5
    writer.close()


# ---------------------------------------------------------------------------------------------------------------
# Numbers a run cannot use.


@pytest.mark.parametrize(
    "changes,needle",
    [
        (dict(optim__lr=math.nan), "optim.lr must be a finite number >= 0"),
        (dict(optim__lr=-1.0), "optim.lr must be a finite number >= 0"),
        (dict(optim__b1=1.5), "optim.b1 must be in [0, 1)"),
        (dict(ema_decay=1.5), "ema_decay must be in [0, 1]"),
        (dict(log_every_steps=0), "log_every_steps must be > 0"),
        (dict(eval_every_steps=0, eval_every_epochs=0), "eval_every_epochs must be > 0 when eval_every_steps is 0"),
        (dict(checkpoint__max_to_keep=0), "checkpoint.max_to_keep must be >= 1"),
        (dict(checkpoint__every_minutes=-1.0), "checkpoint.every_minutes must be >= 0"),
        (dict(task__label_smoothing=1.0), "task.label_smoothing must be in [0, 1)"),
        (dict(task__mix_prob=2.0), "task.mix_prob and task.switch_prob must be in [0, 1]"),
        (dict(total_steps=-5, total_epochs=1.0), "total_steps and total_epochs must be >= 0"),
        (dict(data__val_split="validation", early_stopping__metric="val/acuracy"), "did you mean val/accuracy?"),
    ],
)
def test_unusable_numbers_are_named_at_validation(changes, needle):
    with pytest.raises(ValueError, match=None) as e:
        config_lib.validate(quick(**changes))
    assert needle in str(e.value)


def test_validation_reports_every_problem_at_once():
    with pytest.raises(ValueError) as e:
        config_lib.validate(quick(optim__lr=math.inf, log_every_steps=-1))
    assert "optim.lr" in str(e.value) and "log_every_steps" in str(e.value)


# ---------------------------------------------------------------------------------------------------------------
# The workdir's other contents.


def test_checkpoints_path_that_is_a_file_fails_at_once_with_one_line(tmp_path):
    (tmp_path / "checkpoints").write_text("my notes")
    proc = run_train(["--config=train/configs/default.py:quicktest", f"--workdir={tmp_path}"], timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: checkpoint folder {tmp_path / 'checkpoints'} is a file; move it away or use another workdir"
    )
    assert (tmp_path / "checkpoints").read_text() == "my notes"


def test_a_users_numbered_folder_in_checkpoints_is_never_deleted(tmp_path):
    mine = tmp_path / "checkpoints" / "7"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    empty = tmp_path / "checkpoints" / "8"  # an empty step folder (an interrupted save) is the library's to remove
    empty.mkdir()
    with pytest.warns(UserWarning, match="is not a checkpoint"):
        checkpoints.CheckpointManager(tmp_path / "checkpoints")
    assert (mine / "notes.txt").read_text() == "keep me" and not empty.exists()


# ---------------------------------------------------------------------------------------------------------------
# Every command line answers a user error with one line.


@pytest.mark.parametrize(
    "module,argv,needle",
    [
        ("zoo.__main__", ["--update-readme", "/nonexistent/README.md"], "No such file or directory"),
        ("train.forecast", ["--workdir", "/nonexistent"], "is /nonexistent the workdir of a training run?"),
        ("train.reproduce", ["softs", "--datasets", "Nope", "--out", "{tmp}/r"], "unknown data set 'Nope'"),
    ],
)
def test_command_line_errors_are_one_line(module, argv, needle, tmp_path, capsys):
    import importlib

    main = importlib.import_module(module).main
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err


def test_reproduce_refuses_a_seed_count_below_one(capsys):
    from train import reproduce

    with pytest.raises(SystemExit) as e:
        reproduce.main(["softs", "--datasets", "ETTh1", "--seeds", "-1", "--out", "/tmp/never"])
    assert e.value.code == 2 and "--seeds: must be >= 1, got -1" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# Values that would build or train something wrong without saying so.


def test_a_batch_larger_than_the_training_split_is_refused_before_compiling(tmp_path):
    with pytest.raises(ValueError, match=r"batch_size 100000 is larger than the training split \(1437 examples\)"):
        train_and_evaluate(quick(batch_size=100000), tmp_path)


@pytest.mark.parametrize(
    "name,field,value,needle",
    [
        ("softs", "use_norm", "no", "field use_norm must be a bool, got str 'no'"),
        ("softs", "d_model", 32.0, "field d_model must be an int, got float 32.0"),
        ("mixer_ti2_8", "num_blocks", True, "field num_blocks must be an int, got bool True"),
        ("afnonet_ti2_8", "drop_path_rate", "0.1", "field drop_path_rate must be a float, got str '0.1'"),
    ],
)
def test_model_fields_of_the_wrong_kind_are_refused(name, field, value, needle):
    import zoo

    with pytest.raises(TypeError, match=None) as e:
        zoo.create_model(name, **{field: value})
    assert needle in str(e.value)


def test_a_full_disk_stops_training_with_one_line_and_no_traceback(tmp_path):
    """Per-file size limit (RLIMIT_FSIZE) makes every checkpoint write fail with EFBIG, as a full disk would.

    30 kB is under the size of every checkpoint's `_METADATA` file (about 68 kB for this model), so the
    first save fails however well its arrays compress."""
    import resource

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    args = ["--config=train/configs/default.py:quicktest", "--config.checkpoint.every_steps=5", f"--workdir={tmp_path}"]
    proc = run_train(args, timeout=240, preexec_fn=limit)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: could not write checkpoint step 5 to {tmp_path / 'checkpoints'}: File too large")
    assert "(errno 27). Nothing was overwritten: no earlier checkpoint exists. Free space and rerun" in last
    assert not (tmp_path / "results.json").exists()


def test_a_step_folder_holding_another_step_is_skipped_for_the_newest_consistent_one(tmp_path, caplog):
    """A step folder copied or renamed by hand (its contents say step 10, its name 25) must not be resumed."""
    import shutil

    from trainer_utils import digits_config

    config = digits_config(total_steps=20, checkpoint__every_steps=10, checkpoint__max_to_keep=5)
    train_and_evaluate(config, tmp_path)
    shutil.copytree(tmp_path / "checkpoints" / "10", tmp_path / "checkpoints" / "25")
    longer = digits_config(total_steps=30, checkpoint__every_steps=10, checkpoint__max_to_keep=5)
    longer.resume_changes = "total_steps"
    warning = r"skipping checkpoint step 25 .*its training step is 10 and its data position 10, not 25"
    with caplog.at_level("INFO", logger="train"), pytest.warns(checkpoints.CheckpointWarning, match=warning):
        results = train_and_evaluate(longer, tmp_path)
    assert "resumed from step 20" in caplog.text
    assert results["steps"] == 30


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--config.model.hiden_dim=3"], "error: --config.model.hiden_dim: the config has no field 'hiden_dim' "
         "(did you mean --config.model.hidden_dim?)"),
        (["--config.nonexistent=3"], "error: --config.nonexistent: the config has no field 'nonexistent'"),
        (["--config.batch_size=abc"], "error: flag --config.batch_size=abc:"),
    ],
)  # fmt: skip
def test_a_bad_config_override_is_one_line(args, expected, tmp_path):
    proc = run_train([*args, f"--workdir={tmp_path / 'w'}"], timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(expected), proc.stderr[-2000:]
    assert not (tmp_path / "w").exists()


def test_teardown_echoes_of_a_failed_write_are_not_printed():
    """After a failed save, tensorstore's error can surface again from a future's __del__ or a callback: Python
    would print it as "Exception ignored in ...: ValueError: OUT_OF_RANGE: Error writing ...", a second line
    after the one-line error (seen once on CI). Other unraisable exceptions are still printed."""
    import types

    from train.__main__ import _quiet_closed_loops, _quiet_closed_loops_unraisable

    printed = []
    unraisable_hook = _quiet_closed_loops_unraisable(lambda u: printed.append(u.exc_value))
    except_hook = _quiet_closed_loops(lambda kind, exc, tb: printed.append(exc))
    echo = ValueError(
        'OUT_OF_RANGE: Error writing "opt_state.1.0.mu.stem.kernel/0.0.0.0" in OCDBT database at local file "/tmp/x": '
        "Failed to write 96927 bytes to file 9: File too large [os_error_code='27']"
    )
    closed = RuntimeError("Event loop is closed")
    other = ValueError("something else")
    for exc in (echo, closed, other):
        unraisable_hook(types.SimpleNamespace(exc_value=exc))
        except_hook(type(exc), exc, None)
    assert printed == [other, other]
    from train.__main__ import _drop_orbax_errors

    def record(msg, exc=None):
        return logging.LogRecord("x", logging.ERROR, "/site-packages/other/mod.py", 1, msg, None, exc)

    assert not _drop_orbax_errors(record(f"ValueError: {echo}"))
    assert not _drop_orbax_errors(record("failed", (ValueError, echo, None)))
    assert _drop_orbax_errors(record("a real error", (ValueError, other, None)))
