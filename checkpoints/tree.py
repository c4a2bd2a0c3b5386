"""Parameter-tree helpers: '/'-joined flat views and the strict merge every foreign load goes through."""

import re
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import numpy as np


def flatten(tree: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
    """{'a': {'b': x}} -> {'a/b': x}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            for sub, leaf in flatten(value, sep).items():
                flat[f"{key}{sep}{sub}"] = leaf
        else:
            flat[str(key)] = value
    return flat


def unflatten(flat: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
    """{'a/b': x} -> {'a': {'b': x}}."""
    tree: dict[str, Any] = {}
    for path, leaf in flat.items():
        node = tree
        *parents, last = path.split(sep)
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = leaf
    return tree


def _listing(paths: Iterable[str], limit: int = 12) -> str:
    paths = sorted(paths)
    more = f", ... ({len(paths) - limit} more)" if len(paths) > limit else ""
    return ", ".join(paths[:limit]) + more


def merge_params(
    loaded: Mapping[str, Any], reference: Mapping[str, Any], *, dont_load: Iterable[str] = (), what: str = "checkpoint"
) -> dict[str, Any]:
    """Returns `loaded` with the structure, shapes and dtypes of `reference`, or raises naming every difference.

    `reference` may be concrete (e.g. freshly initialised parameters) or abstract (`jax.ShapeDtypeStruct`s).
    Paths matching a `dont_load` regex are taken from `reference` instead (which must then be concrete), e.g.
    `dont_load=("head/.*",)` to fine-tune with a new head.
    """
    patterns = [re.compile(p) for p in dont_load]
    skip = lambda path: any(p.fullmatch(path) for p in patterns)
    flat_loaded = {k: v for k, v in flatten(loaded).items() if not skip(k)}
    flat_ref = flatten(reference)
    missing = [k for k in flat_ref if k not in flat_loaded and not skip(k)]
    unexpected = [k for k in flat_loaded if k not in flat_ref]
    mismatched = [
        f"{k} {tuple(np.shape(flat_loaded[k]))} != {tuple(flat_ref[k].shape)}"
        for k in flat_ref
        if k in flat_loaded and tuple(np.shape(flat_loaded[k])) != tuple(flat_ref[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing in {what}: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected in {what}: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch ({what} != model): {_listing(mismatched)}")
    if problems:
        raise ValueError(f"{what} does not match the model's parameters; " + "; ".join(problems))
    merged = {}
    for path, ref in flat_ref.items():
        if skip(path):
            if isinstance(ref, jax.ShapeDtypeStruct):
                raise ValueError(
                    f"dont_load matched {path!r} but the reference tree is abstract; pass initialised params"
                )
            merged[path] = ref
        else:
            merged[path] = np.asarray(flat_loaded[path]).astype(ref.dtype)
    return unflatten(merged)
