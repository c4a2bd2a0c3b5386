"""Image preprocessing and augmentation in numpy/PIL, for grain's `random_map`.

`make_transform(train, image_size=..., **data_config)` returns a callable `(example, rng) -> example` that turns
`example["image"]` (uint8 [H, W, C] or the encoded bytes of a PNG/JPEG/... file) into float32
[image_size, image_size, C] normalised with the model's mean/std. All randomness comes from the numpy Generator
passed in, so the same generator state gives the same output.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

AUGMENTS = ("rrc", "pad_crop", "none")
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def mode_channels(mode: str) -> int:
    """Channels a PIL mode decodes to here: 1 for grayscale modes, 3 for the rest."""
    return 1 if mode in _GRAY_MODES else 3


def _check_channels(channels: int | None) -> None:
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")


# ----------------------------------------------------------------------------------------------------------------
# Decoding and PIL <-> numpy.


def open_image(data: bytes | Any, what: str = "image") -> Image.Image:
    """Opens encoded image bytes (or a path) lazily; only the header is read until the pixels are needed."""
    try:
        return Image.open(io.BytesIO(data) if isinstance(data, bytes | bytearray | np.bytes_) else data)
    except (OSError, ValueError) as e:  # PIL.UnidentifiedImageError is an OSError.
        raise ValueError(f"cannot decode {what}: {e}") from e


def to_mode(img: Image.Image, channels: int | None) -> Image.Image:
    """Converts to "L" (channels=1) or "RGB" (channels=3); None keeps grayscale as "L" and makes the rest "RGB"."""
    _check_channels(channels)
    if channels is None:
        channels = mode_channels(img.mode)
    mode = "L" if channels == 1 else "RGB"
    if img.mode == mode:
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L") and mode == "L":  # 16-bit PNGs: keep the top 8 bits.
        return Image.fromarray((np.asarray(img, np.uint32) >> 8).clip(0, 255).astype(np.uint8))
    return img.convert(mode)


def decode_image(data: bytes | Any, channels: int | None = None, what: str = "image") -> np.ndarray:
    """Decodes image bytes or a file path to uint8 [H, W, C] with C = `channels` (None: 1 for grayscale, else 3)."""
    img = open_image(data, what)
    try:
        return pil_to_array(to_mode(img, channels))
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt pixel data
        raise ValueError(f"cannot decode {what}: {e}") from e


def array_to_pil(image: np.ndarray) -> Image.Image:
    """uint8 [H, W, 1] or [H, W, 3] -> PIL "L" / "RGB"."""
    if image.ndim != 3 or image.shape[-1] not in (1, 3) or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image [H, W, 1|3], got {image.dtype} {image.shape}")
    return Image.fromarray(np.ascontiguousarray(image[..., 0] if image.shape[-1] == 1 else image))


def pil_to_array(img: Image.Image) -> np.ndarray:
    """PIL "L" / "RGB" -> uint8 [H, W, C]."""
    a = np.asarray(img, dtype=np.uint8)
    return a[..., None] if a.ndim == 2 else a


def _draft(img: Image.Image, size: tuple[float, float]) -> float:
    """Lets a JPEG decode at 1/2, 1/4 or 1/8 scale while staying >= `size` (w, h); returns the scale factor."""
    w0, _ = img.size
    want = (max(1, math.ceil(size[0])), max(1, math.ceil(size[1])))
    if getattr(img, "format", None) == "JPEG" and want[0] < img.size[0] and want[1] < img.size[1]:
        img.draft(img.mode, want)
    return img.size[0] / w0


# ----------------------------------------------------------------------------------------------------------------
# Geometry. Boxes are (x0, y0, x1, y1) in input pixels; PIL's `resize(box=...)` crops and resizes in one pass.


def sample_rrc_box(
    rng: np.random.Generator,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> tuple[int, int, int, int]:
    """Random-resized-crop box (Inception style): returns (top, left, h, w) with 0 <= top, top + h <= height, etc.

    Draws a fixed number of random numbers whatever the outcome; falls back to a centre crop with the aspect ratio
    clamped to `ratio` when no attempt fits.
    """
    area = height * width
    target = area * rng.uniform(scale[0], scale[1], size=attempts)
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), size=attempts))
    ws = np.round(np.sqrt(target * aspect)).astype(int)
    hs = np.round(np.sqrt(target / aspect)).astype(int)
    u = rng.uniform(size=2)
    ok = np.flatnonzero((ws > 0) & (ws <= width) & (hs > 0) & (hs <= height))
    if ok.size:
        h, w = int(hs[ok[0]]), int(ws[ok[0]])
        return int(u[0] * (height - h + 1)), int(u[1] * (width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, min(height, max(1, round(width / ratio[0])))
    elif in_ratio > ratio[1]:
        h, w = height, min(width, max(1, round(height * ratio[1])))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def center_crop_box(height: int, width: int, image_size: int, crop_pct: float) -> tuple[float, float, float, float]:
    """Box equal to "resize the shorter side to floor(image_size / crop_pct), then centre-crop image_size"."""
    f = math.floor(image_size / crop_pct) / min(height, width)
    side = image_size / f
    x0, y0 = (width - side) / 2, (height - side) / 2
    return x0, y0, x0 + side, y0 + side


def _crop_resize(img: Image.Image, box, size: int, resample, draft: bool) -> Image.Image:
    """Crops `box` (in the full-resolution frame) from a possibly still-encoded image and resizes it to size^2."""
    if draft:
        bw, bh = box[2] - box[0], box[3] - box[1]
        f = min(1.0, max(size / bw, size / bh))
        k = _draft(img, (img.size[0] * f, img.size[1] * f))
        box = tuple(c * k for c in box)
    return img.resize((size, size), resample, box=box)


# ----------------------------------------------------------------------------------------------------------------
# RandAugment on PIL images. `level` in [0, 1] is magnitude / 10; `sign` is a random +-1 for the signed ops.


def _fill(img: Image.Image):
    return 128 if img.mode == "L" else (128, 128, 128)


def _affine(img: Image.Image, matrix) -> Image.Image:
    return img.transform(img.size, Image.Transform.AFFINE, matrix, Image.Resampling.BILINEAR, fillcolor=_fill(img))


def _enhance(kind):
    return lambda img, level, sign: kind(img).enhance(1.0 + sign * 0.9 * level)


RANDAUGMENT_OPS = {
    "identity": lambda img, level, sign: img,
    "autocontrast": lambda img, level, sign: ImageOps.autocontrast(img),
    "equalize": lambda img, level, sign: ImageOps.equalize(img),
    "rotate": lambda img, level, sign: img.rotate(sign * 30.0 * level, Image.Resampling.BILINEAR, fillcolor=_fill(img)),
    "solarize": lambda img, level, sign: ImageOps.solarize(img, 256 - int(256 * level)),
    "color": _enhance(ImageEnhance.Color),
    "posterize": lambda img, level, sign: ImageOps.posterize(img, 8 - int(4 * level)),
    "contrast": _enhance(ImageEnhance.Contrast),
    "brightness": _enhance(ImageEnhance.Brightness),
    "sharpness": _enhance(ImageEnhance.Sharpness),
    "shear_x": lambda img, level, sign: _affine(img, (1, sign * 0.3 * level, 0, 0, 1, 0)),
    "shear_y": lambda img, level, sign: _affine(img, (1, 0, 0, sign * 0.3 * level, 1, 0)),
    "translate_x": lambda img, level, sign: _affine(img, (1, 0, sign * 0.45 * level * img.size[0], 0, 1, 0)),
    "translate_y": lambda img, level, sign: _affine(img, (1, 0, 0, 0, 1, sign * 0.45 * level * img.size[1])),
}
_GRAY_OPS = tuple(k for k in RANDAUGMENT_OPS if k != "color")  # saturation means nothing for one channel


def randaugment(
    img: Image.Image, rng: np.random.Generator, num_ops: int, magnitude: float, ops: Sequence[str] | None = None
) -> Image.Image:
    """Applies `num_ops` ops drawn uniformly (with replacement) at magnitude in [0, 10] (10 = strongest).

    Grayscale ("L") images draw from the list without "color". Always draws 2 * num_ops random numbers.
    """
    names = tuple(ops) if ops is not None else (_GRAY_OPS if img.mode == "L" else tuple(RANDAUGMENT_OPS))
    idx = rng.integers(len(names), size=num_ops)
    signs = np.where(rng.uniform(size=num_ops) < 0.5, -1.0, 1.0)
    level = min(max(magnitude, 0.0), 10.0) / 10.0
    for i, s in zip(idx, signs):
        img = RANDAUGMENT_OPS[names[i]](img, level, s)
    return img


# ----------------------------------------------------------------------------------------------------------------
# The transform.


def _stats(values, name: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float32).reshape(-1)
    if a.size not in (1, 3):
        raise ValueError(f"{name} must have 1 or 3 values, got {values!r}")
    return a


@dataclasses.dataclass(frozen=True)
class ImageTransform:
    """Callable `(example, rng) -> example` with "image" float32 [image_size, image_size, C]; see make_transform."""

    train: bool
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    augment: str = "rrc"
    flip: bool = True
    randaugment: tuple[int, float] | None = None
    rrc_scale: tuple[float, float] = (0.08, 1.0)
    rrc_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    pad: int = 4
    channels: int | None = None
    draft: bool = True

    def __post_init__(self):
        if self.augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {self.augment!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {tuple(INTERPOLATIONS)}, got {self.interpolation!r}")
        if not (isinstance(self.image_size, int) and self.image_size > 0):
            raise ValueError(f"image_size must be a positive int, got {self.image_size!r}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct!r}")
        if not 0.0 < self.rrc_scale[0] <= self.rrc_scale[1] <= 1.0:
            raise ValueError(f"rrc_scale must satisfy 0 < min <= max <= 1, got {self.rrc_scale!r}")
        if self.randaugment is not None and (len(self.randaugment) != 2 or self.randaugment[0] < 0):
            raise ValueError(f"randaugment must be None or (num_ops >= 0, magnitude), got {self.randaugment!r}")
        _check_channels(self.channels)
        mean, std = _stats(self.mean, "mean"), _stats(self.std, "std")
        if mean.size != std.size or np.any(std <= 0):
            raise ValueError(f"mean and std must have the same length and std > 0, got {self.mean!r}, {self.std!r}")
        # x * scale - offset == (x / 255 - mean) / std; one-channel images use the average of 3-value statistics.
        gray_mean, gray_std = mean.mean(keepdims=True), std.mean(keepdims=True)
        norm = {1: (1 / (255 * gray_std), gray_mean / gray_std), 3: (1 / (255 * std), mean / std)}
        object.__setattr__(self, "_norm", norm)

    def _normalise(self, image: np.ndarray) -> np.ndarray:
        """uint8 [H, W, C] -> float32 (x / 255 - mean) / std."""
        scale, offset = self._norm[image.shape[-1]]
        out = image.astype(np.float32)
        out *= scale
        out -= offset
        return out

    def _decode(self, image) -> np.ndarray | Image.Image:
        """uint8 array with the requested channels, or a lazily decoded PIL image for JPEG bytes."""
        if isinstance(image, np.ndarray) and image.dtype == np.uint8:
            image = image[..., None] if image.ndim == 2 else image
            if self.channels is None or image.shape[-1] == self.channels:
                return image
            return pil_to_array(to_mode(array_to_pil(image), self.channels))
        if isinstance(image, bytes | bytearray | np.bytes_):
            img = open_image(image, "example['image'] bytes")
            want = img.mode if self.channels is None else ("L" if self.channels == 1 else "RGB")
            if img.format == "JPEG" and img.mode == want and want in ("L", "RGB"):
                return img  # still undecoded: the first crop/resize may decode it at reduced scale (draft)
            return to_mode(img, self.channels)
        raise ValueError(
            f"example['image'] must be uint8 [H, W, C] or encoded bytes, got {type(image).__name__} "
            f"{getattr(image, 'dtype', '')} {getattr(image, 'shape', '')}"
        )

    def _geometry(self, img: np.ndarray | Image.Image, rng: np.random.Generator) -> np.ndarray:
        """Random resized crop (training, "rrc") or resize + centre crop; an S x S input skips the latter."""
        size, resample = self.image_size, INTERPOLATIONS[self.interpolation]
        h, w = img.shape[:2] if isinstance(img, np.ndarray) else img.size[::-1]
        if self.train and self.augment == "rrc":
            top, left, ch, cw = sample_rrc_box(rng, h, w, self.rrc_scale, self.rrc_ratio)
            box = (left, top, left + cw, top + ch)
        elif (h, w) != (size, size):
            box = center_crop_box(h, w, size, self.crop_pct)
        else:
            return img if isinstance(img, np.ndarray) else pil_to_array(img)
        pil = array_to_pil(img) if isinstance(img, np.ndarray) else img
        return pil_to_array(_crop_resize(pil, box, size, resample, self.draft))

    def __call__(self, example: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        try:
            image = self._geometry(self._decode(example["image"]), rng)
        except (OSError, SyntaxError) as e:  # truncated or corrupt encoded bytes
            raise ValueError(f"cannot decode example['image'] bytes: {e}") from e
        if self.train:
            if self.augment == "pad_crop" and self.pad > 0:
                p, size = self.pad, self.image_size
                dy, dx = (int(v) for v in rng.integers(0, 2 * p + 1, size=2))
                canvas = np.zeros((size + 2 * p, size + 2 * p, image.shape[-1]), np.uint8)
                canvas[p : p + size, p : p + size] = image
                image = canvas[dy : dy + size, dx : dx + size]
            if self.flip and rng.uniform() < 0.5:
                image = image[:, ::-1]
            if self.randaugment is not None and self.randaugment[0] > 0:
                img = randaugment(array_to_pil(image), rng, int(self.randaugment[0]), float(self.randaugment[1]))
                image = pil_to_array(img)
        return {**example, "image": self._normalise(image)}


def make_transform(
    train: bool,
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    crop_pct: float = 0.875,
    interpolation: str = "bicubic",
    augment: str = "rrc",
    flip: bool = True,
    randaugment: tuple[int, float] | None = None,
    rrc_scale: tuple[float, float] = (0.08, 1.0),
    rrc_ratio: tuple[float, float] = (3 / 4, 4 / 3),
    pad: int = 4,
    channels: int | None = None,
    draft: bool = True,
) -> ImageTransform:
    """Preprocessing for training (`train=True`) or evaluation, as `(example, rng) -> example`.

    Args:
      train: augment (random crop, flip, RandAugment) or not.
      image_size: output side S; "image" comes back float32 [S, S, C], (x / 255 - mean) / std.
      mean, std: per-channel statistics in [0, 1] units (the model's pretrained data config); 1 or 3 values.
        A one-channel image is normalised with the average of 3-value statistics.
      crop_pct, interpolation: evaluation resizes the shorter side to floor(S / crop_pct) and centre-crops S;
        an input already S x S is left as is. `interpolation` (PIL filter name) is used by every resize.
      augment: training geometry: "rrc" random resized crop (`rrc_scale`, `rrc_ratio`); "pad_crop" CIFAR style
        (the evaluation geometry, then zero padding by `pad` and a random S x S crop); "none" (evaluation geometry).
      flip: random horizontal flip (training only).
      randaugment: None or (num_ops, magnitude), magnitude in [0, 10] (training only).
      channels: None keeps the input's channels (encoded grayscale -> 1, anything else -> 3); 1 or 3 converts.
      draft: decode JPEG bytes at a reduced scale (1/2..1/8) when the crop allows it without losing resolution.
    """
    return ImageTransform(
        train=bool(train),
        image_size=image_size,
        mean=tuple(np.asarray(mean, float).reshape(-1).tolist()),
        std=tuple(np.asarray(std, float).reshape(-1).tolist()),
        crop_pct=float(crop_pct),
        interpolation=interpolation,
        augment=augment,
        flip=flip,
        randaugment=None if randaugment is None else tuple(randaugment),
        rrc_scale=tuple(rrc_scale),
        rrc_ratio=tuple(rrc_ratio),
        pad=int(pad),
        channels=channels,
        draft=draft,
    )
