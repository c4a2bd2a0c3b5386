"""Tests for train/writers.py: JSONL and TensorBoard writers, fan-out, progress output, non-finite values."""

import glob
import io
import json
import math
import os
import struct
import subprocess
import sys

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from tensorboardX.proto import event_pb2, plugin_hparams_pb2
from tensorboardX.record_writer import masked_crc32c

from train import writers


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def read_events(logdir):
    """Every Event in the TFRecord event files under `logdir`, checking each record's CRCs."""
    events = []
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            header = data[pos:pos + 8]
            (length,) = struct.unpack("Q", header)
            assert struct.unpack("I", data[pos + 8:pos + 12])[0] == masked_crc32c(header)
            body = data[pos + 12:pos + 12 + length]
            assert struct.unpack("I", data[pos + 12 + length:pos + 16 + length])[0] == masked_crc32c(body)
            events.append(event_pb2.Event.FromString(body))
            pos += 16 + length
    return events


def scalars_of(events):
    return {(e.step, v.tag): v.simple_value for e in events for v in e.summary.value if v.HasField("simple_value")}


def test_jsonl_content_and_append(tmp_path):
    path = tmp_path / "run" / "metrics.jsonl"
    w = writers.JsonlWriter(str(path))
    w.write_scalars(10, {"loss": jnp.float32(0.5), "acc": np.float64(0.25), "n": 3}, prefix="train")
    w.close()
    w = writers.JsonlWriter(str(path))  # a resumed run continues the same file
    w.write_scalars(20, {"loss": 0.125})
    w.close()
    rows = read_jsonl(path)
    assert len(rows) == 2
    assert set(rows[0]) == {"step", "time", "train/loss", "train/acc", "train/n"}
    assert rows[0]["step"] == 10 and rows[0]["train/loss"] == 0.5 and rows[0]["train/acc"] == 0.25
    assert rows[0]["train/n"] == 3.0 and isinstance(rows[0]["train/n"], float)
    assert rows[1] == {"step": 20, "time": rows[1]["time"], "loss": 0.125}
    assert rows[0]["time"] <= rows[1]["time"]


def test_jsonl_non_finite_values_are_null(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with writers.JsonlWriter(str(path)) as w:
        w.write_scalars(1, {"nan": float("nan"), "inf": jnp.inf, "ninf": -np.inf, "ok": 1.5})
        w.write_hparams({"lr": float("nan"), "name": "x"})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    rows = read_jsonl(path)
    assert rows[0]["nan"] is None and rows[0]["inf"] is None and rows[0]["ninf"] is None and rows[0]["ok"] == 1.5
    assert rows[1]["hparams"] == {"lr": None, "name": "x"}


def test_jsonl_hparams_flattened(tmp_path):
    cfg = ml_collections.ConfigDict({"optim": {"lr": 0.1, "schedule": {"name": "cosine"}}, "seeds": (1, 2)})
    path = tmp_path / "metrics.jsonl"
    with writers.JsonlWriter(str(path)) as w:
        w.write_hparams(cfg)
    (row,) = read_jsonl(path)
    assert "step" not in row
    assert row["hparams"] == {"optim.lr": 0.1, "optim.schedule.name": "cosine", "seeds": "(1, 2)"}


def test_tensorboard_event_file_readable(tmp_path):
    logdir = str(tmp_path / "tb")
    w = writers.TensorBoardWriter(logdir)
    w.write_scalars(5, {"loss": jnp.float32(0.75)}, prefix="train")
    w.write_scalars(6, {"loss": float("nan")}, prefix="train")
    w.write_hparams({"lr": 0.1, "model": "softs", "nested": {"depth": 2}})
    w.close()
    files = glob.glob(os.path.join(logdir, "events.out.tfevents.*"))
    assert len(files) == 1 and os.path.getsize(files[0]) > 0
    events = read_events(logdir)
    scalars = scalars_of(events)
    assert scalars[(5, "train/loss")] == 0.75
    assert math.isnan(scalars[(6, "train/loss")])
    (start,) = [v for e in events for v in e.summary.value if v.tag == "_hparams_/session_start_info"]
    info = plugin_hparams_pb2.HParamsPluginData.FromString(start.metadata.plugin_data.content).session_start_info
    assert info.hparams["lr"].number_value == 0.1 and info.hparams["model"].string_value == "softs"
    assert info.hparams["nested.depth"].number_value == 2
    assert any(v.tag.startswith("hparams") for e in events for v in e.summary.value)  # the text summary


def test_tensorboard_writer_does_not_import_torch(tmp_path):
    """tensorboardX imports torch when it can (+470 MiB resident); the writer hides it (a fresh process)."""
    code = (
        "import sys\nfrom train import writers\n"
        f"w = writers.TensorBoardWriter({str(tmp_path)!r})\nw.write_scalars(1, {{'loss': 0.5}})\nw.close()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert scalars_of(read_events(str(tmp_path)))[(1, "loss")] == 0.5


class Recorder(writers.MetricWriter):
    def __init__(self):
        self.calls = []

    def write_scalars(self, step, scalars, *, prefix=""):
        self.calls.append(("scalars", step, dict(scalars), prefix))

    def write_hparams(self, hparams):
        self.calls.append(("hparams", dict(hparams)))

    def flush(self):
        self.calls.append(("flush",))

    def close(self):
        self.calls.append(("close",))


def test_multiwriter_fans_out():
    a, b = Recorder(), Recorder()
    w = writers.MultiWriter([a, b])
    w.write_scalars(3, {"x": 1.0}, prefix="eval")
    w.write_hparams({"lr": 1})
    w.flush()
    w.close()
    want = [("scalars", 3, {"x": 1.0}, "eval"), ("hparams", {"lr": 1}), ("flush",), ("close",)]
    assert a.calls == want and b.calls == want


def test_create_writer(tmp_path):
    w = writers.create_writer(str(tmp_path))
    w.write_scalars(1, {"loss": 2.0}, prefix="train")
    w.close()
    assert read_jsonl(tmp_path / "metrics.jsonl")[0]["train/loss"] == 2.0
    assert scalars_of(read_events(str(tmp_path / "tensorboard")))[(1, "train/loss")] == 2.0

    off = tmp_path / "off"
    w = writers.create_writer(str(off), enabled=False)
    w.write_scalars(1, {"loss": 2.0})
    w.write_hparams({"a": 1})
    w.close()
    assert not off.exists()


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_progress_plain_lines():
    out, clock = io.StringIO(), FakeClock()
    p = writers.Progress(2000, initial_step=100, stream=out, log_every=20, clock=clock)
    clock.t = 10.0
    p.update(110, loss=0.5, examples_per_s=1000.0)  # not a multiple of log_every: silent
    clock.t = 20.0
    p.update(120, loss=jnp.float32(0.43125), examples_per_s=1534.2, lr=1e-3, epoch=2)
    p.write("eval done")
    clock.t = 30.0
    p.update(140, loss=float("nan"), examples_per_s=float("inf"))
    p.update(2000, loss=0.1, examples_per_s=100.0)
    p.close()
    # 20 steps in 20 s -> 1 s/step; 1880 steps left -> 0:31:20.
    assert out.getvalue().splitlines() == [
        "step 120/2000 loss 0.4313 1534 ex/s eta 0:31:20 lr 0.001 epoch 2",
        "eval done",
        "step 140/2000 loss nan inf ex/s eta 0:23:15",
        "step 2000/2000 loss 0.1000 100 ex/s eta 0:00:00",
    ]


def test_progress_eta_unknown_before_timing():
    out = io.StringIO()
    p = writers.Progress(10, stream=out, log_every=1, clock=lambda: 0.0)
    p.update(1, loss=1.0, examples_per_s=5.0)
    assert out.getvalue() == "step 1/10 loss 1.0000 5 ex/s eta ?\n"


def test_progress_auto_detects_non_terminal():
    out = io.StringIO()  # isatty() is False
    p = writers.Progress(4, stream=out, log_every=2)
    p.update(2, loss=1.0, examples_per_s=1.0)
    assert out.getvalue().startswith("step 2/4 loss 1.0000 1 ex/s eta ")


@pytest.mark.parametrize("loss", [0.25, float("nan")])
def test_progress_terminal_mode(loss):
    out = io.StringIO()
    p = writers.Progress(50, initial_step=10, stream=out, is_terminal=True, log_every=5)
    for step in range(11, 51):
        p.update(step, loss=loss, examples_per_s=123.0, lr=jnp.float32(0.01))
    p.write("a message")
    p.close()
    text = out.getvalue()
    assert "50/50" in text and "a message" in text and "ex/s" in text
    assert "step 50/50 loss" not in text  # no plain lines on a terminal


def test_progress_omits_the_rate_until_there_is_one():
    # The trainer has no rate before its first timed step: no "nan ex/s", in plain lines or on the bar.
    out = io.StringIO()
    p = writers.Progress(3, stream=out, log_every=1, clock=lambda: 0.0)
    p.update(1, loss=1.0, examples_per_s=None, epoch=0.5)
    p.update(2, loss=1.0, examples_per_s=float("nan"))
    p.update(3, loss=1.0, examples_per_s=250.0)
    assert out.getvalue().splitlines() == [
        "step 1/3 loss 1.0000 eta ? epoch 0.5",
        "step 2/3 loss 1.0000 eta ?",
        "step 3/3 loss 1.0000 250 ex/s eta ?",
    ]
    bar_out = io.StringIO()
    bar = writers.Progress(2, stream=bar_out, is_terminal=True)
    bar.update(1, loss=0.5, examples_per_s=None)
    assert "ex/s" not in bar._bar.postfix and "nan" not in bar._bar.postfix
    bar.update(2, loss=0.5, examples_per_s=42.0)
    assert "ex/s=42" in bar._bar.postfix
    bar.close()
