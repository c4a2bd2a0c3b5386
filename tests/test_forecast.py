"""A SOFTS quicktest on ETTh1 (from $MIXER_ZOO_DATA) through the trainer (the `softs_run` fixture of conftest.py),
then `python -m train.forecast` on it."""

import json

import numpy as np
import pandas as pd
import pytest
from trainer_utils import read_results

from train.data.timeseries import data_directory
from train.forecast import main as forecast_main


def test_softs_quicktest_trains_and_evaluates(softs_run):
    workdir, results = softs_run
    assert results["traces"] == {"train_step": 1, "eval_step": 1}
    assert results["test_metrics"]["num_examples"] == 2785  # every ETTh1 test window at lookback 96, horizon 96
    assert results["val_metrics"]["num_examples"] == 2785
    # The run validates at steps 10 and 20 and tests the better of the two checkpoints.
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    val = {row["step"]: row["val/mse"] for row in rows if "val/mse" in row}
    assert sorted(val) == [10, 20]
    best = min(val, key=val.get)
    assert read_results(workdir)["evaluated_step"] == best
    assert results["val_metrics"]["mse"] == pytest.approx(val[best], rel=1e-12)
    # 20 steps must already beat the trivial forecast of the training mean (zero on the normalised scale),
    # computed here independently from the CSV under the standard split (12/4/4 months, scaler fit on train).
    assert results["test_metrics"]["mse"] < _mean_forecast_mse()


def _mean_forecast_mse(seq_len=96, pred_len=96):
    values = pd.read_csv(data_directory() / "ETTh1.csv").iloc[:, 1:].to_numpy(np.float64)
    month = 30 * 24
    train = values[: 12 * month]
    scaled = (values - train.mean(0)) / train.std(0)
    test = scaled[16 * month - seq_len : 20 * month]
    targets = np.stack([test[i + seq_len : i + seq_len + pred_len] for i in range(len(test) - seq_len - pred_len + 1)])
    assert len(targets) == 2785
    return float(np.mean(targets**2))  # ~1.11; a model that learned nothing sits at or above it


def test_forecast_writes_plot_csv_and_matching_metrics(softs_run):
    workdir, results = softs_run
    out = workdir / "forecast"
    assert forecast_main(["--workdir", str(workdir), "--channels", "OT,HUFL", "--windows", "0,2784"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    np.testing.assert_allclose(metrics["mse"], results["test_metrics"]["mse"], rtol=1e-5)
    np.testing.assert_allclose(metrics["mae"], results["test_metrics"]["mae"], rtol=1e-5)
    assert (out / "forecast.png").stat().st_size > 10_000

    table = pd.read_csv(out / "forecast.csv")
    assert len(table) == 2 * 96 and sorted(set(table["window"])) == [0, 2784]
    # The truth in original units is the file's own values: test window 0 predicts rows 11520.. of ETTh1.csv.
    raw = pd.read_csv(data_directory() / "ETTh1.csv")
    first = table[table["window"] == 0]
    np.testing.assert_allclose(first["OT_true"], raw["OT"].to_numpy()[11520 : 11520 + 96], rtol=1e-5, atol=1e-4)
    assert first["date"].iloc[0] == raw["date"][11520]
    assert np.isfinite(first["OT_pred"]).all()


def test_forecast_rejects_bad_arguments(softs_run, tmp_path, capsys):
    workdir, _ = softs_run
    for argv, needle in (
        (["--workdir", str(workdir), "--channels", "XYZ"], "unknown channel 'XYZ'"),
        (["--workdir", str(workdir), "--windows", "5000"], "out of range"),
        (["--workdir", str(tmp_path)], "config.json not found"),
    ):
        assert forecast_main(argv) == 2  # one line on stderr, no traceback
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("python -m train.forecast: error: ") and needle in err


def test_forecasting_run_records_only_forecasting_hyper_parameters(softs_run):
    workdir, _ = softs_run
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    (hparams,) = [row["hparams"] for row in rows if "hparams" in row]
    assert hparams["model_name"] == "softs" and hparams["data.features"] == "M"
    image_only = ("data.augment", "data.flip", "data.randaugment_ops", "task.mixup_alpha", "task.label_smoothing")
    assert not [k for k in image_only if k in hparams]
