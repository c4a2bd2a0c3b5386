"""Checkpoints: orbax wrapper, converters of official weights, pretrained releases."""

from checkpoints.convert import convert, register_converter
from checkpoints.manager import (
    CheckpointManager,
    CheckpointStructureError,
    CheckpointWarning,
    CorruptCheckpointError,
    Restored,
    load_params,
    save_params,
)
from checkpoints.tree import flatten, merge_params, unflatten

__all__ = [
    "CheckpointManager",
    "CheckpointStructureError",
    "CheckpointWarning",
    "CorruptCheckpointError",
    "Restored",
    "convert",
    "flatten",
    "load_params",
    "merge_params",
    "register_converter",
    "save_params",
    "unflatten",
]
