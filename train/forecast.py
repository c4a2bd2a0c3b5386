"""Forecasts of a trained forecaster: a PNG of prediction vs truth and a CSV in the original units.

    python -m train.forecast --workdir runs/softs_etth1_96                       # test split, 4 windows, 4 channels
    python -m train.forecast --workdir runs/softs_etth1_96 --channels OT,HUFL --windows 0,1000 --all-windows

Reads the run's `config.json` and exported model (`workdir/model`, the evaluated checkpoint), rebuilds the split
under the same protocol, predicts every window and writes to `--out` (default `workdir/forecast`):
`forecast.png` (lookback, truth and prediction per chosen channel and window), `forecast.csv` (window, step,
date, then `<channel>_true` and `<channel>_pred` in the original units, for the chosen windows or all of them)
and `metrics.json` (MSE/MAE on the normalised scale, as the trainer reports them, and in the original units).

Forecasting the actual future, from new data:

    python -m train.forecast --workdir runs/softs_etth1_96 --csv latest.csv [--out DIR] [--freq h]

reads the last `seq_len` rows of `latest.csv` (a `date` column and the training data's value columns, found by
name: order and extra columns do not matter), scales them with the scaler fitted at training time (saved with the
model, never refitted on the new rows), builds their time features, and writes the next `pred_len` steps in the
original units with their timestamps (continuing the data's sampling frequency) to `future_<csv stem>.csv`, and
the history with the forecast to `future_<csv stem>.png`. Existing output files are never overwritten.
"""

import argparse
import json
import sys
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pandas as pd

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


# --------------------------------------------------------------------------------------------------------------------
# The future: the steps after the end of a user's CSV.


def data_spec(workdir: Path, config, model) -> dict:
    """The run's description of its data (`ForecastingDataset.spec`): saved with the model by the trainer; for a run
    exported before it was, rebuilt from the run's config and training file (the same rows, so the same scaler)."""
    metadata = workdir / "model" / "metadata.json"
    spec = json.loads(metadata.read_text()).get("data") if metadata.exists() else None
    return spec or open_split(config, model, "train").spec()


def future_dates(dates, periods: int, freq: str | None = None) -> pd.DatetimeIndex:
    """The `periods` timestamps after `dates[-1]`, every `freq` (default: the sampling frequency of `dates`)."""
    from train.data.timeseries import DataError, sampling_frequency

    freq = freq or sampling_frequency(dates)
    if freq is None:
        raise DataError("cannot tell the data's sampling frequency from its dates; pass --freq (e.g. h, 15min, D)")
    try:
        offset = pd.tseries.frequencies.to_offset(freq)
    except ValueError as e:
        raise DataError(f"unknown frequency {freq!r}: use a pandas frequency such as h, 15min, 10min, D, W") from e
    return pd.date_range(pd.DatetimeIndex(dates)[-1], periods=periods + 1, freq=offset)[1:]


def _same_step(a: str, b: str) -> bool:
    """Whether two pandas frequencies sample equally often (fixed steps compared as durations: 'h' and '60min')."""
    try:
        return pd.Timedelta(pd.tseries.frequencies.to_offset(a)) == pd.Timedelta(pd.tseries.frequencies.to_offset(b))
    except ValueError:  # calendar frequencies ('MS', 'W-SUN'): by name
        return pd.tseries.frequencies.to_offset(a) == pd.tseries.frequencies.to_offset(b)


def read_recent(csv: Path, spec: dict) -> tuple[pd.DatetimeIndex, np.ndarray, pd.DatetimeIndex]:
    """The last `seq_len` rows of `csv` in the training columns' order: (their dates [L], values float64 [L, C],
    every date of the file). One clear error for a missing file, column, too few rows, bad dates or bad cells."""
    from train.data.timeseries import DataError, _parse_dates

    csv = Path(csv)
    if not csv.is_file():
        raise FileNotFoundError(f"{csv}: no such file")
    try:
        frame = pd.read_csv(csv, encoding_errors="replace")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeError) as e:
        raise DataError(f"{csv}: not a readable CSV file ({e}).") from e
    columns, seq_len = spec["columns"], spec["seq_len"]
    missing = [c for c in ["date", *columns] if c not in frame.columns]
    if missing:
        raise DataError(
            f"{csv}: no column(s) {', '.join(map(repr, missing))}; the model was trained on {spec['dataset']} with "
            f"columns date, {', '.join(columns)} (extra columns and their order do not matter)"
        )
    if len(frame) < seq_len:
        raise DataError(f"{csv}: {len(frame)} data rows; the model reads the last {seq_len} (its seq_len)")
    dates = _parse_dates(csv, frame["date"])
    recent = frame.iloc[-seq_len:]
    values = np.empty((seq_len, len(columns)), np.float64)
    for c, name in enumerate(columns):
        column = pd.to_numeric(recent[name], errors="coerce").to_numpy(np.float64)
        bad = np.flatnonzero(~np.isfinite(column))
        if len(bad):
            line, cell = len(frame) - seq_len + bad[0] + 2, recent[name].iloc[bad[0]]  # the header is line 1
            what = "an empty or NaN cell" if pd.isna(cell) else f"the cell {str(cell)!r}, not a finite number,"
            raise DataError(
                f"{csv}: column {name!r} has {what} on line {line}, inside the last {seq_len} rows the model reads; "
                "fill or drop it"
            )
        values[:, c] = column
    return dates[-seq_len:], values, dates


def forecast_future(workdir, csv, *, freq: str | None = None) -> tuple[pd.DataFrame, dict]:
    """The next `pred_len` steps after the end of `csv`, in the original units: (table, run description).

    The table has a `date` column (continuing the data's sampling frequency, or `freq`) and one column per
    forecast channel (every channel for features M, the target for S and MS). The description holds the run's
    data spec, the history used (`history_dates`, `history` [seq_len, C] in original units) and the frequency.
    """
    from train.data import timefeatures
    from train.data.timeseries import DataError, StandardScaler, sampling_frequency

    workdir = Path(workdir)
    config, model, variables = load_run(workdir)
    spec = data_spec(workdir, config, model)
    dates, values, all_dates = read_recent(Path(csv), spec)
    data_freq = sampling_frequency(all_dates)
    trained_freq = spec.get("data_frequency")
    if freq is None and data_freq and trained_freq and not _same_step(data_freq, trained_freq):
        raise DataError(
            f"{csv}: rows every {data_freq}, but the model was trained on rows every {trained_freq}; resample the "
            "file (or pass --freq to say what its sampling frequency is)"
        )
    freq = freq or data_freq or trained_freq
    horizon = future_dates(dates, spec["pred_len"], freq)

    scaler = StandardScaler(np.asarray(spec["scaler"]["mean"]), np.asarray(spec["scaler"]["scale"]))
    x = scaler.transform(values).astype(np.float32)[None]
    kind = spec["time_features"]
    if kind is None:
        pred = model.apply(variables, x, train=False)
    else:
        if kind == "timeF":
            marks = timefeatures.time_features(dates, spec["freq"])
        else:
            marks = timefeatures.calendar_features(dates, minute=kind == "calendar_minute")
        pred = model.apply(variables, x, marks[None], train=False)
    pred = scaler.inverse_transform(np.asarray(pred, np.float64)[0])
    scored = slice(*spec["target_slice"])
    table = pd.DataFrame({"date": horizon.astype(str)})
    for name, column in zip(spec["columns"][scored], pred[:, scored].T):
        table[name] = column
    return table, {**spec, "history_dates": dates, "history": values, "frequency": freq}


def plot_future(path: Path, table: pd.DataFrame, run: dict, channels: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(channels), 1, figsize=(9, 2.2 * len(channels)), squeeze=False)
    future = pd.DatetimeIndex(table["date"])
    for ax, name in zip(axes[:, 0], channels):
        ax.plot(run["history_dates"], run["history"][:, run["columns"].index(name)], color="0.4", lw=1, label="history")
        ax.plot(future, table[name], color="tab:red", lw=1.2, label="forecast")
        ax.axvline(future[0], color="0.8", lw=0.8)
        ax.set_ylabel(name)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _forecast_future(args) -> int:
    out = args.out or args.workdir / "forecast"
    stem = Path(args.csv).stem
    csv_out, png_out = out / f"future_{stem}.csv", out / f"future_{stem}.png"
    existing = [str(p) for p in (csv_out, png_out) if p.exists()]
    if existing:
        raise FileExistsError(f"{' and '.join(existing)} already exist(s); nothing is overwritten: pass another --out")
    table, run = forecast_future(args.workdir, args.csv, freq=args.freq or None)
    forecast_columns = list(table.columns[1:])
    channels = _pick_names(forecast_columns, args.channels)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv_out, index=False, float_format="%.6g")
    title = (
        f"{Path(args.csv).name}: the next {len(table)} steps (every {run['frequency']}) after "
        f"{run['history_dates'][-1]}, from its last {run['seq_len']} rows"
    )
    plot_future(png_out, table, run, channels, title)
    span = f"{len(table)} steps, {table['date'].iloc[0]} to {table['date'].iloc[-1]}"
    print(f"wrote {csv_out} ({span}) and {png_out}")
    return 0


def _pick_names(columns: list[str], spec: str) -> list[str]:
    if not spec:
        return columns[:4]
    picked = spec.split(",")
    unknown = [c for c in picked if c not in columns]
    if unknown:
        raise ValueError(f"unknown channel(s) {', '.join(map(repr, unknown))}; forecast channels: {', '.join(columns)}")
    return picked


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.forecast", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, type=Path, help="the training run's workdir")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--channels", default="", help="names or indices, comma-separated (default: the first 4)")
    parser.add_argument("--windows", default="", help="window indices, comma-separated (default: 4 evenly spaced)")
    parser.add_argument("--all-windows", action="store_true", help="CSV with every window, not only the chosen")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: WORKDIR/forecast)")
    parser.add_argument("--csv", type=Path, default=None, help="forecast the steps after the end of this CSV")
    parser.add_argument("--freq", default="", help="with --csv: the sampling frequency (default: inferred)")
    args = parser.parse_args(argv)
    return cli.run(lambda: _forecast_future(args) if args.csv else _forecast(args), parser.prog)


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
