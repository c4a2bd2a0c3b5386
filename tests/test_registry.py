"""The registry: names, lookups, errors, model_info."""

import flax.linen as nn
import pytest

import zoo
from zoo.registry import _REGISTRY, Paper, register_model


def test_list_models_sorted_and_filtered():
    names = zoo.list_models()
    assert names == sorted(names) and len(names) == len(set(names))
    assert "mixer_b16_224" in names
    assert zoo.list_models("mixer_b*") == ["mixer_b16_224", "mixer_b32_224"]
    assert set(zoo.list_models(task="classification")) | set(zoo.list_models(task="forecasting")) == set(names)
    assert "mixer_b16_224.goog_in1k" in zoo.list_models(pretrained=True)
    with pytest.raises(ValueError, match="task must be one of"):
        zoo.list_models(task="segmentation")


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match=r"unknown model 'mixer_b16_22'.*closest: mixer_b16_224"):
        zoo.create_model("mixer_b16_22")
    with pytest.raises(ValueError, match=r"no pretrained tag 'nope'.*mixer_b16_224.goog_in1k"):
        zoo.create_model("mixer_b16_224.nope")


def test_unknown_override_names_accepted_fields():
    with pytest.raises(TypeError, match=r"does not accept \['num_clases'\]; accepted fields: num_classes, img_size"):
        zoo.create_model("mixer_s16_224", num_clases=10)


def test_overrides_and_pretrained_tag_set_fields():
    model = zoo.create_model("mixer_s16_224", num_classes=10, drop_path_rate=0.1)
    assert (model.num_classes, model.drop_path_rate, model.hidden_dim) == (10, 0.1, 512)
    assert zoo.create_model("mixer_b16_224.goog_in21k").num_classes == 21843
    assert zoo.create_model("mixer_b16_224.goog_in21k", num_classes=5).num_classes == 5


def test_registering_a_name_twice_raises():
    class Dummy(nn.Module):
        features: int = 1

    paper = Paper("t", "0000.00000", "https://example.org")
    with pytest.raises(ValueError, match="already registered"):

        @register_model(Dummy, family="dummy", task="classification", paper=paper)
        def mixer_b16_224():
            return {}

    assert _REGISTRY["mixer_b16_224"].module_cls.__name__ == "MlpMixer"


def test_register_rejects_unknown_default_fields_and_tasks():
    class Dummy(nn.Module):
        features: int = 1

    paper = Paper("t", "0000.00000", "https://example.org")
    with pytest.raises(TypeError, match=r"has no fields \['width'\]"):

        @register_model(Dummy, family="dummy", task="classification", paper=paper)
        def dummy_bad_field():
            return {"width": 3}

    with pytest.raises(ValueError, match="task must be one of"):
        register_model(Dummy, family="dummy", task="segmentation", paper=paper)
    assert "dummy_bad_field" not in _REGISTRY


def test_model_info():
    info = zoo.model_info("mixer_b16_224")
    assert (info.family, info.task) == ("mlp_mixer", "classification")
    assert info.paper.arxiv == "2105.01601" and "MLP-Mixer" in info.paper.title
    assert info.code.startswith("https://github.com/google-research/vision_transformer")
    assert dict(info.input_spec) == {"images": (224, 224, 3)}
    assert info.num_params == 59_880_472
    assert info.pretrained == ("goog_in1k", "goog_in21k", "goog_in21k_ft_in1k", "miil_in21k", "miil_in21k_ft_in1k")
    assert info.config["patch_size"] == 16 and info.data_config["mean"] == (0.5, 0.5, 0.5)
    assert zoo.pretrained_cfg("mixer_b16_224.goog_in21k").num_classes == 21843


def test_bad_model_arguments_raise_clearly():
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        zoo.create_model("mixer_s16_224", img_size=100)
    with pytest.raises(ValueError, match="num_classes must be >= 0"):
        zoo.create_model("mixer_s16_224", num_classes=-1)
