"""`load_pretrained`: a model and its variables from a registered release, an official file, or our own run.

    model, variables = checkpoints.load_pretrained("mixer_b16_224.goog_in1k")         # a registered release
    model, variables = checkpoints.load_pretrained("mixer_s16_224", "Mixer-S_16.npz")  # an official file, converted
    model, variables = checkpoints.load_pretrained("runs/my_run")                       # our own preset directory
    model, variables = checkpoints.load_pretrained("mixer_b16_224.goog_in1k", num_classes=10)  # new head

Downloads go to `$MIXER_ZOO_CACHE` (default `~/.cache/mixer_zoo/weights`) and are checked against the release's
sha256 when it is known. A `num_classes` different from the file's re-initialises the head (and says so).
"""

import logging
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

import zoo
from checkpoints.convert import convert
from checkpoints.download import download
from checkpoints.manager import is_preset, load_variables
from checkpoints.tree import merge_params

CACHE_ENV = "MIXER_ZOO_CACHE"
_log = logging.getLogger(__name__)


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/mixer_zoo/weights").expanduser()


def _is_url(s: str) -> bool:
    return s.split("://", 1)[0] in ("http", "https", "file") and "://" in s


def read_state_dict(path) -> dict[str, np.ndarray]:
    """A flat dict of numpy arrays from `.npz` (JAX releases) or `.pth`/`.pt`/`.bin`/`.ckpt` (PyTorch)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            return dict(npz)
    if path.suffix in (".pth", ".pt", ".bin", ".ckpt", ".tar"):
        try:
            import torch
        except ImportError as e:
            raise ImportError(f"reading {path} needs PyTorch: pip install -e '.[parity]'") from e
        state = torch.load(path, map_location="cpu", weights_only=False)
        for key in ("state_dict", "model", "model_state_dict"):  # training checkpoints wrap the weights
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
                break
        return {k.removeprefix("module."): v.detach().cpu().numpy() for k, v in state.items() if hasattr(v, "detach")}
    raise ValueError(f"unknown checkpoint format {path.suffix!r} for {path}; expected .npz, .pth, .pt, .bin or .ckpt")


def _fetch(url: str, sha256: str | None) -> Path:
    name = url.rstrip("/").split("/")[-1]
    digest_dir = (sha256 or "unverified")[:16]  # releases sharing a file name never collide in the cache
    dest = cache_dir() / digest_dir / name
    if not dest.exists():
        download(url, dest, (sha256,) if sha256 else ())
    return dest


def _from_preset(directory: Path, overrides: dict) -> tuple[Any, dict]:
    variables, config, _ = load_variables(directory)
    model = zoo.create_model(config["model_name"], **{**config.get("overrides", {}), **overrides})
    return model, merge_params(variables, zoo.abstract_variables(model), what=f"preset {directory}")


def load_pretrained(name_or_path: str, file_or_url: str | None = None, *, source: str | None = None, **overrides):
    """Returns `(model, variables)`; see the module docstring for the three forms."""
    path = Path(str(name_or_path))
    for directory in (path, path / "model"):
        if is_preset(directory):
            return _from_preset(directory, overrides)
    if path.exists():
        raise FileNotFoundError(f"{path} is not a preset directory (no config.json and variables/ in it or in model/)")

    entry = zoo.get_entry(str(name_or_path))
    _, tag = zoo.registry.split_name(str(name_or_path))
    release = zoo.pretrained_cfg(str(name_or_path)) if (tag or file_or_url is None) else None
    if file_or_url is None:
        file = _fetch(release.url, release.sha256)
    elif _is_url(file_or_url):
        file = _fetch(file_or_url, release.sha256 if release and release.url == file_or_url else None)
    else:
        file = Path(file_or_url)
    source = source or (release.source if release else "official")
    num_classes = overrides.pop("num_classes", None)
    variables = convert(entry.name, read_state_dict(file), source=source, **overrides)
    model = zoo.create_model(entry.name, **overrides, **({} if num_classes is None else {"num_classes": num_classes}))
    file_classes = variables["params"]["head"]["kernel"].shape[-1] if "head" in variables["params"] else None
    if num_classes is not None and num_classes != file_classes:
        _log.warning("%s: new head for %d classes (the file's has %s)", entry.name, num_classes, file_classes)
        inputs = zoo.dummy_inputs(model)
        fresh = jax.jit(lambda k: model.init(k, **inputs, train=False))(jax.random.key(0))
        without_head = {**variables, "params": {k: v for k, v in variables["params"].items() if k != "head"}}
        variables = merge_params(without_head, jax.device_get(fresh), dont_load=("params/head/.*",))
    else:
        model = zoo.create_model(entry.name, **overrides, **({"num_classes": file_classes} if file_classes else {}))
    return model, variables
