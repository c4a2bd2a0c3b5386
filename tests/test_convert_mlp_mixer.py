"""Parity of our MLP-Mixer with timm's (an independent PyTorch implementation), through the timm converter,
and the official `.npz` layouts (current and big_vision's legacy one)."""

import jax.numpy as jnp
import numpy as np
import pytest
import timm
import torch

import checkpoints
import zoo
from checkpoints.tree import flatten


def randomised_timm_mixer(name, seed=0):
    """timm's model with random weights everywhere (its default init zeroes the head)."""
    model = timm.create_model(name, pretrained=False).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, param in model.named_parameters():
            if key.startswith("head") or "norm" in key:
                base = 1.0 if key.endswith("weight") and "norm" in key else 0.0
                param.copy_(base + 0.1 * torch.randn(param.shape, generator=generator))
    return model


@pytest.fixture(scope="module", params=["mixer_s16_224", "mixer_b16_224"])
def timm_pair(request):
    name = request.param
    model = randomised_timm_mixer(name)
    return name, model, {k: v.numpy() for k, v in model.state_dict().items()}


def test_logits_match_timm(timm_pair):
    name, torch_model, state_dict = timm_pair
    variables = checkpoints.convert(name, state_dict, source="timm")
    ours = zoo.create_model(name, approximate_gelu=False)  # timm uses exact GELU
    images = np.random.default_rng(0).uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()  # timm takes NCHW
    logits = np.asarray(ours.apply(variables, jnp.asarray(images), train=False))
    assert logits.shape == expected.shape == (2, 1000)
    assert np.abs(expected).max() > 0.1  # a meaningful comparison, not two vectors of zeros
    assert np.abs(logits - expected).max() <= 1e-4


def test_official_npz_layouts_load_identically(timm_pair, tmp_path):
    name, _, state_dict = timm_pair
    reference = checkpoints.convert(name, state_dict, source="timm")["params"]
    flat = {k: np.asarray(v) for k, v in flatten(reference).items()}
    path = tmp_path / "Mixer.npz"
    np.savez(path, **flat)
    with np.load(path, allow_pickle=False) as npz:
        loaded = checkpoints.convert(name, dict(npz), source="official")["params"]
    for key, value in flatten(loaded).items():
        np.testing.assert_array_equal(value, flat[key])

    # big_vision's legacy layout: Mixer/encoderblock_{i}/{token,channel}_mixing_phase_0/{kernel1,bias1,...}.
    legacy = {}
    for key, value in flat.items():
        parts = key.split("/")
        if parts[0] == "stem":
            legacy["embedding/" + parts[1]] = value
        elif parts[0] == "pre_head_layer_norm":
            legacy["Mixer/encoder_norm/" + parts[1]] = value
        elif parts[0].startswith("MixerBlock_"):
            block = "Mixer/encoderblock_" + parts[0].split("_")[1]
            if parts[1].endswith("_mixing"):
                index = int(parts[2][-1]) + 1
                legacy[f"{block}/{parts[1]}_phase_0/{parts[3]}{index}"] = value[None]  # extra unit axis
            else:
                legacy[f"{block}/{'/'.join(parts[1:])}"] = value
        else:
            legacy[key] = value
    from_legacy = checkpoints.convert(name, legacy, source="official")["params"]
    for key, value in flatten(from_legacy).items():
        np.testing.assert_array_equal(value, flat[key])


def test_strict_merge_names_missing_unexpected_and_mismatched_keys(timm_pair):
    name, _, state_dict = timm_pair
    broken = dict(state_dict)
    del broken["blocks.0.norm1.weight"]
    broken["blocks.0.extra.weight"] = np.zeros(3, np.float32)
    broken["blocks.1.norm2.bias"] = np.zeros(7, np.float32)
    with pytest.raises(ValueError) as err:
        checkpoints.convert(name, broken, source="timm")
    message = str(err.value)
    assert "missing in timm checkpoint" in message and "MixerBlock_0/LayerNorm_0/scale" in message
    assert "unexpected in timm checkpoint" in message and "blocks.0.extra.weight" in message
    assert "MixerBlock_1/LayerNorm_1/bias (7,) != (" in message


def test_head_size_is_read_from_the_file():
    model = timm.create_model("mixer_s32_224", pretrained=False, num_classes=10)
    variables = checkpoints.convert("mixer_s32_224", model.state_dict(), source="timm")
    assert variables["params"]["head"]["kernel"].shape == (512, 10)
    with pytest.raises(ValueError, match=r"no converter .* from source 'keras'"):
        checkpoints.convert("mixer_s32_224", model.state_dict(), source="keras")
