"""What keeps a run's directory safe: one trainer per workdir, a resumed run's config checked against its own,
and SIGINT/SIGTERM turned into "finish the step, save, exit".
"""

import contextlib
import fcntl
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

from train import config as config_lib

LOCK_FILE = ".lock"


class WorkdirInUseError(OSError):
    """Another live trainer holds the workdir."""


class TrainingInterrupted(Exception):
    """Raised after SIGINT/SIGTERM once the step finished and its checkpoint is committed."""

    def __init__(self, signum: int, step: int, workdir: Path):
        self.signum, self.step, self.workdir = signum, step, workdir
        name = signal.Signals(signum).name
        super().__init__(
            f"{name} at step {step}: the checkpoint of step {step} is saved in {workdir}; run the same command "
            "again to resume"
        )


@contextlib.contextmanager
def workdir_lock(workdir: Path):
    """Holds an exclusive lock on `workdir/.lock` (flock: the OS releases it when its owner dies, so a crashed
    run never blocks its restart). A second trainer on the same workdir gets WorkdirInUseError naming the owner."""
    path = Path(workdir) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
            raise WorkdirInUseError(
                f"workdir {workdir} is in use by another training run ({owner}); wait for it or use another workdir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def check_resume_config(workdir: Path, config) -> dict[str, tuple]:
    """Refuses to resume the run in `workdir` with a config that would change its result (one message listing
    every difference); returns the differences `config.resume_changes` accepts (`record_resume` writes them down).
    `config.json` itself is never rewritten."""
    path = Path(workdir) / "config.json"
    if not path.exists():
        return {}
    try:
        stored = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {path} of the run being resumed: {e}") from None
    without_accepted = config.copy_and_resolve_references()
    without_accepted.resume_changes = ""
    accepted = config_lib.resume_differences(stored, without_accepted)
    refused = config_lib.resume_differences(stored, config)
    if refused:
        listing = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in refused.items())
        raise ValueError(
            f"workdir {workdir} holds a run with a different config ({listing}). Use a new workdir, or accept "
            f"the changes with --config.resume_changes={','.join(refused)}"
        )
    return accepted


def record_resume(workdir: Path, step: int, accepted: dict[str, tuple]) -> None:
    """Appends `{"time", "step", "changes": {field: [old, new]}}` to `workdir/resumes.jsonl`."""
    record = {"time": time.time(), "step": step, "changes": {k: [old, new] for k, (old, new) in accepted.items()}}
    with open(Path(workdir) / "resumes.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


class StopSignals:
    """Records SIGINT/SIGTERM instead of dying at once; the trainer checks `received` after every step. A second
    signal gets the default behaviour (an impatient user can still kill the run). Only installable from the
    main thread; elsewhere it records nothing."""

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        del frame
        self.received = signum
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
