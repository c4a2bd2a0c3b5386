"""Naive and linear forecasting baselines on the test split, scored exactly as the trainer scores a model.

    python -m train.baselines --datasets ETTh1,ETTh2,ETTm1,ETTm2,Weather --horizons 96,192,336,720 \\
        --out docs/results/baselines.json
    python -m train.baselines --datasets ETTh1,ETTh2 --seq-len 512 --baselines linear --out runs/linear_512.json

Protocol as in training (train/data/timeseries.py): features M, scaling fitted on the training rows, lookback
`--seq-len` (96). Baselines: `naive` repeats the last observed value of the lookback over the horizon;
`seasonal_naive` tiles the lookback's last m values (m the season length of MASE, from the data's sampling
frequency or `--season-length`; it needs seq_len >= m, else its row says why it is missing); `linear` (opt-in with
`--baselines`) is one linear map from the lookback to the horizon shared by all channels, fitted in closed form by
least squares on every training window and channel: each window normalised by its own mean and standard deviation
and the forecast de-normalised (RevIN without affine parameters, as the trained forecasters), the squared error
measured after de-normalising, as the trained forecasters' loss (the "closed-form linear" reference of Toner &
Darlow 2024); a ridge of `--ridge` (default 1) only keeps the normal equations well-posed. Every test window is
scored by `ForecastingTask.metrics` in padded batches, as the evaluator does (MSE and MAE normalised, MASE, sMAPE).
A markdown table is printed (per horizon, then averaged over the horizons) and the rows go to `--out` as JSON.
"""

import argparse
import functools
import json
import logging
import sys
from pathlib import Path

import jax
import numpy as np

from zoo import cli

BASELINES = ("naive", "seasonal_naive", "linear")
DEFAULT_BASELINES = ("naive", "seasonal_naive")
_METRICS = ("mse", "mae", "mase", "smape")


def naive_forecast(x: np.ndarray, pred_len: int) -> np.ndarray:
    """x [B, L, C] -> [B, pred_len, C]: the last value of each window, repeated."""
    return np.repeat(x[:, -1:, :], pred_len, axis=1)


def seasonal_naive_forecast(x: np.ndarray, pred_len: int, season: int) -> np.ndarray:
    """x [B, L, C] -> [B, pred_len, C]: step h takes x[:, L - m + (h mod m)], the last season of the window tiled."""
    length = x.shape[1]
    if not 1 <= season <= length:
        raise ValueError(f"the seasonal naive forecast needs seq_len >= season length {season}, got seq_len {length}")
    return x[:, length - season + np.arange(pred_len) % season, :]


def _instance_normalised(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x [B, L, C] -> (rows [B * C, L] normalised per window and channel, mean [B, 1, C], std [B, 1, C]), float64."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=1, keepdims=True)
    std = np.sqrt(x.var(axis=1, keepdims=True) + 1e-5)
    rows = ((x - mean) / std).transpose(0, 2, 1).reshape(-1, x.shape[1])
    return rows, mean, std


def fit_linear(train, ridge: float = 1.0, batch_size: int = 2048) -> np.ndarray:
    """Weights [seq_len + 1, pred_len] (the last row the bias) of the `linear` baseline on every window of `train`.

    Minimises sum_r ||m_r + s_r (x_r W + b) - y_r||^2 + ridge ||[W; b]||^2 over the rows r of every window and
    channel (x_r the lookback normalised by its mean m_r and standard deviation s_r, y_r the horizon): the squared
    error after de-normalising, which the trained forecasters minimise. Unweighted least squares on the normalised
    horizons lets near-flat lookbacks (s_r ~ 0, huge normalised targets) dominate, which ruins the fit on ETTh2. The
    normal equations are accumulated over batches of windows (memory O(seq_len^2), whatever the number of channels).
    """
    if len(train) < 1:
        raise ValueError(f"the linear baseline needs training windows; {train!r} has none")
    seq_len, pred_len = train.seq_len, train.pred_len
    gram = np.zeros((seq_len + 1, seq_len + 1))
    cross = np.zeros((seq_len + 1, pred_len))
    for start in range(0, len(train), batch_size):
        batch = train.get_batch(np.arange(start, min(start + batch_size, len(train))))
        rows, mean, std = _instance_normalised(batch["x"])
        targets = (np.asarray(batch["y"], np.float64) - mean).transpose(0, 2, 1).reshape(-1, pred_len)
        design = np.concatenate([rows, np.ones((len(rows), 1))], axis=1) * std.transpose(0, 2, 1).reshape(-1, 1)
        gram += design.T @ design
        cross += design.T @ targets
    return np.linalg.solve(gram + ridge * np.eye(seq_len + 1), cross)


def linear_forecast(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """x [B, L, C] -> [B, H, C] (float32): the fitted map (`fit_linear`) on each normalised channel, de-normalised."""
    rows, mean, std = _instance_normalised(x)
    out = rows @ weights[:-1] + weights[-1]
    out = out.reshape(x.shape[0], x.shape[2], -1).transpose(0, 2, 1)
    return (out * std + mean).astype(np.float32)


def score(forecast, test, task, batch_size: int = 256) -> dict:
    """`task.metrics` of `forecast(x [B, L, C]) -> [B, H, C]` over every window of `test`, in padded batches."""
    from train.data.pipeline import ArrayExamples, EvalBatches
    from train.tasks import reduce_metrics

    metrics = jax.jit(task.metrics)
    batches = EvalBatches(ArrayExamples(test), batch_size)
    sums, windows = None, 0
    for i in range(len(batches)):
        batch = batches[i]
        out = metrics(forecast(batch["x"]), {"y": batch["y"], "mask": batch["mask"]})
        sums = out if sums is None else jax.tree.map(np.add, sums, out)
        windows += int(batch["mask"].sum())
    return {**reduce_metrics(jax.device_get(sums)), "num_examples": windows}


def forecaster(baseline: str, pred_len: int, season: int, train=None, ridge: float = 1.0):
    """The forecast function `x [B, L, C] -> [B, pred_len, C]` of a baseline (`linear` fits itself on `train`)."""
    if baseline == "naive":
        return functools.partial(naive_forecast, pred_len=pred_len)
    if baseline == "seasonal_naive":
        return functools.partial(seasonal_naive_forecast, pred_len=pred_len, season=season)
    if baseline == "linear":
        return functools.partial(linear_forecast, weights=fit_linear(train, ridge))
    raise ValueError(f"unknown baseline {baseline!r}; known: {', '.join(BASELINES)}")


def baseline_rows(
    dataset: str,
    horizons,
    seq_len: int = 96,
    season_length: int = 0,
    data_dir=None,
    baselines=DEFAULT_BASELINES,
    ridge: float = 1.0,
) -> list[dict]:
    """One row per horizon and baseline: the metrics over the test split, or `missing` with the reason."""
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; known: {', '.join(BASELINES)}")
    from train.data.timeseries import forecasting_dataset
    from train.inputs import forecasting_task

    rows = []
    for pred_len in horizons:
        common = dict(features="M", timeenc=None, scale=True, data_dir=data_dir)
        train = forecasting_dataset(dataset, "train", seq_len, pred_len, **common)
        test = forecasting_dataset(dataset, "test", seq_len, pred_len, **common)
        task = forecasting_task(train, season_length)
        m = task.season_length
        for baseline in baselines:
            row = {"dataset": test.name, "pred_len": pred_len, "seq_len": seq_len, "baseline": baseline}
            row.update(season_length=m, features="M", columns=list(test.columns))
            if baseline == "linear":
                row["ridge"] = ridge
            if baseline == "seasonal_naive" and seq_len < m:
                row["missing"] = f"needs seq_len >= the season length {m}, got seq_len {seq_len}"
            else:
                row.update(score(forecaster(baseline, pred_len, m, train, ridge), test, task))
            rows.append(row)
    return rows


def _cell(row: dict, metric: str) -> str:
    return "-" if "missing" in row else f"{row[metric]:.4f}"


def averages(rows: list[dict]) -> list[dict]:
    """Per data set and baseline, the mean of each metric over the horizons (only where no horizon is missing)."""
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for baseline in dict.fromkeys(r["baseline"] for r in rows):
            mine = [r for r in rows if r["dataset"] == dataset and r["baseline"] == baseline]
            if not mine:
                continue
            row = {"dataset": dataset, "baseline": baseline, "horizons": [r["pred_len"] for r in mine]}
            missing = [r["missing"] for r in mine if "missing" in r]
            if missing:
                row["missing"] = missing[0]
            else:
                row.update({k: float(np.mean([r[k] for r in mine])) for k in _METRICS})
            out.append(row)
    return out


def table(rows: list[dict]) -> str:
    """Markdown: one line per data set, horizon and baseline; then the averages over the horizons."""
    lines = ["| data set | horizon | baseline | MSE | MAE | MASE | sMAPE |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        note = f" ({r['missing']})" if "missing" in r else ""
        cells = " | ".join(_cell(r, k) for k in _METRICS)
        lines.append(f"| {r['dataset']} | {r['pred_len']} | {r['baseline']}{note} | {cells} |")
    lines += ["", "| data set | baseline | average MSE | average MAE | average MASE | average sMAPE |"]
    lines.append("|---|---|---|---|---|---|")
    for r in averages(rows):
        note = " (missing)" if "missing" in r else ""
        lines.append(f"| {r['dataset']} | {r['baseline']}{note} | " + " | ".join(_cell(r, k) for k in _METRICS) + " |")
    return "\n".join(lines)


def _integers(text: str, name: str, minimum: int) -> list[int]:
    values = []
    for item in (t.strip() for t in text.split(",")):
        if not item.lstrip("-").isdigit() or int(item) < minimum:
            raise ValueError(f"{name} must be integers >= {minimum}, comma-separated; got {item!r} in {text!r}")
        values.append(int(item))
    return values


def _run(args) -> int:
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    if not datasets:
        raise ValueError(f"--datasets names no data set: {args.datasets!r}")
    horizons = _integers(args.horizons, "--horizons", 1)
    (seq_len,) = _integers(args.seq_len, "--seq-len", 1)
    (season_length,) = _integers(args.season_length, "--season-length", 0)
    baselines = [b.strip() for b in args.baselines.split(",") if b.strip()]
    unknown = [b for b in baselines if b not in BASELINES]
    if not baselines or unknown:
        raise ValueError(f"--baselines must name some of {', '.join(BASELINES)}; got {args.baselines!r}")
    if not (args.ridge >= 0.0 and np.isfinite(args.ridge)):
        raise ValueError(f"--ridge must be a finite number >= 0, got {args.ridge}")
    if args.out is not None and args.out.is_dir():
        raise ValueError(f"--out {args.out} is a directory; give a file name such as {args.out / 'baselines.json'}")
    rows = []
    for dataset in datasets:
        rows += baseline_rows(dataset, horizons, seq_len, season_length, args.data_dir, baselines, args.ridge)
    print(table(rows))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.baselines", description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", required=True, help="comma-separated, e.g. ETTh1,Weather (or CSV paths)")
    parser.add_argument("--horizons", default="96,192,336,720", help="comma-separated prediction lengths")
    parser.add_argument("--seq-len", default="96", help="lookback length (default 96)")
    parser.add_argument("--season-length", default="0", help="MASE's season; 0 = from the data's frequency")
    parser.add_argument(
        "--baselines", default=",".join(DEFAULT_BASELINES), help=f"comma-separated, of {', '.join(BASELINES)}"
    )
    parser.add_argument("--ridge", type=float, default=1.0, help="the linear baseline's ridge (default 1)")
    parser.add_argument("--data-dir", default=None, help="default: $MIXER_ZOO_DATA")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the rows")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return cli.run(lambda: _run(args), parser.prog)


if __name__ == "__main__":
    sys.exit(main())
