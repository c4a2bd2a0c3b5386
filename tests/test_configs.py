"""Every config in train/configs: loads, validates, documents itself; quicktests of the TFDS classification
config under tfds.testing.mock_data (no network); the config-argument parser."""

import importlib
from pathlib import Path

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
    assert "python -m train" in doc, f"{name}: the docstring must give the command"
    assert "Hardware" in doc and ("Expected" in doc or "expected" in doc) and "ime" in doc
    if arg == "quicktest":
        assert config.quicktest and 0 < config.total_steps <= 50


def test_cifar10_quicktest_with_mock_tfds(tmp_path):
    from train.configs import mixer_cifar10

    config = mixer_cifar10.get_config("quicktest")
    config.data.num_threads = 1
    with tfds.testing.mock_data(num_examples=100):
        results = train_and_evaluate(config, tmp_path)
    assert results["traces"] == {"train_step": 1, "eval_step": 1}
    # mock_data serves num_examples for every split string (it ignores slices like train[90%:]).
    assert results["test_metrics"]["num_examples"] == results["val_metrics"]["num_examples"] == 100
    assert 0.0 <= results["test_metrics"]["accuracy"] <= 1.0


def test_parse_arg():
    defaults = dict(_positional="dataset", dataset="ETTh1", pred_len=96, quicktest=False)
    args = parse_arg("ETTh2,pred_len=192,quicktest", **defaults)
    assert (args.dataset, args.pred_len, args.quicktest) == ("ETTh2", 192, True)
    with pytest.raises(ValueError, match="unknown config argument 'horizon'"):
        parse_arg("horizon=3", pred_len=96)
    with pytest.raises(ValueError, match="unknown config argument 'fast'"):
        parse_arg("fast", quicktest=False)
