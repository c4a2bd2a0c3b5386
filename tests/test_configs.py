"""Every config in train/configs: loads, validates, documents itself; quicktests of the TFDS classification
config under tfds.testing.mock_data (no network); the config-argument parser."""

import importlib
import json
import re
from pathlib import Path

import ml_collections
import pytest
import tensorflow_datasets as tfds

from train import config as config_lib
from train import train_and_evaluate
from train.configs.common import parse_arg

CONFIGS = sorted(p.stem for p in (Path(config_lib.__file__).parent / "configs").glob("*.py") if p.stem[0] != "_")
CONFIGS = [c for c in CONFIGS if c != "common"]


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("arg", [None, "quicktest"])
def test_config_validates_and_documents_itself(name, arg):
    module = importlib.import_module(f"train.configs.{name}")
    config = config_lib.validate(module.get_config(arg))
    doc = module.__doc__ or ""
    # The docstring gives its own command (full run and quicktest) and states the hardware, the wall time and the
    # expected metric, each under its label (a figure, or why there is none).
    assert f"python -m train --config=train/configs/{name}.py" in doc, f"{name}: the docstring must give the command"
    assert f"--config=train/configs/{name}.py:quicktest" in doc, f"{name}: the docstring must give the quicktest"
    for label in (r"Hardware:", r"Wall time( per run)?\b", r"Expected( metric)?:"):
        assert re.search(rf"\b{label}\s*\S", doc), f"{name}: the docstring must state {label!r}"
    if arg == "quicktest":
        assert config.quicktest and 0 < config.total_steps <= 50


def test_cifar10_quicktest_with_mock_tfds(tmp_path):
    import numpy as np

    import checkpoints
    import zoo
    from train.configs import mixer_cifar10
    from train.data.pipeline import EvalBatches
    from train.inputs import build_inputs

    config = mixer_cifar10.get_config("quicktest")
    config.data.num_threads = 1
    with tfds.testing.mock_data(num_examples=100):
        results = train_and_evaluate(config, tmp_path)
        test_source = build_inputs(config_lib.validate(config), zoo.get_entry(config.model_name)).test
        (batch,) = list(EvalBatches(test_source, 100, 0, 1))
    assert results["traces"] == {"train_step": 1, "eval_step": 1}
    # mock_data serves num_examples for every split string (it ignores slices like train[90%:]).
    assert results["test_metrics"]["num_examples"] == results["val_metrics"]["num_examples"] == 100
    # The reported test metrics are the exported model's on the 100 test images, recomputed here in NumPy.
    model, variables = checkpoints.load_pretrained(tmp_path)
    logits = np.asarray(model.apply(variables, batch["image"], train=False), np.float64)
    labels, mask = batch["label"], batch["mask"] > 0
    assert mask.all() and logits.shape == (100, 10)
    log_probs = logits - logits.max(1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
    top = np.argsort(-logits, axis=1, kind="stable")
    expected = {
        "accuracy": np.mean(top[:, 0] == labels),
        "top5": np.mean((top[:, :5] == labels[:, None]).any(1)),
        "loss": -np.mean(log_probs[np.arange(100), labels]),
    }
    for key, value in expected.items():
        assert results["test_metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_parse_arg():
    defaults = dict(_positional="dataset", dataset="ETTh1", pred_len=96, quicktest=False)
    args = parse_arg("ETTh2,pred_len=192,quicktest", **defaults)
    assert (args.dataset, args.pred_len, args.quicktest) == ("ETTh2", 192, True)
    with pytest.raises(ValueError, match="unknown config argument 'horizon'"):
        parse_arg("horizon=3", pred_len=96)
    with pytest.raises(ValueError, match="unknown config argument 'fast'"):
        parse_arg("fast", quicktest=False)


# ---------------------------------------------------------------------------------------------------------------
# The training length on the command line, recorded hyper-parameters, packaged config files.

EPOCHS_CONFIG = '''"""The quicktest digits job with its length given in epochs (as the full config files give it)."""
from train.configs import default


def get_config(arg=None):
    c = default.get_config("quicktest")
    c.total_steps, c.total_epochs = 0, 2.0
    return c
'''


def test_total_steps_on_the_command_line_replaces_the_files_epochs(tmp_path):
    from trainer_utils import CLI_TINY, read_metrics, run_train

    config_file = tmp_path / "epochs.py"
    config_file.write_text(EPOCHS_CONFIG)
    workdir = tmp_path / "run"
    args = [f"--config={config_file}", *CLI_TINY[1:], "--config.total_steps=3", f"--workdir={workdir}"]
    proc = run_train(args, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "total_steps=3 from the command line replaces the config file's total_epochs=2.0" in proc.stderr
    recorded = json.loads((workdir / "config.json").read_text())
    assert (recorded["total_steps"], recorded["total_epochs"]) == (3, 0.0)
    assert max(read_metrics(workdir)) == 3


def test_prefer_command_line_length():
    def config(steps, epochs):
        return ml_collections.ConfigDict({"total_steps": steps, "total_epochs": epochs})

    # `config` already holds the command line's values (config_flags applies them); `overridden` names them.
    c = config_lib.prefer_command_line_length(config(20, 1.5), {"total_epochs": 1.5, "model.num_blocks": 2})
    assert (c.total_steps, c.total_epochs) == (0, 1.5)
    c = config_lib.prefer_command_line_length(config(400, 30.0), ["total_steps"])
    assert (c.total_steps, c.total_epochs) == (400, 0.0) and isinstance(c.total_epochs, float)
    # Nothing on the command line, both on it, or a length cleared there: nothing changes, validate judges.
    for steps, overridden in ((5, []), (5, ["total_steps", "total_epochs"]), (0, ["total_steps"])):
        c = config_lib.prefer_command_line_length(config(steps, 30.0), overridden)
        assert (c.total_steps, c.total_epochs) == (steps, 30.0)
    with pytest.raises(ValueError, match="exactly one of total_steps and total_epochs"):
        config_lib.validate(config_lib.prefer_command_line_length(config(5, 30.0), ["total_steps", "total_epochs"]))


def _flat(d, prefix=""):
    out = set()
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
    return out


def test_hparams_record_only_the_fields_of_the_task():
    from train.configs import default, softs

    forecasting = config_lib.validate(softs.get_config("quicktest"))
    classification = config_lib.validate(default.get_config("quicktest"))
    image_only = {
        "data.augment", "data.flip", "data.rrc_scale", "data.crop_padding", "data.randaugment_ops",
        "data.randaugment_magnitude", "task.label_smoothing", "task.mixup_alpha", "task.cutmix_alpha",
        "task.mix_prob", "task.switch_prob",
    }
    series_only = {"data.features", "data.target", "data.freq", "data.timeenc", "data.scale",
                   "task.metrics_original_scale", "task.season_length"}
    assert _flat(config_lib.hparams(forecasting)) == _flat(forecasting.to_dict()) - image_only
    assert _flat(config_lib.hparams(classification)) == _flat(classification.to_dict()) - series_only
    hp = config_lib.hparams(forecasting)
    assert hp["model"]["d_model"] == 32 and hp["data"]["features"] == "M" and hp["optim"]["lr"] == 3e-4
    assert "augment" in forecasting.data and "augment" in forecasting.to_dict()["data"]  # the config is untouched
    plain = forecasting.to_dict()
    config_lib.hparams(plain)
    assert "augment" in plain["data"]


def test_packaged_configs_are_found_by_name(tmp_path, monkeypatch):
    find = config_lib.find_config_file
    softs_file = str(config_lib.CONFIGS_DIR / "softs.py")
    monkeypatch.chdir(tmp_path)  # outside the checkout: train/configs/... does not exist here
    assert find("softs") == softs_file
    assert find("softs.py:ETTh2,pred_len=192") == softs_file + ":ETTh2,pred_len=192"
    assert find("train/configs/default.py:quicktest") == str(config_lib.CONFIGS_DIR / "default.py") + ":quicktest"
    for unknown in ("nope.py", "elsewhere/softs.py", "common", "train/configs/__init__.py", ""):
        assert find(unknown) == unknown
    (tmp_path / "softs.py").write_text("def get_config(arg=None):\n    return None\n")
    assert find("softs.py:ETTh1") == "softs.py:ETTh1"  # an existing file always wins
