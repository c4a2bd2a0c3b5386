"""Checkpoints: orbax wrapper, converters of official weights, pretrained releases."""
