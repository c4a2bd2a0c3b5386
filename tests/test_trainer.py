"""The trainer end to end (in process): the default job, trace counts, exact evaluation, reproducibility,
early stopping with the best checkpoint, exported presets, and the errors of bad input."""

import dataclasses

import numpy as np
import pytest
from trainer_utils import digits_config, read_metrics, read_results, run_train

import checkpoints
from train import train_and_evaluate
from train.trainer import EarlyStopping, NonFiniteLossError


def test_default_job_reaches_95_percent(tmp_path):
    """`python -m train` with no config: real data (scikit-learn digits), CPU, about a minute."""
    proc = run_train([f"--workdir={tmp_path}"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test accuracy:" in proc.stdout
    results = read_results(tmp_path)
    assert results["test_metrics"]["accuracy"] >= 0.95
    assert results["test_metrics"]["num_examples"] == 360
    assert set(results) >= {"test_metrics", "num_params", "wall_s", "examples_per_s"}
    assert (tmp_path / "config.json").exists() and (tmp_path / "metrics.jsonl").exists()
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tensorboard").iterdir())


def test_steps_compile_once_and_eval_counts_every_example(tmp_path):
    # 1293 training images at batch 32: a padded last batch every epoch; 144 + 360 eval images at batch 7.
    config = digits_config(total_steps=45, eval_batch_size=7, data__val_split="validation", eval_every_steps=20)
    results = train_and_evaluate(config, tmp_path)
    assert results["traces"] == {"train_step": 1, "eval_step": 1}
    assert results["val_metrics"]["num_examples"] == 144
    assert results["test_metrics"]["num_examples"] == 360


def test_eval_metrics_do_not_depend_on_the_eval_batch_size(tmp_path):
    metrics = []
    for size in (1, 7, 32):
        results = train_and_evaluate(digits_config(total_steps=3, eval_batch_size=size), tmp_path / str(size))
        metrics.append(results["test_metrics"])
    for other in metrics[1:]:
        assert other["num_examples"] == metrics[0]["num_examples"] == 360
        for key in ("accuracy", "top5", "loss"):
            np.testing.assert_allclose(other[key], metrics[0][key], rtol=1e-6)


def test_same_config_and_seed_give_the_same_run(tmp_path):
    a = train_and_evaluate(digits_config(), tmp_path / "a")
    b = train_and_evaluate(digits_config(), tmp_path / "b")
    c = train_and_evaluate(digits_config(seed=1), tmp_path / "c")
    assert a["params_digest"] == b["params_digest"] != c["params_digest"]
    assert a["test_metrics"] == b["test_metrics"]
    assert read_metrics(tmp_path / "a") == read_metrics(tmp_path / "b")


def test_resume_after_completion_and_exported_preset(tmp_path):
    first = train_and_evaluate(digits_config(), tmp_path)
    again = train_and_evaluate(digits_config(), tmp_path)  # finds the final checkpoint: no more training
    assert again["steps"] == first["steps"] == 10
    assert again["test_metrics"] == first["test_metrics"]
    params, config, metadata = checkpoints.load_params(tmp_path / "model")
    assert config["model_name"] == "mixer_ti2_8" and config["overrides"]["num_classes"] == 10
    assert metadata["step"] == 10
    assert set(params) >= {"stem", "MixerBlock_0", "head"}


def test_early_stopping_restores_the_best_checkpoint(tmp_path):
    config = digits_config(
        total_steps=60,
        data__val_split="validation",
        eval_every_steps=5,
        early_stopping__metric="val/loss",
        early_stopping__patience=2,
        optim__lr=0.05,  # large enough that the validation loss does not fall monotonically
    )
    results = train_and_evaluate(config, tmp_path)
    val = read_metrics(tmp_path, "val/loss")
    best = min(val.values())
    best_step = max(s for s, v in val.items() if v == best)  # ties: the later evaluation wins
    assert results["evaluated_step"] == best_step
    np.testing.assert_allclose(results["val_metrics"]["loss"], best, rtol=1e-6)
    last = max(val)
    if results["stopped_early"]:
        assert results["steps"] == last < 60
        assert sum(1 for s in val if s > best_step) == 2


def test_early_stopping_rule():
    stopper = EarlyStopping("val/mse", "min", patience=2)
    assert not stopper.update(1.0, 1)
    assert not stopper.update(1.0, 2) and stopper.best_step == 2  # a tie is an improvement
    assert not stopper.update(1.5, 3) and stopper.bad_evals == 1
    assert stopper.update(1.2, 4)  # second evaluation without improvement
    assert (stopper.best, stopper.best_step) == (1.0, 2)
    assert stopper.rank(True) > stopper.rank(False)
    restored = EarlyStopping(**dataclasses.asdict(stopper))
    assert restored == stopper


def test_bf16_compute_and_gradient_accumulation(tmp_path):
    plain = train_and_evaluate(digits_config(total_steps=4), tmp_path / "plain")
    accumulated = train_and_evaluate(digits_config(total_steps=4, accum_steps=4), tmp_path / "accum")
    np.testing.assert_allclose(
        list(read_metrics(tmp_path / "accum").values()), list(read_metrics(tmp_path / "plain").values()), rtol=1e-5
    )
    assert plain["traces"]["train_step"] == accumulated["traces"]["train_step"] == 1
    bf16 = train_and_evaluate(digits_config(total_steps=4, compute_dtype="bfloat16"), tmp_path / "bf16")
    assert np.isfinite(bf16["test_metrics"]["loss"])


def test_ema_parameters_are_evaluated_and_exported(tmp_path):
    plain = train_and_evaluate(digits_config(total_steps=6), tmp_path / "plain")
    ema = train_and_evaluate(digits_config(total_steps=6, ema_decay=0.5), tmp_path / "ema")
    assert ema["traces"]["train_step"] == 1
    # Same training trajectory (same losses), different evaluated parameters.
    assert read_metrics(tmp_path / "ema") == read_metrics(tmp_path / "plain")
    assert ema["params_digest"] != plain["params_digest"]
    assert ema["test_metrics"]["loss"] != plain["test_metrics"]["loss"]


def test_unknown_config_key_is_named(tmp_path):
    config = digits_config()
    config.optim.learning_rate = 0.1
    with pytest.raises(ValueError, match=r"unknown config key\(s\): optim.learning_rate"):
        train_and_evaluate(config, tmp_path)


def test_unknown_config_flag_on_the_command_line(tmp_path):
    proc = run_train(["--config=train/configs/default.py:quicktest", "--config.optim.lrate=1", f"--workdir={tmp_path}"])
    assert proc.returncode != 0
    assert "lrate" in proc.stderr


def test_model_task_mismatch_is_named(tmp_path):
    config = digits_config(data__dataset="ETTh1")
    with pytest.raises(ValueError, match="task classification needs an image data set"):
        train_and_evaluate(config, tmp_path)
    config = digits_config(task__name="forecasting")
    with pytest.raises(ValueError, match="is a classification model but the config's task is 'forecasting'"):
        train_and_evaluate(config, tmp_path)


def test_batch_that_does_not_fit_the_model_is_named(tmp_path):
    config = digits_config()
    config.model.in_chans = 3
    with pytest.raises(ValueError, match="has 1-channel images but mixer_ti2_8 expects 3 channels"):
        train_and_evaluate(config, tmp_path)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    config = digits_config(total_steps=30, checkpoint__every_steps=1, optim__lr=1e12, optim__grad_clip_norm=0.0)
    config.optim.schedule.warmup_steps = 3  # step 0 runs at lr 0: a finite first checkpoint
    with pytest.raises(NonFiniteLossError, match=r"training loss became .* at step .* is intact"):
        train_and_evaluate(config, tmp_path)
    manager = checkpoints.CheckpointManager(tmp_path / "checkpoints")
    steps = manager.all_steps()
    assert steps and min(steps) >= 1
    manager.close()
