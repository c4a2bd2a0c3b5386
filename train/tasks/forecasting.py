"""Multivariate forecasting: MSE loss; MSE, MAE (overall and per channel), MASE and sMAPE metrics.

Every metric is an exact masked mean over windows, steps and scored channels (`(sum, count)` pairs, see
`train.tasks`), so padded evaluation batches never change a figure. MASE's seasonal scale and the season lengths
are computed here too, once per data set, by `season_length`, `choose_season_length` and `seasonal_naive_scale`.
"""

import dataclasses
import logging

import jax.numpy as jnp
import numpy as np

_log = logging.getLogger(__name__)

# MASE's season length m by sampling step (a day of sub-daily data, a week of daily data, a year otherwise):
#   hourly 24, 30-minute 48, 15-minute 96, 10-minute 144, daily 7, weekly 52, monthly 12, quarterly 4; any other
#   step 1 (the naive forecast).
_FIXED_STEP_SEASONS = {"1h": 24, "30min": 48, "15min": 96, "10min": 144, "1D": 7}
_CALENDAR_SEASONS = ((("Week",), 52), (("MonthBegin", "MonthEnd"), 12), (("QuarterBegin", "QuarterEnd"), 4))


def season_length(freq: str | None) -> int:
    """The season length m for a pandas frequency string (the table above; 1 for any other step or None).

    Aliases of one step agree: 'h', 'H', '1h' and '60min' give 24; 'W-SUN' and 'W-MON' give 52; 'MS' and 'ME' 12.
    """
    import pandas as pd  # here, not at import: image runs never load pandas

    offset = None
    for text in (freq, str(freq).lower()) if freq else ():
        try:
            offset = pd.tseries.frequencies.to_offset(text)
            break
        except ValueError:
            continue
    if offset is None:
        return 1
    fixed = {pd.Timedelta(step): m for step, m in _FIXED_STEP_SEASONS.items()}
    if isinstance(offset, pd.offsets.Tick):
        return fixed.get(pd.Timedelta(offset), 1)
    if isinstance(offset, pd.offsets.Day):  # not a Tick since pandas 3
        return fixed.get(pd.Timedelta(days=offset.n), 1)
    for kinds, m in _CALENDAR_SEASONS:
        if isinstance(offset, tuple(getattr(pd.offsets, kind) for kind in kinds)) and offset.n == 1:
            return m
    return 1


def choose_season_length(requested: int, freq: str | None, num_rows: int) -> int:
    """The season length for a training split of `num_rows` rows sampled at `freq`.

    `requested` > 0 is used as given and must be shorter than the split; 0 takes `season_length(freq)`, falling
    back to 1 (with a warning) when the split has no full season plus one row.
    """
    if isinstance(requested, bool) or not isinstance(requested, int | np.integer) or requested < 0:
        raise ValueError(f"task.season_length must be an integer >= 0 (0 = by sampling frequency), got {requested!r}")
    if requested > 0:
        if requested >= num_rows:
            raise ValueError(
                f"task.season_length {requested} needs more than {requested} training rows; the training split has "
                f"{num_rows}. Use a shorter season (1 = the naive forecast)."
            )
        return int(requested)
    m = season_length(freq)
    if m >= num_rows:
        _log.warning(
            "MASE: the training split (%d rows) is shorter than one season (%d at frequency %s) plus one row; "
            "using season length 1", num_rows, m, freq,
        )  # fmt: skip
        return 1
    return m


def seasonal_naive_scale(series: np.ndarray, season: int, columns=None) -> np.ndarray:
    """MASE's scale: series [N, C] (the training split) -> [C], the mean of |z_t - z_{t-season}| over t.

    A channel whose scale is 0 (constant with that period) would make its MASE infinite: its scale becomes 1, so
    its errors count on the normalised scale, and a warning names it.
    """
    series = np.asarray(series, np.float64)
    if series.ndim != 2:
        raise ValueError(f"series must be [rows, channels], got shape {series.shape}")
    if not 0 < season < len(series):
        raise ValueError(f"season length {season} needs a series of more than {season} rows, got {len(series)}")
    scale = np.abs(series[season:] - series[:-season]).mean(axis=0)
    flat = np.flatnonzero(scale == 0)
    if flat.size:
        names = [str(columns[i]) if columns is not None else str(i) for i in flat]
        _log.warning(
            "MASE: channel(s) %s do not change over the training split at season length %d; their scale is set "
            "to 1 (their MASE is their MAE on the normalised scale)", ", ".join(names), season,
        )  # fmt: skip
    return np.where(scale == 0, 1.0, scale)


@dataclasses.dataclass(frozen=True)
class ForecastingTask:
    """Batches hold `x [B, L, C]`, `y [B, H, C]`, optionally `x_mark [B, L, F]`, and `mask [B]`.

    Only the channels in `target_slice` (C_s of them) are scored (all for features M and S, the last one for MS),
    over every window, step and channel, as in the standard protocol. Metrics:

    - `mse`, `mae`: on the normalised scale; `mse_per_channel`, `mae_per_channel`: the same per scored channel,
      vectors [C_s];
    - `mase` (with `mase_scale`): mean |error| / scale_c, scale_c the training split's seasonal naive MAE of
      channel c (`seasonal_naive_scale`), Hyndman & Koehler (2006);
    - `smape`: 200 * mean(|y - yhat| / (|y| + |yhat|)) in original units (inverse-transformed with
      `scaler_mean`/`scaler_scale`, or the values as given without a scaler); a term with |y| + |yhat| = 0 is 0;
    - `mse_original`, `mae_original`: with a scaler and `report_original`.

    `scaler_mean`, `scaler_scale` and `mase_scale` hold one value per channel (all C, not only the scored ones).
    """

    target_start: int = 0
    target_stop: int | None = None
    use_time_features: bool = True
    scaler_mean: tuple[float, ...] | None = None
    scaler_scale: tuple[float, ...] | None = None
    mase_scale: tuple[float, ...] | None = None
    season_length: int | None = None  # the season length of mase_scale (a record only)
    report_original: bool = True
    name: str = "forecasting"

    def __post_init__(self):
        if (self.scaler_mean is None) != (self.scaler_scale is None):
            raise ValueError("ForecastingTask: give both scaler_mean and scaler_scale, or neither")
        if self.mase_scale is not None:
            scale = np.asarray(self.mase_scale, np.float64)
            if scale.ndim != 1 or not np.all(np.isfinite(scale) & (scale > 0)):
                raise ValueError(f"ForecastingTask: mase_scale must be finite and > 0 per channel, got {scale}")

    @property
    def input_keys(self) -> tuple[str, ...]:
        return ("x", "x_mark") if self.use_time_features else ("x",)

    def model_inputs(self, batch):
        inputs = {"x": batch["x"]}
        if self.use_time_features:
            inputs["x_mark"] = batch["x_mark"]
        return inputs

    def prepare_train_batch(self, batch, rng):
        del rng
        return batch

    def _scored_channels(self, values):
        """values [C] -> float32 [C_s], the scored channels'."""
        return jnp.asarray(np.asarray(values, np.float32)[slice(self.target_start, self.target_stop)])

    def _scored(self, outputs, batch):
        sl = slice(self.target_start, self.target_stop)
        return outputs[..., sl].astype(jnp.float32), batch["y"][..., sl].astype(jnp.float32)

    def _masked_sums(self, errors, mask):
        per_example = errors.reshape(errors.shape[0], -1)
        mask = mask.astype(jnp.float32)
        return jnp.sum(per_example.sum(axis=1) * mask), jnp.sum(mask) * per_example.shape[1]

    def _channel_sums(self, errors, mask):
        """errors [B, H, C_s] -> (sums over real windows and steps [C_s], their count)."""
        mask = mask.astype(jnp.float32)
        return jnp.einsum("bhc,b->c", errors, mask), jnp.sum(mask) * errors.shape[1]

    def loss(self, outputs, batch):
        pred, true = self._scored(outputs, batch)
        total, count = self._masked_sums((pred - true) ** 2, batch["mask"])
        return total, count

    def metrics(self, outputs, batch):
        pred, true = self._scored(outputs, batch)
        mask = batch["mask"]
        err = pred - true
        out = {
            "mse": self._masked_sums(err**2, mask),
            "mae": self._masked_sums(jnp.abs(err), mask),
            "mse_per_channel": self._channel_sums(err**2, mask),
            "mae_per_channel": self._channel_sums(jnp.abs(err), mask),
        }
        if self.mase_scale is not None:
            out["mase"] = self._masked_sums(jnp.abs(err) / self._scored_channels(self.mase_scale), mask)
        if self.scaler_mean is not None:
            mean, scale = self._scored_channels(self.scaler_mean), self._scored_channels(self.scaler_scale)
            pred, true = pred * scale + mean, true * scale + mean
            if self.report_original:
                out["mse_original"] = self._masked_sums((pred - true) ** 2, mask)
                out["mae_original"] = self._masked_sums(jnp.abs(pred - true), mask)
        denominator = jnp.abs(true) + jnp.abs(pred)
        nonzero = denominator > 0
        ratio = jnp.where(nonzero, jnp.abs(pred - true) / jnp.where(nonzero, denominator, 1.0), 0.0)
        out["smape"] = self._masked_sums(200.0 * ratio, mask)
        return out
