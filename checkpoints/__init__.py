"""Checkpoints: orbax wrapper, converters of official weights, pretrained releases."""

from checkpoints.convert import convert, register_converter
from checkpoints.tree import flatten, merge_params, unflatten

__all__ = ["convert", "flatten", "merge_params", "register_converter", "unflatten"]
