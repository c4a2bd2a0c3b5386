"""`load_pretrained`: a model and its variables from a registered release, a weights file, the Hugging Face Hub, or
our own run.

    model, variables = checkpoints.load_pretrained("mixer_b16_224.goog_in1k")          # a registered release
    model, variables = checkpoints.load_pretrained("mixer_s16_224", "Mixer-S_16.npz")   # a file (or URL), converted
    model, variables = checkpoints.load_pretrained("hf-hub:timm/mixer_b16_224.goog_in21k_ft_in1k")  # the Hub
    model, variables = checkpoints.load_pretrained("mixer_b16_224", "hf-hub:timm/mixer_b16_224.miil_in21k@main")
    model, variables = checkpoints.load_pretrained("runs/my_run")                        # our own preset directory
    model, variables = checkpoints.load_pretrained("mixer_b16_224.goog_in1k", num_classes=10)  # a new head

Formats: `.safetensors` (the safetensors library's numpy API), official JAX `.npz`, PyTorch `.pth` / `.pt` /
`.bin` / `.ckpt` / `.pth.tar` (the weights under `state_dict` / `model` / `state_dict_ema` / `model_ema` of a
training checkpoint are found), and our presets. PyTorch files are read without torch and without running any of
their code: a restricted unpickler rebuilds tensors as numpy arrays, keeps other objects as inert records, and
refuses a file that asks to call anything else (`UnsafeCheckpointError`).

Downloads: plain URLs go to `$MIXER_ZOO_CACHE` (default `~/.cache/mixer_zoo/weights`), one entry per URL, checked
against the release's sha256 when known and against the digest recorded at first download on every reuse.
`hf-hub:org/name[@revision]` goes through `huggingface_hub.hf_hub_download` (its cache, `HF_HUB_CACHE`,
`HF_HUB_OFFLINE=1`, `revision=` pinning); a Hub file's sha256 is re-checked against the Hub's content address.
"""

import collections
import io
import json
import logging
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import ml_dtypes
import numpy as np

import zoo
from checkpoints.convert import convert
from checkpoints.download import (
    ChecksumError,
    DownloadError,
    cached_download,
    digest_matches,
    published_digest,
    sha256_file,
)
from checkpoints.manager import is_preset, load_variables
from checkpoints.tree import merge_params

CACHE_ENV = "MIXER_ZOO_CACHE"
HUB_PREFIX = "hf-hub:"
HUB_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # what timm's Hub repositories hold, preferred first
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")
# Where training checkpoints keep the weights, in the order they are looked for (raw weights before EMA).
WEIGHT_KEYS = ("state_dict", "model", "model_state_dict", "module", "state_dict_ema", "model_ema")
_log = logging.getLogger(__name__)


class UnsafeCheckpointError(ValueError):
    """A pickled checkpoint asks to run code when loaded; it was refused and nothing of it was executed."""


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/mixer_zoo/weights").expanduser()


def _is_url(s: str) -> bool:
    return s.split("://", 1)[0] in ("http", "https", "file") and "://" in s


# ---------------------------------------------------------------------------------------------------------------
# PyTorch files without torch: a zip of `<archive>/data.pkl` (the pickled object) and `<archive>/data/<key>` (one
# raw little-endian buffer per storage). Tensors are pickled as calls of torch._utils._rebuild_tensor_v2 on a
# persistent storage id; we answer those with numpy and nothing else is ever called.

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    "ComplexFloatStorage": np.complex64,
    "ComplexDoubleStorage": np.complex128,
    "UntypedStorage": np.uint8,
}


class _CallRefused(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class _Inert(type):
    """Metaclass of the stand-ins for classes a file names: calling one (pickle's REDUCE) is refused."""

    def __call__(cls, *args, **kwargs):
        raise _CallRefused(cls.qualified_name)


class Opaque(metaclass=_Inert):
    """An object of a class we do not import (argparse.Namespace, a yacs config, ...): what the file stored, inert.

    Pickle builds such objects with `cls.__new__` (its NEWOBJ), then hands them their state and items.
    """

    qualified_name = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args, obj.state, obj.items, obj.elements = args, None, {}, []
        return obj

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        self.items[key] = value

    def append(self, value):
        self.elements.append(value)

    def extend(self, values):
        self.elements.extend(values)

    def __repr__(self):
        return f"<{self.qualified_name} (not imported)>"


_opaque_classes: dict[str, type] = {}


def _opaque(name: str) -> type:
    if name not in _opaque_classes:
        _opaque_classes[name] = _Inert(name.rsplit(".", 1)[-1], (Opaque,), {"qualified_name": name})
    return _opaque_classes[name]


class _Storage:
    def __init__(self, array: np.ndarray):
        self.array = array


class _FormatError(ValueError):
    pass


def _rebuild_tensor(storage, offset, size, stride, *_):
    """A copy of the strided view torch describes, after checking it stays inside the storage."""
    if not isinstance(storage, _Storage):
        raise _FormatError("a tensor without a storage")
    size, stride, offset = tuple(int(n) for n in size), tuple(int(s) for s in stride), int(offset)
    if len(size) != len(stride) or min((*size, *stride, offset), default=0) < 0:
        raise _FormatError(f"bad tensor layout size={size} stride={stride} offset={offset}")
    array = storage.array
    if 0 in size:
        return np.zeros(size, array.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= array.size:
        raise _FormatError(f"tensor of size {size} reads past its storage of {array.size} elements")
    view = np.lib.stride_tricks.as_strided(
        array[offset:], shape=size, strides=[s * array.itemsize for s in stride], writeable=False
    )
    return np.array(view)


def _rebuild_parameter(data, *_):
    return data


def _codecs_encode(text, encoding="latin1"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _FormatError("unexpected _codecs.encode arguments")
    return text.encode("latin1")


def _numpy_dtype(name, *_):
    dtype = np.dtype(str(name), False, True)  # a copy: pickle's BUILD then sets its state, never a shared dtype's
    if dtype.kind not in "biufc":
        raise _FormatError(f"numpy dtype {dtype} is not a plain number type")
    return dtype


def _plain(dtype) -> bool:
    return isinstance(dtype, np.dtype) and dtype.kind in "biufc" and not dtype.hasobject and dtype.fields is None


def _numpy_scalar(dtype, data=None):
    if not _plain(dtype) or not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise _FormatError("bad numpy scalar")
    return np.frombuffer(data, dtype)[0]


class _NumpyArray:
    """numpy's `_reconstruct(ndarray, shape, dtype)` + BUILD, answered from plain bytes only."""

    def __init__(self, *_):
        self.array = None

    def __setstate__(self, state):
        _, shape, dtype, fortran, data = state
        if not _plain(dtype) or not isinstance(data, bytes):
            raise _FormatError("numpy array without plain numeric data")
        shape = tuple(int(n) for n in shape)
        self.array = np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C").copy()


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    ("_codecs", "encode"): _codecs_encode,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "_reconstruct"): _NumpyArray,
    ("numpy._core.multiarray", "_reconstruct"): _NumpyArray,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}


class _Unpickler(__import__("pickle").Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive, self.prefix, self.storages = archive, prefix, {}
        order = f"{prefix}byteorder"
        big = order in archive.namelist() and archive.read(order).strip() == b"big"
        self.byteorder = ">" if big else "<"

    def find_class(self, module, name):
        return _SAFE_GLOBALS.get((module, name)) or _opaque(f"{module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise _FormatError(f"unknown persistent id {str(pid)[:80]}")
        _, storage_type, key, _, _ = pid
        kind = getattr(storage_type, "qualified_name", "").removeprefix("torch.")
        if kind not in _STORAGE_DTYPES:
            raise _FormatError(f"unsupported tensor storage {getattr(storage_type, 'qualified_name', storage_type)}")
        if key not in self.storages:
            data = self.archive.read(f"{self.prefix}data/{key}")
            dtype = np.dtype(_STORAGE_DTYPES[kind]).newbyteorder(self.byteorder)
            usable = len(data) - len(data) % dtype.itemsize
            self.storages[key] = np.frombuffer(data[:usable], dtype).astype(dtype.newbyteorder("="))
        return _Storage(self.storages[key])


def _finish(obj):
    """Numpy arrays rebuilt through `_NumpyArray` become arrays; containers are walked."""
    if isinstance(obj, _NumpyArray):
        return obj.array
    if type(obj) in (dict, collections.OrderedDict):
        return type(obj)((k, _finish(v)) for k, v in obj.items())
    if type(obj) in (list, tuple):
        return type(obj)(_finish(v) for v in obj)
    return obj


def _refusal(path, what: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"{path} was refused: unpickling it would call {what}, i.e. run code from the file (only tensors, "
        "containers and inert records are read from PyTorch files). Load it only if you trust it, in a separate "
        "environment: `sd = torch.load(path, weights_only=False)`, then save the weights with "
        "`safetensors.torch.save_file(sd, 'weights.safetensors')` and load that file instead."
    )


def read_torch_file(path) -> Any:
    """The object a zip-format PyTorch file (`torch.save`, torch >= 1.6) holds, tensors as numpy arrays, read
    without torch and without calling anything the file names. Raises UnsafeCheckpointError for a file that would
    run code when unpickled."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return _read_legacy_torch_file(path)
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if re.fullmatch(r"[^/]+/data\.pkl", n)]
        if len(pickles) != 1:
            raise ValueError(f"{path} is a zip file but not a PyTorch checkpoint (no single <archive>/data.pkl)")
        prefix = pickles[0].removesuffix("data.pkl")
        try:
            obj = _Unpickler(io.BytesIO(archive.read(pickles[0])), archive, prefix).load()
        except _CallRefused as e:
            raise _refusal(path, e.name) from None
        except (_FormatError, KeyError) as e:
            raise ValueError(f"{path}: unreadable PyTorch checkpoint: {e}") from e
        except Exception as e:  # a malformed pickle stream
            raise ValueError(f"{path}: unreadable PyTorch checkpoint: {type(e).__name__}: {e}") from e
    return _finish(obj)


def _read_legacy_torch_file(path: Path) -> Any:
    """A pre-1.6 (non-zip) PyTorch file: torch's own restricted loader (`weights_only=True`) when torch is there."""
    try:
        import torch
    except ImportError as e:
        raise ValueError(
            f"{path} is not a zip-format PyTorch file (torch >= 1.6): reading the legacy format needs PyTorch, "
            "or re-save it as safetensors"
        ) from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _refusal(path, f"something torch's weights_only loader refuses ({first[:200]})") from None
    bf16 = lambda v: v.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    to_numpy = lambda v: bf16(v.detach().cpu()) if v.dtype == torch.bfloat16 else v.detach().cpu().numpy()
    return jax.tree.map(lambda v: to_numpy(v) if isinstance(v, torch.Tensor) else v, state)


def _array_items(obj: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """The numpy arrays in nested dicts, keys joined with '.'; everything else is dropped."""
    out = {}
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            name = f"{prefix}{key}"
            if isinstance(value, np.ndarray):
                out[name] = value
            elif isinstance(value, Mapping):
                out.update(_array_items(value, f"{name}."))
    return out


def select_weights(obj: Any, path, key: str | None = None) -> tuple[dict[str, np.ndarray], str | None]:
    """The flat state dict inside a loaded PyTorch object and the key it was under (None: the top level).

    A training checkpoint keeps its weights under one of WEIGHT_KEYS (raw weights are preferred to EMA unless `key`
    names one); a bare state dict is used as it is.
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a dict of tensors")
    if key is not None:
        if not isinstance(obj.get(key), Mapping):
            found = [k for k in obj if isinstance(obj[k], Mapping)]
            raise ValueError(f"{path} has no state dict under {key!r}; nested dicts: {found or 'none'}")
        return _array_items(obj[key]), key
    for candidate in WEIGHT_KEYS:
        if isinstance(obj.get(candidate), Mapping) and _array_items(obj[candidate]):
            return _array_items(obj[candidate]), candidate
    arrays = _array_items(obj)
    if not arrays:
        raise ValueError(f"{path} holds no tensors (top-level keys: {', '.join(map(str, list(obj)[:10]))})")
    return arrays, None


def read_state_dict(path, *, key: str | None = None) -> dict[str, np.ndarray]:
    """A flat dict of numpy arrays from `.safetensors`, `.npz` (JAX releases) or a PyTorch file (`.pth`, `.pt`,
    `.bin`, `.ckpt`, `.pth.tar`; `key` picks the nested state dict of a training checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return load_file(str(path))
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            return dict(npz)
    if path.suffix in TORCH_SUFFIXES:
        state, found = select_weights(read_torch_file(path), path, key)
        if found:
            _log.info("%s: the weights under %r", path, found)
        return {k.removeprefix("module."): v for k, v in state.items()}
    raise ValueError(
        f"unknown checkpoint format {path.suffix!r} for {path}; expected .safetensors, .npz, .pth, .pt, .bin, "
        ".ckpt or .pth.tar"
    )


# ---------------------------------------------------------------------------------------------------------------
# Fetching: plain URLs through our cache, `hf-hub:` names through huggingface_hub.


def parse_hub_spec(spec: str) -> tuple[str, str | None]:
    """'hf-hub:timm/mixer_b16_224.goog_in1k@v1' -> ('timm/mixer_b16_224.goog_in1k', 'v1')."""
    repo, _, revision = spec.removeprefix(HUB_PREFIX).partition("@")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise ValueError(f"{spec!r} is not a Hugging Face Hub name: expected hf-hub:org/name[@revision]")
    return repo, (revision or None)


def _hub_file(repo: str, filename: str, revision: str | None) -> Path:
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo, filename, revision=revision))
    except (EntryNotFoundError, LocalEntryNotFoundError):
        raise
    except (HfHubHTTPError, OSError, ValueError) as e:
        offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
        raise DownloadError(f"could not get {filename} of hf-hub:{repo}{offline}: {type(e).__name__}: {e}") from e


def _check_hub_blob(path: Path, sha256: str | None) -> None:
    """A Hub LFS file is stored under its sha256 (`blobs/<sha256>`): re-check it, and the release's digest."""
    blob = path.resolve()
    expected = [d for d in (blob.name if re.fullmatch(r"[0-9a-f]{64}", blob.name) else None, sha256) if d]
    if not expected:
        return
    actual = sha256_file(path)
    bad = [d for d in expected if not digest_matches(actual, d)]
    if bad:
        raise ChecksumError(
            f"the Hub file {path} (cached at {blob}) has sha256 {actual}, expected {bad[0]}: it changed on disk "
            "or is not the registered release. Delete it from the Hugging Face cache to download it again."
        )


def fetch_hub(spec: str, sha256: str | None = None) -> Path:
    """The weights file of `hf-hub:org/name[@revision]`: model.safetensors, else pytorch_model.bin."""
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo, revision = parse_hub_spec(spec)
    failures = []
    for filename in HUB_WEIGHTS:
        try:
            path = _hub_file(repo, filename, revision)
        except (EntryNotFoundError, LocalEntryNotFoundError) as e:
            failures.append(f"{filename}: {type(e).__name__}")
            continue
        _check_hub_blob(path, sha256)
        return path
    raise DownloadError(
        f"hf-hub:{repo} (revision {revision or 'main'}) has no {' or '.join(HUB_WEIGHTS)} that could be fetched "
        f"({'; '.join(failures)}); offline, the file must already be in the Hugging Face cache"
    )


def hub_config(spec: str) -> dict:
    """The repository's config.json (timm: `architecture`, `num_classes`, `pretrained_cfg`); {} when it has none."""
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo, revision = parse_hub_spec(spec)
    try:
        return json.loads(_hub_file(repo, "config.json", revision).read_text())
    except (EntryNotFoundError, LocalEntryNotFoundError):
        return {}


def fetch(url_or_path: str, sha256: str | None = None) -> Path:
    """A local file for a path, a URL (cached, sha256-checked) or an `hf-hub:` name."""
    if url_or_path.startswith(HUB_PREFIX):
        return fetch_hub(url_or_path, sha256)
    if _is_url(url_or_path):
        return cached_download(url_or_path, cache_dir(), sha256 or published_digest(url_or_path))
    return Path(url_or_path)


def _release_for(entry, location: str) -> Any:
    """The registered release of `entry` whose url is `location` (an `hf-hub:` name without its revision counts)."""
    bare = location.partition("@")[0] if location.startswith(HUB_PREFIX) else location
    return next((cfg for cfg in entry.pretrained.values() if cfg.url == bare), None)


def _hub_model(spec: str) -> tuple[str, Any]:
    """The registered model (and release, if registered) a Hub repository's config.json names."""
    architecture = hub_config(spec).get("architecture")
    if not architecture:
        raise ValueError(
            f"{spec}: no timm config.json naming the architecture; name the model: "
            f"load_pretrained('<model name>', {spec!r})"
        )
    arch = architecture.partition(".")[0]
    if arch not in zoo.list_models():
        raise ValueError(
            f"{spec} holds timm architecture {architecture!r}, which is not a registered model; name a model of "
            f"the same layout: load_pretrained('<model name>', {spec!r}, **overrides)"
        )
    return arch, _release_for(zoo.get_entry(arch), spec)


# ---------------------------------------------------------------------------------------------------------------


def _from_preset(directory: Path, overrides: dict) -> tuple[Any, dict]:
    variables, config, _ = load_variables(directory)
    model = zoo.create_model(config["model_name"], **{**config.get("overrides", {}), **overrides})
    return model, merge_params(variables, zoo.abstract_variables(model), what=f"preset {directory}")


def resolve(name_or_path: str, file_or_url: str | None = None) -> tuple[Any, Any, str]:
    """(registry entry, registered release or None, location of the weights) for `load_pretrained`'s arguments."""
    spec = str(name_or_path)
    if spec.startswith(HUB_PREFIX) and file_or_url is None:
        arch, release = _hub_model(spec)
        return zoo.get_entry(arch), release, spec
    entry = zoo.get_entry(spec)
    _, tag = zoo.registry.split_name(spec)
    if file_or_url is None:
        release = zoo.pretrained_cfg(spec)
        location = release.url
        if release.is_hub and release.revision:
            location = f"{location}@{release.revision}"
        return entry, release, location
    release = entry.pretrained[tag] if tag else _release_for(entry, str(file_or_url))
    return entry, release, str(file_or_url)


def load_pretrained(
    name_or_path: str,
    file_or_url: str | None = None,
    *,
    source: str | None = None,
    state_dict_key: str | None = None,
    **overrides,
):
    """Returns `(model, variables)`; see the module docstring for the forms. `source` overrides the converter
    (default: the release's, `timm` for Hub repositories with a timm config, else `official`), `state_dict_key`
    the nested state dict of a training checkpoint; `overrides` are constructor fields (a `num_classes` other
    than the file's gives a freshly initialised head)."""
    path = Path(str(name_or_path))
    if not str(name_or_path).startswith(HUB_PREFIX):
        for directory in (path, path / "model"):
            if is_preset(directory):
                return _from_preset(directory, overrides)
        if path.exists():
            raise FileNotFoundError(
                f"{path} is not a preset directory (no config.json and variables/ in it or in model/)"
            )

    entry, release, location = resolve(str(name_or_path), file_or_url)
    same_file = release is not None and location.partition("@")[0] == release.url.partition("@")[0]
    if same_file and release.is_hub and "@" in location and location.partition("@")[2] != release.revision:
        same_file = False  # another revision of the repository: the registered digest is not for this file
    file = fetch(location, release.sha256 if same_file else None)
    if source is None and release is not None:
        source = release.source
    elif source is None:
        hub_timm = location.startswith(HUB_PREFIX) and "architecture" in hub_config(location)
        source = "timm" if hub_timm else "official"
    key = state_dict_key or (release.state_dict_key if release else None)
    overrides = {**(dict(release.model_overrides) if release else {}), **overrides}
    num_classes = overrides.pop("num_classes", None)
    flat = read_state_dict(file, key=key)
    variables = convert(entry.name, flat, source=source, **overrides)
    fields = {**_file_fields(entry, flat, source), **overrides}  # the model `variables` belong to
    if "num_classes" in entry.accepted_fields() and "num_classes" not in fields:
        fields["num_classes"] = variables["params"]["head"]["kernel"].shape[-1] if "head" in variables["params"] else 0
    if num_classes is not None and num_classes != fields.get("num_classes"):
        _log.warning("%s: new head for %d classes (the file's has %s)", entry.name, num_classes, fields["num_classes"])
        model = zoo.create_model(entry.name, **{**fields, "num_classes": num_classes})
        inputs = zoo.dummy_inputs(model)
        fresh = jax.jit(lambda k: model.init(k, **inputs, train=False))(jax.random.key(0))
        without_head = {**variables, "params": {k: v for k, v in variables["params"].items() if k != "head"}}
        variables = merge_params(without_head, jax.device_get(fresh), dont_load=("params/head/.*",))
    else:
        model = zoo.create_model(entry.name, **fields)
    return model, variables


def _file_fields(entry, flat: Mapping[str, np.ndarray], source: str) -> dict:
    """The constructor fields the converter reads off the file (e.g. `num_classes`), as `convert` applies them."""
    from checkpoints.convert import _CONVERTERS

    _, infer_config = _CONVERTERS.get((entry.family, source), (None, None))
    return dict(infer_config({k.removeprefix("module."): v for k, v in flat.items()})) if infer_config else {}
