"""Tasks: what differs between classification and forecasting (inputs, loss, metrics); the steps are generic.

A task turns a batch (a dict of arrays with a `mask` of real examples) into model inputs, a masked mean loss
and metric sums. Metrics are returned as `{name: (sum, count)}` so that they add up exactly over batches,
devices and processes: every real example counts once, padded ones never. A sum may be a vector (one value per
channel, say) over a scalar count.
"""

from typing import Any, Protocol

import jax
import numpy as np

from train.tasks.classification import ClassificationTask
from train.tasks.forecasting import ForecastingTask


class Task(Protocol):
    name: str
    input_keys: tuple[str, ...]  # batch keys passed to the model, in call order

    def model_inputs(self, batch: dict[str, jax.Array]) -> dict[str, jax.Array]: ...

    def prepare_train_batch(self, batch: dict[str, jax.Array], rng: jax.Array) -> dict[str, jax.Array]: ...

    def loss(self, outputs: jax.Array, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]: ...

    def metrics(self, outputs: jax.Array, batch: dict[str, jax.Array]) -> dict[str, tuple[jax.Array, jax.Array]]: ...


def reduce_metrics(sums: dict[str, Any]) -> dict[str, float | list[float]]:
    """{name: (sum, count)} -> {name: sum / count}; a vector sum with a scalar count (a per-channel metric) gives
    a list of floats."""
    out = {}
    for k, (s, c) in sums.items():
        mean = np.asarray(s, np.float64) / max(float(c), 1.0)
        out[k] = float(mean) if mean.ndim == 0 else mean.tolist()
    return out


__all__ = ["ClassificationTask", "ForecastingTask", "Task", "reduce_metrics"]
