"""Multivariate forecasting: MSE loss, MSE and MAE on the normalised scale and optionally the original one."""

import dataclasses

import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class ForecastingTask:
    """Batches hold `x [B, L, C]`, `y [B, H, C]`, optionally `x_mark [B, L, F]`, and `mask [B]`.

    Only the channels in `target_slice` are scored (all for features M and S, the last one for MS), over every
    window, step and channel, as in the standard protocol. With `scaler_mean`/`scaler_scale`, `mse_original` and
    `mae_original` are also reported on the inverse-transformed values.
    """

    target_start: int = 0
    target_stop: int | None = None
    use_time_features: bool = True
    scaler_mean: tuple[float, ...] | None = None
    scaler_scale: tuple[float, ...] | None = None
    name: str = "forecasting"

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

    def _scored(self, outputs, batch):
        sl = slice(self.target_start, self.target_stop)
        return outputs[..., sl].astype(jnp.float32), batch["y"][..., sl].astype(jnp.float32)

    def _masked_sums(self, errors, mask):
        per_example = errors.reshape(errors.shape[0], -1)
        mask = mask.astype(jnp.float32)
        return jnp.sum(per_example.sum(axis=1) * mask), jnp.sum(mask) * per_example.shape[1]

    def loss(self, outputs, batch):
        pred, true = self._scored(outputs, batch)
        total, count = self._masked_sums((pred - true) ** 2, batch["mask"])
        return total, count

    def metrics(self, outputs, batch):
        pred, true = self._scored(outputs, batch)
        out = {
            "mse": self._masked_sums((pred - true) ** 2, batch["mask"]),
            "mae": self._masked_sums(jnp.abs(pred - true), batch["mask"]),
        }
        if self.scaler_mean is not None:
            sl = slice(self.target_start, self.target_stop)
            mean = jnp.asarray(np.asarray(self.scaler_mean, np.float32)[sl])
            scale = jnp.asarray(np.asarray(self.scaler_scale, np.float32)[sl])
            pred_o, true_o = pred * scale + mean, true * scale + mean
            out["mse_original"] = self._masked_sums((pred_o - true_o) ** 2, batch["mask"])
            out["mae_original"] = self._masked_sums(jnp.abs(pred_o - true_o), batch["mask"])
        return out
