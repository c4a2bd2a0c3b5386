"""benchmarks.end_to_end (whole-run measurements) and benchmarks.torch_softs_train (the PyTorch SOFTS recipe), fast:
a tiny PyTorch run on the real ETTh1 file, the measuring and parsing machinery, no full training run."""

import json
import math
import sys
import textwrap

import numpy as np
import pytest

from benchmarks import end_to_end as e2e
from benchmarks import torch_softs_train as tst
from train.data.timeseries import forecasting_dataset

TINY = ["--d-model", "16", "--d-core", "8", "--d-ff", "16", "--threads", "1"]


@pytest.fixture(scope="module", autouse=True)
def etth1_splits():
    forecasting_dataset("ETTh1", "train", seq_len=96, pred_len=96)  # downloads the file when it is missing
    return tst.load_ett_hour(tst.find_csv("ETTh1", tst.data_dir()), seq_len=96)


def test_split_sizes_follow_the_official_borders(etth1_splits):
    windows = {s: len(tst.Windows(*etth1_splits[s], 96, 96)) for s in etth1_splits}
    # 12/4/4 months of 30 days: train rows [0, 8640), val [8640 - 96, 11520), test [11520 - 96, 14400);
    # windows per segment = rows - seq_len - pred_len + 1.
    assert windows == {"train": 8640 - 96 - 96 + 1, "val": 2880 + 96 - 96 - 96 + 1, "test": 2880 - 96 + 1}
    assert windows == {"train": 8449, "val": 2785, "test": 2785}


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_windows_match_the_library_pipeline(etth1_splits, split):
    """Two independent implementations of the protocol (scaler, borders, timeF) give the same windows."""
    ours = forecasting_dataset("ETTh1", split, seq_len=96, pred_len=96)
    theirs = tst.Windows(*etth1_splits[split], 96, 96)
    assert len(ours) == len(theirs)
    for i in (0, 1234, len(ours) - 1):
        x, y, x_mark = theirs[i]
        np.testing.assert_allclose(x, ours[i]["x"], atol=1e-5)
        np.testing.assert_allclose(y, ours[i]["y"], atol=1e-5)
        np.testing.assert_allclose(x_mark, ours[i]["x_mark"], atol=1e-6)
        assert x.dtype == np.float32 and x.shape == (96, 7) and x_mark.shape == (96, 4)


def test_cosine_schedule_is_the_official_lradj():
    assert tst.cosine_lr(3e-4, 10, 20) == pytest.approx(1.5e-4)
    assert tst.cosine_lr(3e-4, 20, 20) == pytest.approx(0.0, abs=1e-12)
    assert tst.cosine_lr(3e-4, 1, 20) == pytest.approx(3e-4 / 2 * (1 + math.cos(math.pi / 20)))


def test_tiny_torch_run_learns_and_its_result_line_parses(capsys):
    result = tst.main([*TINY, "--epochs", "2", "--max-steps", "25", "--lr", "1e-3", "--quiet"])
    out = capsys.readouterr().out
    assert e2e.TORCH_RESULT_PREFIX == tst.RESULT_PREFIX
    assert e2e.parse_torch_output(out) == json.loads(json.dumps(result))
    history = result["history"]
    assert [h["steps"] for h in history] == [25, 25] and result["steps"] == 50 and result["epochs"] == 2
    assert history[-1]["train_loss"] < history[0]["first_loss"]  # the loss decreases
    assert history[1]["val_mse"] < history[0]["val_mse"]
    assert history[1]["lr"] == pytest.approx(tst.cosine_lr(1e-3, 1, 2))  # the lr drops after each epoch
    assert result["best_epoch"] == 2 and not result["stopped_early"]
    assert 0 < result["test_metrics"]["mse"] < 2 and 0 < result["test_metrics"]["mae"] < 2
    summary = e2e.summarize("torch", out)
    assert summary["windows"] == {"train": 8449, "val": 2785, "test": 2785}
    assert summary["test_mse"] == result["test_metrics"]["mse"] and summary["threads"] == 1


def test_torch_script_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        tst.main([*TINY, "--data-dir", str(tmp_path)])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ETTh1.csv is not in") and err.count("\n") == 1
    with pytest.raises(SystemExit):
        tst.main(["--epochs", "0"])
    assert "--epochs must be >= 1" in capsys.readouterr().err


def test_measure_counts_the_child_alone(tmp_path):
    big = "b = bytearray(300 << 20); b[::4096] = b'x' * len(b[::4096]); t = __import__('time').process_time()\n"
    big += "while __import__('time').process_time() - t < 0.3: pass"
    m = e2e.measure([sys.executable, "-c", big], cwd=tmp_path, env=None, log_dir=tmp_path)
    assert m["returncode"] == 0 and not m["timed_out"]
    assert m["peak_mib"] >= 300 and m["cpu_s"] >= 0.3 and m["wall_s"] >= 0.3
    assert m["cpu_s"] == pytest.approx(m["user_s"] + m["sys_s"])
    # The next child is small: its peak is its own, not the largest of every child so far (RUSAGE_CHILDREN's).
    small = e2e.measure([sys.executable, "-c", "print('hi')"], cwd=tmp_path, env=None, log_dir=tmp_path)
    assert small["stdout"] == "hi\n" and small["peak_mib"] < 60


def test_measure_timeout(tmp_path):
    m = e2e.measure(
        [sys.executable, "-c", "import time; time.sleep(60)"], cwd=tmp_path, env=None, log_dir=tmp_path, timeout=1
    )
    assert m["timed_out"] and m["returncode"] < 0 and m["wall_s"] < 30


TRAIN_OUTPUT = """\
I1202 07:09:18.479974 1 trainer.py:167] data: ETTh1 (M): train 8449, val 2785, test 2785 windows, 7 channels
step 100/5300 loss 0.4100 eta 0:05:00 epoch 0.3774
step 1000/5300 loss 0.3900 1500 ex/s eta 0:03:00 epoch 3.774
step 1060: val mae 0.4 mse 0.7 num_examples 2785
workdir: WORKDIR
{
  "test_metrics": {
    "mae": 0.4012,
    "mse": 0.3811,
    "num_examples": 2785
  },
  "val_metrics": {
    "mse": 0.7
  }
}
params sha256 (process 0): 0123
"""


def test_parse_train_output(tmp_path):
    parsed = e2e.parse_train_output(TRAIN_OUTPUT)
    assert parsed["test_metrics"]["mse"] == 0.3811 and parsed["steps_per_epoch"] == 265
    assert parsed["windows"] == {"train": 8449, "val": 2785, "test": 2785}
    (tmp_path / "results.json").write_text(
        json.dumps({"steps": 7 * 265, "evaluated_step": 4 * 265, "stopped_early": True})
    )
    summary = e2e.summarize("ours", TRAIN_OUTPUT, tmp_path)
    assert summary["epochs"] == 7 and summary["best_epoch"] == 4 and summary["steps"] == 1855
    assert summary["test_mse"] == 0.3811 and summary["test_mae"] == 0.4012 and summary["stopped_early"]
    with pytest.raises(ValueError, match="no JSON summary"):
        e2e.parse_train_output("step 1/2 loss 1.0 epoch 0.5\n")


FAKE_OURS = textwrap.dedent(
    """
    import json, os, pathlib, sys
    cache = os.environ["JAX_COMPILATION_CACHE_DIR"]
    assert os.path.isdir(cache) and not os.listdir(cache), cache
    workdir = pathlib.Path(sys.argv[1]); workdir.mkdir()
    (workdir / "results.json").write_text(json.dumps({"steps": 40, "evaluated_step": 40, "stopped_early": False}))
    print("step 40/40 loss 0.5 epoch 2")
    print("workdir: " + str(workdir)); print(json.dumps({"test_metrics": {"accuracy": 0.5}})); print("params sha256")
    """
)


def test_runner_end_to_end_with_small_sides(monkeypatch, tmp_path, capsys):
    """The runner's machinery on two short processes: a stand-in for ours, and a tiny real PyTorch run."""
    torch_side = e2e.Side("torch", ("-m", "benchmarks.torch_softs_train", *TINY, "--epochs", "1", "--max-steps", "5"))
    run = e2e.Run("tiny", "test", (e2e.Side("ours", ("-c", FAKE_OURS, "{workdir}"), fresh_jax_cache=True), torch_side))
    monkeypatch.setitem(e2e.RUNS, "tiny", run)
    out_json = tmp_path / "e2e.json"
    rows = e2e.main(["--runs", "tiny", "--rounds", "2", "--json", str(out_json)])
    assert [(r["side"], r["round"]) for r in rows] == [("ours", 1), ("torch", 1), ("torch", 2), ("ours", 2)]
    ours, theirs = rows[0], rows[1]
    assert ours["test_accuracy"] == 0.5 and ours["epochs"] == 2 and ours["steps"] == 40
    assert ours["command"].startswith("JAX_COMPILATION_CACHE_DIR=<empty tmp> python -c")
    assert theirs["epochs"] == 1 and theirs["steps"] == 5 and theirs["windows"]["train"] == 8449
    assert theirs["jax_imported"] is False  # the PyTorch process's time and memory are PyTorch's alone
    for r in rows:
        assert r["wall_s"] > 0 and r["cpu_s"] > 0 and r["peak_mib"] > 0
    theirs_peak = sorted(r["peak_mib"] for r in rows if r["side"] == "torch")
    assert all(r["peak_mib"] < theirs_peak[0] for r in rows if r["side"] == "ours")  # per process, not shared
    data = json.loads(out_json.read_text())
    assert len(data["rows"]) == 4 and data["ratios"][0]["run"] == "tiny" and data["torch"]
    assert data["ratios"][0]["torch_over_ours_peak_mib"] > 1
    printed = capsys.readouterr().out
    assert "tiny: torch / ours (medians of 2 round(s))" in printed


def test_unknown_run_is_one_clear_line(capsys):
    with pytest.raises(SystemExit) as exc:
        e2e.main(["--runs", "softs_etth1_96,nope"])
    assert exc.value.code == 2
    assert "--runs: unknown run 'nope'; known: softs_etth1_96, default" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        e2e.main(["--rounds", "0"])
    assert "--rounds must be >= 1" in capsys.readouterr().err
