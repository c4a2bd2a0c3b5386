"""Model state (BatchNorm's `batch_stats`) through the trainer: sharded over devices it holds the global batch's
statistics, it survives checkpoints and resume exactly, EMA averages it, and the exported preset carries it."""

import shutil

import jax
import numpy as np
import pytest
from trainer_utils import digits_config, read_metrics, run_train

import checkpoints
import zoo
from train import train_and_evaluate
from train.data.pipeline import EvalBatches
from train.inputs import build_inputs

MODEL = "affnet_tiny_8"  # a registered BatchNorm model for 8x8 digits
CLI = [
    "--config=train/configs/default.py:quicktest",
    f"--config.model_name={MODEL}",
    "--config.batch_size=32",
    "--config.log_every_steps=1",
    "--config.data.num_threads=1",
]


def stateful_config(**overrides):
    config = digits_config(model_name=MODEL, **overrides)
    config.model = {}  # digits_config sets Mixer fields
    return config


def test_model_under_test_has_state():
    assert set(zoo.abstract_variables(zoo.create_model(MODEL))) == {"params", "batch_stats"}


def test_batch_statistics_are_those_of_the_global_batch_on_eight_devices(tmp_path):
    """Each of 8 devices sees 4 of the 32 rows; the running statistics must still be the whole batch's. Compared
    after the first step (statistics of the same batch under the same initial parameters): later steps would
    compare parameters that Adam's sign-like first updates move apart on float noise alone."""
    for devices in (1, 8):
        proc = run_train(
            [
                *CLI,
                "--config.total_steps=1",
                "--config.optim.schedule.warmup_steps=0",
                f"--workdir={tmp_path / str(devices)}",
            ],
            env={"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    one, _, _ = checkpoints.load_variables(tmp_path / "1" / "model")
    eight, _, _ = checkpoints.load_variables(tmp_path / "8" / "model")
    flat_one, flat_eight = checkpoints.flatten(one["batch_stats"]), checkpoints.flatten(eight["batch_stats"])
    assert flat_one.keys() == flat_eight.keys() and len(flat_one) > 10
    moved = [np.max(np.abs(v - (0.0 if k.endswith("mean") else 1.0))) > 1e-3 for k, v in flat_one.items()]
    assert sum(moved) > len(flat_one) // 2, "the first step left most statistics at their initial values"
    for key, value in flat_one.items():
        np.testing.assert_allclose(flat_eight[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    a, b = read_metrics(tmp_path / "1"), read_metrics(tmp_path / "8")
    np.testing.assert_allclose(b[1], a[1], rtol=1e-5)


@pytest.fixture(scope="module")
def epoch_run(tmp_path_factory):
    """One epoch of digits at batch 64, EMA on, checkpoints every 8 steps: shared by the tests below."""
    workdir = tmp_path_factory.mktemp("epoch")
    config = stateful_config(total_steps=0, total_epochs=1.0, batch_size=64, ema_decay=0.9, checkpoint__every_steps=8)
    return config, workdir, train_and_evaluate(config, workdir)


def test_padded_rows_never_enter_batch_statistics(epoch_run, tmp_path):
    """1437 training images at batch 64: a stateful model trains on the 22 full batches of each epoch (the short
    last batch, padded with masked copies of another example, would bias the statistics); a stateless one on 23."""
    _, _, results = epoch_run
    assert results["steps"] == 1437 // 64
    plain = digits_config(total_steps=0, total_epochs=1.0, batch_size=64)
    assert train_and_evaluate(plain, tmp_path / "plain")["steps"] == -(-1437 // 64)


def test_exported_preset_reproduces_the_test_evaluation(epoch_run):
    """`load_pretrained(workdir)` gives the model and every collection: its test accuracy is the run's."""
    config, workdir, results = epoch_run
    model, variables = checkpoints.load_pretrained(str(workdir))
    assert set(variables) == {"params", "batch_stats"}
    inputs = build_inputs(config, zoo.get_entry(MODEL))
    correct = total = 0
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    for batch in EvalBatches(inputs.test, 64, 0, 1):
        logits = np.asarray(apply(variables, batch["image"]))
        keep = batch["mask"] > 0
        correct += int(np.sum((logits.argmax(-1) == batch["label"])[keep]))
        total += int(keep.sum())
    assert total == results["test_metrics"]["num_examples"] == 360
    assert correct / total == results["test_metrics"]["accuracy"]


def test_resume_restores_the_model_state_exactly(epoch_run):
    """The run loses its last checkpoint (as if killed after saving step 16), resumes from step 16 and ends
    bit-identical, model state and its average included. It rewrites the shared run's outputs with identical ones,
    after the tests that read them."""
    config, workdir, reference = epoch_run
    shutil.rmtree(workdir / "checkpoints" / "22")
    for name in ("model", "results.json"):
        path = workdir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    resumed = train_and_evaluate(config, workdir)
    assert resumed["variables_digest"] == reference["variables_digest"]
    assert resumed["test_metrics"] == reference["test_metrics"]


def test_ema_averages_the_model_state(epoch_run, tmp_path):
    """With decay 1 the average never moves: the exported statistics are BatchNorm's initial ones (mean 0, var 1),
    while the shared run's average (decay 0.9) exports trained ones."""
    _, _, averaged = epoch_run
    frozen = train_and_evaluate(stateful_config(total_steps=3, ema_decay=1.0), tmp_path / "frozen")
    variables, _, _ = checkpoints.load_variables(tmp_path / "frozen" / "model")
    for key, value in checkpoints.flatten(variables["batch_stats"]).items():
        np.testing.assert_array_equal(value, 0.0 if key.endswith("mean") else 1.0, err_msg=key)
    assert averaged["variables_digest"] != frozen["variables_digest"]
