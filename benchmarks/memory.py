"""Peak resident memory of whole training runs, as a user starts them (`python -m train ...`).

    python -m benchmarks.memory                                   # the default run and SOFTS on ETTh1
    python -m benchmarks.memory --runs softs_etth1 --json runs/memory.json
    python -m benchmarks.memory --runs default --extra=--config.total_steps=100

Each run is a fresh process (`python -m benchmarks.memory --child`) that goes through `python -m train`'s own
entry point, so it sees the same environment set-up. Reported, in MiB:

- peak: the whole process's peak resident set (the kernel's `ru_maxrss` of the finished child, as
  `/usr/bin/time -v` reports it);
- imports: the peak after the entry point has imported the trainer (JAX, flax, optax, grain, orbax, ...);
- compiled: the peak when the train step's compilation has finished (data loaded, state initialised);
- steady: the median resident set sampled (every 50 ms) from then until the process ends;
- end: the resident set at the end of the run;
- compiles: the number of XLA executables compiled (JAX's `jax_log_compiles` records).

Every run is measured twice against its own JAX compilation cache (`JAX_COMPILATION_CACHE_DIR`, a fresh
directory): `cold` (empty: the first run on a machine compiles everything) and then `warm` (the same directory:
a later run reads its executables back instead of compiling; what runs side by side see once one has run).
`--cache cold` or `--cache warm` measures one of them.

The machine's other load does not change these figures much (resident memory, not time); `wall s` does.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.end_to_end import measure as measure_process

RUNS = {
    "default": [],
    "softs_etth1": ["--config=softs:ETTh1,pred_len=96"],
}
FIELDS = ("peak_mib", "imports_mib", "compiled_mib", "steady_mib", "end_mib", "compiles", "wall_s")
_COMPILED = re.compile(r"Finished XLA compilation of (\S+)")
_ROOT = Path(__file__).resolve().parents[1]


def parse_runs(spec: str) -> list[str]:
    """'default,softs_etth1' -> the run names, checked against RUNS."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ValueError("--runs names no run")
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        raise ValueError(f"unknown run(s) {', '.join(unknown)}; known: {', '.join(RUNS)}")
    return names


def _mib_status(field: str = "VmRSS") -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------------------------- the child


class _Recorder(logging.Handler):
    """Counts JAX's compile records and notes the memory when the train step's compilation finishes."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.compiles: list[str] = []
        self.compiled_mib: float | None = None
        self.compiled_at: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        match = _COMPILED.search(record.getMessage())
        if not match:
            return
        self.compiles.append(match[1])
        if self.compiled_mib is None and "train_step" in match[1]:
            self.compiled_mib, self.compiled_at = _maxrss_mib(), time.monotonic()


def _child(out: str, train_argv: Sequence[str]) -> None:
    import train.__main__ as entry

    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample():
        while not done.wait(0.05):
            rss = _mib_status()
            if rss is not None:
                samples.append((time.monotonic(), rss))

    threading.Thread(target=sample, daemon=True).start()
    getattr(entry, "configure_environment", lambda: None)()  # the entry point's own set-up, before JAX starts
    import jax

    recorder = _Recorder()
    jax_logger = logging.getLogger("jax")
    jax_logger.addHandler(recorder)
    jax_logger.propagate = False  # the compile records go to the recorder only, not to the run's log
    jax.config.update("jax_log_compiles", True)
    import train.trainer  # noqa: F401  (what the entry point imports before training)

    imports_mib = _maxrss_mib()
    sys.argv = ["python -m train", *train_argv]
    code = 0
    try:
        entry.run()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    done.set()
    after = [rss for t, rss in samples if recorder.compiled_at is not None and t >= recorder.compiled_at]
    result = {
        "imports_mib": imports_mib,
        "compiled_mib": recorder.compiled_mib,
        "steady_mib": statistics.median(after) if after else None,
        "end_mib": _mib_status(),
        "compiles": len(recorder.compiles),
        "compiled": recorder.compiles,
        "exit_code": code,
    }
    Path(out).write_text(json.dumps(result) + "\n")
    sys.exit(code)


# ----------------------------------------------------------------------------------------------- the parent


CACHES = ("cold", "warm")


def measure(
    name: str,
    extra: Sequence[str] = (),
    workdir: str | None = None,
    jax_cache: str | None = None,
    cache_state: str | None = None,
) -> dict[str, Any]:
    """Runs `name` (a key of RUNS) in a fresh process; its row (MiB, seconds). `jax_cache`: the compilation cache
    directory it uses (default: the environment's); `cache_state` is recorded with the row. The process is started
    and measured (wall and CPU seconds, peak resident set from `os.wait4`) by `benchmarks.end_to_end.measure`."""
    env = dict(os.environ)
    if jax_cache is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = str(jax_cache)
    with tempfile.TemporaryDirectory(prefix=f"memory_{name}_") as tmp:
        out = Path(tmp) / "child.json"
        train_argv = [*RUNS[name], *extra, f"--workdir={workdir or Path(tmp) / 'workdir'}"]
        cmd = [sys.executable, "-m", "benchmarks.memory", "--child", str(out), "--", *train_argv]
        m = measure_process(cmd, cwd=_ROOT, env=env, log_dir=tmp)
        if m["returncode"] or not out.exists():
            tail = "\n".join((m["stdout"] + m["stderr"]).splitlines()[-20:])
            raise RuntimeError(f"run {name} failed (exit {m['returncode']}):\n{tail}")
        row = parse_child(out.read_text())
    return {
        "run": name,
        "jax_cache": cache_state,
        "command": " ".join(["python -m train", *RUNS[name], *extra]),
        "peak_mib": m["peak_mib"],
        **row,
        "wall_s": m["wall_s"],
        "cpu_s": m["cpu_s"],
    }


def parse_child(text: str) -> dict[str, Any]:
    """The child's JSON -> the row's phase fields (every FIELDS key but peak and wall)."""
    data = json.loads(text)
    missing = [k for k in FIELDS if k not in ("peak_mib", "wall_s") and k not in data]
    if missing:
        raise ValueError(f"memory child result lacks {', '.join(missing)}")
    return {k: data[k] for k in (*FIELDS[1:-1], "compiled")}


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    from benchmarks.step import _fmt
    header = (
        f"{'run':14s} {'cache':5s} {'peak MiB':>8s} {'imports':>8s} {'compiled':>8s} {'steady':>8s} {'end':>8s} "
        f"{'compiles':>8s} {'wall s':>7s}"
    )
    lines = [header]
    for r in rows:
        lines.append(
            f"{r['run'][:14]:14s} {r.get('jax_cache') or '-':5s} {r['peak_mib']:8.0f} {_fmt(r['imports_mib'], '8.0f')} "
            f"{_fmt(r['compiled_mib'], '8.0f')} {_fmt(r['steady_mib'], '8.0f')} {_fmt(r['end_mib'], '8.0f')} "
            f"{r['compiles']:8d} {r['wall_s']:7.1f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        if len(argv) < 3 or argv[2] != "--":
            raise SystemExit("usage: python -m benchmarks.memory --child OUT.json -- [python -m train arguments]")
        _child(argv[1], argv[3:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated subset of {','.join(RUNS)}")
    p.add_argument(
        "--extra", action="append", default=[], help="an argument added to every run (--extra=--config.total_steps=50)"
    )
    p.add_argument(
        "--cache", default=",".join(CACHES), help="compilation cache states to measure, in order: cold, warm or both"
    )
    p.add_argument("--json", default=None, help="also write {machine, rows} to this file")
    p.add_argument("--quiet", action="store_true", help="no table")
    args = p.parse_args(argv)
    try:
        names = parse_runs(args.runs)
    except ValueError as e:
        p.error(str(e))
    states = [c.strip() for c in args.cache.split(",") if c.strip()]
    if not states or set(states) - set(CACHES):
        p.error(f"--cache: {args.cache!r}; give cold, warm or cold,warm")
    rows = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix="memory_jax_cache_") as cache:
            if states == ["warm"]:  # warm it first, unmeasured
                measure(name, args.extra, jax_cache=cache)
            for state in states:
                rows.append(measure(name, args.extra, jax_cache=cache, cache_state=state))
                if not args.quiet:
                    table = format_table(rows[-1:]).splitlines()
                    print("\n".join(table) if len(rows) == 1 else table[1], flush=True)
    if args.json:
        from benchmarks import step

        step.write_json(args.json, rows, command=step.command_line("benchmarks.memory", argv))
    return rows


if __name__ == "__main__":
    main()
