"""`python -m train.forecast --csv`: forecasts of the steps after the end of a user's CSV, from a trained run (the
`softs_run` fixture of conftest.py: SOFTS quicktest on ETTh1)."""

import json

import numpy as np
import pandas as pd
import pytest

from train.data.timeseries import data_directory
from train.forecast import forecast_future, future_dates, load_run, open_split, predict
from train.forecast import main as forecast_main


def _etth1() -> pd.DataFrame:
    return pd.read_csv(data_directory() / "ETTh1.csv")


def _one_line_error(argv, capsys) -> str:
    assert forecast_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_the_forecast_after_a_csv_equals_the_trainers_prediction_for_that_window(softs_run, tmp_path):
    """The last test window: its 96 input rows cut from ETTh1.csv (columns shuffled, one extra) must give the
    prediction the evaluation path makes for it, in original units, dated with the rows that follow it."""
    workdir, _ = softs_run
    config, model, variables = load_run(workdir)
    test = open_split(config, model, "test")
    last = len(test) - 1
    expected = test.scaler.inverse_transform(predict(model, variables, test)[last])

    raw = _etth1()
    end = test.rows[0] + last + test.seq_len  # the file row after the window's last input row
    user = raw.iloc[end - 300 : end]
    user = user[["OT", "date", *reversed(raw.columns[1:-1])]].assign(notes="x")
    user.to_csv(tmp_path / "recent.csv", index=False)

    table, run = forecast_future(workdir, tmp_path / "recent.csv")
    assert list(table.columns) == ["date", *test.columns] and len(table) == test.pred_len
    np.testing.assert_allclose(table[list(test.columns)].to_numpy(), expected, rtol=2e-5, atol=2e-5)
    assert list(table["date"]) == list(raw["date"].iloc[end : end + test.pred_len])
    assert run["frequency"] == "h"

    # The scaler is the training one, saved with the model: not refitted on the 300 new rows.
    spec = json.loads((workdir / "model" / "metadata.json").read_text())["data"]
    train_rows = raw.iloc[: 12 * 30 * 24, 1:]
    np.testing.assert_allclose(spec["scaler"]["mean"], train_rows[list(test.columns)].mean(), rtol=1e-10)
    np.testing.assert_allclose(spec["scaler"]["scale"], train_rows[list(test.columns)].std(ddof=0), rtol=1e-10)


@pytest.mark.parametrize("freq", ["h", "15min", "10min", "D", "W-SUN", "MS"])
def test_future_timestamps_continue_the_datas_frequency(freq):
    longer = pd.date_range("2021-03-07", periods=60, freq=freq)  # hourly, 15-minute, 10-minute, daily, weekly, monthly
    assert list(future_dates(longer[:50], 10)) == list(longer[50:])


def test_the_cli_writes_the_forecast_and_its_plot_and_never_overwrites(softs_run, tmp_path, capsys):
    workdir, _ = softs_run
    _etth1().iloc[-200:].to_csv(tmp_path / "latest.csv", index=False)
    out = tmp_path / "out"
    argv = ["--workdir", str(workdir), "--csv", str(tmp_path / "latest.csv"), "--out", str(out)]
    assert forecast_main([*argv, "--channels", "OT"]) == 0
    table = pd.read_csv(out / "future_latest.csv")
    assert table["date"].iloc[0] == "2018-06-26 20:00:00" and len(table) == 96  # ETTh1 ends 2018-06-26 19:00
    assert np.isfinite(table.iloc[:, 1:].to_numpy()).all()
    assert (out / "future_latest.png").stat().st_size > 10_000
    (out / "future_latest.csv").write_text("edited by the user")
    err = _one_line_error(argv, capsys)
    assert "already exist" in err and (out / "future_latest.csv").read_text() == "edited by the user"


def test_bad_csvs_get_one_clear_line_each(softs_run, tmp_path, capsys):
    workdir, _ = softs_run
    good = _etth1().iloc[-150:].reset_index(drop=True)
    nan = good.copy()
    nan.loc[140, "HULL"] = np.nan
    early_nan = good.copy()
    early_nan.loc[10, "HULL"] = np.nan  # before the last 96 rows: never read, so allowed
    text = good.copy()
    text["LULL"] = text["LULL"].astype(object)
    text.loc[149, "LULL"] = "oops"
    dates = good.copy()
    dates.loc[100, "date"] = "not a date"
    quarter_hour = good.assign(date=pd.date_range("2020-01-01", periods=len(good), freq="15min").astype(str))
    cases = {
        "nan": (nan, "column 'HULL' has an empty or NaN cell on line 142, inside the last 96 rows"),
        "text": (text, "column 'LULL' has the cell 'oops', not a finite number, on line 151"),
        "short": (good.iloc[-50:], "50 data rows; the model reads the last 96"),
        "missing": (good.drop(columns=["MULL", "OT"]), "no column(s) 'MULL', 'OT'"),
        "dates": (dates, "cannot parse the date 'not a date' on line 102"),
        "quarter_hour": (quarter_hour, "rows every 15min, but the model was trained on rows every h"),
    }
    for name, (frame, needle) in cases.items():
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        err = _one_line_error(["--workdir", str(workdir), "--csv", str(tmp_path / f"{name}.csv")], capsys)
        assert needle in err, (name, err)
    err = _one_line_error(["--workdir", str(workdir), "--csv", str(tmp_path / "absent.csv")], capsys)
    assert "absent.csv: no such file" in err

    early_nan.to_csv(tmp_path / "early_nan.csv", index=False)
    table, _ = forecast_future(workdir, tmp_path / "early_nan.csv")
    assert np.isfinite(table.iloc[:, 1:].to_numpy()).all()
    assert not (workdir / "forecast" / "future_nan.csv").exists()  # failures write nothing
