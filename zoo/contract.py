"""The model contract shared by every family: argument checks that fail with a clear message at trace time."""

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def as_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """`224 -> (224, 224)`; `(h, w)` unchanged."""
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def check_images(model: str, images: jax.Array, img_size: int | Sequence[int], in_chans: int) -> None:
    """Images must be a float batch `[batch, height, width, channels]` (NHWC) of the model's size."""
    h, w = as_hw(img_size)
    if not hasattr(images, "shape") or images.ndim != 4:
        shape = getattr(images, "shape", type(images).__name__)
        raise ValueError(f"{model} expects images [batch, {h}, {w}, {in_chans}] (NHWC), got shape {shape}")
    if tuple(images.shape[1:]) != (h, w, in_chans):
        hint = ""
        if images.shape[1] == in_chans and tuple(images.shape[2:]) == (h, w):
            hint = " (this looks like NCHW; transpose to NHWC with x.transpose(0, 2, 3, 1))"
        raise ValueError(
            f"{model} expects images [batch, {h}, {w}, {in_chans}] (NHWC), got {tuple(images.shape)}{hint}; "
            "create the model with img_size=/in_chans= to change its input size"
        )
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(
            f"{model} expects floating-point images (normalised), got dtype {images.dtype}; "
            "convert uint8 images with the data pipeline's normalisation first"
        )


def check_series(model: str, name: str, x: jax.Array, expected: tuple[int, ...]) -> None:
    """A time-series input must be a float array `[batch, *expected]`."""
    if not hasattr(x, "shape") or x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
        shape = tuple(getattr(x, "shape", ()))
        raise ValueError(f"{model} expects {name} of shape [batch, {', '.join(map(str, expected))}], got {shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{model} expects floating-point {name}, got dtype {x.dtype}")
