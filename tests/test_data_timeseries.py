"""Tests of the forecasting data: the protocol's numbers, scaling, windows, marks, errors and downloads."""

import datetime
import hashlib
import os
import pathlib
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import StandardScaler as SkScaler

from train.data import timefeatures
from train.data import timeseries as ts

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _data_env(monkeypatch):
    if not os.environ.get(ts.ENV_VAR):
        monkeypatch.setenv(ts.ENV_VAR, str(REPO.parent / "shared" / "data"))


def shared(file: str) -> pathlib.Path:
    return pathlib.Path(os.environ[ts.ENV_VAR]) / file


def build(name, split, seq_len=96, pred_len=96, **kw):
    return ts.forecasting_dataset(name, split, seq_len, pred_len, download=False, **kw)


def write_csv(path, rows, header="date,a,OT", newline="\n"):
    path.write_bytes((newline.join([header, *rows]) + newline).encode())
    return path


def hourly_rows(n, start="2021-01-01"):
    dates = pd.date_range(start, periods=n, freq="h")
    return [f"{d:%Y-%m-%d %H:%M:%S},{i % 7},{i * 0.5}" for i, d in enumerate(dates)]


# --- The protocol's numbers (shared/data/README.md, "Standard split sizes") --------------------------------------


@pytest.mark.parametrize(
    "name, seq_len, pred_len, expected",
    [
        ("ETTh1", 96, 96, (8449, 2785, 2785)),
        ("ETTh1", 96, 720, (7825, 2161, 2161)),
        ("ETTh2", 96, 96, (8449, 2785, 2785)),
        ("ETTh2", 96, 720, (7825, 2161, 2161)),
        ("ETTm1", 96, 96, (34369, 11425, 11425)),
        ("ETTm1", 96, 720, (33745, 10801, 10801)),
        ("ETTm2", 96, 96, (34369, 11425, 11425)),
        ("ETTm2", 96, 720, (33745, 10801, 10801)),
        ("Weather", 96, 96, (36696, 5175, 10444)),
        ("weather", 96, 720, (36072, 4551, 9820)),
        ("Exchange", 96, 96, (5120, 665, 1422)),
        ("exchange_rate", 96, 720, (4496, 41, 798)),
        ("ILI", 36, 24, (617, 74, 170)),
        ("national_illness", 36, 60, (581, 38, 134)),
    ],
)
def test_window_counts(name, seq_len, pred_len, expected):
    assert tuple(len(build(name, s, seq_len, pred_len)) for s in ("train", "val", "test")) == expected


@pytest.mark.parametrize("rows, expected", [(26304, (18221, 2537, 5165)), (17544, (12089, 1661, 3413))])
def test_ecl_and_traffic_split_sizes(rows, expected):
    # ECL and Traffic are not available here: their row counts under the same rule give the standard figures.
    ranges = ts.split_rows(rows, "ratio", 96)
    assert tuple(ranges[s][1] - ranges[s][0] - 96 - 96 + 1 for s in ("train", "val", "test")) == expected


@pytest.mark.parametrize(
    "name, train, val, test",
    [
        ("etth1", (0, 8640), (8640 - 96, 11520), (11520 - 96, 14400)),
        ("ETTM2", (0, 34560), (34560 - 96, 46080), (46080 - 96, 57600)),
        ("WEATHER", (0, 36887), (36887 - 96, 42157), (42157 - 96, 52696)),
        ("illness", (0, 676), (676 - 96, 773), (773 - 96, 966)),
    ],
)
def test_split_rows(name, train, val, test):
    ds = {s: build(name, s, 96, 1) for s in ("train", "val", "test")}
    assert [ds[s].rows for s in ("train", "val", "test")] == [train, val, test]
    assert all(d.train_rows == train for d in ds.values())


def test_path_of_a_benchmark_file_follows_its_protocol():
    assert len(ts.forecasting_dataset(str(shared("ETTh1.csv")), "test", 96, 96)) == 2785
    assert len(ts.forecasting_dataset(shared("weather.csv"), "test", 96, 96)) == 10444


def test_last_window_reaches_the_end_of_the_segment():
    ds = build("ETTh1", "test")
    table = ts.read_table(shared("ETTh1.csv"))
    last = ds[len(ds) - 1]
    assert ds.dates[-1] == table.dates[14399]
    np.testing.assert_array_equal(last["y"][-1], ds.data[-1])
    with pytest.raises(IndexError):
        ds[len(ds)]


# --- Scaling ---------------------------------------------------------------------------------------------------------


def reference(file, train_end, columns=None):
    """Independent computation: pandas + scikit-learn, as TSLib does it."""
    frame = pd.read_csv(shared(file))
    values = frame[columns or list(frame.columns[1:])].to_numpy()
    scaler = SkScaler().fit(values[:train_end])
    return scaler, scaler.transform(values), pd.to_datetime(frame["date"])


@pytest.mark.parametrize("file, name, train_end", [("ETTh1.csv", "ETTh1", 8640), ("weather.csv", "weather", 36887)])
def test_scaler_matches_scikit_learn_on_train_rows(file, name, train_end):
    sk, _, _ = reference(file, train_end)
    for split in ("train", "test"):
        scaler = build(name, split).scaler
        np.testing.assert_allclose(scaler.mean, sk.mean_, rtol=1e-12)
        np.testing.assert_allclose(scaler.scale, sk.scale_, rtol=1e-12)


def test_inverse_transform_round_trip():
    scaler = build("ETTh1", "val").scaler
    x = np.random.default_rng(0).normal(3.0, 10.0, (5, 11, 7))
    np.testing.assert_allclose(scaler.inverse_transform(scaler.transform(x)), x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(scaler.transform(scaler.mean), np.zeros(7), atol=1e-12)
    target = scaler.select(slice(6, 7))
    np.testing.assert_allclose(target.inverse_transform(x[..., 6:]), scaler.inverse_transform(x)[..., 6:])


@pytest.mark.parametrize("file, train_end", [("ETTh1.csv", 8640), ("exchange_rate.csv", 5311)])
def test_val_and_test_rows_do_not_change_the_scaler(tmp_path, file, train_end):
    frame = pd.read_csv(shared(file))
    values = frame.columns[1:]
    frame.loc[train_end:, values] = frame.loc[train_end:, values] * 7.0 + 100.0
    frame.to_csv(tmp_path / file, index=False)
    for split in ("train", "val", "test"):
        orig, altered = build(shared(file), split), build(tmp_path / file, split)
        np.testing.assert_array_equal(orig.scaler.mean, altered.scaler.mean)
        np.testing.assert_array_equal(orig.scaler.scale, altered.scaler.scale)
        assert len(orig) == len(altered)
    assert not np.allclose(build(shared(file), "test").data, build(tmp_path / file, "test").data)


def test_scale_false_keeps_raw_values():
    ds = build("ETTh1", "train", scale=False)
    raw = pd.read_csv(shared("ETTh1.csv")).iloc[:8640, 1:].to_numpy(np.float32)
    np.testing.assert_array_equal(ds.data, raw)
    np.testing.assert_array_equal(ds.scaler.inverse_transform(ds.data), ds.data)


# --- Window contents ------------------------------------------------------------------------------------------------


def ref_time_features(d: datetime.datetime, minute: bool):
    feats = [d.hour / 23 - 0.5, d.weekday() / 6 - 0.5, (d.day - 1) / 30 - 0.5, (d.timetuple().tm_yday - 1) / 365 - 0.5]
    return [d.minute / 59 - 0.5, *feats] if minute else feats


@pytest.mark.parametrize(
    "file, name, split, start, train_end",
    [
        ("ETTh1.csv", "ETTh1", "test", 11520 - 96, 8640),
        ("ETTm1.csv", "ETTm1", "val", 34560 - 96, 34560),
        ("weather.csv", "Weather", "val", 36887 - 96, 36887),
        ("exchange_rate.csv", "exchange", "train", 0, 5311),
    ],
)
def test_windows_are_rows_of_the_scaled_series(file, name, split, start, train_end):
    seq_len, pred_len = 96, 48
    ds = build(name, split, seq_len, pred_len, freq="t")
    _, scaled, dates = reference(file, train_end)
    picks = [0, 1, 137, len(ds) - 1]
    for i in picks:
        item, s = ds[i], start + i
        assert item["x"].dtype == np.float32 and item["x"].shape == (seq_len, ds.num_channels)
        np.testing.assert_allclose(item["x"], scaled[s : s + seq_len], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(item["y"], scaled[s + seq_len : s + seq_len + pred_len], rtol=1e-6, atol=1e-6)
        stamps = dates[s : s + seq_len + pred_len]
        marks = np.concatenate([item["x_mark"], item["y_mark"]])
        np.testing.assert_allclose(marks, [ref_time_features(d, True) for d in stamps], atol=1e-6)
    batch = ds.get_batch(picks)
    for key in ("x", "y", "x_mark", "y_mark"):
        np.testing.assert_array_equal(batch[key], np.stack([ds[i][key] for i in picks]))
    assert batch["x"].shape == (4, seq_len, ds.num_channels) and batch["y"].shape == (4, pred_len, ds.num_channels)


def test_get_batch_bounds():
    ds = build("ILI", "test", 36, 24)
    assert ds.get_batch(np.array([], dtype=int))["x"].shape == (0, 36, 7)
    np.testing.assert_array_equal(ds.get_batch([-1])["y"][0], ds[len(ds) - 1]["y"])
    with pytest.raises(IndexError):
        ds.get_batch([0, len(ds)])


def test_dataset_attributes():
    ds = build("ETTh1", "val", 96, 192, features="MS")
    assert (ds.name, ds.split, ds.seq_len, ds.pred_len, ds.features) == ("ETTh1", "val", 96, 192, "MS")
    assert ds.path == shared("ETTh1.csv")
    assert ds.columns == ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
    assert (ds.num_channels, ds.num_time_features) == (7, 4)
    assert ds.target_slice == slice(6, 7)
    item = ds[0]
    assert item["x"].shape == (96, 7) and item["y"].shape == (192, 7)
    assert item["x_mark"].shape == (96, 4) and item["y_mark"].shape == (192, 4)
    assert {a.dtype for a in item.values()} == {np.dtype(np.float32)}


def test_csv_is_parsed_once_per_modification(tmp_path):
    path = write_csv(tmp_path / "x.csv", hourly_rows(50))
    first = ts.read_table(path)
    assert ts.read_table(path) is first
    write_csv(path, hourly_rows(60))
    os.utime(path, ns=(1, 1))
    assert len(ts.read_table(path).values) == 60


# --- Time features --------------------------------------------------------------------------------------------------


def test_time_feature_ranges_and_known_values():
    ds = build("ETTm1", "train", freq="t")
    assert ds.num_time_features == 5
    assert ds.marks.min() >= -0.5 and ds.marks.max() <= 0.5
    # 2016-07-01 00:15 is a Friday, day 183 of a leap year; order: minute, hour, weekday, day of month, day of year.
    np.testing.assert_allclose(ds.marks[1], [15 / 59 - 0.5, -0.5, 4 / 6 - 0.5, -0.5, 182 / 365 - 0.5], atol=1e-7)
    hourly = build("ETTm1", "train")  # the default freq 'h' drops the minute
    np.testing.assert_array_equal(hourly.marks, ds.marks[:, 1:])
    assert build("ETTh1", "test").marks.shape == (2880 + 96, 4)
    # Extremes are reached: hour 23 -> 0.5, Sunday -> 0.5, Dec 31 of a leap year -> 365/365 - 0.5.
    marks = timefeatures.time_features(pd.to_datetime(["2016-12-31 23:59:00", "2017-01-01 00:00:00"]), "t")
    np.testing.assert_allclose(marks, [[0.5, 0.5, 5 / 6 - 0.5, 0.5, 0.5], [-0.5, -0.5, 0.5, -0.5, -0.5]], atol=1e-7)


def test_time_feature_frequencies():
    dates = pd.date_range("2020-02-03", periods=3, freq="D")
    # 2020-02-03 is a Monday, day 34 of the year: weekday, day of month, day of year.
    np.testing.assert_allclose(
        timefeatures.time_features(dates, "d")[0], [-0.5, 2 / 30 - 0.5, 33 / 365 - 0.5], atol=1e-7
    )
    assert timefeatures.time_features(dates, "15min").shape == (3, 5)
    assert timefeatures.time_features(dates, "W").shape == (3, 2)
    assert timefeatures.time_features(dates, "s").shape == (3, 6)
    np.testing.assert_allclose(timefeatures.time_features(dates, "m")[:, 0], 1 / 11 - 0.5)
    with pytest.raises(ValueError, match="Unsupported time-feature frequency 'fortnight'"):
        timefeatures.freq_unit("fortnight")
    with pytest.raises(ValueError, match="frequency"):
        build("ETTh1", "train", freq="x")


def test_integer_calendar_marks_and_no_marks():
    hourly = build("ETTh1", "train", timeenc=False)
    np.testing.assert_array_equal(hourly.marks[:2], [[7, 1, 4, 0], [7, 1, 4, 1]])  # month, day, weekday, hour
    minute = build("ETTm1", "train", timeenc=False)
    np.testing.assert_array_equal(minute.marks[1], [7, 1, 4, 0, 1])  # + minute // 15 at 00:15
    assert minute.marks[:, 4].max() == 3
    none = build("ETTh1", "train", timeenc=None)
    assert none.num_time_features == 0 and set(none[0]) == {"x", "y"} and set(none.get_batch([0])) == {"x", "y"}


# --- Feature modes --------------------------------------------------------------------------------------------------


def test_features_s_and_ms_on_ett():
    m, s, ms = (build("ETTh2", "test", features=f) for f in ("M", "S", "MS"))
    assert s.columns == ("OT",) and s.num_channels == 1 and s.target_slice == slice(0, 1)
    np.testing.assert_allclose(s.data, m.data[:, -1:], rtol=1e-6)
    assert s.scaler.mean.shape == (1,)
    np.testing.assert_array_equal(ms.data, m.data)
    assert ms.target_slice == slice(6, 7) and m.target_slice == slice(0, 7)
    assert ms[0]["y"].shape == (96, 7)


def test_target_is_moved_last_in_custom_csv(tmp_path):
    dates = pd.date_range("2021-01-01", periods=100, freq="h")
    rows = [f"{d},{i},{-i},{i * i}" for i, d in enumerate(dates)]
    path = write_csv(tmp_path / "custom.csv", rows, header="date,a,OT,b")
    m = ts.forecasting_dataset(path, "train", 8, 4, scale=False)
    assert m.columns == ("a", "b", "OT")
    np.testing.assert_array_equal(m[3]["x"][0], [3, 9, -3])
    assert len(m) == 70 - 8 - 4 + 1
    s = ts.forecasting_dataset(path, "test", 8, 4, features="S", target="b", scale=False)
    assert s.columns == ("b",)
    np.testing.assert_array_equal(s[0]["x"][:, 0], np.arange(72, 80) ** 2)  # test starts at 100 - 20 - 8
    ms = ts.forecasting_dataset(path, "val", 8, 2, features="MS", target="a")
    assert ms.columns == ("OT", "b", "a") and ms.target_slice == slice(2, 3)


# --- Line endings and date formats ----------------------------------------------------------------------------------


def test_crlf_and_date_formats(tmp_path):
    iso = [f"2020-01-{d:02d} {h:02d}:00:00,{d},{h}" for d in range(1, 21) for h in (0, 12)]
    slash = [f"2020/1/{d} {h}:00,{d},{h}" for d in range(1, 21) for h in (0, 12)]
    mixed = [a if i % 2 else b for i, (a, b) in enumerate(zip(iso, slash))]
    paths = [
        write_csv(tmp_path / "lf.csv", iso),
        write_csv(tmp_path / "crlf.csv", iso, newline="\r\n"),
        write_csv(tmp_path / "slash.csv", slash, newline="\r\n"),
        write_csv(tmp_path / "mixed.csv", mixed),
    ]
    sets = [ts.forecasting_dataset(p, "test", 4, 2) for p in paths]
    assert all(d.columns == ("a", "OT") for d in sets)
    for other in sets[1:]:
        np.testing.assert_array_equal(other.data, sets[0].data)
        np.testing.assert_array_equal(other.marks, sets[0].marks)
        assert (other.dates == sets[0].dates).all()


def test_lf_copy_has_the_recorded_digest_and_loads_identically(tmp_path):
    lf = tmp_path / "exchange_rate.csv"
    lf.write_bytes(shared("exchange_rate.csv").read_bytes().replace(b"\r\n", b"\n"))
    assert sha256(lf) == ts.SOURCES["exchange_rate.csv"].sha256[1]
    a, b = build(lf, "test"), build("exchange", "test")
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.marks, b.marks)


def test_real_files_with_crlf_and_slash_dates():
    assert b"\r\n" in shared("exchange_rate.csv").read_bytes()[:200]
    exchange = ts.read_table(shared("exchange_rate.csv"))
    assert exchange.dates[0] == pd.Timestamp("1990-01-01") and exchange.dates[-1] == pd.Timestamp("2010-10-10")
    assert exchange.columns == ("0", "1", "2", "3", "4", "5", "6", "OT") and exchange.values.shape == (7588, 8)
    weather = ts.read_table(shared("weather.csv"))
    assert weather.columns[-1] == "OT" and len(weather.columns) == 21
    assert not any("\r" in c for c in weather.columns)
    assert weather.dates[0] == pd.Timestamp("2020-01-01 00:10:00")


# --- Bad input ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, rows, message",
    [
        ("time,a,OT", ["2020-01-01,1,2"], r"no 'date' column \(columns: time, a, OT\)"),
        ("date,a,OT", ["2020-01-01,1,2", "2020-01-02,x1,3"], r"column 'a' has a non-numeric cell 'x1' on line 3"),
        ("date,a,OT", ["2020-01-01,1,2", "2020-01-02,2,", "2020-01-03,3,nan"], r"column 'OT' has 2 empty"),
        ("date,a,OT", ["2020-01-01,1,2", "not a date,2,3"], r"cannot parse the date 'not a date' on line 3"),
        ("date,a,OT", ["2020-01-01,1,2", "2020-01-02,2,3", ",3,4"], r"cannot parse an empty date on line 4"),
        ("date,a,OT", [], r"no data rows"),
        ("date", ["2020-01-01"], r"no value columns"),
        (
            "date,a,OT",
            ["2020-01-01,1,2", "2020-01-03,2,3", "2020-01-02,3,4"],
            r"dates must be in time order; line 4 \(2020-01-02\) comes before line 3 \(2020-01-03\)",
        ),
        ("date,a,OT", ["2020-01-01,1,2", "2020-01-02,1e39,3"], r"column 'a' has 1 value\(s\) too large for float32"),
    ],
)
def test_bad_csv_raises_naming_file_and_problem(tmp_path, header, rows, message):
    path = write_csv(tmp_path / "bad.csv", rows, header=header)
    with pytest.raises(ts.DataError, match=r"bad\.csv: " + message):
        ts.forecasting_dataset(path, "train", 1, 1)


def test_repeated_dates_are_reported_and_kept_in_file_order(tmp_path, caplog):
    """The standard weather.csv repeats one timestamp; such files load, and the log says where."""
    rows = hourly_rows(30)
    rows[5] = rows[4].split(",")[0] + "," + rows[5].split(",", 1)[1]
    path = write_csv(tmp_path / "repeat.csv", rows)
    with caplog.at_level("WARNING"):
        table = ts.read_table(path)
    assert len(table.dates) == 30 and table.dates[4] == table.dates[5]
    assert "1 repeated date(s)" in caplog.text and "on lines 6 and 7" in caplog.text


def test_a_named_data_directory_that_does_not_exist_is_an_error_and_not_created(tmp_path, monkeypatch):
    missing = tmp_path / "mispelled"
    with pytest.raises(ts.DataError, match=r"mispelled \(from data\.data_dir\) does not exist"):
        ts.resolve("ETTh1", data_dir=missing)
    monkeypatch.setenv(ts.ENV_VAR, str(missing))
    with pytest.raises(ts.DataError, match=r"mispelled \(from \$MIXER_ZOO_DATA\) does not exist"):
        ts.resolve("ETTh1")
    assert not missing.exists()


def test_split_too_short(tmp_path):
    path = write_csv(tmp_path / "short.csv", hourly_rows(30))  # 21 / 3 / 6 rows
    assert len(ts.forecasting_dataset(path, "test", 8, 6)) == 1
    with pytest.raises(ts.DataError, match=r"short\.csv: the test split .* too short for seq_len=8 \+ pred_len=7"):
        ts.forecasting_dataset(path, "test", 8, 7)
    with pytest.raises(ts.DataError, match=r"short\.csv: the val split .* too short for seq_len=30"):
        ts.forecasting_dataset(path, "val", 30, 4)
    ett = write_csv(tmp_path / "ETTh1.csv", hourly_rows(500))
    with pytest.raises(ts.DataError, match=r"ETTh1\.csv: 500 rows, but the ETTh1 protocol reads rows up to 14400"):
        ts.forecasting_dataset(ett, "test", 96, 96)


def test_bad_arguments(tmp_path):
    with pytest.raises(ts.DataError, match=r"Unknown data set 'ETTh3'\. Did you mean 'ETTh2' or 'ETTh1'"):
        build("ETTh3", "train")
    with pytest.raises(ts.DataError, match=r"Unknown data set 'wether'\. Did you mean 'Weather'.*Known data sets: ETT"):
        build("wether", "train")
    with pytest.raises(ts.DataError, match=r"Unknown split 'dev'"):
        build("ETTh1", "dev")
    with pytest.raises(ts.DataError, match=r"Unknown features mode 'X'"):
        build("ETTh1", "train", features="X")
    with pytest.raises(ts.DataError, match=r"seq_len must be a positive integer, got 0"):
        build("ETTh1", "train", 0)
    with pytest.raises(ts.DataError, match=r"ETTh1\.csv: no target column 'ot'.*Did you mean 'OT'"):
        build("ETTh1", "train", features="S", target="ot")
    with pytest.raises(ts.DataError, match=r"missing\.csv: no such file"):
        ts.forecasting_dataset(tmp_path / "missing.csv", "train", 1, 1)
    assert len(build("ETTh1", "validation")) == 2785


# --- Files and downloads (local files only: file:// URLs and a closed port) -----------------------------------------


def sha256(path) -> str:
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


SHA_ETTH1 = "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066"


def test_recorded_digests_match_shared_files():
    for line in shared("SHA256SUMS").read_text().splitlines():
        digest, file = line.split()
        assert ts.SOURCES[file].sha256[0] == digest == sha256(shared(file))
    assert ts.SOURCES["electricity.csv"].sha256 == () and ts.SOURCES["traffic.csv"].sha256 == ()
    assert {b.file for b in ts.BENCHMARKS} == set(ts.SOURCES)


def test_data_directory_layouts(tmp_path, monkeypatch):
    source = shared("national_illness.csv")
    monkeypatch.setenv(ts.ENV_VAR, str(tmp_path))
    assert ts.data_directory() == tmp_path
    monkeypatch.delenv(ts.ENV_VAR)
    assert ts.data_directory() == pathlib.Path("~/.cache/mixer_zoo").expanduser()
    (tmp_path / "illness").mkdir()
    shutil.copy(source, tmp_path / "illness")  # the TSLib dataset/ layout
    ds = ts.forecasting_dataset("ili", "test", 36, 24, data_dir=tmp_path, download=False)
    assert len(ds) == 170 and ds.path == tmp_path / "illness" / "national_illness.csv"


def test_download_from_file_url(tmp_path, monkeypatch):
    monkeypatch.setitem(ts.SOURCES, "ETTh1.csv", ts.Source((shared("ETTh1.csv").as_uri(),), (SHA_ETTH1,)))
    root = tmp_path / "cache"
    root.mkdir()  # a data directory the user names must exist
    ds = ts.forecasting_dataset("etth1", "test", 96, 96, data_dir=root)
    assert len(ds) == 2785 and ds.path == root / "ETTh1.csv"
    assert sha256(root / "ETTh1.csv") == SHA_ETTH1 and sorted(os.listdir(root)) == ["ETTh1.csv"]


def test_download_zip_member_after_a_failed_mirror(tmp_path, monkeypatch):
    archive = tmp_path / "illness.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(shared("national_illness.csv"), "illness/national_illness.csv")
    urls = ("http://127.0.0.1:9/national_illness.csv", archive.as_uri() + "#illness/national_illness.csv")
    monkeypatch.setitem(ts.SOURCES, "national_illness.csv", ts.Source(urls, ts.SOURCES["national_illness.csv"].sha256))
    root = tmp_path / "cache"
    root.mkdir()  # a data directory the user names must exist
    path = ts.fetch("ILI", data_dir=root)
    assert path == root / "national_illness.csv" and sorted(os.listdir(root)) == ["national_illness.csv"]
    assert sha256(path) == sha256(shared("national_illness.csv"))


def test_checksum_mismatch_leaves_nothing_behind(tmp_path, monkeypatch):
    copy = shutil.copy(shared("ETTh1.csv"), tmp_path / "copy.csv")
    expected = "0" * 64
    monkeypatch.setitem(ts.SOURCES, "ETTh1.csv", ts.Source((pathlib.Path(copy).as_uri(),), (expected,)))
    root = tmp_path / "cache"
    root.mkdir()  # a data directory the user names must exist
    with pytest.raises(ts.ChecksumError, match=rf"ETTh1\.csv .* has sha256 {SHA_ETTH1}, expected {expected}"):
        ts.forecasting_dataset("ETTh1", "train", 96, 96, data_dir=root)
    assert os.listdir(root) == []


def test_unverified_download_warns_with_its_digest(tmp_path, monkeypatch):
    path = write_csv(tmp_path / "src.csv", hourly_rows(300))
    monkeypatch.setitem(ts.SOURCES, "electricity.csv", ts.Source((path.as_uri(),)))
    with pytest.warns(UserWarning, match=rf"electricity\.csv .* unverified .* sha256 is {sha256(path)}"):
        ds = ts.forecasting_dataset("ECL", "test", 24, 24, data_dir=tmp_path)
    assert ds.name == "ECL" and len(ds) == 60 + 24 - 48 + 1


def test_offline_error_names_file_directory_and_url(tmp_path, monkeypatch):
    url = "http://127.0.0.1:9/x.csv"
    monkeypatch.setitem(ts.SOURCES, "weather.csv", ts.Source((url,), ts.SOURCES["weather.csv"].sha256))
    root = tmp_path / "cache"
    root.mkdir()  # a data directory the user names must exist
    with pytest.raises(ts.DownloadError, match=r"weather\.csv was not found in the data directory") as info:
        ts.forecasting_dataset("weather", "train", 96, 96, data_dir=root)
    assert str(root) in str(info.value) and url in str(info.value)
    assert os.listdir(root) == []
    with pytest.raises(ts.DownloadError, match=r"download=False") as info:
        ts.forecasting_dataset("weather", "train", 96, 96, data_dir=root, download=False)
    assert str(root) in str(info.value) and url in str(info.value)
