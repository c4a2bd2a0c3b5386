"""Long-horizon forecasting benchmarks (ETT, Weather, Exchange, ILI, ECL, Traffic) under the standard protocol.

The protocol is the one of Informer -> Autoformer -> Time-Series-Library (TSLib) -> iTransformer -> SOFTS:

- splits: ETT-hour 12/4/4 months of 30 days (rows [0, 8640), [8640, 11520), [11520, 14400)), ETT-minute the same
  at 4 rows per hour, every other file 70/10/20 by rows (int truncation, validation takes the remainder);
  validation and test segments start `seq_len` rows early;
- a standard scaler (per-column mean and population std) fitted on the training rows only;
- windows with stride 1: `x` = rows [s, s + seq_len), `y` = rows [s + seq_len, s + seq_len + pred_len) of a
  segment; every window is kept (no dropped last batch);
- feature modes M (all channels in and out), S (target only) and MS (all in, the target scored);
- optional calendar features: timeF (timeenc=True) or integer month/day/weekday/hour (timeenc=False).

Files live in one data directory, `$MIXER_ZOO_DATA` (default `~/.cache/mixer_zoo`); a missing benchmark file is
downloaded from `SOURCES` and checked against its sha256.

    ds = forecasting_dataset("ETTh1", "test", seq_len=96, pred_len=96)
    len(ds)                         # 2785 windows
    ds[0]["x"].shape                # (96, 7); also "y" (96, 7), "x_mark" (96, 4), "y_mark" (96, 4)
    ds.get_batch(np.arange(32))     # the same keys, stacked: x [32, 96, 7], ...
"""

import dataclasses
import difflib
import functools
import logging
import os
import pathlib
import warnings
import zipfile

import numpy as np
import pandas as pd

from checkpoints.download import ChecksumError, DownloadError, download
from train.data import timefeatures

ENV_VAR = "MIXER_ZOO_DATA"
DEFAULT_DATA_DIR = "~/.cache/mixer_zoo"
DOWNLOAD_TIMEOUT_S = 30.0
SPLITS = ("train", "val", "test")
_log = logging.getLogger(__name__)
FEATURE_MODES = ("M", "S", "MS")


class DataError(ValueError):
    """A data file or an argument is unusable; the message names the file (or the argument) and the problem."""


@dataclasses.dataclass(frozen=True)
class Benchmark:
    name: str  # canonical name
    file: str  # file name inside the data directory
    subdir: str  # folder of the TSLib `dataset/` layout, also searched
    rule: str  # split rule: "ett_hour", "ett_minute" or "ratio" (70/10/20)
    aliases: tuple[str, ...] = ()


BENCHMARKS = (
    Benchmark("ETTh1", "ETTh1.csv", "ETT-small", "ett_hour"),
    Benchmark("ETTh2", "ETTh2.csv", "ETT-small", "ett_hour"),
    Benchmark("ETTm1", "ETTm1.csv", "ETT-small", "ett_minute"),
    Benchmark("ETTm2", "ETTm2.csv", "ETT-small", "ett_minute"),
    Benchmark("Weather", "weather.csv", "weather", "ratio"),
    Benchmark("Exchange", "exchange_rate.csv", "exchange_rate", "ratio", ("exchange_rate",)),
    Benchmark("ILI", "national_illness.csv", "illness", "ratio", ("illness", "national_illness")),
    Benchmark("ECL", "electricity.csv", "electricity", "ratio", ("electricity",)),
    Benchmark("Traffic", "traffic.csv", "traffic", "ratio"),
)
_BY_ALIAS = {a.lower(): b for b in BENCHMARKS for a in (b.name, pathlib.Path(b.file).stem, *b.aliases)}


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a benchmark file comes from.

    urls: tried in order; a `#member` suffix names the file inside a zip archive.
    sha256: accepted digests of the file itself (not of an archive); empty when unknown (the file is then
      accepted with a warning that prints its digest).
    """

    urls: tuple[str, ...]
    sha256: tuple[str, ...] = ()


_ETT = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/"
# A mirror of the Autoformer/TSLib Google-Drive archives, pinned to the commit whose members the hashes below match.
_ASPIRE = (
    "https://raw.githubusercontent.com/aspire-zero/long_term_forecast_data/0045b460bd65c402f91e738b4b5ac826433b00b0/"
)
# The Hugging Face copy of the TSLib data sets that the Time-Series-Library README links to.
_TSLIB_HF = "https://huggingface.co/datasets/thuml/Time-Series-Library/resolve/main/"

# Keyed by file name. Where two digests are listed the second is the same file with CRLF turned into LF.
SOURCES: dict[str, Source] = {
    "ETTh1.csv": Source(
        (_ETT + "ETTh1.csv", _ASPIRE + "ETT-small.zip#ETT-small/ETTh1.csv"),
        ("f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",),
    ),
    "ETTh2.csv": Source(
        (_ETT + "ETTh2.csv", _ASPIRE + "ETT-small.zip#ETT-small/ETTh2.csv"),
        ("a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b",),
    ),
    "ETTm1.csv": Source(
        (_ETT + "ETTm1.csv", _ASPIRE + "ETT-small.zip#ETT-small/ETTm1.csv"),
        ("6ce1759b1a18e3328421d5d75fadcb316c449fcd7cec32820c8dafda71986c9e",),
    ),
    "ETTm2.csv": Source(
        (_ETT + "ETTm2.csv", _ASPIRE + "ETT-small.zip#ETT-small/ETTm2.csv"),
        ("db973ca252c6410a30d0469b13d696cf919648d0f3fd588c60f03fdbdbadd1fd",),
    ),
    "weather.csv": Source(
        (_ASPIRE + "weather.zip#weather/weather.csv", _TSLIB_HF + "weather/weather.csv"),
        (
            "34ee981d07313e51da2a50bb600072c8ae4a69cb4b0651f4cb93a069d7a2ba63",
            "9b2b19b13e342d9c9b9c51620d42b4be232df7fba30e7f5c4968b7c79ab138ad",
        ),
    ),
    "exchange_rate.csv": Source(
        (_ASPIRE + "exchange_rate.zip#exchange_rate/exchange_rate.csv", _TSLIB_HF + "exchange_rate/exchange_rate.csv"),
        (
            "48b4d9d3d508f5104162e85b9a6042e3557fde11aa9f2944eba8c0d0efc89842",
            "d55e7aa2641009814a18ba3279431b13f6d413b0eab195b9ff21988d8cf94e97",
        ),
    ),
    "national_illness.csv": Source(
        (_ASPIRE + "illness.zip#illness/national_illness.csv", _TSLIB_HF + "illness/national_illness.csv"),
        (
            "93601f64d2566dc796ca4305adad8b8560c2db1a1ff04543c3bd813a7263570a",
            "8594cecb98c6f2f9dc014eca11c4d5d1e38ad5ce6ed0592d4abe65b146fce395",
        ),
    ),
    # No digest is known for these two: they are accepted unverified, with a warning.
    "electricity.csv": Source((_TSLIB_HF + "electricity/electricity.csv",)),
    "traffic.csv": Source((_TSLIB_HF + "traffic/traffic.csv",)),
}


# --------------------------------------------------------------------------------------------------------------------
# Files: names, the data directory, downloads.


def data_directory(path=None) -> pathlib.Path:
    """The data directory: `path`, else `$MIXER_ZOO_DATA`, else `~/.cache/mixer_zoo`."""
    return pathlib.Path(path or os.environ.get(ENV_VAR) or DEFAULT_DATA_DIR).expanduser()


def benchmark(name: str) -> Benchmark | None:
    """The registered benchmark called `name` (case-insensitive; also the file name or its stem), else None."""
    key = str(name).strip().lower()
    return _BY_ALIAS.get(key) or _BY_ALIAS.get(key.removesuffix(".csv"))


def _unknown_name(name: str) -> DataError:
    close = difflib.get_close_matches(str(name).lower(), list(_BY_ALIAS), n=3, cutoff=0.5)
    close = list(dict.fromkeys(_BY_ALIAS[c].name for c in close))
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    known = ", ".join(b.name for b in BENCHMARKS)
    return DataError(f"Unknown data set {name!r}.{hint} Known data sets: {known}; or pass the path of a CSV file.")


def fetch(name: str, data_dir=None) -> pathlib.Path:
    """Downloads benchmark `name` into the data directory (overwriting) and returns the file's path.

    Raises ChecksumError when a download has the wrong sha256, DownloadError when no source can be reached.
    """
    bench = benchmark(name)
    if bench is None:
        raise _unknown_name(name)
    root = data_directory(data_dir)
    dest = root / bench.file
    source = SOURCES.get(bench.file)
    if source is None or not source.urls:
        raise DownloadError(f"{bench.file} is not in {root} and no download source is known; put the file there.")
    if root.exists() and not root.is_dir():
        raise DataError(f"the data directory {root} is a file, not a directory.")
    if not root.exists():
        if root != data_directory(DEFAULT_DATA_DIR):  # a directory the user named: a typo must not become a folder
            named = "data.data_dir" if data_dir else f"${ENV_VAR}"
            raise DataError(f"the data directory {root} (from {named}) does not exist; create it or fix the path.")
        root.mkdir(parents=True)
    failures, checksum_failed = [], False
    for url in source.urls:
        try:
            download(url, dest, source.sha256, timeout=DOWNLOAD_TIMEOUT_S)
            return dest
        except ChecksumError as e:
            failures.append(str(e))
            checksum_failed = True
        except (OSError, zipfile.BadZipFile, KeyError) as e:  # KeyError: the member is not in the archive.
            failures.append(f"{url}: {type(e).__name__}: {e}")
    if checksum_failed:
        raise ChecksumError("; ".join(failures))
    raise DownloadError(
        f"{bench.file} was not found in the data directory {root} (also searched {root / bench.subdir}) and could "
        f"not be downloaded from {' or '.join(source.urls)} ({'; '.join(failures)}). Download it by hand into "
        f"{root}, or set ${ENV_VAR} to a directory that holds it."
    )


def resolve(name_or_csv, data_dir=None, download: bool = True) -> tuple[pathlib.Path, Benchmark | None]:
    """Finds the file of a benchmark name or a CSV path: (path, the benchmark whose protocol applies or None).

    A path whose file name is a benchmark's (e.g. `.../ETTh1.csv`) follows that benchmark's split rule.
    """
    text = os.fspath(name_or_csv)
    bench = benchmark(text)
    path = pathlib.Path(text).expanduser()
    has_dir = os.sep in text or "/" in text
    if path.is_file() or has_dir or (bench is None and text.lower().endswith(".csv")):
        if not path.is_file():
            raise DataError(f"{path}: no such file.")
        return path, benchmark(path.name)
    if bench is None:
        raise _unknown_name(text)
    root = data_directory(data_dir)
    candidates = (root / bench.file, root / bench.subdir / bench.file)
    for candidate in candidates:
        if candidate.is_file():
            return candidate, bench
    if not download:
        urls = " or ".join(SOURCES[bench.file].urls) if bench.file in SOURCES else "(no known source)"
        raise DownloadError(
            f"{bench.file} was not found in the data directory {root} (also searched {candidates[1]}) and "
            f"download=False. Get it from {urls} into {root}, or set ${ENV_VAR}."
        )
    return fetch(bench.name, data_dir), bench


# --------------------------------------------------------------------------------------------------------------------
# Parsing, once per file and modification time.


@dataclasses.dataclass(frozen=True)
class Table:
    """A parsed CSV: dates [N], values float64 [N, C] (every column but `date`, in file order), column names [C]."""

    path: pathlib.Path
    dates: pd.DatetimeIndex
    values: np.ndarray
    columns: tuple[str, ...]


def _parse_dates(path, column: pd.Series) -> pd.DatetimeIndex:
    try:
        parsed = pd.to_datetime(column)
    except (ValueError, TypeError):  # Rows in several formats: parse each one on its own.
        parsed = pd.to_datetime(column, format="mixed", errors="coerce")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if len(bad):
        value = column.iloc[bad[0]]
        what = "an empty date" if pd.isna(value) else f"the date {value!r}"
        raise DataError(f"{path}: cannot parse {what} on line {bad[0] + 2}.")
    stamps = parsed.to_numpy()
    earlier = np.flatnonzero(stamps[1:] < stamps[:-1])
    if len(earlier):  # windows over shuffled time are not forecasting
        i = earlier[0] + 1
        raise DataError(
            f"{path}: dates must be in time order; line {i + 2} ({column.iloc[i]}) comes before line {i + 1} "
            f"({column.iloc[i - 1]}). Sort the file by date."
        )
    repeated = np.flatnonzero(stamps[1:] == stamps[:-1])
    if len(repeated):  # the standard weather.csv has one (2020-05-12 06:00); its rows are used as they are
        i = repeated[0] + 1
        logging.warning(
            "%s: %d repeated date(s), the first %s on lines %d and %d; rows are used in file order",
            path, len(repeated), column.iloc[i], i + 1, i + 2,
        )  # fmt: skip
    return pd.DatetimeIndex(parsed)


def _numeric(path, name: str, column: pd.Series) -> np.ndarray:
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        coerced = pd.to_numeric(column, errors="coerce")
        bad = np.flatnonzero((coerced.isna() & column.notna()).to_numpy())
        if len(bad):
            raise DataError(
                f"{path}: column {name!r} has a non-numeric cell {column.iloc[bad[0]]!r} on line {bad[0] + 2}."
            )
        column = coerced
    values = column.to_numpy(np.float64, na_value=np.nan)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise DataError(
            f"{path}: column {name!r} has {len(bad)} empty, NaN or infinite cell(s), the first on line {bad[0] + 2}."
        )
    huge = np.flatnonzero(np.abs(values) > np.finfo(np.float32).max)
    if len(huge):  # the models compute in float32, where these become infinities
        raise DataError(
            f"{path}: column {name!r} has {len(huge)} value(s) too large for float32, the first "
            f"{column.iloc[huge[0]]!r} on line {huge[0] + 2}; rescale the column."
        )
    return values


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, mtime_ns: int, size: int) -> Table:
    del mtime_ns, size  # Part of the cache key only.
    try:
        # pandas handles LF and CRLF alike; undecodable bytes in headers are kept as U+FFFD.
        frame = pd.read_csv(path, encoding_errors="replace")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeError) as e:
        raise DataError(f"{path}: not a readable CSV file ({e}).") from e
    if "date" not in frame.columns:
        raise DataError(f"{path}: no 'date' column (columns: {', '.join(map(str, frame.columns))}).")
    names = [str(c) for c in frame.columns if c != "date"]
    if not names:
        raise DataError(f"{path}: no value columns besides 'date'.")
    if not len(frame):
        raise DataError(f"{path}: no data rows.")
    values = np.stack([_numeric(path, n, frame[n]) for n in names], axis=-1)
    return Table(pathlib.Path(path), _parse_dates(path, frame["date"]), values, tuple(names))


def read_table(path) -> Table:
    """Parses a benchmark CSV (cached per path, modification time and size)."""
    stat = os.stat(path)
    return _read_cached(str(pathlib.Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


# --------------------------------------------------------------------------------------------------------------------
# The protocol: splits, scaling, windows.


def split_rows(num_rows: int, rule: str, seq_len: int) -> dict[str, tuple[int, int]]:
    """Row ranges [start, end) of the train/val/test segments (val and test include `seq_len` look-back rows)."""
    if rule in ("ett_hour", "ett_minute"):
        month = 30 * 24 * (4 if rule == "ett_minute" else 1)
        num_train, num_val, end = 12 * month, 4 * month, 20 * month
    else:
        num_train, num_test = int(num_rows * 0.7), int(num_rows * 0.2)
        num_val, end = num_rows - num_train - num_test, num_rows
    return {
        "train": (0, num_train),
        "val": (num_train - seq_len, num_train + num_val),
        "test": (num_train + num_val - seq_len, end),
    }


@dataclasses.dataclass(frozen=True)
class StandardScaler:
    """Per-channel standardisation: transform(x) = (x - mean) / scale over the last axis (mean, scale [C])."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> "StandardScaler":
        """values [N, C] -> mean and population std (std 0 becomes 1), as scikit-learn's StandardScaler."""
        std = values.std(axis=0)
        return cls(values.mean(axis=0), np.where(std == 0, 1.0, std))

    @classmethod
    def identity(cls, num_channels: int) -> "StandardScaler":
        return cls(np.zeros(num_channels), np.ones(num_channels))

    def transform(self, x):
        """x [..., C] -> (x - mean) / scale."""
        return (x - self.mean) / self.scale

    def inverse_transform(self, x):
        """x [..., C] -> x * scale + mean."""
        return x * self.scale + self.mean

    def select(self, channels) -> "StandardScaler":
        """The scaler of a subset of channels, e.g. `scaler.select(ds.target_slice)` for MS targets."""
        return StandardScaler(self.mean[channels], self.scale[channels])


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class ForecastingDataset:
    """Random-access windows of one split: `len(ds)` windows, `ds[i]` a dict of float32 arrays.

    ds[i]: x [seq_len, C], y [pred_len, C], and with time features x_mark [seq_len, k], y_mark [pred_len, k]; these
    are rows [i, i + seq_len) and [i + seq_len, i + seq_len + pred_len) of the (scaled) split segment `data`.
    """

    name: str  # the benchmark's name, or the CSV's stem
    path: pathlib.Path  # the file read
    split: str  # "train", "val" or "test"
    seq_len: int
    pred_len: int
    features: str  # "M", "S" or "MS"
    target: str
    freq: str
    timeenc: bool | None
    columns: tuple[str, ...]  # the C channel names; the target last (unless features="M" and there is none)
    target_slice: slice  # the channels a metric scores: all for M and S, the last one for MS
    scaler: "StandardScaler"  # fitted on train_rows (an identity when scale=False)
    rows: tuple[int, int]  # the segment's [start, end) in file rows, look-back included
    train_rows: tuple[int, int]  # the rows the scaler was fitted on
    data: np.ndarray  # float32 [end - start, C], scaled
    marks: np.ndarray | None  # float32 [end - start, k] time features, None when timeenc=None
    dates: pd.DatetimeIndex  # [end - start]

    @property
    def num_channels(self) -> int:
        return self.data.shape[1]

    @property
    def num_time_features(self) -> int:
        return 0 if self.marks is None else self.marks.shape[1]

    def __len__(self) -> int:
        return len(self.data) - self.seq_len - self.pred_len + 1

    def __getitem__(self, index) -> dict[str, np.ndarray]:
        n = len(self)
        index = int(index)
        if not -n <= index < n:
            raise IndexError(f"window {index} out of range for {n} windows")
        s = index % n
        mid, end = s + self.seq_len, s + self.seq_len + self.pred_len
        item = {"x": self.data[s:mid], "y": self.data[mid:end]}
        if self.marks is not None:
            item.update(x_mark=self.marks[s:mid], y_mark=self.marks[mid:end])
        return item

    def get_batch(self, indices) -> dict[str, np.ndarray]:
        """indices [B] -> the same keys as `ds[i]`, stacked: x [B, seq_len, C], y [B, pred_len, C], ..."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if indices.size and (indices.min() < -n or indices.max() >= n):
            raise IndexError(f"window indices out of range for {n} windows")
        starts = indices % n if n else indices
        x_rows = starts[:, None] + np.arange(self.seq_len)
        y_rows = starts[:, None] + self.seq_len + np.arange(self.pred_len)
        batch = {"x": self.data[x_rows], "y": self.data[y_rows]}
        if self.marks is not None:
            batch.update(x_mark=self.marks[x_rows], y_mark=self.marks[y_rows])
        return batch

    def spec(self) -> dict:
        """What new data must look like for a model trained on this split, as JSON-able values.

        Saved with the trained model (`workdir/model/metadata.json`, key "data") so that `train.forecast --csv`
        prepares a user's CSV exactly as training did: the channel columns in order, the fitted scaler (never refitted
        on new data), the time features and the sampling frequency of the training rows.
        """
        if self.marks is None:
            time_features = None
        elif self.timeenc:
            time_features = "timeF"
        else:
            time_features = "calendar_minute" if self.num_time_features == 5 else "calendar"
        return {
            "dataset": self.name,
            "columns": list(self.columns),
            "target": self.target,
            "features": self.features,
            "target_slice": [self.target_slice.start or 0, self.target_slice.stop],
            "seq_len": self.seq_len,
            "pred_len": self.pred_len,
            "time_features": time_features,
            "freq": self.freq,
            "data_frequency": sampling_frequency(self.dates),
            "scaler": {"mean": [float(v) for v in self.scaler.mean], "scale": [float(v) for v in self.scaler.scale]},
            "last_date": str(self.dates[-1]),
        }

    def __repr__(self) -> str:
        return (
            f"ForecastingDataset({self.name!r}, split={self.split!r}, seq_len={self.seq_len}, "
            f"pred_len={self.pred_len}, features={self.features!r}, windows={len(self)}, channels={self.num_channels}, "
            f"time_features={self.num_time_features})"
        )


def sampling_frequency(dates) -> str | None:
    """The pandas frequency string of regularly sampled `dates` ('h', '15min', '10min', 'D', 'W-SUN', 'MS', ...).

    Inferred from the last 200 dates; where a repeated or missing stamp defeats `pd.infer_freq` (the standard
    weather.csv repeats one), the most common step between dates. None for fewer than 3 dates or no positive step.
    """
    dates = pd.DatetimeIndex(dates)[-200:]
    if len(dates) < 3:
        return None
    try:
        with warnings.catch_warnings():  # pandas 3 warns that infer_freq will return an offset
            warnings.simplefilter("ignore")
            inferred = pd.infer_freq(dates)
    except (ValueError, TypeError):
        inferred = None
    if inferred:
        return pd.tseries.frequencies.to_offset(inferred).freqstr
    steps = pd.Series(np.diff(dates.asi8))
    steps = steps[steps > 0]
    if steps.empty:
        return None
    return pd.tseries.frequencies.to_offset(pd.Timedelta(int(steps.mode().iloc[0]), "ns")).freqstr


def _normalise_split(split: str) -> str:
    key = str(split).lower()
    key = "val" if key in ("vali", "valid", "validation") else key
    if key not in SPLITS:
        raise DataError(f"Unknown split {split!r}; use one of {', '.join(SPLITS)}.")
    return key


def forecasting_dataset(
    name_or_csv,
    split: str,
    seq_len: int,
    pred_len: int,
    features: str = "M",
    timeenc: bool | None = True,
    *,
    target: str = "OT",
    freq: str = "h",
    scale: bool = True,
    data_dir=None,
    download: bool = True,
) -> ForecastingDataset:
    """One split of a forecasting benchmark (or of any CSV with a `date` column) under the standard protocol.

    Args:
      name_or_csv: a benchmark name (ETTh1, ETTh2, ETTm1, ETTm2, Weather, Exchange, ILI, ECL, Traffic; any case,
        also the file stem such as "exchange_rate") or the path of a CSV with a `date` column and numeric columns.
      split: "train", "val" or "test".
      seq_len, pred_len: input (look-back) and target (horizon) lengths in rows.
      features: "M" (all channels in and out), "S" (the target only) or "MS" (all channels; the target, moved to
        the last channel, is the one scored).
      timeenc: True: timeF features in [-0.5, 0.5] chosen by `freq`; False: integer month, day, weekday, hour
        (and minute // 15 for ETT-minute files); None: no time features.
      target: the target column; it is moved to the last channel (as TSLib's Dataset_Custom does).
      freq: time-feature frequency ('h': 4 features, 't' or 'min': 5); the published scripts use 'h' everywhere.
      scale: standardise with statistics of the training rows; False keeps raw values (the scaler is an identity).
      data_dir: the data directory; default `$MIXER_ZOO_DATA`, else ~/.cache/mixer_zoo.
      download: download a missing benchmark file (sha256-checked); False raises instead.
    """
    split = _normalise_split(split)
    if features not in FEATURE_MODES:
        raise DataError(f"Unknown features mode {features!r}; use one of {', '.join(FEATURE_MODES)}.")
    for arg, value in (("seq_len", seq_len), ("pred_len", pred_len)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise DataError(f"{arg} must be a positive integer, got {value!r}.")
    freq_unit = timefeatures.freq_unit(freq) if timeenc else None
    path, bench = resolve(name_or_csv, data_dir=data_dir, download=download)
    table = read_table(path)

    columns = list(table.columns)
    if target not in columns and features != "M":
        lower = {c.lower(): c for c in columns}
        close = [lower[c] for c in difflib.get_close_matches(target.lower(), list(lower), n=3)]
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise DataError(f"{path}: no target column {target!r} (features={features!r}).{hint} Columns: {columns}.")
    if features == "S":
        columns = [target]
    elif target in columns:
        columns = [c for c in columns if c != target] + [target]
    values = table.values[:, [table.columns.index(c) for c in columns]]

    rule = bench.rule if bench else "ratio"
    rows = split_rows(len(values), rule, seq_len)
    start, end = rows[split]
    if end > len(values):
        raise DataError(
            f"{path}: {len(values)} rows, but the {bench.name} protocol reads rows up to {end} ({rule} splits)."
        )
    if start < 0 or end - start < seq_len + pred_len:
        raise DataError(
            f"{path}: the {split} split (rows [{max(start, 0)}, {end}) of {len(values)}, including the look-back) is "
            f"too short for seq_len={seq_len} + pred_len={pred_len}."
        )

    train_rows = rows["train"]
    scaler = StandardScaler.fit(values[slice(*train_rows)]) if scale else StandardScaler.identity(len(columns))
    data = scaler.transform(values[start:end]).astype(np.float32)
    dates = table.dates[start:end]
    if timeenc is None:
        marks = None
    elif timeenc:
        marks = timefeatures.time_features(dates, freq_unit)
    else:
        marks = timefeatures.calendar_features(dates, minute=rule == "ett_minute")

    num_channels = len(columns)
    target_slice = slice(num_channels - 1, num_channels) if features == "MS" else slice(0, num_channels)
    return ForecastingDataset(
        name=bench.name if bench else path.stem,
        path=path,
        split=split,
        seq_len=int(seq_len),
        pred_len=int(pred_len),
        features=features,
        target=target,
        freq=freq,
        timeenc=timeenc,
        columns=tuple(columns),
        target_slice=target_slice,
        scaler=scaler,
        rows=(start, end),
        train_rows=train_rows,
        data=data,
        marks=marks,
        dates=dates,
    )
