"""Calendar features of the long-horizon forecasting benchmarks (TSLib `embed='timeF'` and `embed='fixed'`).

`time_features(dates, freq)` is the timeF encoding (timeenc=1): GluonTS-style calendar features, each scaled to
[-0.5, 0.5], chosen by the sampling frequency. `calendar_features(dates, minute=...)` is the integer encoding
(timeenc=0): month, day, weekday, hour and optionally minute // 15.
"""

import re

import numpy as np
import pandas as pd

# Each feature maps a DatetimeIndex to values in [-0.5, 0.5].
_FEATURES = {
    "second_of_minute": lambda d: d.second / 59.0 - 0.5,
    "minute_of_hour": lambda d: d.minute / 59.0 - 0.5,
    "hour_of_day": lambda d: d.hour / 23.0 - 0.5,
    "day_of_week": lambda d: d.day_of_week / 6.0 - 0.5,
    "day_of_month": lambda d: (d.day - 1) / 30.0 - 0.5,
    "day_of_year": lambda d: (d.day_of_year - 1) / 365.0 - 0.5,
    "month_of_year": lambda d: (d.month - 1) / 11.0 - 0.5,
    "week_of_year": lambda d: (d.isocalendar().week.to_numpy() - 1) / 52.0 - 0.5,
}

_DAILY = ("day_of_week", "day_of_month", "day_of_year")
# Feature order per frequency, as in GluonTS / TSLib `time_features_from_frequency_str`.
FEATURES_BY_FREQ = {
    "y": (),
    "q": ("month_of_year",),
    "m": ("month_of_year",),
    "w": ("day_of_month", "week_of_year"),
    "d": _DAILY,
    "b": _DAILY,
    "h": ("hour_of_day", *_DAILY),
    "t": ("minute_of_hour", "hour_of_day", *_DAILY),
    "s": ("second_of_minute", "minute_of_hour", "hour_of_day", *_DAILY),
}
_ALIASES = {"a": "y", "ye": "y", "ys": "y", "qe": "q", "qs": "q", "me": "m", "min": "t", "sec": "s", "bd": "b"}


def freq_unit(freq: str) -> str:
    """Normalises a frequency string ('h', '15min', '10T', 'W-SUN', 'd', ...) to one of FEATURES_BY_FREQ's keys."""
    match = re.fullmatch(r"\s*\d*\s*([a-zA-Z]+)(-[a-zA-Z]+)?\s*", str(freq))
    unit = match and match.group(1).lower()
    unit = _ALIASES.get(unit, unit)
    if unit not in FEATURES_BY_FREQ:
        raise ValueError(
            f"Unsupported time-feature frequency {freq!r}; use one of y (yearly), q, m (monthly), w, d, b "
            "(business day), h (hourly), t or min (minutely), s (secondly), optionally with a multiple, e.g. '15min'."
        )
    return unit


def feature_names(freq: str = "h") -> tuple[str, ...]:
    """Names of the timeF features for `freq`, in output order."""
    return FEATURES_BY_FREQ[freq_unit(freq)]


def time_features(dates, freq: str = "h") -> np.ndarray:
    """timeF encoding: dates [N] -> float32 [N, k], every value in [-0.5, 0.5] (k = 4 for 'h', 5 for 't')."""
    dates = pd.DatetimeIndex(dates)
    cols = [np.asarray(_FEATURES[name](dates), np.float64) for name in feature_names(freq)]
    return np.stack(cols, axis=-1).astype(np.float32) if cols else np.zeros((len(dates), 0), np.float32)


def calendar_features(dates, minute: bool = False) -> np.ndarray:
    """Integer encoding: dates [N] -> float32 [N, 4] of (month, day, weekday, hour), or [N, 5] with minute // 15."""
    dates = pd.DatetimeIndex(dates)
    cols = [dates.month, dates.day, dates.day_of_week, dates.hour] + ([dates.minute // 15] if minute else [])
    return np.stack([np.asarray(c) for c in cols], axis=-1).astype(np.float32)
