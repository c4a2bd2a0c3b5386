"""Foreign checkpoints (official releases, timm, ...) to our variables: one pure function per (family, source),
then the strict merge of `checkpoints.tree.merge_params` over every variable collection.

    variables = checkpoints.convert("mixer_s16_224", timm_model.state_dict(), source="timm")
    variables = checkpoints.convert("affnet_et", torch_state_dict)   # {"params": ..., "batch_stats": ...}

A converter returns full variables: `{"params": tree}` plus any state collection the model declares (BatchNorm
running statistics as `{"batch_stats": {..., "mean", "var"}}`; PyTorch's `num_batches_tracked` is dropped).
`convert` removes a `module.` key prefix (DataParallel) before the converter sees the keys.
"""

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

import zoo
from checkpoints.tree import merge_params

Converter = Callable[[Mapping[str, np.ndarray]], dict[str, Any]]
_CONVERTERS: dict[tuple[str, str], tuple[Converter, Callable[[Mapping[str, np.ndarray]], dict] | None]] = {}


def register_converter(family: str, source: str, *, infer_config: Callable | None = None):
    """Registers `fn(flat_state_dict) -> variables` (`{"params": ..., "batch_stats": ...}`) for a model family and
    a source format.

    `infer_config(flat_state_dict) -> dict` may read constructor fields (e.g. `num_classes`) off the file.
    """

    def decorator(fn: Converter) -> Converter:
        if (family, source) in _CONVERTERS:
            raise ValueError(f"a converter for family {family!r} from {source!r} is already registered")
        _CONVERTERS[(family, source)] = (fn, infer_config)
        return fn

    return decorator


def sources(family: str) -> list[str]:
    return sorted(s for f, s in _CONVERTERS if f == family)


def to_numpy(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A dict of numpy arrays from numpy arrays, torch tensors (CPU, detached) or jax arrays."""
    out = {}
    for key, value in state_dict.items():
        if hasattr(value, "detach"):  # torch.Tensor, without importing torch
            value = value.detach().cpu().numpy()
        out[str(key)] = np.asarray(value)
    return out


def convert(name: str, state_dict: Mapping[str, Any], source: str = "official", **overrides: Any) -> dict[str, Any]:
    """Our variables (`{"params": ...}` plus any state collection such as `batch_stats`) for model `name` from a
    foreign state dict.

    Constructor fields the file determines (e.g. `num_classes` from the head) are read from it unless given in
    `overrides`; the result is checked strictly, collection by collection, against the variables of
    `zoo.create_model(name, **overrides)`.
    """
    entry = zoo.get_entry(name)
    if (entry.family, source) not in _CONVERTERS:
        known = ", ".join(sources(entry.family)) or "none"
        raise ValueError(f"no converter for {entry.name} ({entry.family}) from source {source!r}; known: {known}")
    fn, infer_config = _CONVERTERS[(entry.family, source)]
    # A model saved inside `nn.DataParallel`/`DistributedDataParallel` prefixes every key with `module.`.
    flat = {key.removeprefix("module."): value for key, value in to_numpy(state_dict).items()}
    fields = {**(infer_config(flat) if infer_config else {}), **overrides}
    model = zoo.create_model(entry.name, **fields)
    reference = zoo.abstract_variables(model)
    variables = fn(flat)
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise TypeError(f"the {source} converter of {entry.family} must return variables {{'params': ...}}")
    return merge_params(variables, reference, what=f"{source} checkpoint for {entry.name}")


# Converters register on import.
from checkpoints.convert import affnet, afno, ffnet, mlp_mixer, msmlp, ninformer, softs  # noqa: E402, F401
