"""AFNO checkpoints: the official PyTorch `AFNONet.state_dict()` (NVlabs/AFNO-transformer, classification/afnonet.py).

Official key (PyTorch shape)                           -> ours (shape)
`pos_embed` [1, N, C]                                  -> `pos_embed` [1, N, C]
`patch_embed.proj.weight` [C, in_chans, p, p] (OIHW)   -> `patch_embed/proj/kernel` [p, p, in_chans, C] (HWIO)
`patch_embed.proj.bias` [C]                            -> `patch_embed/proj/bias`
`blocks.{i}.norm{1,2}.weight` / `.bias` [C]            -> `blocks_{i}/norm{1,2}/scale` / `bias`
`blocks.{i}.filter.{w1,b1,w2,b2}`                      -> `blocks_{i}/filter/{w1,b1,w2,b2}` (same layout: leading axis
                                                          2 = real, imaginary; w1 [2, k, b, b f], b1 [2, k, b f],
                                                          w2 [2, k, b f, b], b2 [2, k, b])
`blocks.{i}.mlp.fc{1,2}.weight` [out, in] / `.bias`    -> `blocks_{i}/mlp/fc{1,2}/kernel` [in, out] / `bias`
`norm.weight` / `.bias`                                -> `norm/scale` / `bias`
`head.weight` [classes, C] / `.bias`                   -> `head/kernel` [C, classes] / `bias`

The file fixes num_classes (0 without a head), embed_dim, depth, num_blocks, hidden_size_factor, mlp_ratio,
patch_size, in_chans and img_size (a square grid of sqrt(N) patches, as the official model); `infer_config` reads
them, so any official-layout file converts through any `afnonet_*` name. A `module.` prefix (DataParallel) is
removed; unwrap a DeiT-style checkpoint's `model` entry before calling. Unknown keys stay as they are, so the strict
merge names them.
"""

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from checkpoints.convert import register_converter
from checkpoints.tree import flatten, unflatten

_LINEAR = np.transpose  # torch Linear [out, in] <-> Dense kernel [in, out]
_OIHW_TO_HWIO = lambda w: np.transpose(w, (2, 3, 1, 0))
_HWIO_TO_OIHW = lambda w: np.transpose(w, (3, 2, 0, 1))

_BLOCK, _OURS = r"blocks\.(\d+)\.", r"blocks_\1/"
# (official pattern, our target, official -> ours).
_RULES = [
    (r"pos_embed", "pos_embed", None),
    (r"patch_embed\.proj\.weight", "patch_embed/proj/kernel", _OIHW_TO_HWIO),
    (r"patch_embed\.proj\.bias", "patch_embed/proj/bias", None),
    (_BLOCK + r"(norm[12])\.weight", _OURS + r"\2/scale", None),
    (_BLOCK + r"(norm[12])\.bias", _OURS + r"\2/bias", None),
    (_BLOCK + r"filter\.([wb][12])", _OURS + r"filter/\2", None),
    (_BLOCK + r"mlp\.(fc[12])\.weight", _OURS + r"mlp/\2/kernel", _LINEAR),
    (_BLOCK + r"mlp\.(fc[12])\.bias", _OURS + r"mlp/\2/bias", None),
    (r"norm\.weight", "norm/scale", None),
    (r"norm\.bias", "norm/bias", None),
    (r"head\.weight", "head/kernel", _LINEAR),
    (r"head\.bias", "head/bias", None),
]
# (our pattern, official target, ours -> official): the inverse of _RULES.
_INVERSE = [
    (r"pos_embed", "pos_embed", None),
    (r"patch_embed/proj/kernel", "patch_embed.proj.weight", _HWIO_TO_OIHW),
    (r"patch_embed/proj/bias", "patch_embed.proj.bias", None),
    (r"blocks_(\d+)/(norm[12])/scale", r"blocks.\1.\2.weight", None),
    (r"blocks_(\d+)/(norm[12])/bias", r"blocks.\1.\2.bias", None),
    (r"blocks_(\d+)/filter/([wb][12])", r"blocks.\1.filter.\2", None),
    (r"blocks_(\d+)/mlp/(fc[12])/kernel", r"blocks.\1.mlp.\2.weight", _LINEAR),
    (r"blocks_(\d+)/mlp/(fc[12])/bias", r"blocks.\1.mlp.\2.bias", None),
    (r"norm/scale", "norm.weight", None),
    (r"norm/bias", "norm.bias", None),
    (r"head/kernel", "head.weight", _LINEAR),
    (r"head/bias", "head.bias", None),
]


def _rename(key: str, value: Any, rules) -> tuple[str, Any]:
    for pattern, target, fn in rules:
        match = re.fullmatch(pattern, key)
        if match:
            return match.expand(target), (fn(value) if fn is not None else value)
    return key, value  # unknown: left in place for the strict merge to report



def infer_config(flat: Mapping[str, np.ndarray]) -> dict:
    """The constructor fields the official weights determine (module doc), from their shapes."""
    config: dict[str, Any] = {"num_classes": int(flat["head.weight"].shape[0]) if "head.weight" in flat else 0}
    if "patch_embed.proj.weight" in flat:
        embed_dim, in_chans, patch, _ = flat["patch_embed.proj.weight"].shape
        config.update(embed_dim=int(embed_dim), in_chans=int(in_chans), patch_size=int(patch))
        if "pos_embed" in flat:
            grid = math.isqrt(int(flat["pos_embed"].shape[1]))
            config["img_size"] = grid * int(patch)
    blocks = {int(m[1]) for key in flat if (m := re.match(r"blocks\.(\d+)\.", key))}
    config["depth"] = len(blocks)
    if blocks:
        first = f"blocks.{min(blocks)}"
        w1 = flat.get(f"{first}.filter.w1")
        if w1 is not None:
            config.update(num_blocks=int(w1.shape[1]), hidden_size_factor=int(w1.shape[3]) // int(w1.shape[2]))
        fc1 = flat.get(f"{first}.mlp.fc1.weight")
        if fc1 is not None:
            hidden, dim = (int(s) for s in fc1.shape)
            config["mlp_ratio"] = hidden / dim
            if int(dim * config["mlp_ratio"]) != hidden:
                raise ValueError(f"MLP width {hidden} for embed_dim {dim} is not reproducible as int(dim * ratio)")
    return config


@register_converter("afno", "official", infer_config=infer_config)
def from_official(flat: Mapping[str, np.ndarray]) -> dict:
    """The official state dict (Linear `[out, in]`, Conv `OIHW`, LayerNorm `weight`) -> `{"params": tree}`."""
    out = dict(_rename(key, value, _RULES) for key, value in flat.items())
    return {"params": unflatten(out)}


def to_official(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Our variables (or params) -> the official flat state dict, numpy arrays (the inverse of `from_official`)."""
    params = variables.get("params", variables)
    return dict(_rename(key, np.asarray(value), _INVERSE) for key, value in flatten(params).items())
