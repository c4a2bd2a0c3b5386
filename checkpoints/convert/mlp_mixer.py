"""MLP-Mixer checkpoints: the official JAX `.npz` release (both layouts) and timm state dicts."""

import re
from collections.abc import Mapping

import numpy as np

from checkpoints.convert import register_converter
from checkpoints.tree import unflatten


def _head_classes(flat: Mapping[str, np.ndarray], key: str, axis: int) -> dict:
    return {"num_classes": int(flat[key].shape[axis])} if key in flat else {"num_classes": 0}


_LEGACY_DENSE = {
    "kernel1": "Dense_0/kernel",
    "bias1": "Dense_0/bias",
    "kernel2": "Dense_1/kernel",
    "bias2": "Dense_1/bias",
}


@register_converter("mlp_mixer", "official", infer_config=lambda flat: _head_classes(flat, "head/kernel", 1))
def from_official(flat: Mapping[str, np.ndarray]) -> dict:
    """The google-research `.npz` (keys joined with '/'), already in our layout; big_vision's legacy layout
    (`Mixer/encoderblock_{i}/token_mixing_phase_0/kernel1`, `Mixer/encoder_norm`, `embedding`) is renamed."""
    out = {}
    for key, value in flat.items():
        key = re.sub(r"^embedding/", "stem/", key)
        key = re.sub(r"^Mixer/encoder_norm/", "pre_head_layer_norm/", key)
        key = re.sub(r"^Mixer/encoderblock_(\d+)/", r"MixerBlock_\1/", key)
        match = re.fullmatch(r"(.*)/(token|channel)_mixing_phase_0/(kernel[12]|bias[12])", key)
        if match:
            key = f"{match[1]}/{match[2]}_mixing/{_LEGACY_DENSE[match[3]]}"
            value = np.squeeze(value)
        out[key] = value
    return {"params": unflatten(out)}


_TIMM_RULES = [
    (r"stem\.proj\.weight", "stem/kernel", lambda w: w.transpose(2, 3, 1, 0)),  # OIHW -> HWIO
    (r"stem\.proj\.bias", "stem/bias", None),
    (r"blocks\.(\d+)\.norm1\.weight", r"MixerBlock_\1/LayerNorm_0/scale", None),
    (r"blocks\.(\d+)\.norm1\.bias", r"MixerBlock_\1/LayerNorm_0/bias", None),
    (r"blocks\.(\d+)\.norm2\.weight", r"MixerBlock_\1/LayerNorm_1/scale", None),
    (r"blocks\.(\d+)\.norm2\.bias", r"MixerBlock_\1/LayerNorm_1/bias", None),
    (r"blocks\.(\d+)\.mlp_tokens\.fc([12])\.weight", "MixerBlock_{0}/token_mixing/Dense_{1}/kernel", np.transpose),
    (r"blocks\.(\d+)\.mlp_tokens\.fc([12])\.bias", "MixerBlock_{0}/token_mixing/Dense_{1}/bias", None),
    (r"blocks\.(\d+)\.mlp_channels\.fc([12])\.weight", "MixerBlock_{0}/channel_mixing/Dense_{1}/kernel", np.transpose),
    (r"blocks\.(\d+)\.mlp_channels\.fc([12])\.bias", "MixerBlock_{0}/channel_mixing/Dense_{1}/bias", None),
    (r"norm\.weight", "pre_head_layer_norm/scale", None),
    (r"norm\.bias", "pre_head_layer_norm/bias", None),
    (r"head\.weight", "head/kernel", np.transpose),
    (r"head\.bias", "head/bias", None),
]


def _rename(key: str, rules) -> tuple[str, object]:
    for pattern, target, fn in rules:
        match = re.fullmatch(pattern, key)
        if match:
            groups = match.groups()
            if "{" in target:  # fc1/fc2 -> Dense_0/Dense_1
                groups = (groups[0], str(int(groups[1]) - 1))
                return target.format(*groups), fn
            return match.expand(target), fn
    return key, None  # left as is: the strict merge reports it as unexpected


@register_converter("mlp_mixer", "timm", infer_config=lambda flat: _head_classes(flat, "head.weight", 0))
def from_timm(flat: Mapping[str, np.ndarray]) -> dict:
    """timm `MlpMixer.state_dict()` (PyTorch layouts: Linear `[out, in]`, Conv `OIHW`, LayerNorm `weight`)."""
    out = {}
    for key, value in flat.items():
        new_key, fn = _rename(key, _TIMM_RULES)
        out[new_key] = fn(value) if fn is not None else value
    return {"params": unflatten(out)}
