"""Checkpoints: orbax wrapper, converters of official weights, pretrained releases."""

from checkpoints.convert import convert, register_converter
from checkpoints.download import ChecksumError, DownloadError, download, sha256_file
from checkpoints.manager import (
    CheckpointManager,
    CheckpointStructureError,
    CheckpointWarning,
    CorruptCheckpointError,
    Restored,
    load_params,
    save_params,
)
from checkpoints.pretrained import load_pretrained, read_state_dict
from checkpoints.tree import flatten, merge_params, unflatten

__all__ = [
    "CheckpointManager",
    "CheckpointStructureError",
    "CheckpointWarning",
    "ChecksumError",
    "CorruptCheckpointError",
    "DownloadError",
    "Restored",
    "convert",
    "download",
    "flatten",
    "load_params",
    "load_pretrained",
    "merge_params",
    "read_state_dict",
    "register_converter",
    "save_params",
    "sha256_file",
    "unflatten",
]
