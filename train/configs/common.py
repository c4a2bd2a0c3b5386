"""Helpers shared by the config files (big_vision style `file.py:arg1,key=value` arguments)."""

import ml_collections

import zoo
from train.config import base_config

# Fields the data determines (the trainer sets them) and the dtypes (set through config.compute_dtype).
DATA_FIELDS = ("num_classes", "enc_in", "num_time_features", "dtype", "param_dtype")


def model_fields(name: str, **overrides) -> ml_collections.ConfigDict:
    """The registered defaults of model `name` (minus data-determined fields) updated by `overrides`, so that
    every constructor field can be changed from the command line (`--config.model.<field>=...`)."""
    defaults = {k: v for k, v in zoo.get_entry(name).defaults.items() if k not in DATA_FIELDS}
    unknown = sorted(set(overrides) - set(zoo.get_entry(name).accepted_fields()))
    if unknown:
        raise ValueError(f"{name} has no fields {unknown}")
    return ml_collections.ConfigDict({**defaults, **overrides})


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """'ETTh1,pred_len=192,quicktest' -> {positional: 'ETTh1', pred_len: 192, quicktest: True} over `defaults`.

    Bare words are flags (set to True) when `defaults` has them as booleans, else the value of the first
    positional default `_positional` (e.g. a data-set name). Values are converted to the type of their default.
    """
    out = ml_collections.ConfigDict(defaults)
    positional = defaults.get("_positional")
    for part in filter(None, (arg or "").split(",")):
        key, eq, value = part.partition("=")
        if not eq:
            if isinstance(defaults.get(key), bool):
                out[key] = True
                continue
            if positional is None:
                raise ValueError(
                    f"unknown config argument {part!r}; known: {sorted(k for k in defaults if k[0] != '_')}"
                )
            key, value = positional, part
        if key not in defaults:
            raise ValueError(f"unknown config argument {key!r}; known: {sorted(k for k in defaults if k[0] != '_')}")
        kind = type(defaults[key])
        out[key] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
    return out


__all__ = ["DATA_FIELDS", "base_config", "model_fields", "parse_arg"]
