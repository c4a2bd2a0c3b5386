"""MS-MLP checkpoints: the official state dict (JegZheng/MS-MLP, `models/ms_mlp.py`).

The released `.pth` files are Swin-style training checkpoints; the weights are under `model` (the file also holds
`optimizer`, `lr_scheduler`, `config`, a yacs node that needs `weights_only=False` to unpickle). Pass the inner dict:

    ckpt = torch.load("msmlp_tiny_patch4_ckpt_epoch299.pth", map_location="cpu", weights_only=False)
    variables = checkpoints.convert("msmlp_tiny", ckpt["model"])

One rule for every key: the PyTorch module path `a.3.b` becomes ours `a_3/b` (an index joins the name before it),
and the leaf is renamed:

Official key (PyTorch shape)                                   -> ours (shape)
`….weight` [out, in, k, k] (patch_embed.proj, downsample.proj)  -> `…/kernel` [k, k, in, out]
`….dwconv_lr.{g}.weight` / `dwconv_td` [c_g, 1, k, k]           -> `…/dwconv_lr_{g}/kernel` [k, k, 1, c_g]
`….weight` [out, in] (pwconv1, pwconv2, head)                   -> `…/kernel` [in, out]
`….weight` [C] (every LayerNorm)                                -> `…/scale`
`….bias`, `….gamma`                                             -> the same name

E.g. `layers.2.blocks.8.dwconv_td.4.weight` -> `params/layers_2/blocks_8/dwconv_td_4/kernel`, `head.weight` ->
`params/head/kernel`. The model has no state, so the result is `{"params": ...}`. Keys that do not follow the layout
are kept as they are, so the strict merge names them.
"""

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from checkpoints.convert import register_converter
from checkpoints.tree import flatten, unflatten


def _module_path(parts: list[str]) -> str:
    """['layers', '0', 'blocks', '1', 'dwconv_lr', '4'] -> 'layers_0/blocks_1/dwconv_lr_4'."""
    out: list[str] = []
    for part in parts:
        if part.isdigit() and out:
            out[-1] = f"{out[-1]}_{part}"
        else:
            out.append(part)
    return "/".join(out)


def _leaf(leaf: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    if leaf == "weight" and value.ndim == 4:  # conv OIHW -> HWIO (depthwise (c, 1, k, k) -> (k, k, 1, c))
        return "kernel", np.transpose(value, (2, 3, 1, 0))
    if leaf == "weight" and value.ndim == 2:  # Linear [out, in] -> Dense [in, out]
        return "kernel", value.T
    if leaf == "weight" and value.ndim == 1:  # LayerNorm
        return "scale", value
    return leaf, value  # bias, gamma


def infer_config(flat: Mapping[str, np.ndarray]) -> dict:
    """num_classes (0 without a head) and in_chans from the file; widths and depths are the model name's."""
    config = {"num_classes": int(flat["head.weight"].shape[0]) if "head.weight" in flat else 0}
    if "patch_embed.proj.weight" in flat:
        config["in_chans"] = int(flat["patch_embed.proj.weight"].shape[1])
    return config


@register_converter("msmlp", "official", infer_config=infer_config)
def from_official(flat: Mapping[str, np.ndarray]) -> dict:
    """The official state dict (pass `ckpt["model"]` of a released file) -> `{"params": ...}`."""
    params = {}
    for key, value in flat.items():
        value = np.asarray(value)
        *parents, leaf = key.split(".")
        if not parents:  # not the official layout: keep it, the strict merge reports it
            params[key] = value
            continue
        name, value = _leaf(leaf, value)
        params[f"{_module_path(parents)}/{name}"] = value
    return {"params": unflatten(params)}


_INDEXED = re.compile(r"(layers|blocks|dwconv_lr|dwconv_td)_(\d+)")


def to_official(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Our variables -> the official state dict (the inverse of `from_official`)."""
    out = {}
    for path, value in flatten(variables["params"]).items():
        value = np.asarray(value)
        *parents, leaf = path.split("/")
        module = ".".join(m.expand(r"\1.\2") if (m := _INDEXED.fullmatch(p)) else p for p in parents)
        if leaf == "kernel":
            leaf, value = "weight", (np.transpose(value, (3, 2, 0, 1)) if value.ndim == 4 else value.T)
        elif leaf == "scale":
            leaf = "weight"
        out[f"{module}.{leaf}"] = value
    return out
