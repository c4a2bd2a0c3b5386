"""Parity of our MLP-Mixer with timm's (an independent PyTorch implementation) through the timm converter, with
every parameter random; and the official `.npz` layouts (current and big_vision's legacy one), built from a key
list written from the official JAX code (not from our parameter names)."""

import jax.numpy as jnp
import numpy as np
import pytest
import timm
import torch

import checkpoints
import zoo
from checkpoints.tree import flatten

# name -> (patch, hidden C, blocks N, tokens S at 224, D_S, D_C): docs/vision_mixers.md §2.2.
VARIANTS = {"mixer_s16_224": (16, 512, 8, 196, 256, 2048), "mixer_b16_224": (16, 768, 12, 196, 384, 3072)}
# Exact parameter counts with the 1000-class head (§2.2, cross-checked with vit_jax's models_test.py for B/16).
EXACT_PARAMS = {"mixer_s16_224": 18_528_264, "mixer_b16_224": 59_880_472}


def official_npz_shapes(patch, hidden, blocks, tokens, tokens_mlp, channels_mlp, classes=1000) -> dict:
    """Key -> shape of a released `.npz`, written from google-research/vision_transformer vit_jax/models_mixer.py:
    `nn.Conv(name='stem')`, per block `nn.LayerNorm()` (LayerNorm_0), `MlpBlock(name='token_mixing')` of two
    `nn.Dense` (Dense_0, Dense_1) applied to the token axis, `nn.LayerNorm()` (LayerNorm_1),
    `MlpBlock(name='channel_mixing')`; then `nn.LayerNorm(name='pre_head_layer_norm')` and `nn.Dense(name='head')`.
    Flax layouts: Conv kernel HWIO, Dense kernel [in, out]."""
    shapes = {"stem/kernel": (patch, patch, 3, hidden), "stem/bias": (hidden,)}
    for i in range(blocks):
        b = f"MixerBlock_{i}"
        for norm in ("LayerNorm_0", "LayerNorm_1"):
            shapes[f"{b}/{norm}/scale"] = shapes[f"{b}/{norm}/bias"] = (hidden,)
        for mlp, width, inner in (("token_mixing", tokens, tokens_mlp), ("channel_mixing", hidden, channels_mlp)):
            shapes[f"{b}/{mlp}/Dense_0/kernel"], shapes[f"{b}/{mlp}/Dense_0/bias"] = (width, inner), (inner,)
            shapes[f"{b}/{mlp}/Dense_1/kernel"], shapes[f"{b}/{mlp}/Dense_1/bias"] = (inner, width), (width,)
    shapes["pre_head_layer_norm/scale"] = shapes["pre_head_layer_norm/bias"] = (hidden,)
    shapes["head/kernel"], shapes["head/bias"] = (hidden, classes), (classes,)
    return shapes


def official_from_timm(state_dict: dict, blocks: int) -> dict:
    """The official `.npz` dict holding timm's weights: each official key taken from the timm key documented for
    it (§2.6: norm1 <-> LayerNorm_0, mlp_tokens <-> token_mixing, fc1/fc2 <-> Dense_0/Dense_1, transposed)."""
    t = lambda key: state_dict[key].T
    out = {"stem/kernel": state_dict["stem.proj.weight"].transpose(2, 3, 1, 0)}  # OIHW -> HWIO
    out["stem/bias"] = state_dict["stem.proj.bias"]
    for i in range(blocks):
        b, tb = f"MixerBlock_{i}", f"blocks.{i}"
        for norm, tnorm in (("LayerNorm_0", "norm1"), ("LayerNorm_1", "norm2")):
            out[f"{b}/{norm}/scale"] = state_dict[f"{tb}.{tnorm}.weight"]
            out[f"{b}/{norm}/bias"] = state_dict[f"{tb}.{tnorm}.bias"]
        for mlp, tmlp in (("token_mixing", "mlp_tokens"), ("channel_mixing", "mlp_channels")):
            for dense, fc in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
                out[f"{b}/{mlp}/{dense}/kernel"] = t(f"{tb}.{tmlp}.{fc}.weight")
                out[f"{b}/{mlp}/{dense}/bias"] = state_dict[f"{tb}.{tmlp}.{fc}.bias"]
    out["pre_head_layer_norm/scale"] = state_dict["norm.weight"]
    out["pre_head_layer_norm/bias"] = state_dict["norm.bias"]
    out["head/kernel"], out["head/bias"] = t("head.weight"), state_dict["head.bias"]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def randomised_timm_mixer(name, seed=0):
    """timm's model with every parameter random: timm zeroes the head and draws MLP biases at std 1e-6, which
    would leave bias and head mappings unchecked. Matrices get noise at their own init scale, vectors N(0, 0.1)
    (norm weights around 1)."""
    model = timm.create_model(name, pretrained=False).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if param.ndim == 1:
                param.copy_((1.0 if "norm" in key and key.endswith("weight") else 0.0) + 0.1 * noise)
            else:
                param.add_(noise / np.sqrt(np.prod(param.shape[1:])))  # fan-in scale, the head included
    return model


@pytest.fixture(scope="module", params=list(VARIANTS))
def timm_pair(request):
    name = request.param
    model = randomised_timm_mixer(name)
    state_dict = {k: v.numpy() for k, v in model.state_dict().items()}
    assert all(np.abs(v).max() > 0.05 for k, v in state_dict.items() if k.endswith("bias")), "biases not random"
    return name, model, state_dict


def test_logits_match_timm(timm_pair):
    name, torch_model, state_dict = timm_pair
    variables = checkpoints.convert(name, state_dict, source="timm")
    ours = zoo.create_model(name, approximate_gelu=False)  # timm uses exact GELU
    images = np.random.default_rng(0).uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()  # timm takes NCHW
    logits = np.asarray(ours.apply(variables, jnp.asarray(images), train=False))
    assert logits.shape == expected.shape == (2, 1000)
    scale = np.abs(expected).max()
    assert scale > 0.5 and np.abs(expected[0] - expected[1]).max() > 0.1  # a meaningful comparison
    assert np.abs(logits - expected).max() <= 1e-4 * max(1.0, scale)


def test_official_key_list_matches_the_released_parameter_count():
    """The hand-written official key list has the exact parameter counts of the released models."""
    for name, dims in VARIANTS.items():
        shapes = official_npz_shapes(*dims)
        assert sum(int(np.prod(s)) for s in shapes.values()) == EXACT_PARAMS[name]
        assert len(shapes) == 2 + 12 * dims[2] + 4  # stem, 4 norm + 8 dense per block, final norm, head


def test_official_npz_layouts_load_identically(timm_pair, tmp_path):
    """An `.npz` in the released layout (keys and shapes from the official code) holding timm's random weights
    loads through the official converter to exactly the parameters the timm converter gives (whose logits match
    timm above); so does big_vision's legacy layout."""
    name, _, state_dict = timm_pair
    dims = VARIANTS[name]
    official = official_from_timm(state_dict, blocks=dims[2])
    assert {k: v.shape for k, v in official.items()} == official_npz_shapes(*dims)
    path = tmp_path / "Mixer.npz"
    np.savez(path, **official)
    with np.load(path, allow_pickle=False) as npz:  # as vit_jax's checkpoint.load reads it
        loaded = flatten(checkpoints.convert(name, dict(npz), source="official")["params"])
    from_timm = flatten(checkpoints.convert(name, state_dict, source="timm")["params"])
    assert loaded.keys() == from_timm.keys() == official.keys()
    for key, value in from_timm.items():
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)

    # big_vision's legacy layout (its mlp_mixer.load): Mixer/encoderblock_{i}/{token,channel}_mixing_phase_0/
    # {kernel1,bias1,kernel2,bias2} with extra unit axes (squeezed on load), Mixer/encoder_norm, embedding.
    legacy = {"embedding/kernel": official["stem/kernel"], "embedding/bias": official["stem/bias"]}
    legacy["Mixer/encoder_norm/scale"] = official["pre_head_layer_norm/scale"]
    legacy["Mixer/encoder_norm/bias"] = official["pre_head_layer_norm/bias"]
    legacy["head/kernel"], legacy["head/bias"] = official["head/kernel"], official["head/bias"]
    for i in range(dims[2]):
        block, src = f"Mixer/encoderblock_{i}", f"MixerBlock_{i}"
        for norm in ("LayerNorm_0", "LayerNorm_1"):
            for p in ("scale", "bias"):
                legacy[f"{block}/{norm}/{p}"] = official[f"{src}/{norm}/{p}"]
        for mlp in ("token_mixing", "channel_mixing"):
            for n, dense in ((1, "Dense_0"), (2, "Dense_1")):
                legacy[f"{block}/{mlp}_phase_0/kernel{n}"] = official[f"{src}/{mlp}/{dense}/kernel"][None]
                legacy[f"{block}/{mlp}_phase_0/bias{n}"] = official[f"{src}/{mlp}/{dense}/bias"][None, None]
    from_legacy = flatten(checkpoints.convert(name, legacy, source="official")["params"])
    assert from_legacy.keys() == from_timm.keys()
    for key, value in from_timm.items():
        np.testing.assert_array_equal(from_legacy[key], value, err_msg=key)


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
