"""NiNformer checkpoints: the state dict of the official image classifier (Abdullah-88/NiNformer, `train.py`'s
`NiNformerImageClassification`, saved with `torch.save(model.state_dict(), ...)`).

No trained NiNformer weights are published; this converter is for weights trained with the official code.

Official module (PyTorch shape)                          -> ours (shape)
`patcher` Conv2d weight [d, C, p, p]                       -> `patcher/kernel` [p, p, C, d] (HWIO), `bias`
`model.{i}.norm` (the block's shared LayerNorm)            -> `model_{i}/norm/{scale,bias}`
`model.{i}.mgu.proj` Linear [d, d]                         -> `model_{i}/mgu/proj/{kernel,bias}` (kernel [in, out])
`model.{i}.mgu.Mixer.token_mix.0` (LayerNorm)              -> `model_{i}/mgu/Mixer/LayerNorm_0`
`model.{i}.mgu.Mixer.token_mix.2.net.{0,3}` [h, S], [S, h] -> `model_{i}/mgu/Mixer/token_mixing/Dense_{0,1}`
`model.{i}.mgu.Mixer.channel_mix.0` (LayerNorm)            -> `model_{i}/mgu/Mixer/LayerNorm_1`
`model.{i}.mgu.Mixer.channel_mix.1.net.{0,3}`              -> `model_{i}/mgu/Mixer/channel_mixing/Dense_{0,1}`
`model.{i}.ffn.net.{0,3}`                                  -> `model_{i}/ffn/net_{0,3}`
`classifier` Linear [classes, d]                           -> `head/{kernel,bias}` [d, classes]

Leaves: LayerNorm `weight` -> `scale`; Linear `weight` [out, in] -> `kernel` [in, out]; Conv2d OIHW -> HWIO; `bias`
unchanged. The model has no state (no BatchNorm), so the result is `{"params": ...}`. Keys outside this layout are
kept as they are, so the strict merge of `checkpoints.convert` names them.

    variables = checkpoints.convert("ninformer_cifar", torch.load("NiNformerImageClassification_cifar10.pth",
                                                                  weights_only=True))
"""

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from checkpoints.convert import register_converter
from checkpoints.tree import flatten, unflatten

# (official module, ours), `{i}` standing for a block index.
MODULES = (
    ("patcher", "patcher"),
    ("model.{i}.norm", "model_{i}/norm"),
    ("model.{i}.mgu.proj", "model_{i}/mgu/proj"),
    ("model.{i}.mgu.Mixer.token_mix.0", "model_{i}/mgu/Mixer/LayerNorm_0"),
    ("model.{i}.mgu.Mixer.token_mix.2.net.0", "model_{i}/mgu/Mixer/token_mixing/Dense_0"),
    ("model.{i}.mgu.Mixer.token_mix.2.net.3", "model_{i}/mgu/Mixer/token_mixing/Dense_1"),
    ("model.{i}.mgu.Mixer.channel_mix.0", "model_{i}/mgu/Mixer/LayerNorm_1"),
    ("model.{i}.mgu.Mixer.channel_mix.1.net.0", "model_{i}/mgu/Mixer/channel_mixing/Dense_0"),
    ("model.{i}.mgu.Mixer.channel_mix.1.net.3", "model_{i}/mgu/Mixer/channel_mixing/Dense_1"),
    ("model.{i}.ffn.net.0", "model_{i}/ffn/net_0"),
    ("model.{i}.ffn.net.3", "model_{i}/ffn/net_3"),
    ("classifier", "head"),
)


def _pattern(template: str) -> re.Pattern:
    return re.compile(re.escape(template).replace(re.escape("{i}"), r"(?P<i>\d+)"))


_FROM_OFFICIAL = [(_pattern(official), ours) for official, ours in MODULES]
_TO_OFFICIAL = [(_pattern(ours), official) for official, ours in MODULES]


def _rename(module: str, table: list[tuple[re.Pattern, str]]) -> str | None:
    for pattern, template in table:
        if m := pattern.fullmatch(module):
            return template.replace("{i}", m.groupdict().get("i") or "")
    return None


def infer_config(flat: Mapping[str, np.ndarray]) -> dict:
    """The constructor fields the file fixes: num_classes (0 without a classifier), in_chans, patch_size, d_model
    (the patcher), d_ffn (the feed-forwards), num_layers, and img_size when the token count is a square number
    (the official model's square images; give img_size for a non-square grid)."""
    config: dict[str, Any] = {
        "num_classes": int(flat["classifier.weight"].shape[0]) if "classifier.weight" in flat else 0
    }
    if "patcher.weight" in flat:
        d_model, in_chans, patch, _ = (int(s) for s in flat["patcher.weight"].shape)
        config.update(d_model=d_model, in_chans=in_chans, patch_size=patch)
    blocks = {int(m[1]) for key in flat if (m := re.match(r"model\.(\d+)\.", key))}
    config["num_layers"] = len(blocks)
    if blocks:
        first = f"model.{min(blocks)}"
        if f"{first}.ffn.net.0.weight" in flat:
            config["d_ffn"] = int(flat[f"{first}.ffn.net.0.weight"].shape[0])
        token_fc = flat.get(f"{first}.mgu.Mixer.token_mix.2.net.0.weight")
        if token_fc is not None and "patch_size" in config:
            grid = math.isqrt(int(token_fc.shape[1]))
            if grid * grid == token_fc.shape[1]:
                config["img_size"] = grid * config["patch_size"]
    return config


@register_converter("ninformer", "official", infer_config=infer_config)
def from_official(flat: Mapping[str, np.ndarray]) -> dict:
    """The official state dict -> `{"params": ...}` (table in the module doc)."""
    params: dict[str, np.ndarray] = {}
    for key, value in flat.items():
        value = np.asarray(value)
        module, _, leaf = key.rpartition(".")
        ours = _rename(module, _FROM_OFFICIAL)
        if ours is None or leaf not in ("weight", "bias"):  # not the official layout: the strict merge reports it
            params[key] = value
        elif leaf == "bias":
            params[f"{ours}/bias"] = value
        elif value.ndim == 4:  # Conv2d OIHW -> HWIO
            params[f"{ours}/kernel"] = np.transpose(value, (2, 3, 1, 0))
        elif value.ndim == 2:  # Linear [out, in] -> [in, out]
            params[f"{ours}/kernel"] = value.T
        else:  # LayerNorm
            params[f"{ours}/scale"] = value
    return {"params": unflatten(params)}


def to_official(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Our variables -> the official state dict (the inverse of `from_official`)."""
    out = {}
    for path, value in flatten(variables["params"]).items():
        value = np.asarray(value)
        module, _, leaf = path.rpartition("/")
        official = _rename(module, _TO_OFFICIAL)
        if official is None:
            raise ValueError(f"no official name for parameter {path!r}")
        if leaf == "kernel":
            value = np.transpose(value, (3, 2, 0, 1)) if value.ndim == 4 else value.T
        out[f"{official}.{'bias' if leaf == 'bias' else 'weight'}"] = value
    return out
