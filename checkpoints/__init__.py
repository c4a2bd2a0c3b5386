"""Checkpoints: orbax wrapper, converters of official weights, pretrained releases (safe loading, the Hub,
the download cache); `python -m checkpoints` inspects and converts weights files."""

from checkpoints.convert import convert, register_converter
from checkpoints.download import ChecksumError, DownloadError, cached_download, download, sha256_file
from checkpoints.manager import (
    CheckpointManager,
    CheckpointStructureError,
    CheckpointWarning,
    CheckpointWriteError,
    CorruptCheckpointError,
    Restored,
    is_preset,
    load_params,
    load_variables,
    save_params,
    save_variables,
)
from checkpoints.pretrained import UnsafeCheckpointError, load_pretrained, read_state_dict
from checkpoints.tree import flatten, merge_params, unflatten

__all__ = [
    "CheckpointManager",
    "CheckpointStructureError",
    "CheckpointWarning",
    "CheckpointWriteError",
    "ChecksumError",
    "CorruptCheckpointError",
    "DownloadError",
    "Restored",
    "UnsafeCheckpointError",
    "cached_download",
    "convert",
    "download",
    "flatten",
    "is_preset",
    "load_params",
    "load_pretrained",
    "load_variables",
    "merge_params",
    "read_state_dict",
    "register_converter",
    "save_params",
    "save_variables",
    "sha256_file",
    "unflatten",
]
