"""What a person sees: a progress bar on a terminal, plain log lines otherwise; metrics behind one writer.

`create_writer(workdir)` writes `workdir/metrics.jsonl` (one JSON object per line) and TensorBoard event files
under `workdir/tensorboard` (tensorboardX, no TensorFlow). JSON has no NaN/Infinity: non-finite values are written
as `null` in the JSONL file (TensorBoard keeps them as they are).
"""

import abc
import datetime
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence

import numpy as np


def _to_float(v) -> float:
    return float(np.asarray(v))


def _json_value(v):
    """A plain float, or None where JSON has no value (NaN, ±inf)."""
    v = _to_float(v)
    return v if math.isfinite(v) else None


def _names(scalars: Mapping, prefix: str) -> dict:
    return {f"{prefix}/{k}" if prefix else k: v for k, v in scalars.items()}


def _flatten(d, parent: str = "") -> dict:
    """Nested mappings (dicts, ConfigDicts) to dotted keys."""
    out = {}
    for k, v in (d.to_dict() if hasattr(d, "to_dict") else d).items():
        key = f"{parent}.{k}" if parent else str(k)
        if isinstance(v, Mapping) or hasattr(v, "to_dict"):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _plain(v):
    """A hyper-parameter value as bool/int/float/str (sequences and others become their str)."""
    if isinstance(v, bool | int | float | str) or v is None:
        return v
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


class MetricWriter(abc.ABC):
    """The writer interface the trainer sees."""

    @abc.abstractmethod
    def write_scalars(self, step: int, scalars: Mapping[str, float], *, prefix: str = "") -> None:
        """Writes `scalars` (names get `prefix/` when a prefix is given) at `step`."""

    @abc.abstractmethod
    def write_hparams(self, hparams: Mapping) -> None:
        """Writes the run's hyper-parameters (nested mappings are flattened to dotted keys)."""

    def flush(self) -> None:  # noqa: B027
        pass

    def close(self) -> None:
        self.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class NoopWriter(MetricWriter):
    """Writes nothing (non-zero processes)."""

    def write_scalars(self, step, scalars, *, prefix=""):
        pass

    def write_hparams(self, hparams):
        pass


class JsonlWriter(MetricWriter):
    """Appends `{"step": s, "time": t, "<prefix>/<name>": value, ...}` per call, flushed at once; a resumed run
    continues the file.

    Values are plain floats; NaN and ±inf become `null`. `write_hparams` appends `{"time": t, "hparams": {...}}`
    (the only kind of line without a "step").
    """

    def __init__(self, path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self._f = open(path, "a", encoding="utf-8")

    def _write(self, record: dict):
        # Flushed per record (a few per logging interval): a killed run keeps every row it wrote.
        self._f.write(json.dumps(record, allow_nan=False) + "\n")
        self._f.flush()

    def write_scalars(self, step, scalars, *, prefix=""):
        record = {"step": int(step), "time": time.time()}
        record.update({k: _json_value(v) for k, v in _names(scalars, prefix).items()})
        self._write(record)

    def write_hparams(self, hparams):
        hp = {k: _plain(v) for k, v in _flatten(hparams).items()}
        hp = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in hp.items()}
        self._write({"time": time.time(), "hparams": hp})

    def flush(self):
        if not self._f.closed:
            self._f.flush()

    def close(self):
        if not self._f.closed:
            self._f.close()


def _summary_writer_class():
    """tensorboardX's SummaryWriter, imported without PyTorch.

    tensorboardX's writer module imports torch whenever it is installed (`try: import torch`, only to accept torch
    tensors, which no writer here passes): +470 MiB resident and ~2.5 s for every `python -m train` on a machine
    with torch (measured: the default run's peak over 120 steps 1223 -> 769 MiB). The import is hidden
    for the moment tensorboardX loads; a process that has imported torch itself is left as it is.
    """
    if "torch" in sys.modules or "tensorboardX.writer" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # `import torch` raises ImportError, which tensorboardX expects without torch
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class TensorBoardWriter(MetricWriter):
    """TensorBoard event files in `logdir` through tensorboardX (no TensorFlow)."""

    def __init__(self, logdir):
        self.logdir = logdir
        self._w = _summary_writer_class()(logdir=logdir, flush_secs=30)

    def write_scalars(self, step, scalars, *, prefix=""):
        for k, v in _names(scalars, prefix).items():
            self._w.add_scalar(k, _to_float(v), global_step=int(step))

    def write_hparams(self, hparams):
        from tensorboardX.summary import hparams as hparams_summary

        hp = {k: _plain(v) for k, v in _flatten(hparams).items()}
        # Into this run's own event file (SummaryWriter.add_hparams would open a sub-run directory).
        exp, ssi, _ = hparams_summary(hp, {})
        self._w.file_writer.add_summary(exp)
        self._w.file_writer.add_summary(ssi)
        self._w.add_text("hparams", "\n".join(f"    {k} = {v!r}" for k, v in sorted(hp.items())))

    def flush(self):
        self._w.flush()

    def close(self):
        self._w.close()


class MultiWriter(MetricWriter):
    """Fans every call out to `writers`."""

    def __init__(self, writers: Sequence[MetricWriter]):
        self.writers = list(writers)

    def write_scalars(self, step, scalars, *, prefix=""):
        for w in self.writers:
            w.write_scalars(step, scalars, prefix=prefix)

    def write_hparams(self, hparams):
        for w in self.writers:
            w.write_hparams(hparams)

    def flush(self):
        for w in self.writers:
            w.flush()

    def close(self):
        for w in self.writers:
            w.close()


def create_writer(workdir, *, enabled: bool = True) -> MetricWriter:
    """`workdir/metrics.jsonl` + TensorBoard under `workdir/tensorboard`; a no-op writer when not `enabled`."""
    if not enabled:
        return NoopWriter()
    return MultiWriter([JsonlWriter(os.path.join(workdir, "metrics.jsonl")),
                        TensorBoardWriter(os.path.join(workdir, "tensorboard"))])


def _fmt_eta(seconds) -> str:
    return str(datetime.timedelta(seconds=round(seconds))) if math.isfinite(seconds) else "?"


def _fmt(v) -> str:
    if isinstance(v, str | int | np.integer):
        return str(v)
    return f"{_to_float(v):.4g}"


class Progress:
    """Training progress: a tqdm bar on a terminal, else one plain line every `log_every` steps.

    A plain line reads `step 120/2000 loss 0.4312 1534 ex/s eta 0:01:02 [name value ...]`. The ETA comes from the
    mean time per step since construction (`?` until a step has been timed). The rate is left out while there is
    none (`examples_per_s` None or NaN, e.g. before the first timed step): no `nan ex/s`.
    """

    def __init__(self, total_steps: int, initial_step: int = 0, stream=None, is_terminal: bool | None = None,
                 log_every: int = 100, clock=time.monotonic):
        self.total, self.step, self.log_every, self.clock = total_steps, initial_step, log_every, clock
        self.stream = sys.stderr if stream is None else stream
        if is_terminal is None:
            is_terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self._start_step, self._t0 = initial_step, clock()
        self._bar = None
        if is_terminal:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=initial_step, file=self.stream, unit="step",
                             dynamic_ncols=True, smoothing=0.1)

    def eta_seconds(self) -> float:
        done, elapsed = self.step - self._start_step, self.clock() - self._t0
        if done <= 0 or elapsed <= 0:
            return math.inf
        return (self.total - self.step) * elapsed / done

    def update(self, step: int, *, loss: float, examples_per_s: float | None = None, **extra) -> None:
        """Reports that `step` steps are done; `examples_per_s` None (or NaN) means no rate yet."""
        prev, self.step = self.step, int(step)
        loss = _to_float(loss)
        rate = None if examples_per_s is None else _to_float(examples_per_s)
        rate = None if rate is None or math.isnan(rate) else rate
        if self._bar is not None:
            postfix = {"loss": f"{loss:.4f}", **({} if rate is None else {"ex/s": f"{rate:.0f}"})}
            self._bar.set_postfix({**postfix, **{k: _fmt(v) for k, v in extra.items()}}, refresh=False)
            self._bar.update(self.step - prev)
        elif self.step % self.log_every == 0 or self.step == self.total:
            words = [f"step {self.step}/{self.total}", f"loss {loss:.4f}"]
            words += [] if rate is None else [f"{rate:.0f} ex/s"]
            words += [f"eta {_fmt_eta(self.eta_seconds())}", *(f"{k} {_fmt(v)}" for k, v in extra.items())]
            self.write(" ".join(words))

    def write(self, msg: str) -> None:
        """A message that does not break the bar."""
        if self._bar is not None:
            self._bar.write(msg, file=self.stream)
        else:
            self.stream.write(msg + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
