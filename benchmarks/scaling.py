"""How the cost of a training step grows with the input: tokens (image size) for the vision mixers, lookback and
channel count for the forecasters.

    python -m benchmarks.scaling --json docs/benchmarks_data/scaling.json --plots docs   # the recorded run
    python -m benchmarks.scaling --only forecast --channels 7,321,2000          # one sweep

Every point is `benchmarks.step` in a fresh process (`--isolate`), so its peak memory is clean: the train step
(forward, backward, AdamW, donated state) at a fixed batch, with XLA's FLOPs and memory estimate. Sweeps:

- **vision**: one model per image-classification family (by default the smallest registered at 224x224), with
  `img_size` set to each of `--img-sizes` (same patch size, so the tokens grow with the square of the side).
- **forecast, channels**: each forecasting family's default model with `enc_in` set to each of `--channels`, at
  lookback `--lookback` and horizon `--horizon` (SOFTS' paper claims cost linear in the channels).
- **forecast, lookback**: `seq_len` set to each of `--lookbacks`, at `--lookback-channels` channels.

Writes the rows as JSON, one PNG per sweep, and prints Markdown tables (with a least-squares line through the
channel sweep and its R^2) for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import zoo
from benchmarks import step as bench_step


def representatives(task: str) -> list[str]:
    """One model per family of `task`: the smallest (fewest parameters) registered at 224x224 for images, else the
    smallest; for forecasters the family's first name (its default configuration)."""
    families: dict[str, list[str]] = {}
    for name in zoo.list_models(task=task):
        families.setdefault(zoo.get_entry(name).family, []).append(name)
    out = []
    for names in families.values():
        if task == "classification":
            at_224 = [n for n in names if zoo.model_info(n).input_spec["images"][:2] == (224, 224)]
            out.append(min(at_224 or names, key=lambda n: zoo.model_info(n).num_params))
        else:
            out.append(sorted(names)[0])
    return sorted(out)


def _point(name: str, batch: int, sets: dict[str, Any], args) -> dict[str, Any]:
    argv = [f"--models={name}:{batch}", "--modes=train", f"--steps={args.steps}", f"--repeats={args.repeats}"]
    argv += [f"--warmup={args.warmup}", "--matmul-n=0", *(f"--set={k}={v}" for k, v in sets.items())]
    data = bench_step.run_isolated(argv)
    (row,) = data["rows"]
    row["sweep_values"] = dict(sets)
    row["ms_per_example"] = row["step_ms"] / batch
    row["gflop_per_example"] = row["gflop_per_step"] / batch if row["gflop_per_step"] else None
    print(
        f"  {name} {sets}: {row['examples_per_s']:.2f} ex/s, {row['ms_per_example']:.1f} ms/example, "
        f"peak {row['peak_mem_mb']:.0f} MB, {row['gflop_per_example'] or 0:.2f} GFLOP/example",
        flush=True,
    )
    return {**row, "machine": data["machine"]}


def linear_fit(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares y = a + b x: (a, b, R^2)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    b, a = np.polyfit(x, y, 1)
    residual = y - (a + b * x)
    total = np.sum((y - y.mean()) ** 2)
    return float(a), float(b), float(1.0 - np.sum(residual**2) / total) if total > 0 else 1.0


def vision_sweep(args) -> list[dict[str, Any]]:
    rows = []
    names = args.vision.split(",") if args.vision else representatives("classification")
    for name in names:
        patch = zoo.get_entry(name).defaults.get("patch_size", 16)
        for size in (int(s) for s in args.img_sizes.split(",")):
            if size % patch:
                continue
            row = _point(name, args.vision_batch, {"img_size": size}, args)
            row.update(sweep="tokens", x=(size // patch) ** 2, family=zoo.get_entry(name).family)
            rows.append(row)
    return rows


def forecast_sweeps(args) -> list[dict[str, Any]]:
    rows = []
    names = args.forecasters.split(",") if args.forecasters else representatives("forecasting")
    for name in names:
        family = zoo.get_entry(name).family
        for c in (int(s) for s in args.channels.split(",")):
            sets = {"enc_in": c, "seq_len": args.lookback, "pred_len": args.horizon}
            row = _point(name, args.forecast_batch, sets, args)
            row.update(sweep="channels", x=c, family=family)
            rows.append(row)
        for lookback in (int(s) for s in args.lookbacks.split(",")):
            sets = {"enc_in": args.lookback_channels, "seq_len": lookback, "pred_len": args.horizon}
            row = _point(name, args.forecast_batch, sets, args)
            row.update(sweep="lookback", x=lookback, family=family)
            rows.append(row)
    return rows


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    out = []
    for sweep, label in (("tokens", "tokens"), ("channels", "channels"), ("lookback", "lookback")):
        sel = [r for r in rows if r["sweep"] == sweep]
        for model in sorted({r["model"] for r in sel}):
            pts = sorted((r for r in sel if r["model"] == model), key=lambda r: r["x"])
            settings = ", ".join(f"{k}={v}" for k, v in pts[0]["sweep_values"].items() if k != _swept(sweep))
            out.append(f"\n**{model}**, train step, batch {pts[0]['batch']}{', ' + settings if settings else ''}\n")
            out.append(f"| {label} | examples/s | ms/example | peak MB | XLA MB | GFLOP/example |")
            out.append("|---:|---:|---:|---:|---:|---:|")
            for r in pts:
                out.append(
                    f"| {r['x']} | {r['examples_per_s']:.2f} | {r['ms_per_example']:.1f} | {r['peak_mem_mb']:.0f} | "
                    f"{r['xla_mem_mb']:.0f} | {r['gflop_per_example']:.2f} |"
                )
            if sweep == "channels" and len(pts) >= 3:
                xs = [r["x"] for r in pts]
                for what, key in (
                    ("ms/example", "ms_per_example"),
                    ("peak MB", "peak_mem_mb"),
                    ("GFLOP", "gflop_per_example"),
                ):
                    a, b, r2 = linear_fit(xs, [r[key] for r in pts])
                    out.append(f"\n{what} = {a:.3g} + {b:.3g} x channels (least squares, R^2 = {r2:.4f})")
    return "\n".join(out)


def _swept(sweep: str) -> str:
    return {"tokens": "img_size", "channels": "enc_in", "lookback": "seq_len"}[sweep]


def plot(rows: Sequence[dict[str, Any]], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    specs = {
        "tokens": ("scaling_vision_tokens.png", "tokens (image size / patch size)^2"),
        "channels": ("scaling_forecast_channels.png", "channels"),
        "lookback": ("scaling_forecast_lookback.png", "lookback (time steps)"),
    }
    for sweep, (filename, xlabel) in specs.items():
        sel = [r for r in rows if r["sweep"] == sweep]
        if not sel:
            continue
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        for model in sorted({r["model"] for r in sel}):
            pts = sorted((r for r in sel if r["model"] == model), key=lambda r: r["x"])
            xs = [r["x"] for r in pts]
            for ax, key in zip(axes, ("ms_per_example", "peak_mem_mb", "gflop_per_example")):
                ax.plot(xs, [r[key] for r in pts], "o-", label=model)
                if sweep == "channels":
                    a, b, _ = linear_fit(xs, [r[key] for r in pts])
                    grid = np.linspace(min(xs), max(xs), 50)
                    ax.plot(grid, a + b * grid, ":", color="gray", label="least-squares line")
        titles = ("train step, ms per example", "peak memory, MB", "GFLOP per example (XLA)")
        for ax, title in zip(axes, titles):
            ax.set_title(title)
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        machine = sel[0]["machine"]
        fig.suptitle(
            f"batch {sel[0]['batch']}, {machine['backend']} ({machine['cpu']}, {machine['cpu_count']} cores), "
            f"jax {machine['versions']['jax']}, {machine['date_utc']}",
            fontsize=9,
        )
        fig.tight_layout()
        path = folder / filename
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=("vision", "forecast"), default=None)
    p.add_argument("--vision", default="", help="models (default: one per classification family)")
    p.add_argument("--img-sizes", default="96,128,160,224,288,384")
    p.add_argument("--vision-batch", type=int, default=8)
    p.add_argument("--forecasters", default="", help="models (default: one per forecasting family)")
    p.add_argument("--channels", default="7,21,96,321,862,2000")
    p.add_argument("--lookback", type=int, default=96, help="lookback of the channel sweep")
    p.add_argument("--horizon", type=int, default=720)
    p.add_argument("--lookbacks", default="48,96,192,336,720")
    p.add_argument("--lookback-channels", type=int, default=321, help="channels of the lookback sweep")
    p.add_argument("--forecast-batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--json", default=None, help="write {rows} here")
    p.add_argument("--plots", default=None, help="folder for the PNG plots")
    args = p.parse_args(argv)
    rows = []
    if args.only in (None, "vision"):
        rows += vision_sweep(args)
    if args.only in (None, "forecast"):
        rows += forecast_sweeps(args)
    table = markdown(rows)
    print(table)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        machine = bench_step.machine_info(bench_step.command_line("benchmarks.scaling", argv))
        path.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n")
    if args.plots:
        for path in plot(rows, Path(args.plots)):
            print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
