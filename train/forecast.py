"""Forecasts of a trained forecaster: a PNG of prediction vs truth and a CSV in the original units.

    python -m train.forecast --workdir runs/softs_etth1_96                       # test split, 4 windows, 4 channels
    python -m train.forecast --workdir runs/softs_etth1_96 --channels OT,HUFL --windows 0,1000 --all-windows

Reads the run's `config.json` and exported model (`workdir/model`, the evaluated checkpoint), rebuilds the split
under the same protocol, predicts every window and writes to `--out` (default `workdir/forecast`):
`forecast.png` (lookback, truth and prediction per chosen channel and window), `forecast.csv` (window, step,
date, then `<channel>_true` and `<channel>_pred` in the original units, for the chosen windows or all of them)
and `metrics.json` (MSE/MAE on the normalised scale, as the trainer reports them, and in the original units).
"""

import argparse
import json
import sys
from pathlib import Path

import jax
import ml_collections
import numpy as np

from zoo import cli


def load_run(workdir: Path):
    """(config, model, variables, test-split data set) of a finished forecasting run."""
    import checkpoints
    from train import config as config_lib

    config_file = workdir / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{config_file} not found: is {workdir} the workdir of a training run?")
    config = config_lib.validate(ml_collections.ConfigDict(json.loads(config_file.read_text())))
    if config.task.name != "forecasting":
        raise ValueError(f"{workdir} is a {config.task.name} run; train.forecast needs a forecasting run")
    model, variables = checkpoints.load_pretrained(str(workdir))
    return config, model, variables


def open_split(config, model, split: str):
    from train.data import forecasting_dataset

    d = config.data
    return forecasting_dataset(
        d.dataset,
        split,
        model.seq_len,
        model.pred_len,
        features=d.features,
        timeenc=d.timeenc if getattr(model, "num_time_features", 0) else None,
        target=d.target,
        freq=d.freq,
        scale=d.scale,
        data_dir=d.data_dir or None,
    )


def predict(model, variables, ds, batch_size: int = 256) -> np.ndarray:
    """Normalised forecasts `[windows, pred_len, C]` of every window of `ds` (eval mode)."""
    uses_marks = ds.num_time_features > 0
    apply = jax.jit(lambda v, x, m: model.apply(v, x, m, train=False) if uses_marks else model.apply(v, x, train=False))
    out = []
    for start in range(0, len(ds), batch_size):
        batch = ds.get_batch(np.arange(start, min(start + batch_size, len(ds))))
        n = len(batch["x"])
        # Pad the last batch to the full size so that `apply` compiles once.
        batch = {k: np.concatenate([v, np.repeat(v[-1:], batch_size - n, axis=0)]) for k, v in batch.items()}
        pred = apply(variables, batch["x"], batch["x_mark"] if uses_marks else None)
        out.append(np.asarray(pred)[:n])
    return np.concatenate(out)


def _pick_channels(ds, spec: str) -> list[int]:
    if not spec:
        return list(range(min(4, ds.num_channels)))
    picked = []
    for item in spec.split(","):
        if item in ds.columns:
            picked.append(ds.columns.index(item))
        elif item.lstrip("-").isdigit() and -ds.num_channels <= int(item) < ds.num_channels:
            picked.append(int(item) % ds.num_channels)
        else:
            raise ValueError(f"unknown channel {item!r}; channels are {', '.join(ds.columns)} (or indices)")
    return picked


def _pick_windows(ds, spec: str) -> list[int]:
    if not spec:
        return [int(i) for i in np.linspace(0, len(ds) - 1, 4)]
    windows = [int(w) for w in spec.split(",")]
    bad = [w for w in windows if not 0 <= w < len(ds)]
    if bad:
        raise ValueError(f"windows {bad} out of range: the split has {len(ds)} windows (0..{len(ds) - 1})")
    return windows


def write_csv(path: Path, ds, pred: np.ndarray, windows: list[int]) -> None:
    """Rows: window, step, date, then `<channel>_true`, `<channel>_pred` in the original units."""
    import pandas as pd

    true_o = ds.scaler.inverse_transform(ds.get_batch(np.asarray(windows))["y"])
    pred_o = ds.scaler.inverse_transform(pred[windows])
    frames = []
    for k, w in enumerate(windows):
        frame = {"window": w, "step": np.arange(ds.pred_len) + 1}
        frame["date"] = ds.dates[w + ds.seq_len : w + ds.seq_len + ds.pred_len].astype(str)
        for c, name in enumerate(ds.columns):
            frame[f"{name}_true"] = true_o[k, :, c]
            frame[f"{name}_pred"] = pred_o[k, :, c]
        frames.append(pd.DataFrame(frame))
    pd.concat(frames).to_csv(path, index=False, float_format="%.6g")


def plot(path: Path, ds, pred: np.ndarray, windows: list[int], channels: list[int], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batch = ds.get_batch(np.asarray(windows))
    x_o, y_o = ds.scaler.inverse_transform(batch["x"]), ds.scaler.inverse_transform(batch["y"])
    p_o = ds.scaler.inverse_transform(pred[windows])
    fig, axes = plt.subplots(
        len(channels), len(windows), figsize=(4 * len(windows), 2.4 * len(channels)), squeeze=False
    )
    t_in, t_out = np.arange(-ds.seq_len, 0), np.arange(ds.pred_len)
    for row, c in enumerate(channels):
        for col, w in enumerate(windows):
            ax = axes[row, col]
            ax.plot(t_in, x_o[col, :, c], color="0.6", lw=1, label="lookback")
            ax.plot(t_out, y_o[col, :, c], color="k", lw=1, label="truth")
            ax.plot(t_out, p_o[col, :, c], color="tab:red", lw=1.2, label="forecast")
            ax.axvline(0, color="0.8", lw=0.8)
            if row == 0:
                ax.set_title(f"window {w} ({ds.dates[w + ds.seq_len]:%Y-%m-%d %H:%M})", fontsize=9)
            if col == 0:
                ax.set_ylabel(ds.columns[c])
            if row == len(channels) - 1:
                ax.set_xlabel("steps from the forecast start", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.forecast", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, type=Path, help="the training run's workdir")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--channels", default="", help="names or indices, comma-separated (default: the first 4)")
    parser.add_argument("--windows", default="", help="window indices, comma-separated (default: 4 evenly spaced)")
    parser.add_argument("--all-windows", action="store_true", help="CSV with every window, not only the chosen")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: WORKDIR/forecast)")
    args = parser.parse_args(argv)
    return cli.run(lambda: _forecast(args), parser.prog)


def _forecast(args) -> int:
    config, model, variables = load_run(args.workdir)
    ds = open_split(config, model, args.split)
    channels, windows = _pick_channels(ds, args.channels), _pick_windows(ds, args.windows)
    pred = predict(model, variables, ds)
    out = args.out or args.workdir / "forecast"
    out.mkdir(parents=True, exist_ok=True)

    truth = ds.get_batch(np.arange(len(ds)))["y"]
    scored = ds.target_slice
    err = pred[..., scored] - truth[..., scored]
    err_o = ds.scaler.inverse_transform(pred)[..., scored] - ds.scaler.inverse_transform(truth)[..., scored]
    metrics = {
        "split": args.split,
        "windows": len(ds),
        "mse": float(np.mean(err**2)),
        "mae": float(np.mean(np.abs(err))),
        "mse_original": float(np.mean(err_o**2)),
        "mae_original": float(np.mean(np.abs(err_o))),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_csv(out / "forecast.csv", ds, pred, list(range(len(ds))) if args.all_windows else windows)
    title = f"{config.model_name} on {ds.name} ({args.split}), lookback {ds.seq_len}, horizon {ds.pred_len}"
    plot(out / "forecast.png", ds, pred, windows, channels, title)
    print(json.dumps(metrics, indent=2))
    print(f"wrote {out / 'forecast.png'}, {out / 'forecast.csv'} and {out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
