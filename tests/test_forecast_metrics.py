"""Forecasting metrics (per channel, MASE, sMAPE) against numpy, the season table, the naive baselines, and the
new metrics in a tiny training run's results.json."""

import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from trainer_utils import read_metrics, read_results

from train import config as config_lib
from train.baselines import baseline_rows, main, naive_forecast, seasonal_naive_forecast
from train.data.timeseries import data_directory, sampling_frequency
from train.tasks import ForecastingTask, reduce_metrics
from train.tasks.forecasting import choose_season_length, season_length, seasonal_naive_scale


def np_metrics(pred, true, mask, sl, mean, scale, mase_scale):
    """The metrics written out in numpy: only real windows, only the scored channels."""
    real = mask.astype(bool)
    p, t = pred[real][..., sl].astype(np.float64), true[real][..., sl].astype(np.float64)
    err = p - t
    po, to = p * scale[sl] + mean[sl], t * scale[sl] + mean[sl]
    den = np.abs(po) + np.abs(to)
    terms = np.zeros_like(den)
    np.divide(np.abs(po - to), den, out=terms, where=den > 0)
    return {
        "mse": np.mean(err**2),
        "mae": np.mean(np.abs(err)),
        "mse_per_channel": np.mean(err**2, axis=(0, 1)),
        "mae_per_channel": np.mean(np.abs(err), axis=(0, 1)),
        "mase": np.mean(np.abs(err) / mase_scale[sl]),
        "smape": 200 * np.mean(terms),
        "mse_original": np.mean((po - to) ** 2),
        "mae_original": np.mean(np.abs(po - to)),
    }


def _random_case(seed=0, batch=5, horizon=6, channels=4, real=3):
    rng = np.random.default_rng(seed)
    pred = rng.standard_normal((batch, horizon, channels)).astype(np.float32)
    true = rng.standard_normal((batch, horizon, channels)).astype(np.float32)
    mask = (np.arange(batch) < real).astype(np.float32)
    pred[real:], true[real:] = 1e3, -1e3  # padding: must not count
    mean = np.array([0.0, 1.0, -2.0, 3.0])[:channels]
    scale = np.array([1.0, 0.5, 2.0, 4.0])[:channels]
    # Channel 0 (mean 0): a few terms are exactly 0 in original units on both sides, so |y| + |yhat| = 0.
    pred[0, :2, 0] = true[0, :2, 0] = 0.0
    mase_scale = rng.uniform(0.2, 2.0, channels)
    return pred, true, mask, mean, scale, mase_scale


@pytest.mark.parametrize("target", [(0, None), (3, None)], ids=["M", "MS"])
def test_metrics_match_numpy_on_a_padded_batch(target):
    pred, true, mask, mean, scale, mase_scale = _random_case()
    task = ForecastingTask(
        target_start=target[0],
        target_stop=target[1],
        scaler_mean=tuple(mean),
        scaler_scale=tuple(scale),
        mase_scale=tuple(mase_scale),
    )
    got = reduce_metrics(jax.device_get(task.metrics(jnp.asarray(pred), {"y": jnp.asarray(true), "mask": mask})))
    want = np_metrics(pred, true, mask, slice(*target), mean, scale, mase_scale)
    assert set(got) == set(want)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=2e-5, err_msg=name)
    assert isinstance(got["mse_per_channel"], list) and len(got["mse_per_channel"]) == (4 if target[0] == 0 else 1)
    assert all(isinstance(v, float) for v in got["mae_per_channel"])


def test_sums_over_padded_batches_give_the_mean_over_all_windows():
    pred, true, mask, mean, scale, mase_scale = _random_case(seed=1, batch=7, real=7)
    task = ForecastingTask(scaler_mean=tuple(mean), scaler_scale=tuple(scale), mase_scale=tuple(mase_scale))
    sums = None
    for start in (0, 3, 6):  # batches of 3, the last one padded with two copies of window 0
        real = np.arange(start, start + 3) < 7
        rows, batch_mask = np.where(real, np.arange(start, start + 3), 0), real.astype(np.float32)
        out = jax.device_get(task.metrics(jnp.asarray(pred[rows]), {"y": jnp.asarray(true[rows]), "mask": batch_mask}))
        sums = out if sums is None else jax.tree.map(np.add, sums, out)
    got = reduce_metrics(sums)
    want = np_metrics(pred, true, mask, slice(0, None), mean, scale, mase_scale)
    for name in ("mse", "mse_per_channel", "mase", "smape"):
        np.testing.assert_allclose(got[name], want[name], rtol=2e-5, err_msg=name)


def test_flags_and_missing_scales_choose_the_metrics():
    pred, true, mask, mean, scale, _ = _random_case(seed=2)
    batch = {"y": jnp.asarray(true), "mask": mask}
    plain = reduce_metrics(jax.device_get(ForecastingTask().metrics(jnp.asarray(pred), batch)))
    # No scaler: sMAPE of the values as given; no MASE scale: no MASE; no original-scale metrics.
    assert "mase" not in plain and "mse_original" not in plain
    identity = np_metrics(pred, true, mask, slice(0, None), np.zeros(4), np.ones(4), np.ones(4))
    assert plain["smape"] == pytest.approx(identity["smape"], rel=2e-5)
    task = ForecastingTask(scaler_mean=tuple(mean), scaler_scale=tuple(scale), report_original=False)
    quiet = reduce_metrics(jax.device_get(task.metrics(jnp.asarray(pred), batch)))
    assert "mse_original" not in quiet and "smape" in quiet
    with pytest.raises(ValueError, match="mase_scale must be finite and > 0"):
        ForecastingTask(mase_scale=(1.0, 0.0))
    with pytest.raises(ValueError, match="both scaler_mean and scaler_scale"):
        ForecastingTask(scaler_mean=(0.0,))


@pytest.mark.parametrize(
    "freq, m",
    [
        ("h", 24), ("1h", 24), ("60min", 24), ("H", 24), ("30min", 48), ("15min", 96), ("10min", 144), ("D", 7),
        ("W-SUN", 52), ("W-WED", 52), ("MS", 12), ("ME", 12), ("QS-OCT", 4), ("QE", 4),
        ("2h", 1), ("5min", 1), ("B", 1), ("YS", 1), ("2W", 1), (None, 1), ("no such step", 1),
    ],
)  # fmt: skip
def test_season_length_table(freq, m):
    assert season_length(freq) == m


@pytest.mark.parametrize("freq, m", [("h", 24), ("15min", 96), ("10min", 144), ("D", 7), ("W-SUN", 52), ("MS", 12)])
def test_season_length_from_sampled_dates(freq, m):
    dates = pd.date_range("2020-01-05", periods=300, freq=freq)
    assert season_length(sampling_frequency(dates)) == m


def test_choose_season_length(caplog):
    assert choose_season_length(0, "h", 100) == 24
    assert choose_season_length(5, "h", 100) == 5
    with caplog.at_level(logging.WARNING):
        assert choose_season_length(0, "W-SUN", 40) == 1  # 40 weekly rows: no full year plus one
    assert "shorter than one season (52" in caplog.text
    with pytest.raises(ValueError, match=r"task\.season_length 50 needs more than 50 training rows"):
        choose_season_length(50, "h", 50)
    with pytest.raises(ValueError, match=r"task\.season_length must be an integer >= 0"):
        choose_season_length(-1, "h", 50)
    config = config_lib.base_config()
    config.total_steps, config.task.season_length = 1, -2
    with pytest.raises(ValueError, match=r"task\.season_length must be an integer >= 0"):
        config_lib.validate(config)


def test_mase_scale_on_a_tiny_series(caplog):
    series = np.array([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0], [2.0, 5.0, 2.0], [5.0, 5.0, 4.0], [4.0, 5.0, 2.0]])
    # m = 1: |3-1|, |2-3|, |5-2|, |4-5| = 2, 1, 3, 1 -> 7/4; channel 1 is constant -> scale 1 and a warning.
    with caplog.at_level(logging.WARNING):
        scale = seasonal_naive_scale(series, 1, columns=["a", "flat", "c"])
    np.testing.assert_allclose(scale, [7 / 4, 1.0, 2.0])
    assert "flat" in caplog.text and "a," not in caplog.text
    # m = 2: |2-1|, |5-3|, |4-2| = 1, 2, 2 -> 5/3; channel c alternates with period 2 -> 0 -> 1.
    np.testing.assert_allclose(seasonal_naive_scale(series, 2), [5 / 3, 1.0, 1.0])
    with pytest.raises(ValueError, match="season length 5 needs a series of more than 5 rows"):
        seasonal_naive_scale(series, 5)


def test_baseline_forecasts():
    x = np.arange(2 * 5 * 1, dtype=float).reshape(2, 5, 1)
    np.testing.assert_array_equal(naive_forecast(x, 3)[0, :, 0], [4, 4, 4])
    np.testing.assert_array_equal(seasonal_naive_forecast(x, 7, 3)[1, :, 0], [7, 8, 9, 7, 8, 9, 7])
    with pytest.raises(ValueError, match="needs seq_len >= season length 6, got seq_len 5"):
        seasonal_naive_forecast(x, 7, 6)


# ----------------------------------------------------------------------------------------------------------------
# Baselines against a direct numpy computation.


def _write_csv(path, rows=300, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    frame = pd.DataFrame(
        {
            "date": pd.date_range("2021-03-01", periods=rows, freq="h").strftime("%Y-%m-%d %H:%M:%S"),
            "a": 10 + 3 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.3, rows),
            "b": np.cumsum(rng.normal(0, 1, rows)),
            "c": rng.uniform(-1, 1, rows) + (t % 24 < 12),
        }
    )
    frame.to_csv(path, index=False)
    return path


def _np_baselines(values, num_train, test_start, seq_len, pred_len, m):
    """{baseline: metrics} over every test window, from raw values [N, C] (numpy, float64)."""
    mu, sd = values[:num_train].mean(0), values[:num_train].std(0)
    z = (values - mu) / sd
    mase_scale = np.mean(np.abs(z[m:num_train] - z[: num_train - m]), axis=0)
    test = z[test_start:]
    starts = range(len(test) - seq_len - pred_len + 1)
    out = {}
    for name in ("naive", "seasonal_naive"):
        preds, trues = [], []
        for s in starts:
            x, y = test[s : s + seq_len], test[s + seq_len : s + seq_len + pred_len]
            if name == "naive":
                pred = np.tile(x[-1], (pred_len, 1))
            else:
                pred = np.concatenate([x[-m:]] * (pred_len // m + 1))[:pred_len]
            preds.append(pred)
            trues.append(y)
        pred, true = np.stack(preds), np.stack(trues)
        mask = np.ones(len(pred))
        out[name] = np_metrics(pred, true, mask, slice(0, None), mu, sd, mase_scale)
        out[name]["num_examples"] = len(pred)
    return out


def test_baselines_match_numpy_on_a_small_csv(tmp_path):
    path = _write_csv(tmp_path / "tiny.csv")
    seq_len, pred_len = 30, 8
    rows = baseline_rows(str(path), [pred_len], seq_len=seq_len)
    values = pd.read_csv(path).drop(columns="date").to_numpy(np.float64)
    num_train, num_test = int(300 * 0.7), int(300 * 0.2)
    test_start = 300 - num_test - seq_len
    want = _np_baselines(values, num_train, test_start, seq_len, pred_len, m=24)
    assert [r["baseline"] for r in rows] == ["naive", "seasonal_naive"]
    for row in rows:
        assert row["season_length"] == 24 and row["num_examples"] == want[row["baseline"]]["num_examples"] == 53
        for name in ("mse", "mae", "mase", "smape", "mse_per_channel", "mae_per_channel"):
            np.testing.assert_allclose(row[name], want[row["baseline"]][name], rtol=1e-4, err_msg=name)
    # A lookback shorter than the season: the seasonal row says why it is missing.
    short = baseline_rows(str(path), [pred_len], seq_len=20)
    assert "mse" in short[0] and short[1]["missing"] == "needs seq_len >= the season length 24, got seq_len 20"


def test_linear_baseline_matches_a_numpy_least_squares_fit(tmp_path):
    """The closed-form linear baseline against the ridge solution written from the full design matrix of every
    training window and channel (NumPy, float64; rows in the data's units: the normalised lookback and a one, times
    the window's std, against the horizon minus the window's mean), scored on every test window."""
    path = _write_csv(tmp_path / "tiny.csv")
    seq_len, pred_len, ridge = 30, 8, 0.5
    (row,) = baseline_rows(str(path), [pred_len], seq_len=seq_len, baselines=("linear",), ridge=ridge)
    values = pd.read_csv(path).drop(columns="date").to_numpy(np.float64)
    num_train, num_test = int(300 * 0.7), int(300 * 0.2)
    mu, sd = values[:num_train].mean(0), values[:num_train].std(0)
    z = (values - mu) / sd

    def windows(segment):
        design, targets, stats = [], [], []
        for s in range(len(segment) - seq_len - pred_len + 1):
            for c in range(segment.shape[1]):
                x, y = segment[s : s + seq_len, c], segment[s + seq_len : s + seq_len + pred_len, c]
                m, d = x.mean(), np.sqrt(x.var() + 1e-5)
                design.append(np.append((x - m) / d, 1.0) * d)
                targets.append(y - m)
                stats.append((m, d, y))
        return np.array(design), np.array(targets), stats

    design, targets, _ = windows(z[:num_train])
    weights = np.linalg.solve(design.T @ design + ridge * np.eye(seq_len + 1), design.T @ targets)
    test_design, _, stats = windows(z[300 - num_test - seq_len :])
    pred = np.array([p + m for p, (m, _, _) in zip(test_design @ weights, stats, strict=True)])  # rows carry d
    true = np.array([y for _, _, y in stats])
    channels = values.shape[1]
    to_windows = lambda a: a.reshape(-1, channels, pred_len).transpose(0, 2, 1)
    pred, true = to_windows(pred), to_windows(true)
    mase_scale = np.mean(np.abs(z[24:num_train] - z[: num_train - 24]), axis=0)
    want = np_metrics(pred, true, np.ones(len(pred)), slice(0, None), mu, sd, mase_scale)
    assert row["baseline"] == "linear" and row["ridge"] == ridge and row["num_examples"] == len(pred) == 53
    for name in ("mse", "mae", "mase", "smape", "mse_per_channel"):
        np.testing.assert_allclose(row[name], want[name], rtol=1e-4, err_msg=name)
    assert row["mse"] < 0.5 * baseline_rows(str(path), [pred_len], seq_len=seq_len)[0]["mse"]  # beats naive here


def test_baselines_on_etth1_match_numpy_and_the_published_repeat_figures():
    rows = {r["baseline"]: r for r in baseline_rows("ETTh1", [96])}
    values = pd.read_csv(data_directory() / "ETTh1.csv").drop(columns="date").to_numpy(np.float64)
    month = 30 * 24
    want = _np_baselines(values[: 20 * month], 12 * month, 16 * month - 96, 96, 96, m=24)
    for baseline, row in rows.items():
        assert row["num_examples"] == 2785
        for name in ("mse", "mae", "mase", "smape"):
            assert row[name] == pytest.approx(want[baseline][name], rel=1e-4), (baseline, name)
    # The "Repeat" row of the ETTh1-96 benchmark tables (e.g. DLinear, Zeng et al. 2023), to their 3 decimals.
    assert rows["naive"]["mse"] == pytest.approx(1.295, abs=1e-3)
    assert rows["naive"]["mae"] == pytest.approx(0.713, abs=1e-3)


def test_cli_writes_the_table_and_json(tmp_path, capsys):
    path = _write_csv(tmp_path / "tiny.csv")
    out = tmp_path / "sub" / "rows.json"
    assert main(["--datasets", str(path), "--horizons", "8,4", "--seq-len", "24", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| tiny | 8 | seasonal_naive |" in printed and "| tiny | naive |" in printed
    rows = json.loads(out.read_text())
    assert [(r["pred_len"], r["baseline"]) for r in rows] == [
        (8, "naive"), (8, "seasonal_naive"), (4, "naive"), (4, "seasonal_naive")
    ]  # fmt: skip


@pytest.mark.parametrize(
    "args, message",
    [
        (["--datasets", "ETTh9"], "Unknown data set 'ETTh9'"),
        (["--datasets", ",", "--horizons", "96"], "--datasets names no data set"),
        (["--datasets", "ETTh1", "--horizons", "96,abc"], "--horizons must be integers >= 1"),
        (["--datasets", "ETTh1", "--seq-len", "0"], "--seq-len must be integers >= 1"),
        (["--datasets", "ETTh1", "--season-length", "-1"], "--season-length must be integers >= 0"),
        (["--datasets", "ETTh1", "--baselines", "naive,lstm"], "--baselines must name some of"),
        (["--datasets", "ETTh1", "--ridge", "-1"], "--ridge must be a finite number >= 0"),
        (["--datasets", "ETTh1", "--horizons", "96", "--season-length", "9000"], "task.season_length 9000"),
    ],
)
def test_cli_errors_are_one_line(args, message, tmp_path, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m train.baselines: error: ") and "\n" not in err
    assert message in err


def test_cli_out_must_not_be_a_directory(tmp_path, capsys):
    assert main(["--datasets", "ETTh1", "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# Through the trainer.


def test_tiny_training_run_reports_the_new_metrics(tmp_path):
    from train import train_and_evaluate
    from train.configs import softs

    path = _write_csv(tmp_path / "tiny.csv", rows=400)
    c = softs.get_config("quicktest")
    c.data.dataset = str(path)
    c.data.num_threads = 1
    c.model.update(seq_len=24, pred_len=8, d_model=8, d_core=4, d_ff=8)
    c.batch_size, c.eval_batch_size = 16, 32
    c.total_steps, c.eval_every_steps, c.log_every_steps = 2, 2, 1
    c.checkpoint.async_save = False
    workdir = tmp_path / "run"
    train_and_evaluate(c, workdir)
    test = read_results(workdir)["test_metrics"]
    assert {"mse", "mae", "mase", "smape", "mse_per_channel", "mae_per_channel"} <= set(test)
    assert "mse_original" not in test  # task.metrics_original_scale is off
    assert len(test["mse_per_channel"]) == 3 and all(isinstance(v, float) for v in test["mae_per_channel"])
    # Every channel has the same number of terms: the overall means are the means of the per-channel ones.
    assert np.mean(test["mse_per_channel"]) == pytest.approx(test["mse"], rel=1e-5)
    assert np.mean(test["mae_per_channel"]) == pytest.approx(test["mae"], rel=1e-5)
    assert np.isfinite(test["mase"]) and 0 < test["smape"] <= 200
    # The scalar writer gets the scalars only.
    assert read_metrics(workdir, "test/mase") and read_metrics(workdir, "val/smape")
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert not any(k.endswith("_per_channel") for row in rows for k in row)
