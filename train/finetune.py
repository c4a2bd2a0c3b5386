"""Starting a run from pretrained weights (`config.init_from`), big_vision's `model_init` + `dont_load`.

    python -m train --config=train/configs/finetune.py --workdir=runs/ft          # Mixer-B/16 21k -> CIFAR-10
    python -m train --config.init_from=runs/my_run --workdir=runs/ft2            # from our own run
    python -m train --config.init_from=weights.pth --config.model_name=...        # a file (or URL, hf-hub:...)

`config.init_from` is a registered release (`mixer_b16_224.goog_in21k`), a weights file or URL or `hf-hub:` name
(converted for `config.model_name`), or a preset / run directory. The loaded variables replace the fresh ones
path by path; `config.init_dont_load` regexes (over paths such as `head/kernel`, in every collection) keep the
fresh initialisation instead, and default to the head when the data's class count differs from the file's.
A registered release's preprocessing (mean, std, crop fraction, interpolation) is the data pipeline's unless the
config sets `data.mean` etc.
"""

import logging
from pathlib import Path
from typing import Any

import checkpoints
import zoo
from checkpoints.tree import flatten, merge_params

_log = logging.getLogger(__name__)


def release(config) -> zoo.PretrainedCfg | None:
    """The registered release `config.init_from` names, if it names one (`model.tag`)."""
    spec = config.get("init_from") or ""
    if not spec or "://" in spec or spec.startswith("hf-hub:") or Path(spec).exists():
        return None
    try:
        _, tag = zoo.registry.split_name(spec)
        return zoo.pretrained_cfg(spec) if tag else None
    except (KeyError, ValueError):
        return None


def preprocessing(config, entry) -> dict[str, Any]:
    """mean, std, crop_pct and interpolation: the config's where set, else the init_from release's, else the
    model's registered data config."""
    out = dict(entry.data_config)
    rel = release(config)
    if rel is not None:
        out.update(mean=rel.mean, std=rel.std, crop_pct=rel.crop_pct, interpolation=rel.interpolation)
    d = config.data
    set_here = {"mean": tuple(d.mean), "std": tuple(d.std), "crop_pct": d.crop_pct, "interpolation": d.interpolation}
    out.update({k: v for k, v in set_here.items() if v})
    return {k: out[k] for k in ("mean", "std", "crop_pct", "interpolation")}


def _load(spec: str, model_name: str) -> tuple[Any, dict]:
    path = Path(spec)
    if path.exists() and (checkpoints.is_preset(path) or checkpoints.is_preset(path / "model")):
        return checkpoints.load_pretrained(spec)
    if path.exists() or "://" in spec or spec.startswith("hf-hub:"):
        return checkpoints.load_pretrained(model_name, spec)
    if path.suffix in (".npz", ".pth", ".pt", ".bin", ".tar", ".safetensors", ".ckpt") or "/" in spec:
        raise FileNotFoundError(f"init_from {spec!r}: no such file or directory")
    return checkpoints.load_pretrained(spec)  # a registered release (unknown names get close matches)


def init_variables(config, model, fresh: dict) -> dict:
    """The variables a new run of `model` (`config.model_name`) starts from: `config.init_from`'s, merged into
    `fresh` (the model's concrete initial variables, every collection), with `config.init_dont_load` taken from
    `fresh`."""
    spec, name = config.init_from, zoo.get_entry(config.model_name).name
    rel = release(config)
    if rel is not None and zoo.get_entry(spec).name != name:
        raise ValueError(
            f"init_from {spec!r} is a release of {zoo.get_entry(spec).name} but config.model_name is {name}; "
            f"set --config.model_name={zoo.get_entry(spec).name}"
        )
    loaded_model, loaded = _load(spec, name)
    if type(loaded_model) is not type(model):
        raise ValueError(
            f"init_from {spec!r} holds a {type(loaded_model).__name__} but config.model_name {name} is a "
            f"{type(model).__name__}"
        )
    patterns = [p.strip() for p in config.init_dont_load.split(",") if p.strip()]
    head = "head/kernel"
    ref_flat, loaded_flat = flatten(fresh["params"]), flatten(loaded["params"])
    if not patterns and head in ref_flat and head in loaded_flat and ref_flat[head].shape != loaded_flat[head].shape:
        patterns = ["head/.*"]
        _log.info(
            "init_from %s: new head for %d classes (the file's has %d)",
            spec,
            ref_flat[head].shape[-1],
            loaded_flat[head].shape[-1],
        )
    # Patterns name paths inside a collection ("head/.*"); they apply to every collection.
    dont_load = tuple(f"[^/]+/(?:{p})" for p in patterns)
    return merge_params(loaded, fresh, dont_load=dont_load, what=f"init_from {spec}")
