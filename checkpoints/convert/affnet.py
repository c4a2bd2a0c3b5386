"""AFFNet checkpoints: the official CVNets state dict (microsoft/TokenMixers, "Adaptive Frequency Filters/affnet").

One rule for every key: the PyTorch module path `a.b.3.c` becomes ours `a/b_3/c` (an index joins the name before
it; the indices are those of `nn.Sequential` stages `layer_k` and of `global_rep`), and the leaf is renamed:

Official key (PyTorch shape)                                  -> ours (shape)
`….conv.weight` [out, in / groups, k, k] (every conv)          -> `params/…/conv/kernel` [k, k, in / groups, out]
`….norm.weight` / `.bias` (BatchNorm2d)                         -> `params/…/norm/scale` / `bias`
`….norm.running_mean` / `.running_var`                          -> `batch_stats/…/norm/mean` / `var`
`….norm.num_batches_tracked`                                    -> dropped
`….norm1|norm2.weight` / `.bias`, `….global_rep.{n}.weight`     -> `…/norm1|norm2/scale`, `…/global_rep_{n}/scale`
    (the AFF blocks' LayerNorm / GroupNorm; n = number of blocks: the final norm)
`….filter.{w1,b1,w2,b2}` [2, 8, b, b] / [2, 8, b]               -> `…/filter/{w1,b1,w2,b2}` (same layout)
`classifier.fc.weight` [classes, features] / `.bias`           -> `params/head/kernel` [features, classes] / `bias`

E.g. `layer_3.1.global_rep.0.mlp.block.exp_1x1.block.conv.weight` ->
`params/layer_3_1/global_rep_0/mlp/block/exp_1x1/block/conv/kernel`. CVNets saves plain state dicts
(`checkpoint_best.pt`, `checkpoint_ema_best.pt`); the full training `checkpoint.pt` keeps the weights under
`model_state_dict` (and `ema_state_dict`): pass that inner dict. A `module.` prefix (DataParallel) is removed; keys
that do not follow the layout are kept as they are, so the strict merge names them.

    variables = checkpoints.convert("affnet", torch.load("checkpoint_ema_best.pt", weights_only=True))
"""

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from checkpoints.convert import register_converter
from checkpoints.tree import flatten, unflatten

_HEAD = "classifier.fc."
_STATS = {"running_mean": "mean", "running_var": "var"}



def _module_path(parts: list[str]) -> str:
    """['layer_3', '1', 'global_rep', '0', 'norm1'] -> 'layer_3_1/global_rep_0/norm1'."""
    out: list[str] = []
    for part in parts:
        if part.isdigit() and out:
            out[-1] = f"{out[-1]}_{part}"
        else:
            out.append(part)
    return "/".join(out)


def _leaf(leaf: str, value: np.ndarray) -> tuple[str, str, np.ndarray]:
    """(collection, our leaf name, value) for an official parameter or buffer name."""
    if leaf in _STATS:
        return "batch_stats", _STATS[leaf], value
    if leaf == "weight" and value.ndim == 4:  # conv OIHW -> HWIO (depthwise (C, 1, k, k) -> (k, k, 1, C))
        return "params", "kernel", np.transpose(value, (2, 3, 1, 0))
    if leaf == "weight" and value.ndim == 1:  # BatchNorm / LayerNorm / GroupNorm
        return "params", "scale", value
    return "params", leaf, value  # bias, filter w1/b1/w2/b2


def infer_config(flat: Mapping[str, np.ndarray]) -> dict:
    """num_classes (0 without a classifier) and in_chans from the file; the stage layout is the model name's."""
    config = {"num_classes": int(flat[_HEAD + "weight"].shape[0]) if _HEAD + "weight" in flat else 0}
    if "conv_1.block.conv.weight" in flat:
        config["in_chans"] = int(flat["conv_1.block.conv.weight"].shape[1])
    return config


@register_converter("affnet", "official", infer_config=infer_config)
def from_official(flat: Mapping[str, np.ndarray]) -> dict:
    """The official state dict (NCHW convs, BatchNorm buffers) -> `{"params": ..., "batch_stats": ...}`."""
    out: dict[str, dict[str, np.ndarray]] = {"params": {}, "batch_stats": {}}
    for key, value in flat.items():
        value = np.asarray(value)
        if key.endswith(".num_batches_tracked"):
            continue
        if key.startswith(_HEAD) and key[len(_HEAD) :] in ("weight", "bias"):
            leaf = key[len(_HEAD) :]
            out["params"][f"head/{'kernel' if leaf == 'weight' else 'bias'}"] = value.T if leaf == "weight" else value
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


_INDEXED = re.compile(r"(layer_\d+|global_rep)_(\d+)")
_OURS_STATS = {v: k for k, v in _STATS.items()}


def to_official(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Our variables -> the official state dict (the inverse of `from_official`; no `num_batches_tracked`)."""
    out = {}
    for collection, tree in variables.items():
        for path, value in flatten(tree).items():
            value = np.asarray(value)
            *parents, leaf = path.split("/")
            if collection == "params" and parents == ["head"]:
                out[_HEAD + ("weight" if leaf == "kernel" else "bias")] = value.T if leaf == "kernel" else value
                continue
            module = ".".join(m.expand(r"\1.\2") if (m := _INDEXED.fullmatch(p)) else p for p in parents)
            if collection == "batch_stats":
                leaf = _OURS_STATS[leaf]
            elif leaf == "kernel":
                leaf, value = "weight", np.transpose(value, (3, 2, 0, 1))
            elif leaf == "scale":
                leaf = "weight"
            out[f"{module}.{leaf}"] = value
    return out
