"""Helpers shared by the config files (big_vision style `file.py:arg1,key=value` arguments)."""

import dataclasses

import ml_collections

import zoo
from train.config import base_config

# Fields the data determines (the trainer sets them) and the dtypes (set through config.compute_dtype).
DATA_FIELDS = ("num_classes", "enc_in", "num_time_features", "dtype", "param_dtype")


def model_fields(name: str, **overrides) -> ml_collections.ConfigDict:
    """`config.model` for model `name`: `overrides`, plus every other constructor field (except those the data
    determines) as a typed None placeholder meaning "the registered default". So any field can be changed from
    the command line (`--config.model.<field>=...`), and switching `--config.model_name` carries over only the
    fields that were set."""
    entry = zoo.get_entry(name)
    unknown = sorted(set(overrides) - set(entry.accepted_fields()))
    if unknown:
        raise ValueError(f"{name} has no fields {unknown}")
    fields = {}
    for field in dataclasses.fields(entry.module_cls):
        if field.name in ("parent", "name") or field.name in DATA_FIELDS:
            continue
        default = entry.defaults.get(field.name, field.default)
        if field.name in overrides:
            fields[field.name] = overrides[field.name]
        elif isinstance(default, bool | int | float | str | tuple):
            fields[field.name] = ml_collections.FieldReference(None, field_type=type(default))
    return ml_collections.ConfigDict(fields)


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


def quicktest(c: ml_collections.ConfigDict, *, batch_size: int, eval_batch_size: int) -> ml_collections.ConfigDict:
    """The `quicktest` mode of a full config, in place: 20 steps of `batch_size`, evaluated and checkpointed every
    10 steps, a 2-step warmup. A smoke test of the config's whole path (data, model, steps, checkpoints)."""
    c.quicktest = True
    c.total_epochs = 0.0
    c.total_steps = 20
    c.batch_size = batch_size
    c.eval_batch_size = eval_batch_size
    c.eval_every_epochs = 0
    c.eval_every_steps = 10
    c.log_every_steps = 10
    c.checkpoint.every_steps = 10
    c.optim.schedule.warmup_epochs = 0
    c.optim.schedule.warmup_steps = 2
    return c


__all__ = ["DATA_FIELDS", "base_config", "model_fields", "parse_arg", "quicktest"]
