"""Whole runs, not only steps: wall time, CPU seconds and peak memory of full training runs, each started as a user
starts it, in a fresh process.

    python -m benchmarks.end_to_end                                     # softs_etth1_96 and default, one round
    python -m benchmarks.end_to_end --runs softs_etth1_96 --rounds 3 --json docs/benchmarks_data/end_to_end.json

Runs (`--runs`, comma-separated):

- `softs_etth1_96`: ours, `python -m train --config=train/configs/softs.py:ETTh1,pred_len=96 --workdir <tmp>` (the
  official ETTh1-96 hyper-parameters, early stopping on the validation MSE), against the plain-PyTorch SOFTS
  trained with the official recipe, `python -m benchmarks.torch_softs_train` (the same epochs, batch, lr schedule,
  early stopping and seed; torch threads = every core, as JAX uses). The two sides alternate order from round
  to round.
- `default`: the README's default job, `python -m train --workdir <tmp>` (MLP-Mixer on digits); no peer.

Our runs get a fresh, empty JAX compilation cache (`JAX_COMPILATION_CACHE_DIR=<tmp>`), so their figures include
the compilation a new user pays on a first run. Each process is measured by itself: wall seconds from its start
to its exit, CPU seconds = user + system time of the process and of the children it waited for, peak memory = its
largest resident set (`ru_maxrss`; all three from `os.wait4`, taken by a ~10 MiB launcher process that forks it, so
that the measuring process's own size never counts). Test metrics, epochs and steps come from each run's
output (and, for ours, its workdir's results.json). The 1-minute load average before and after each run is
recorded: on a shared machine, compare figures taken under similar load. Every file a run writes goes to a
temporary directory that is removed afterwards; `--json` (written, or overwritten, as `benchmarks.peers` does)
is the only file left behind.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TORCH_RESULT_PREFIX = "result: "  # benchmarks.torch_softs_train.RESULT_PREFIX (not imported: it loads torch)


@dataclass(frozen=True)
class Side:
    """One process of a run: `argv` after `python`; `{workdir}` is replaced by a fresh temporary directory."""

    name: str  # "ours" or "torch"
    argv: tuple[str, ...]
    fresh_jax_cache: bool = False


@dataclass(frozen=True)
class Run:
    name: str
    description: str
    sides: tuple[Side, ...] = field(default_factory=tuple)


RUNS = {
    r.name: r
    for r in (
        Run(
            "softs_etth1_96",
            "SOFTS, ETTh1, pred_len 96, official recipe (early stopping, patience 3, at most 20 epochs)",
            (
                Side(
                    "ours",
                    ("-m", "train", "--config=train/configs/softs.py:ETTh1,pred_len=96", "--workdir", "{workdir}"),
                    fresh_jax_cache=True,
                ),
                Side("torch", ("-m", "benchmarks.torch_softs_train", "--dataset", "ETTh1", "--pred-len", "96")),
            ),
        ),
        Run(
            "default",
            "the default job: mixer_ti2_8 on digits, 30 epochs",
            (Side("ours", ("-m", "train", "--workdir", "{workdir}"), fresh_jax_cache=True),),
        ),
    )
}


def parse_runs(spec: str) -> list[str]:
    """'softs_etth1_96,default' -> the names, checked (ValueError naming the known runs)."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ValueError(f"no run named; known: {', '.join(RUNS)}")
    for name in names:
        if name not in RUNS:
            raise ValueError(f"unknown run {name!r}; known: {', '.join(RUNS)}")
    return list(dict.fromkeys(names))


# ----------------------------------------------------------------------------------------------- measuring


# Started from the (possibly large) measuring process, this small process forks and execs the measured command and
# reports that grandchild's own rusage. Linux counts into a process's ru_maxrss the resident set of the process it
# was forked from (the memory image it replaces at exec), so a command forked straight from a parent holding torch
# would report at least the parent's size; forked from this ~10 MiB launcher it reports its own peak.
_LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execv(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(sys.argv[1], "w") as f:
    f.write(f"{wall!r} {ru.ru_utime!r} {ru.ru_stime!r} {ru.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def measure(
    argv: Sequence[str],
    *,
    cwd: str | Path,
    env: dict[str, str] | None,
    log_dir: str | Path,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Runs `argv` (argv[0] a path) as a fresh process and returns wall_s, cpu_s (user_s + sys_s), peak_mib,
    returncode, timed_out and its stdout/stderr text. The figures are that process's own (and those of children it
    waited for), taken by `os.wait4`: not the caller's, nor another run's."""
    log_dir = Path(log_dir)
    report = log_dir / "rusage"
    report.unlink(missing_ok=True)
    with open(log_dir / "stdout", "w+b") as out, open(log_dir / "stderr", "w+b") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-S", "-c", _LAUNCHER, str(report), *argv],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: a timeout kills the command too
        )
        try:
            proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            timed_out = True
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if timed_out or not report.exists():  # killed (or the launcher failed): only the caller's wall time is known
        wall, utime, stime, maxrss = time.perf_counter() - start, math.nan, math.nan, math.nan
        returncode = -signal.SIGKILL if timed_out else proc.returncode
    else:
        fields = report.read_text().split()
        wall, utime, stime, maxrss = (float(f) for f in fields[:4])
        returncode = int(fields[4])
    return {
        "wall_s": wall,
        "cpu_s": utime + stime,
        "user_s": utime,
        "sys_s": stime,
        "peak_mib": maxrss / 1024,  # ru_maxrss is in KiB on Linux
        "returncode": returncode,
        "timed_out": timed_out,
        "stdout": stdout,
        "stderr": stderr,
    }


# ----------------------------------------------------------------------------------------------- parsing outputs

_PROGRESS = re.compile(r"^step (\d+)/\d+ .*\bepoch ([0-9.]+)\s*$", re.M)
_WINDOWS = re.compile(r"train (\d+), val (\d+), test (\d+) windows")


def parse_train_output(text: str) -> dict[str, Any]:
    """The summary `python -m train` prints (stdout and stderr together): test/val metrics (the JSON block after
    'workdir: ...'), steps per epoch (from the last progress line 'step N/M ... epoch E') and, for forecasting,
    the split sizes of its data line."""
    out: dict[str, Any] = {}
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith("workdir: ")), None)
    last = next((i for i in range(first or 0, len(lines)) if lines[i].startswith("params sha256")), None)
    try:
        out.update(json.loads("\n".join(lines[first + 1 : last])))
    except (TypeError, ValueError):
        raise ValueError(
            "no JSON summary between the 'workdir: ...' and 'params sha256 ...' lines of python -m train's output"
        ) from None
    progress = _PROGRESS.findall(text)
    if progress:
        step, epoch = progress[-1]
        if float(epoch) > 0:
            out["steps_per_epoch"] = round(int(step) / float(epoch))
    windows = _WINDOWS.search(text)
    if windows:
        out["windows"] = dict(zip(("train", "val", "test"), map(int, windows.groups()), strict=True))
    return out


def parse_torch_output(text: str) -> dict[str, Any]:
    """The last 'result: {...}' line of `benchmarks.torch_softs_train`."""
    lines = [line for line in text.splitlines() if line.startswith(TORCH_RESULT_PREFIX)]
    if not lines:
        raise ValueError(f"no '{TORCH_RESULT_PREFIX}{{...}}' line in the output of benchmarks.torch_softs_train")
    return json.loads(lines[-1][len(TORCH_RESULT_PREFIX) :])


def summarize(side: str, text: str, workdir: Path | None = None) -> dict[str, Any]:
    """The comparable fields of one run: test_mse, test_mae (forecasting) or test_accuracy, epochs, steps, ..."""
    if side == "torch":
        r = parse_torch_output(text)
        test = r["test_metrics"]
        return {
            "test_mse": test["mse"],
            "test_mae": test["mae"],
            "epochs": r["epochs"],
            "best_epoch": r["best_epoch"],
            "steps": r["steps"],
            "stopped_early": r["stopped_early"],
            "windows": r["windows"],
            "threads": r["threads"],
            "torch_version": r["torch"],
            "jax_imported": r.get("jax_imported"),
        }
    r = parse_train_output(text)
    results = json.loads((workdir / "results.json").read_text()) if workdir else {}
    test = r.get("test_metrics", {})
    out: dict[str, Any] = {k: test[m] for k, m in (("test_mse", "mse"), ("test_mae", "mae")) if m in test}
    if "accuracy" in test:
        out["test_accuracy"] = test["accuracy"]
    steps, per_epoch = results.get("steps"), r.get("steps_per_epoch")
    out["steps"] = steps
    out["epochs"] = round(steps / per_epoch, 3) if steps and per_epoch else None
    if results.get("evaluated_step") and per_epoch:
        out["best_epoch"] = round(results["evaluated_step"] / per_epoch, 3)
    if "stopped_early" in results:
        out["stopped_early"] = results["stopped_early"]
    if "windows" in r:
        out["windows"] = r["windows"]
    return out


# ----------------------------------------------------------------------------------------------- running


def run_side(run: Run, side: Side, round_index: int, *, timeout: float | None = None, threads: int | None = None):
    """One fresh process of `run`: measured, parsed; every file it writes is in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix=f"e2e_{run.name}_{side.name}_") as tmp:
        tmp = Path(tmp)
        workdir, logs = tmp / "workdir", tmp / "logs"
        logs.mkdir()
        env = dict(os.environ)
        env.pop("PYTHONSTARTUP", None)
        argv = [a.replace("{workdir}", str(workdir)) for a in side.argv]
        if side.fresh_jax_cache:
            cache = tmp / "jax_cache"
            cache.mkdir()
            env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
        if side.name == "torch" and threads:
            argv += ["--threads", str(threads)]
        load_before = os.getloadavg()[0]
        m = measure([sys.executable, *argv], cwd=REPO, env=env, log_dir=logs, timeout=timeout)
        load_after = os.getloadavg()[0]
        shown = " ".join(["python", *(a.replace(str(workdir), "<tmp>") for a in argv)])
        if side.fresh_jax_cache:
            shown = "JAX_COMPILATION_CACHE_DIR=<empty tmp> " + shown
        if m["returncode"] != 0:
            tail = "\n".join((m["stdout"] + m["stderr"]).strip().splitlines()[-15:])
            why = f"timed out after {timeout:g} s" if m["timed_out"] else f"exited with {m['returncode']}"
            raise RuntimeError(f"{run.name}/{side.name}: `{shown}` {why}; its last lines:\n{tail}")
        row = {
            "run": run.name,
            "side": side.name,
            "round": round_index + 1,
            "command": shown,
            **{k: m[k] for k in ("wall_s", "cpu_s", "user_s", "sys_s", "peak_mib")},
            "load_before": load_before,
            "load_after": load_after,
            **summarize(side.name, m["stdout"] + "\n" + m["stderr"], workdir if side.name == "ours" else None),
        }
    return row


def run_all(
    names: Sequence[str],
    rounds: int,
    *,
    timeout: float | None = None,
    threads: int | None = None,
    report=print,
) -> list[dict[str, Any]]:
    """Every side of every run, `rounds` times; a run's sides alternate order from one round to the next."""
    rows = []
    for r in range(rounds):
        for name in names:
            run = RUNS[name]
            sides = run.sides if r % 2 == 0 else tuple(reversed(run.sides))
            for side in sides:
                report(f"[round {r + 1}/{rounds}] {run.name} / {side.name} ... (load {os.getloadavg()[0]:.2f})")
                row = run_side(run, side, r, timeout=timeout, threads=threads)
                report("  " + format_row(row))
                rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------- reporting


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def format_row(r: dict[str, Any]) -> str:
    quality = (
        f"acc {100 * r['test_accuracy']:6.2f}%       "
        if "test_accuracy" in r
        else f"{_fmt(r.get('test_mse'), '8.4f')} {_fmt(r.get('test_mae'), '8.4f')}"
    )
    return (
        f"{r['run'][:16]:16s} {r['side']:5s} {r['round']:5d} {r['wall_s']:8.1f} {r['cpu_s']:8.1f} "
        f"{r['cpu_s'] / r['wall_s']:8.2f} {r['peak_mib']:9.0f} {quality} {_fmt(r.get('epochs'), '7g')} "
        f"{_fmt(r.get('steps'), '7d')} {r['load_before']:5.2f}/{r['load_after']:<5.2f}"
    )


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        f"{'run':16s} {'side':5s} {'round':>5s} {'wall s':>8s} {'CPU s':>8s} {'CPU/wall':>8s} {'peak MiB':>9s} "
        f"{'test MSE':>8s} {'test MAE':>8s} {'epochs':>7s} {'steps':>7s} load 1-min before/after"
    )
    return "\n".join([head, *(format_row(r) for r in rows)])


def ratios(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run with both sides: torch / ours of the medians over rounds of wall_s, cpu_s and peak_mib."""
    out = []
    for name in dict.fromkeys(r["run"] for r in rows):
        side = {s: [r for r in rows if r["run"] == name and r["side"] == s] for s in ("ours", "torch")}
        if not side["ours"] or not side["torch"]:
            continue
        entry = {"run": name, "rounds": min(len(side["ours"]), len(side["torch"]))}
        for key in ("wall_s", "cpu_s", "peak_mib"):
            ours = statistics.median(r[key] for r in side["ours"])
            torch_ = statistics.median(r[key] for r in side["torch"])
            entry[f"ours_{key}"], entry[f"torch_{key}"], entry[f"torch_over_ours_{key}"] = ours, torch_, torch_ / ours
        out.append(entry)
    return out


def format_ratios(entries: Sequence[dict[str, Any]]) -> str:
    return "\n".join(
        f"{e['run']}: torch / ours (medians of {e['rounds']} round(s)): wall {e['torch_over_ours_wall_s']:.2f}, "
        f"CPU s {e['torch_over_ours_cpu_s']:.2f}, peak MiB {e['torch_over_ours_peak_mib']:.2f}"
        for e in entries
    )


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of: {', '.join(RUNS)}")
    p.add_argument("--rounds", type=int, default=1, help="rounds; a run's sides alternate order between rounds")
    p.add_argument("--timeout", type=float, default=None, help="seconds after which one process is killed")
    p.add_argument("--threads", type=int, default=None, help="PyTorch threads (default: every core, as JAX)")
    p.add_argument("--json", default=None, help="also write {machine, rows, ratios} to this file")
    args = p.parse_args(argv)
    try:
        names = parse_runs(args.runs)
    except ValueError as e:
        p.error(f"--runs: {e}")
    if args.rounds < 1:
        p.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.timeout is not None and args.timeout <= 0:
        p.error(f"--timeout must be > 0, got {args.timeout}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    print(
        "Each run is a fresh process; ours start with an empty JAX compilation cache, so compilation is counted "
        f"as a new user pays it. {os.cpu_count()} CPUs."
    )
    try:
        rows = run_all(names, args.rounds, timeout=args.timeout, threads=args.threads)
    except RuntimeError as e:
        sys.stderr.write(f"error: {e}\n")
        raise SystemExit(1) from None
    summary = ratios(rows)
    print(format_table(rows))
    if summary:
        print(format_ratios(summary))
    if args.json:
        from benchmarks import step as bench_step  # imports JAX: only now, after every measured process

        command = bench_step.command_line("benchmarks.end_to_end", argv)
        torch_versions = sorted({r["torch_version"] for r in rows if "torch_version" in r})
        bench_step.write_json(
            args.json,
            rows,
            command=command,
            ratios=summary,
            torch=", ".join(torch_versions) or None,
            notes="fresh process per run; ours with an empty JAX compilation cache (compile time counted); "
            "wall/CPU/peak RSS of each process from os.wait4",
        )
    return rows


if __name__ == "__main__":
    main()
