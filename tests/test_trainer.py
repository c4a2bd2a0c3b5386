"""The trainer end to end (in process): the default job, trace counts, exact evaluation, reproducibility,
early stopping with the best checkpoint, exported presets, and the errors of bad input."""

import dataclasses
import re

import jax
import numpy as np
import pytest
from trainer_utils import digits_config, read_checkpoint, read_metrics, read_results, run_train

import checkpoints
from train import train_and_evaluate
from train.trainer import EarlyStopping, NonFiniteLossError, params_digest


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
    # Stops early by construction: training lowers the validation loss at every evaluation, so a rule that wants
    # it as high as possible sees its best at the first evaluation (step 5) and none after it; patience 3 stops at
    # step 20. max_to_keep=1 prunes step 5 unless the best-checkpoint policy keeps it.
    config = digits_config(
        total_steps=60,
        data__val_split="validation",
        eval_every_steps=5,
        early_stopping__metric="val/loss",
        early_stopping__mode="max",
        early_stopping__patience=3,
        checkpoint__max_to_keep=1,
    )
    results = train_and_evaluate(config, tmp_path)
    val = read_metrics(tmp_path, "val/loss")
    assert sorted(val) == [5, 10, 15, 20]
    assert all(val[s] > val[s + 5] for s in (5, 10, 15))  # the premise: the loss falls at every evaluation
    assert results["stopped_early"] and results["steps"] == 20
    assert results["evaluated_step"] == 5
    # The evaluated parameters are step 5's (restored), not step 20's (the ones in memory at the stop).
    assert results["val_metrics"]["loss"] == pytest.approx(val[5], rel=1e-6)
    assert abs(val[5] - val[20]) > 1e-3
    _, _, metadata = checkpoints.load_params(tmp_path / "model")
    assert metadata["step"] == 5
    best, _ = read_checkpoint(tmp_path, 5)
    assert results["params_digest"] == params_digest(best["params"])


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
    # The same initial parameters and first batch: step 1's gradient norm is float32's up to bfloat16 rounding
    # (8-bit mantissa: 2^-8 relative per operation), neither equal (a run that ignored compute_dtype) nor far off.
    # (Step 1's loss cannot tell: the zero-initialised head gives exactly log(10) in any precision.)
    grad_norm, grad_norm_bf16 = (read_metrics(tmp_path / run, "train/grad_norm")[1] for run in ("plain", "bf16"))
    assert 1e-5 < abs(grad_norm_bf16 - grad_norm) / grad_norm < 2e-2, (grad_norm, grad_norm_bf16)
    # Parameters and optimizer state stay float32: in the checkpoint and in the exported model.
    state, _ = read_checkpoint(tmp_path / "bf16", 4)
    floats = {np.asarray(x).dtype for x in jax.tree.leaves(state) if np.issubdtype(np.asarray(x).dtype, np.floating)}
    assert floats == {np.dtype(np.float32)}
    params, _, _ = checkpoints.load_params(tmp_path / "bf16" / "model")
    assert {np.asarray(x).dtype for x in jax.tree.leaves(params)} == {np.dtype(np.float32)}


def test_ema_parameters_are_evaluated_and_exported(tmp_path):
    plain = train_and_evaluate(digits_config(total_steps=6), tmp_path / "plain")
    ema = train_and_evaluate(digits_config(total_steps=6, ema_decay=0.5, checkpoint__every_steps=1), tmp_path / "ema")
    assert ema["traces"]["train_step"] == 1
    # Same training trajectory (same losses), different evaluated parameters.
    assert read_metrics(tmp_path / "ema") == read_metrics(tmp_path / "plain")
    assert ema["params_digest"] != plain["params_digest"]
    assert ema["test_metrics"]["loss"] != plain["test_metrics"]["loss"]
    # The checkpoints hold the EMA: ema_6 = 0.5 * ema_5 + 0.5 * params_6, leaf by leaf.
    (step5, _), (step6, _) = read_checkpoint(tmp_path / "ema", 5), read_checkpoint(tmp_path / "ema", 6)
    ema5, ema6, params6 = (checkpoints.flatten(t) for t in (step5["ema_params"], step6["ema_params"], step6["params"]))
    for key, value in ema6.items():
        np.testing.assert_allclose(value, 0.5 * ema5[key] + 0.5 * params6[key], rtol=1e-6, atol=1e-7, err_msg=key)
    # The exported model is the EMA (bit for bit), not the trained parameters, and is what was evaluated.
    exported, _, _ = checkpoints.load_params(tmp_path / "ema" / "model")
    exported = checkpoints.flatten(exported)
    assert exported.keys() == ema6.keys()
    for key, value in ema6.items():
        np.testing.assert_array_equal(exported[key], value, err_msg=key)
    assert any(not np.array_equal(exported[k], params6[k]) for k in params6)
    assert params_digest(checkpoints.unflatten(exported)) == ema["params_digest"]
    # Without EMA the exported model is the trained parameters of the last step.
    plain_last, _ = read_checkpoint(tmp_path / "plain", 6)
    plain_exported, _, _ = checkpoints.load_params(tmp_path / "plain" / "model")
    assert params_digest(plain_exported) == params_digest(plain_last["params"]) == plain["params_digest"]


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
    with pytest.raises(NonFiniteLossError, match=r"training loss became .* at step (\d+) .* is intact") as err:
        train_and_evaluate(config, tmp_path)
    bad_step = int(re.search(r"at step (\d+)", str(err.value))[1])
    manager = checkpoints.CheckpointManager(tmp_path / "checkpoints")
    steps = manager.all_steps()
    manager.close()
    assert steps and 1 <= min(steps) and max(steps) < bad_step <= 30
    # The kept checkpoint reads back, is finite everywhere, and is the step it is filed under (its step counter,
    # data position and metadata agree).
    state, meta = read_checkpoint(tmp_path, max(steps))
    leaves = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(state)[0]}
    floats = {k: v for k, v in leaves.items() if np.issubdtype(v.dtype, np.floating)}
    assert any(k.startswith("['params']") for k in floats) and any(k.startswith("['opt_state']") for k in floats)
    not_finite = [k for k, v in floats.items() if not np.isfinite(v).all()]
    assert not not_finite, not_finite
    assert int(state["step"]) == meta["step"] == meta["data_state"]["next_index"] == max(steps)
