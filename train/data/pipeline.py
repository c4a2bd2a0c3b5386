"""Batches for the trainer: deterministic, random-access, padded and masked, sharded across processes.

A batch is a function of `(seed, step)` alone: training step `s` takes the `s % steps_per_epoch`-th slice of the
permutation drawn for epoch `s // steps_per_epoch`, and every example's augmentation draws from a generator seeded
by `(seed, step, position in the global batch)`. So the same config gives the same batches whatever the number
of devices or processes, and resuming at step `s` continues exactly. A short last batch of an epoch (and of an
evaluation pass) is padded with `mask = 0` rows instead of being dropped.

Each process materialises only its rows of the global batch; grain prefetches them in threads and its iterator
state (the next step) is saved with the trainer's checkpoints.
"""

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Protocol

import grain
import numpy as np


class ExampleSource(Protocol):
    """What the batcher needs of a data set."""

    def __len__(self) -> int: ...

    def get_batch(self, indices: np.ndarray, seeds: np.ndarray | None) -> dict[str, np.ndarray]: ...


@dataclasses.dataclass(frozen=True)
class ArrayExamples:
    """A data set with a vectorised `get_batch(indices)` (the forecasting windows); no randomness."""

    dataset: Any

    def __len__(self) -> int:
        return len(self.dataset)

    def get_batch(self, indices, seeds):
        del seeds
        return self.dataset.get_batch(indices)


@dataclasses.dataclass(frozen=True)
class TransformedExamples:
    """Per-example random access (`source[i]`) with a per-example transform `transform(example, rng)`."""

    source: Any
    transform: Callable[[dict, np.random.Generator], dict]
    keys: tuple[str, ...] = ("image", "label")

    def __len__(self) -> int:
        return len(self.source)

    def get_batch(self, indices, seeds):
        examples = []
        for j, i in enumerate(indices):
            rng = np.random.default_rng(seeds[j] if seeds is not None else [int(i)])
            examples.append(self.transform(self.source[int(i)], rng))
        return {k: np.stack([np.asarray(e[k]) for e in examples]) for k in self.keys}


def _local_rows(global_batch_size: int, process_index: int, process_count: int) -> slice:
    if global_batch_size % process_count:
        raise ValueError(f"batch size {global_batch_size} is not divisible by the number of processes {process_count}")
    per_process = global_batch_size // process_count
    return slice(process_index * per_process, (process_index + 1) * per_process)


def _assemble(source, indices, mask, rows, seeds) -> dict[str, np.ndarray]:
    local = indices[rows]
    batch = source.get_batch(local, None if seeds is None else seeds[rows])
    batch["mask"] = mask[rows].astype(np.float32)
    return batch


@dataclasses.dataclass(frozen=True)
class TrainBatches:
    """`batches[step]` -> this process's rows of the global training batch of that step."""

    source: ExampleSource
    global_batch_size: int
    seed: int
    drop_remainder: bool = False
    process_index: int = 0
    process_count: int = 1

    def __post_init__(self):
        if len(self.source) == 0:
            raise ValueError("the training split is empty")
        if self.drop_remainder and len(self.source) < self.global_batch_size:
            raise ValueError(
                f"drop_remainder with batch size {self.global_batch_size} leaves no batch of the "
                f"{len(self.source)} training examples"
            )
        _local_rows(self.global_batch_size, self.process_index, self.process_count)

    @property
    def steps_per_epoch(self) -> int:
        n, b = len(self.source), self.global_batch_size
        return n // b if self.drop_remainder else math.ceil(n / b)

    def indices(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Global example indices `[batch]` and mask of `step` (padding repeats index 0 with mask 0)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.source))
        chosen = order[position * self.global_batch_size : (position + 1) * self.global_batch_size]
        mask = np.zeros(self.global_batch_size, bool)
        mask[: len(chosen)] = True
        padded = np.zeros(self.global_batch_size, np.int64)
        padded[: len(chosen)] = chosen
        return padded, mask

    def __len__(self) -> int:
        return np.iinfo(np.int32).max  # unbounded: the trainer stops at total_steps

    def __getitem__(self, step: int) -> dict[str, np.ndarray]:
        indices, mask = self.indices(step)
        rows = _local_rows(self.global_batch_size, self.process_index, self.process_count)
        seeds = np.stack(
            [np.full(self.global_batch_size, self.seed), np.full(self.global_batch_size, step), np.arange(mask.size)],
            axis=1,
        )
        return _assemble(self.source, indices, mask, rows, seeds)


@dataclasses.dataclass(frozen=True)
class EvalBatches:
    """The whole split in order, in global batches; the last one padded (mask 0). Every example counts once."""

    source: ExampleSource
    global_batch_size: int
    process_index: int = 0
    process_count: int = 1

    def __post_init__(self):
        _local_rows(self.global_batch_size, self.process_index, self.process_count)

    def __len__(self) -> int:
        return math.ceil(len(self.source) / self.global_batch_size)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        start = i * self.global_batch_size
        chosen = np.arange(start, min(start + self.global_batch_size, len(self.source)))
        indices = np.zeros(self.global_batch_size, np.int64)
        indices[: chosen.size] = chosen
        mask = np.arange(self.global_batch_size) < chosen.size
        rows = _local_rows(self.global_batch_size, self.process_index, self.process_count)
        return _assemble(self.source, indices, mask, rows, seeds=None)


def iterate(batches, *, num_threads: int = 2, prefetch: int = 4, state: dict | None = None):
    """A grain iterator over `batches[0], batches[1], ...`, prefetched in threads, resumable from `state`."""
    dataset = grain.MapDataset.source(batches).to_iter_dataset(
        grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    )
    iterator = iter(dataset)
    if state is not None:
        iterator.set_state(state)
    return iterator
