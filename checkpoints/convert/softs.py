"""SOFTS checkpoints: the official PyTorch `Model.state_dict()` (Secilia-Cxy/SOFTS, `models/SOFTS.py`).

Official key (PyTorch shape)                                 -> ours (shape)
`enc_embedding.value_embedding.weight` [d_model, seq_len]     -> `enc_embedding/value_embedding/kernel` (transposed)
`enc_embedding.value_embedding.bias` [d_model]                -> `enc_embedding/value_embedding/bias`
`encoder.attn_layers.{i}.attention.gen{k}.weight` [out, in]   -> `encoder/attn_layers_{i}/attention/gen{k}/kernel` (T)
`encoder.attn_layers.{i}.attention.gen{k}.bias`               -> `encoder/attn_layers_{i}/attention/gen{k}/bias`
`encoder.attn_layers.{i}.conv{k}.weight` [out, in, 1]         -> `encoder/attn_layers_{i}/conv{k}/kernel`
                                                                 (kernel axis squeezed, transposed: a Dense layer)
`encoder.attn_layers.{i}.conv{k}.bias`                        -> `encoder/attn_layers_{i}/conv{k}/bias`
`encoder.attn_layers.{i}.norm{k}.weight` / `.bias`            -> `encoder/attn_layers_{i}/norm{k}/scale` / `bias`
`projection.weight` [pred_len, d_model] / `.bias`             -> `projection/kernel` (transposed) / `bias`

(k = 1..4 for gen, 1..2 for conv and norm.) The file fixes seq_len, pred_len, d_model, d_core, d_ff and e_layers;
`enc_in` and `num_time_features` are not in the weights (every token shares the embedding), so pass them:

    variables = checkpoints.convert("softs", torch.load("checkpoint.pth"), enc_in=321, num_time_features=4)

A `module.` prefix (a model saved inside `nn.DataParallel`) is removed. Nixtla neuralforecast's `SOFTS` uses the
same module names, so its model state dict converts too (it never feeds time features: num_time_features=0).
"""

import re
from collections.abc import Mapping

import numpy as np

from checkpoints.convert import register_converter
from checkpoints.tree import unflatten

_LINEAR = lambda w: np.transpose(w)  # torch Linear [out, in] -> Dense kernel [in, out]
_CONV1 = lambda w: np.transpose(np.squeeze(w, axis=-1))  # torch Conv1d(kernel 1) [out, in, 1] -> [in, out]

_LAYER, _OURS = r"encoder\.attn_layers\.(\d+)\.", r"encoder/attn_layers_\1/"
_RULES = [
    (r"enc_embedding\.value_embedding\.weight", "enc_embedding/value_embedding/kernel", _LINEAR),
    (r"enc_embedding\.value_embedding\.bias", "enc_embedding/value_embedding/bias", None),
    (_LAYER + r"attention\.(gen[1-4])\.weight", _OURS + r"attention/\2/kernel", _LINEAR),
    (_LAYER + r"attention\.(gen[1-4])\.bias", _OURS + r"attention/\2/bias", None),
    (_LAYER + r"(conv[12])\.weight", _OURS + r"\2/kernel", _CONV1),
    (_LAYER + r"(conv[12])\.bias", _OURS + r"\2/bias", None),
    (_LAYER + r"(norm[12])\.weight", _OURS + r"\2/scale", None),
    (_LAYER + r"(norm[12])\.bias", _OURS + r"\2/bias", None),
    (r"projection\.weight", "projection/kernel", _LINEAR),
    (r"projection\.bias", "projection/bias", None),
]



def infer_config(flat: Mapping[str, np.ndarray]) -> dict:
    """seq_len, pred_len, d_model, d_core, d_ff and e_layers from the weights' shapes."""
    embedding = flat["enc_embedding.value_embedding.weight"]
    layers = {int(m[1]) for key in flat if (m := re.match(r"encoder\.attn_layers\.(\d+)\.", key))}
    config = dict(
        seq_len=int(embedding.shape[1]),
        d_model=int(embedding.shape[0]),
        pred_len=int(flat["projection.weight"].shape[0]),
        e_layers=len(layers),
    )
    if layers:
        first = f"encoder.attn_layers.{min(layers)}"
        config["d_core"] = int(flat[f"{first}.attention.gen2.weight"].shape[0])
        config["d_ff"] = int(flat[f"{first}.conv1.weight"].shape[0])
    return config


@register_converter("softs", "official", infer_config=infer_config)
def from_official(flat: Mapping[str, np.ndarray]) -> dict:
    """The official PyTorch state dict (Linear `[out, in]`, Conv1d `[out, in, 1]`, LayerNorm `weight`) -> params."""
    out = {}
    for key, value in flat.items():
        for pattern, target, fn in _RULES:
            match = re.fullmatch(pattern, key)
            if match:
                key, value = match.expand(target), (fn(value) if fn is not None else value)
                break
        out[key] = value  # an unknown key stays as is: the strict merge reports it as unexpected
    return {"params": unflatten(out)}
