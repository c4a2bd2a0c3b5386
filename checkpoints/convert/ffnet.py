"""FFNet checkpoints: the official state dict (ysj9909/FFNet `models/ffnet.py`, release v1.0 `ffnet_*.pth.tar`).

The released files are timm-trainer dictionaries: pass the weights, `ckpt["state_dict"]` (what the official
`export_model.py` loads), or `ckpt["state_dict_ema"]` for the EMA weights when the file has them:

    ckpt = torch.load("ffnet_1.pth.tar", map_location="cpu", weights_only=True)
    variables = checkpoints.convert("ffnet_1", ckpt["state_dict"])   # {"params": ..., "batch_stats": ...}

One rule for every key: the PyTorch module path `a.b.3.c` becomes ours `a/b_3/c` (an index joins the name before
it: `patch_embed.0` -> `patch_embed_0`, `stages.2.1` -> `stages_2_1`, `token_mixer.0` -> `token_mixer_0`,
`proj.1` -> `proj_1`), and the leaf is renamed:

Official key (PyTorch shape)                                  -> ours (shape)
`….weight` [out, in / groups, k, k] (every conv, incl. fc1/fc2) -> `params/…/kernel` [k, k, in / groups, out]
`….bias` (conv)                                                 -> `params/…/bias`
`….bn.weight` / `.bias`, `norm.weight` / `.bias` (BatchNorm2d)  -> `params/…/bn/scale` / `bias`, `params/norm/…`
`….running_mean` / `.running_var`                               -> `batch_stats/…/mean` / `var`
`….num_batches_tracked`                                         -> dropped
`….token_mixer.0.layer_scale`, `….channel_mixer.layer_scale`    -> `params/…/layer_scale` [C] (from [C, 1, 1])
`head.weight` [classes, features] / `head.bias`                 -> `params/head/kernel` [features, classes] / `bias`

E.g. `stages.2.1.token_mixer.0.main.conv1.conv1.bn.running_var` ->
`batch_stats/stages_2_1/token_mixer_0/main/conv1/conv1/bn/var`; the downsample's channel-multiplier depthwise
weight `stages.1.0.proj.0.conv.c.weight` [2C, 1, 7, 7] -> `params/stages_1_0/proj_0/conv/c/kernel` [7, 7, 1, 2C]
(groups = C: torch and XLA both give each group a contiguous block of output channels). The same rule converts a
fused state dict (after the official `replace_batchnorm`, `….fc.weight` / `….fc.bias`, `stages.1.0.proj.1.weight`)
to a `merged=True` model; `infer_config` recognises it. A `module.` prefix is removed by `checkpoints.convert`;
keys that do not follow the layout are kept as they are, so the strict merge names them.
"""

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from checkpoints.convert import register_converter
from checkpoints.tree import flatten, unflatten

_STATS = {"running_mean": "mean", "running_var": "var"}
_OURS_STATS = {v: k for k, v in _STATS.items()}
_INDEXED = re.compile(r"([a-z_]*[a-z])((?:_\d+)+)")


def _module_path(parts: list[str]) -> str:
    """['stages', '2', '1', 'token_mixer', '0', 'main'] -> 'stages_2_1/token_mixer_0/main'."""
    out: list[str] = []
    for part in parts:
        if part.isdigit() and out:
            out[-1] = f"{out[-1]}_{part}"
        else:
            out.append(part)
    return "/".join(out)


def _torch_module(part: str) -> str:
    """'stages_2_1' -> 'stages.2.1', 'token_mixer_0' -> 'token_mixer.0'; names without an index unchanged."""
    m = _INDEXED.fullmatch(part)
    return m.group(1) + m.group(2).replace("_", ".") if m else part


def _leaf(leaf: str, value: np.ndarray) -> tuple[str, str, np.ndarray]:
    """(collection, our leaf name, value) for an official parameter or buffer name."""
    if leaf in _STATS:
        return "batch_stats", _STATS[leaf], value
    if leaf == "weight" and value.ndim == 4:  # conv OIHW -> HWIO (depthwise (C, 1, k, k) -> (k, k, 1, C))
        return "params", "kernel", np.transpose(value, (2, 3, 1, 0))
    if leaf == "weight" and value.ndim == 1:  # BatchNorm
        return "params", "scale", value
    if leaf == "layer_scale" and value.ndim == 3:  # (C, 1, 1) -> (C,)
        return "params", leaf, value.reshape(value.shape[0])
    return "params", leaf, value  # conv bias, BatchNorm bias


def infer_config(flat: Mapping[str, np.ndarray]) -> dict:
    """num_classes (0 without a head), in_chans, layer scale presence and whether the file is the fused form."""
    config = {"num_classes": int(flat["head.weight"].shape[0]) if "head.weight" in flat else 0}
    config["use_layer_scale"] = any(k.endswith(".layer_scale") for k in flat)
    for key, merged in (("patch_embed.0.c.weight", False), ("patch_embed.0.weight", True)):
        if key in flat:
            config["in_chans"] = int(flat[key].shape[1])
            config["merged"] = merged
    return config


@register_converter("ffnet", "official", infer_config=infer_config)
def from_official(flat: Mapping[str, np.ndarray]) -> dict:
    """The official state dict (NCHW convs, BatchNorm buffers) -> `{"params": ..., "batch_stats": ...}`."""
    out: dict[str, dict[str, np.ndarray]] = {"params": {}, "batch_stats": {}}
    for key, value in flat.items():
        value = np.asarray(value)
        if key.endswith(".num_batches_tracked"):
            continue
        if key in ("head.weight", "head.bias"):
            leaf = "kernel" if key == "head.weight" else "bias"
            out["params"][f"head/{leaf}"] = value.T if leaf == "kernel" else value
            continue
        *parents, leaf = key.split(".")
        if not parents:  # not the official layout: keep it, the strict merge reports it
            out["params"][key] = value
            continue
        collection, name, value = _leaf(leaf, value)
        out[collection][f"{_module_path(parents)}/{name}"] = value
    variables = {"params": unflatten(out["params"])}
    if out["batch_stats"]:
        variables["batch_stats"] = unflatten(out["batch_stats"])
    return variables


def to_official(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Our variables -> the official state dict (the inverse of `from_official`; no `num_batches_tracked`)."""
    out = {}
    for collection, tree in variables.items():
        for path, value in flatten(tree).items():
            value = np.asarray(value)
            *parents, leaf = path.split("/")
            if collection == "params" and parents == ["head"]:
                out["head." + ("weight" if leaf == "kernel" else "bias")] = value.T if leaf == "kernel" else value
                continue
            module = ".".join(_torch_module(p) for p in parents)
            if collection == "batch_stats":
                leaf = _OURS_STATS[leaf]
            elif leaf == "kernel":
                leaf, value = "weight", np.transpose(value, (3, 2, 0, 1))
            elif leaf == "scale":
                leaf = "weight"
            elif leaf == "layer_scale":
                value = value.reshape(value.shape[0], 1, 1)
            out[f"{module}.{leaf}"] = value
    return out
