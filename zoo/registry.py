"""Model registry: every model in the zoo is built by name.

A family module registers one entry per named variant with `@register_model`: the decorated function's name is
the model name, its return value the default constructor arguments, its docstring the description.

    @register_model(MlpMixer, family="mlp_mixer", task="classification", paper=MIXER)
    def mixer_b16_224():
        '''Mixer-B/16 at 224x224 (paper Table 1).'''
        return dict(patch_size=16, num_blocks=12, hidden_dim=768, ...)

    model = zoo.create_model("mixer_b16_224", num_classes=10)   # a flax.linen.Module
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

TASKS = ("classification", "forecasting")


@dataclasses.dataclass(frozen=True)
class Paper:
    """Where a model comes from."""

    title: str
    arxiv: str
    code: str  # URL of the official implementation

    @property
    def url(self) -> str:
        return f"https://arxiv.org/abs/{self.arxiv}"


@dataclasses.dataclass(frozen=True)
class PretrainedCfg:
    """One released set of weights for a model, and the preprocessing that travels with it (timm's PretrainedCfg).

    `url` is an `https://` (or `file://`) URL, or a Hugging Face Hub repository `hf-hub:org/name` (its
    `model.safetensors`, else `pytorch_model.bin`; `revision` pins a branch, tag or commit). `source` names the
    converter (`checkpoints.convert(..., source=...)`) that maps the file to our parameters. `sha256` (the full
    digest, or a published prefix of >= 8 hex digits) is checked after download and on every reuse of the cached
    file. `model_overrides` are constructor fields the weights need (e.g. exact GELU for weights trained in
    PyTorch); `state_dict_key` picks the weights inside a training checkpoint (`state_dict`, `model_ema`, ...).
    `paper_top1` is the ImageNet-1k top-1 (%) the paper reports for these weights, `eval_top1` the one measured
    on the released file (e.g. timm's results table); None where none is published.
    """

    url: str
    source: str
    num_classes: int
    sha256: str | None = None
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    input_size: tuple[int, int, int] = (224, 224, 3)
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    license: str = ""
    notes: str = ""
    revision: str | None = None
    format: str = ""  # npz, safetensors, pytorch; derived from `url` when empty
    dataset: str = ""  # what the weights were trained on, e.g. "ImageNet-21k, fine-tuned on ImageNet-1k"
    paper_top1: float | None = None
    eval_top1: float | None = None
    model_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    state_dict_key: str | None = None

    def __post_init__(self):
        if not self.format:
            object.__setattr__(self, "format", file_format(self.url))

    @property
    def is_hub(self) -> bool:
        return self.url.startswith("hf-hub:")

    def summary(self) -> str:
        """One line: where, what, how to preprocess, how good."""
        accuracy = [f"paper top-1 {self.paper_top1}%" if self.paper_top1 is not None else ""]
        accuracy += [f"measured top-1 {self.eval_top1}%" if self.eval_top1 is not None else ""]
        parts = [
            self.url + (f"@{self.revision}" if self.revision else ""),
            f"{self.format}, converter {self.source!r}",
            f"{self.num_classes} classes",
            f"input {'x'.join(map(str, self.input_size))}",
            f"mean {self.mean} std {self.std} crop {self.crop_pct} {self.interpolation}",
            f"sha256 {self.sha256}" if self.sha256 else ("sha256 from the Hub" if self.is_hub else "no sha256"),
            f"license {self.license or 'unknown'}",
            *[a for a in accuracy if a],
            self.dataset,
        ]
        return "; ".join(p for p in parts if p)


def file_format(url: str) -> str:
    """'npz', 'safetensors', 'pytorch' or '' from a URL, path or `hf-hub:` name (timm's Hub repos: safetensors)."""
    if url.startswith("hf-hub:"):
        return "safetensors"
    name = url.partition("#")[0].lower()
    if name.endswith(".npz"):
        return "npz"
    if name.endswith(".safetensors"):
        return "safetensors"
    if name.endswith((".pth", ".pt", ".bin", ".ckpt", ".pth.tar")):
        return "pytorch"
    return ""


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    name: str
    module_cls: type[nn.Module]
    defaults: Mapping[str, Any]
    family: str
    task: str
    paper: Paper
    description: str
    data_config: Mapping[str, Any]
    pretrained: Mapping[str, PretrainedCfg]
    releases_note: str = ""

    def accepted_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.module_cls) if f.name not in ("parent", "name"))


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What `zoo.model_info(name)` tells about a registered model."""

    name: str
    family: str
    task: str
    paper: Paper
    description: str
    input_spec: Mapping[str, tuple[int, ...]]  # per-example shapes of the call's inputs (no batch axis)
    num_params: int
    config: Mapping[str, Any]
    data_config: Mapping[str, Any]
    pretrained: tuple[str, ...]  # release tags
    releases: Mapping[str, PretrainedCfg] = dataclasses.field(default_factory=dict)  # tag -> release
    releases_note: str = ""  # why a model without releases has none we can download

    @property
    def code(self) -> str:
        return self.paper.code

    def __str__(self) -> str:
        lines = [
            f"{self.name}: {self.description}",
            f"  family {self.family}, task {self.task}, {self.num_params:,} parameters, "
            f"input {', '.join(f'{k} {s}' for k, s in self.input_spec.items())}",
            f"  paper: {self.paper.title} ({self.paper.url}); code: {self.code}",
        ]
        if not self.releases:
            note = f"none downloadable: {self.releases_note}" if self.releases_note else "none published"
            lines.append(f"  releases: {note}")
        else:
            lines.append("  releases:")
            lines += [f"    {self.name}.{tag}: {cfg.summary()}" for tag, cfg in self.releases.items()]
        return "\n".join(lines)


_REGISTRY: dict[str, ModelEntry] = {}

# Preprocessing defaults of a model without released weights: inputs in [-1, 1].
DEFAULT_DATA_CONFIG = MappingProxyType(
    dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=0.875, interpolation="bicubic")
)


def register_model(
    module_cls: type[nn.Module],
    *,
    family: str,
    task: str,
    paper: Paper,
    data_config: Mapping[str, Any] | None = None,
    pretrained: Mapping[str, PretrainedCfg] | None = None,
    releases_note: str = "",
) -> Callable[[Callable[[], dict[str, Any]]], Callable[[], dict[str, Any]]]:
    """Registers the decorated function's name as a model built by `module_cls(**fn())`.

    `pretrained` lists the released weights by tag; a paper-size model without any says why in `releases_note`.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")

    def decorator(fn: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(
                f"model {name!r} is already registered (by {_REGISTRY[name].module_cls.__module__}); "
                "pick another name"
            )
        defaults = dict(fn())
        entry = ModelEntry(
            name=name,
            module_cls=module_cls,
            defaults=MappingProxyType(defaults),
            family=family,
            task=task,
            paper=paper,
            description=(fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "",
            data_config=MappingProxyType({**DEFAULT_DATA_CONFIG, **(data_config or {})}),
            pretrained=MappingProxyType(dict(pretrained or {})),
            releases_note=releases_note,
        )
        unknown = sorted(set(defaults) - set(entry.accepted_fields()))
        if unknown:
            raise TypeError(f"{name}: {module_cls.__name__} has no fields {unknown}")
        _REGISTRY[name] = entry
        return fn

    return decorator


def split_name(name: str) -> tuple[str, str | None]:
    """'mixer_b16_224.goog_in1k' -> ('mixer_b16_224', 'goog_in1k')."""
    arch, _, tag = name.partition(".")
    return arch, (tag or None)


def get_entry(name: str) -> ModelEntry:
    """The registry entry of `name` (a tag after '.' is allowed); unknown names list the closest matches."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    arch, tag = split_name(name)
    if arch not in _REGISTRY:
        close = difflib.get_close_matches(arch, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown model {arch!r}{hint}. See zoo.list_models() for all {len(_REGISTRY)} names.")
    entry = _REGISTRY[arch]
    if tag is not None and tag not in entry.pretrained:
        known = ", ".join(f"{arch}.{t}" for t in entry.pretrained) or "none"
        raise ValueError(f"model {arch!r} has no pretrained tag {tag!r}; registered releases: {known}")
    return entry


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Builds the registered model `name` with its defaults updated by `overrides`.

    An override the model does not accept raises a TypeError naming the accepted fields. With a pretrained tag
    (`name.tag`) the head size defaults to that release's number of classes.
    """
    entry = get_entry(name)
    accepted = entry.accepted_fields()
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise TypeError(
            f"{entry.name} ({entry.module_cls.__name__}) does not accept {unknown}; accepted fields: "
            f"{', '.join(accepted)}"
        )
    _check_types(entry, overrides)
    kwargs = dict(entry.defaults)
    _, tag = split_name(name)
    if tag is not None and "num_classes" in accepted:
        kwargs["num_classes"] = entry.pretrained[tag].num_classes
    kwargs.update(overrides)
    return entry.module_cls(**kwargs)


_SCALAR_TYPES = {"bool": bool, "int": int, "float": float}


def _check_types(entry: ModelEntry, overrides: Mapping[str, Any]) -> None:
    """A bool, int or float field given a value of another kind (`use_norm='no'` is a true string) is refused."""
    for field in dataclasses.fields(entry.module_cls):
        kind = _SCALAR_TYPES.get(field.type if isinstance(field.type, str) else getattr(field.type, "__name__", ""))
        if kind is None or field.name not in overrides:
            continue
        value = overrides[field.name]
        if kind is bool:
            ok = isinstance(value, bool | np.bool_)
        elif kind is int:
            ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
        else:
            ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
        if not ok:
            article = "an" if kind is int else "a"
            raise TypeError(
                f"{entry.name}: field {field.name} must be {article} {kind.__name__}, got {type(value).__name__} "
                f"{value!r}"
            )


def list_models(pattern: str = "*", task: str | None = None, pretrained: bool = False) -> list[str]:
    """Sorted registered names matching the fnmatch `pattern`, optionally of one task or with released weights.

    With `pretrained=True` the names carry their tags (`mixer_b16_224.goog_in1k`).
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS} or None, got {task!r}")
    names = []
    for name, entry in _REGISTRY.items():
        if task is not None and entry.task != task:
            continue
        if pretrained:
            names += [f"{name}.{tag}" for tag in entry.pretrained if fnmatch.fnmatch(f"{name}.{tag}", pattern)]
        elif fnmatch.fnmatch(name, pattern):
            names.append(name)
    return sorted(names)


def input_spec(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Per-example input shapes of `model` (no batch axis), keyed by the call's argument names."""
    spec = getattr(model, "input_spec", None)
    if spec is None:
        raise TypeError(f"{type(model).__name__} does not follow the zoo contract: no input_spec()")
    return dict(spec())


def dummy_inputs(model: nn.Module, batch_size: int = 1, dtype: Any = jnp.float32) -> dict[str, jax.Array]:
    """Zero inputs of the right shapes for `model.init(key, **dummy_inputs(model))`."""
    return {k: jnp.zeros((batch_size, *shape), dtype) for k, shape in input_spec(model).items()}


def abstract_variables(model: nn.Module) -> Any:
    """Shapes and dtypes of `model.init(...)` without computing anything (jax.eval_shape)."""
    inputs = {k: jax.ShapeDtypeStruct((1, *s), jnp.float32) for k, s in input_spec(model).items()}
    return jax.eval_shape(lambda kw: model.init(jax.random.key(0), **kw, train=False), inputs)


def count_params(variables_or_model: Any) -> int:
    """Number of scalars in the `params` collection of a variables tree (or of a model, via eval_shape)."""
    if isinstance(variables_or_model, nn.Module):
        variables_or_model = abstract_variables(variables_or_model)
    params = variables_or_model.get("params", variables_or_model)
    return sum(math.prod(x.shape) for x in jax.tree.leaves(params))


@functools.cache
def _num_params(name: str) -> int:
    return count_params(create_model(name))


def model_info(name: str) -> ModelInfo:
    """Family, task, paper, input spec, parameter count (computed with eval_shape), config and releases."""
    entry = get_entry(name)
    model = create_model(entry.name)
    return ModelInfo(
        name=entry.name,
        family=entry.family,
        task=entry.task,
        paper=entry.paper,
        description=entry.description,
        input_spec=MappingProxyType(input_spec(model)),
        num_params=_num_params(entry.name),
        config=entry.defaults,
        data_config=entry.data_config,
        pretrained=tuple(entry.pretrained),
        releases=entry.pretrained,
        releases_note="" if entry.pretrained else entry.releases_note,
    )


def pretrained_cfg(name: str) -> PretrainedCfg:
    """The release `name.tag` (the first registered tag when `name` has none)."""
    entry = get_entry(name)
    _, tag = split_name(name)
    if tag is None:
        if not entry.pretrained:
            raise ValueError(f"model {entry.name!r} has no registered pretrained weights")
        tag = next(iter(entry.pretrained))
    return entry.pretrained[tag]
