"""Fine-tuning from pretrained weights: `config.init_from`, `init_dont_load`, `optim.frozen`, the release's
preprocessing, and resuming (which never re-applies `init_from`)."""

import jax
import numpy as np
import pytest
from sklearn.datasets import load_digits
from trainer_utils import run_train

import checkpoints
import zoo
from checkpoints.tree import flatten
from train import config as config_lib
from train import finetune
from train.configs import finetune as finetune_config
from train.inputs import build_inputs
from train.trainer import train_and_evaluate

MODEL = "mixer_ti2_8"


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    """A preset of `mixer_ti2_8` (10 classes) with random weights: what a user's earlier run leaves in
    `workdir/model`."""
    directory = tmp_path_factory.mktemp("preset") / "model"
    model = zoo.create_model(MODEL, num_classes=10)
    variables = jax.device_get(model.init(jax.random.key(42), **zoo.dummy_inputs(model), train=False))
    checkpoints.save_variables(directory, variables, config={"model_name": MODEL, "overrides": {"num_classes": 10}})
    return directory, variables


def quicktest(start, **changes):
    config = finetune_config.get_config(f"quicktest,init_from={start}")
    for key, value in changes.items():
        target = config
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return config


def test_first_evaluation_is_the_loaded_models(preset, tmp_path):
    directory, variables = preset
    config = quicktest(directory)
    results = train_and_evaluate(config, tmp_path / "run")

    # The loaded model evaluated here, independently of the trainer: the preset's variables applied to the same
    # preprocessed test images.
    inputs = build_inputs(config_lib.validate(config), zoo.get_entry(MODEL))
    batch = inputs.test.get_batch(np.arange(len(inputs.test)), None)
    images, labels = batch["image"], batch["label"]
    model = zoo.create_model(MODEL, num_classes=10)
    logits = np.asarray(model.apply(variables, images, train=False), np.float64)
    log_probs = (
        logits
        - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
        - logits.max(1, keepdims=True)
    )
    init = results["init_metrics"]["test"]
    assert init["num_examples"] == len(labels) == 360
    assert init["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == labels), abs=1e-9)
    assert init["loss"] == pytest.approx(-np.mean(log_probs[np.arange(len(labels)), labels]), rel=1e-5)
    assert set(results["init_metrics"]) == {"val", "test"}
    assert results["steps"] == 20 and results["test_metrics"]["loss"] < init["loss"]  # and it trains


def test_new_head_and_linear_probe_keep_every_loaded_weight(preset, tmp_path):
    directory, variables = preset
    digits = load_digits()
    keep = digits.target < 3  # a 3-class data set: the file's 10-class head cannot load
    images = (digits.images[keep] * (255 / 16)).round().astype(np.uint8)
    labels = digits.target[keep]
    npz = tmp_path / "three.npz"
    np.savez(
        npz,
        train_images=images[:400],
        train_labels=labels[:400],
        test_images=images[400:],
        test_labels=labels[400:],
    )
    config = quicktest(directory, **{"data.dataset": f"npz:{npz}", "data.val_split": "", "optim.frozen": "(?!head/).*"})
    config.data.train_split = "train"
    config.eval_every_steps = 0
    results = train_and_evaluate(config, tmp_path / "run")
    trained = flatten(checkpoints.load_variables(tmp_path / "run" / "model")[0]["params"])
    loaded = flatten(variables["params"])
    assert trained["head/kernel"].shape == (loaded["head/kernel"].shape[0], 3)
    assert not np.allclose(trained["head/kernel"], 0)
    for path, value in loaded.items():
        if not path.startswith("head/"):
            np.testing.assert_array_equal(trained[path], value, err_msg=path)  # frozen and loaded: bit-equal
    assert results["test_metrics"]["accuracy"] > results["init_metrics"]["test"]["accuracy"]


def test_resuming_never_reapplies_init_from(preset, tmp_path):
    directory, _ = preset
    first = train_and_evaluate(quicktest(directory), tmp_path / "run")
    # The weights it started from are gone: a resume that re-read init_from would fail.
    longer = quicktest(tmp_path / "missing", total_steps=30, resume_changes="total_steps")
    resumed = train_and_evaluate(longer, tmp_path / "run")
    assert resumed["steps"] == 30 and resumed["init_metrics"] == first["init_metrics"]


def test_init_dont_load_regexes_reinitialise_what_they_name(preset, tmp_path):
    directory, variables = preset
    config = config_lib.validate(quicktest(directory, init_dont_load="head/.*, MixerBlock_0/.*"))
    model = zoo.create_model(MODEL, num_classes=10)
    fresh = jax.device_get(model.init(jax.random.key(0), **zoo.dummy_inputs(model), train=False))
    merged = flatten(finetune.init_variables(config, model, fresh))
    loaded, init = flatten(variables), flatten(fresh)
    assert any(p.startswith("params/MixerBlock_0/") for p in merged)
    for path in merged:
        expected = init if ("/head/" in path or "/MixerBlock_0/" in path) else loaded
        np.testing.assert_array_equal(merged[path], expected[path], err_msg=path)


def test_release_preprocessing_flows_into_the_pipeline_unless_the_config_sets_it():
    config = config_lib.validate(finetune_config.get_config())
    entry = zoo.get_entry("mixer_b16_224")
    release = zoo.pretrained_cfg("mixer_b16_224.goog_in21k")
    assert finetune.preprocessing(config, entry) == dict(
        mean=release.mean, std=release.std, crop_pct=release.crop_pct, interpolation=release.interpolation
    )
    config.data.mean, config.data.crop_pct = (0.1, 0.2, 0.3), 1.0
    got = finetune.preprocessing(config, entry)
    assert got["mean"] == (0.1, 0.2, 0.3) and got["crop_pct"] == 1.0 and got["std"] == release.std


def test_mistakes_are_one_clear_line(preset, tmp_path):
    directory, _ = preset
    model = zoo.create_model(MODEL, num_classes=10)
    fresh = jax.device_get(model.init(jax.random.key(0), **zoo.dummy_inputs(model), train=False))
    wrong_model = config_lib.validate(quicktest(directory, init_from="mixer_b16_224.goog_in21k"))
    with pytest.raises(ValueError, match=r"release of mixer_b16_224 but config\.model_name is mixer_ti2_8"):
        finetune.init_variables(wrong_model, model, fresh)
    with pytest.raises(FileNotFoundError, match="no such file"):
        finetune.init_variables(config_lib.validate(quicktest(tmp_path / "nope.pth")), model, fresh)
    proc = run_train(
        [
            "--config=train/configs/finetune.py:quicktest",
            f"--config.init_from={directory}",
            "--config.optim.frozen=nothing_matches",
            f"--workdir={tmp_path / 'run'}",
        ]
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: optim.frozen 'nothing_matches' matches no parameter")
    assert "Traceback" not in proc.stderr
