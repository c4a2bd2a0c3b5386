"""Where a step's time goes: the compiled step of `benchmarks.step`, profiled, its XLA operations grouped by kind.

    python -m benchmarks.profile --model mixer_s16_224 --batch 16 --set approximate_gelu=false
    python -m benchmarks.profile --model softs --batch 32 --mode infer --top 20 --trace runs/softs_trace

Runs `--warmup` steps, then `--steps` steps under `jax.profiler.trace`, reads the trace back
(`jax.profiler.ProfileData`) and adds up the duration of every event named after an instruction of the compiled
module's entry computation. Each instruction gets a kind from its HLO: **matmul** (a dot or convolution, alone or
in a fusion, including XLA:CPU's library-call fusions), **reduction**, **transpose/copy** (data movement only),
**elementwise** (the other fusions) and **other**. Printed: the time per kind, then the `--top` operations by time
with their shape and the model operation they come from (`op_name`, with the indices of enclosing modules folded,
`MixerBlock_*/channel_mixing/Dense_0`, so that one row sums a layer over all blocks).

On CPU, XLA runs independent operations concurrently on its worker threads, so the summed operation time can exceed
the step's wall time and a single operation's time includes waiting for cores: compare kinds by their share, and
take absolute step times from `benchmarks.step`. The trace itself (`--trace DIR`) opens in TensorBoard / XProf.
"""

from __future__ import annotations

import argparse
import collections
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax

from benchmarks import step as bench_step

KINDS = ("matmul", "elementwise", "reduction", "transpose/copy", "other")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\(.*?\)|\S+) ([\w\-]+)\((.*)$")  # name = shape op(rest
_MOVES = {"parameter", "bitcast", "copy", "transpose", "reshape", "broadcast", "constant", "tuple", "slice"}


def _computations(hlo: str) -> dict[str, list[str]]:
    """name -> instruction lines of every computation in an HLO module's text."""
    out, name, body = {}, None, []
    for line in hlo.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
        if head and not line.startswith(" "):
            name, body = ("ENTRY" if line.startswith("ENTRY") else head.group(1)), []
        elif line.startswith("}") and name is not None:
            out[name] = body
            name = None
        elif name is not None:
            body.append(line)
    return out


def _kind(op: str, rest: str, comps: dict[str, list[str]]) -> str:
    if op in ("dot", "convolution") or (op == "custom-call" and re.search(r"matmul|gemm|onednn", rest, re.I)):
        return "matmul"
    if op == "reduce":
        return "reduction"
    if op in ("copy", "transpose"):
        return "transpose/copy"
    if op != "fusion":
        return "other"
    called = re.search(r"calls=%?([\w.\-]+)", rest)
    ops = []
    for line in comps.get(called.group(1), []) if called else []:
        m = _INSTRUCTION.match(line)
        if m:
            ops.append(m.group(3))
    if any(o in ("dot", "convolution") for o in ops):
        return "matmul"
    if "reduce" in ops:
        return "reduction"
    if ops and set(ops) <= _MOVES:
        return "transpose/copy"
    return "elementwise"


def classify(hlo: str) -> dict[str, dict[str, str]]:
    """Entry instructions of a compiled module: name -> {kind, shape, op_name} (enclosing modules' indices folded)."""
    comps = _computations(hlo)
    out = {}
    for line in comps.get("ENTRY", []):
        m = _INSTRUCTION.match(line)
        if not m:
            continue
        name, shape, op, rest = m.groups()
        if op in ("parameter", "constant", "tuple", "get-tuple-element", "bitcast"):
            continue
        op_name = re.search(r'op_name="([^"]*)"', rest)
        source = re.sub(r"_\d+(?=/[^/]+/)", "_*", op_name.group(1)) if op_name else ""
        source = re.sub(r"^(jit\([^)]*\)/)+", "", source)
        out[name] = {"kind": _kind(op, rest, comps), "shape": shape, "op_name": source}
    return out


def event_times(trace_dir: Path, names: set[str]) -> collections.Counter:
    """Total ns per instruction name over every event of the trace in `trace_dir` named after one of `names`."""
    files = sorted(trace_dir.rglob("*.xplane.pb"))
    if not files:
        raise FileNotFoundError(f"no *.xplane.pb under {trace_dir}: the profiler wrote no trace")
    totals = collections.Counter()
    data = jax.profiler.ProfileData.from_file(str(files[-1]))
    for plane in data.planes:
        for line in plane.lines:
            for event in line.events:
                if event.name in names:
                    totals[event.name] += event.duration_ns
    return totals


def profile(
    name: str,
    batch_size: int,
    *,
    mode: str = "train",
    overrides: dict[str, Any] | None = None,
    steps: int = 1,
    warmup: int = 2,
    trace_dir: str | Path | None = None,
) -> dict[str, Any]:
    """{'kinds': {kind: ms}, 'ops': [{name, kind, shape, op_name, ms}], 'total_ms', 'wall_ms'} per profiled step."""
    bench = bench_step.build(name, batch_size, overrides)
    runner = bench_step.Runner(bench, mode)
    instructions = classify(runner.compiled.as_text())
    runner.run(warmup)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(trace_dir or tmp)
        with jax.profiler.trace(str(folder)):
            t = time.perf_counter()
            runner.run(steps)
            wall = (time.perf_counter() - t) / steps
        totals = event_times(folder, set(instructions))
    runner.close()
    if not totals:
        raise RuntimeError(f"{name}: the trace has no events named after the compiled module's instructions")
    ops = [{"name": n, **instructions[n], "ms": ns / 1e6 / steps} for n, ns in totals.items()]
    kinds = {k: sum(o["ms"] for o in ops if o["kind"] == k) for k in KINDS}
    return {"kinds": kinds, "ops": ops, "total_ms": sum(kinds.values()), "wall_ms": 1e3 * wall}


def grouped(ops: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Operations with the same kind, shape and (folded) op_name summed: one row per layer type, `count` events."""
    groups: dict[tuple, dict[str, Any]] = {}
    for o in ops:
        key = (o["kind"], o["shape"], o["op_name"])
        g = groups.setdefault(key, {"kind": o["kind"], "shape": o["shape"], "op_name": o["op_name"], "ms": 0.0})
        g["ms"] += o["ms"]
        g["count"] = g.get("count", 0) + 1
    return sorted(groups.values(), key=lambda g: -g["ms"])


def format_report(result: dict[str, Any], top: int) -> str:
    total = result["total_ms"]
    lines = [f"wall {result['wall_ms']:.0f} ms/step (under the profiler), operations {total:.0f} ms/step", ""]
    lines.append(f"{'kind':16s} {'ms/step':>9s} {'share':>6s}")
    for kind, ms in sorted(result["kinds"].items(), key=lambda kv: -kv[1]):
        lines.append(f"{kind:16s} {ms:9.1f} {100 * ms / total:5.1f}%")
    lines += ["", f"{'ms/step':>9s} {'ops':>4s} {'kind':15s} {'shape':24s} op_name"]
    for g in grouped(result["ops"])[:top]:
        lines.append(f"{g['ms']:9.1f} {g['count']:4d} {g['kind']:15s} {g['shape'][:24]:24s} {g['op_name'][:100]}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--mode", choices=bench_step.MODES, default="train")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="constructor override")
    p.add_argument("--steps", type=int, default=1, help="profiled steps (times are per step)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--top", type=int, default=15, help="operations to list")
    p.add_argument("--trace", default=None, help="keep the profiler trace in this folder")
    args = p.parse_args(argv)
    bench_step.parse_models(args.model, args.batch)  # unknown names fail with the closest matches
    result = profile(
        args.model,
        args.batch,
        mode=args.mode,
        overrides=bench_step.parse_overrides(args.set),
        steps=args.steps,
        warmup=args.warmup,
        trace_dir=args.trace,
    )
    print(format_report(result, args.top))
    return result


if __name__ == "__main__":
    main()
