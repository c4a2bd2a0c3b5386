"""Reruns a forecasting table: every (data set, horizon, seed) through the trainer, collected in one file.

    python -m train.reproduce softs --datasets ETTh1,ETTh2 --horizons 96,192,336,720 --seeds 3 --out runs/repro

Each run trains `train/configs/<model>.py:<dataset>,pred_len=<H>` with seed `config.seed + i` in
`OUT/runs/<dataset>_<H>_seed<seed>` and appends a row (dataset, pred_len, seed, mse, mae, wall_s, ...) to
`OUT/results.json`. Finished runs are reused, so an interrupted reproduction continues where it stopped (and an
interrupted run resumes from its last checkpoint). The summary (mean and spread over seeds, per horizon and
averaged over horizons, next to the paper where the config module has `PAPER`) is printed and written to
`OUT/summary.md`.
"""

import argparse
import importlib
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from zoo import cli


def _rows_file(out: Path) -> Path:
    return out / "results.json"


def _write_json(path: Path, value) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(tmp, path)


def run(model: str, datasets: list[str], horizons: list[int] | None, seeds: int, out: Path) -> list[dict]:
    from train.trainer import train_and_evaluate

    module = importlib.import_module(f"train.configs.{model}")
    out.mkdir(parents=True, exist_ok=True)
    rows = json.loads(_rows_file(out).read_text()) if _rows_file(out).exists() else []
    done = {(r["dataset"], r["pred_len"], r["seed"]) for r in rows}
    for dataset in datasets:
        for pred_len in horizons or getattr(module, "HORIZONS", {}).get(dataset, (96, 192, 336, 720)):
            arg = f"{dataset},pred_len={pred_len}"
            base = module.get_config(arg)
            for i in range(seeds):
                seed = base.seed + i
                if (base.data.dataset, pred_len, seed) in done:
                    continue
                config = module.get_config(arg)
                config.seed = seed
                workdir = out / "runs" / f"{config.data.dataset}_{pred_len}_seed{seed}"
                command = (
                    f"python -m train --config=train/configs/{model}.py:{arg} --config.seed={seed} --workdir={workdir}"
                )
                print(f"== {command}", flush=True)
                result = train_and_evaluate(config, workdir)
                rows.append(
                    {
                        "dataset": config.data.dataset,
                        "pred_len": pred_len,
                        "seed": seed,
                        "mse": result["test_metrics"]["mse"],
                        "mae": result["test_metrics"]["mae"],
                        "wall_s": result["wall_s"],
                        "evaluated_step": result["evaluated_step"],
                        "steps": result["steps"],
                        "command": command,
                    }
                )
                _write_json(_rows_file(out), rows)
                row = rows[-1]
                print(f"   mse {row['mse']:.4f} mae {row['mae']:.4f} wall {row['wall_s']:.0f} s", flush=True)
    return rows


def _mean_std(values) -> str:
    values = np.asarray(values, float)
    return f"{values.mean():.4f} ± {values.std():.4f}" if values.size > 1 else f"{values.mean():.4f}"


def summarize(rows: list[dict], paper: dict | None = None) -> str:
    """Markdown: per data set and horizon, mean ± std (population) over seeds; then the average over horizons."""
    paper = paper or {}
    lines = [
        "| data set | horizon | seeds | MSE | MAE | wall s per run |",
        "|---|---|---|---|---|---|",
    ]
    datasets = sorted({r["dataset"] for r in rows}, key=lambda d: [r["dataset"] for r in rows].index(d))
    averages = []
    for dataset in datasets:
        mine = [r for r in rows if r["dataset"] == dataset]
        horizons = sorted({r["pred_len"] for r in mine})
        for h in horizons:
            at = [r for r in mine if r["pred_len"] == h]
            lines.append(
                f"| {dataset} | {h} | {len(at)} | {_mean_std([r['mse'] for r in at])} | "
                f"{_mean_std([r['mae'] for r in at])} | {np.mean([r['wall_s'] for r in at]):.0f} |"
            )
        seeds = sorted({r["seed"] for r in mine})
        complete = [s for s in seeds if len({r["pred_len"] for r in mine if r["seed"] == s}) == len(horizons)]
        per_seed = [
            (np.mean([r["mse"] for r in mine if r["seed"] == s]), np.mean([r["mae"] for r in mine if r["seed"] == s]))
            for s in complete
        ]
        if per_seed:
            averages.append((dataset, len(horizons), per_seed))
    lines += [
        "",
        "| data set | horizons | seeds | average MSE | average MAE | paper MSE / MAE | MSE gap | MAE gap |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dataset, n_h, per_seed in averages:
        mse, mae = [p[0] for p in per_seed], [p[1] for p in per_seed]
        ref = paper.get(dataset)
        # A paper that reports no MAE (TSM2) gives NaN for it: shown as "-", not "nan".
        known = [r is not None and np.isfinite(r) for r in (ref or (None, None))]
        gaps = " | ".join(
            f"{100 * (np.mean(ours) / ref[i] - 1):+.1f}%" if ref and n_h == 4 and known[i] else "-"
            for i, ours in enumerate((mse, mae))
        )
        reference = " / ".join(f"{r:.3f}" if k else "-" for r, k in zip(ref, known, strict=True)) if ref else "-"
        lines.append(
            f"| {dataset} | {n_h} | {len(per_seed)} | {_mean_std(mse)} | {_mean_std(mae)} | {reference} | {gaps} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="config module in train/configs (e.g. softs)")
    parser.add_argument("--datasets", required=True, help="comma-separated, e.g. ETTh1,ETTh2")
    parser.add_argument("--horizons", default="", help="comma-separated; default: the config's horizons")
    parser.add_argument("--seeds", type=_positive, default=3, help="number of seeds (config.seed, +1, +2, ...)")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return cli.run(lambda: _reproduce(args), parser.prog)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _reproduce(args) -> int:
    horizons = [int(h) for h in args.horizons.split(",") if h] or None
    rows = run(args.model, [d for d in args.datasets.split(",") if d], horizons, args.seeds, args.out)
    paper = getattr(importlib.import_module(f"train.configs.{args.model}"), "PAPER", None)
    summary = summarize(rows, paper)
    (args.out / "summary.md").write_text(summary + "\n")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
