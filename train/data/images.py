"""Image classification data sets as random-access sources for grain.

`make_image_source(spec, split)` returns an `ImageSource`: `len(src)`, `src[i] -> {"image": uint8 [H, W, C],
"label": int}`, `num_classes`, `image_shape` ((H, W, C) when all images share it, else None) and `class_names`.

Specs (see docs/image_data.md):
  "digits"          scikit-learn's bundled 8x8 digits; splits train / validation / test / train_full.
  "tfds:<name>"     a TFDS data set prepared as array_record, read with `tfds.data_source` (no TensorFlow).
  "folder:<path>"   <path>/<class>/*.png|jpg|..., or <path>/<split>/<class>/... ; decoded lazily with PIL.
  "npz:<path>"      a .npz with per-split keys, or a directory of <split>.npz files.
  "idx:<dir>"       MNIST-format idx files (train-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz], ...).

Local splits accept a TFDS-style slice: "train[:90%]", "train[90%:]", "test[:100]".
"""

from __future__ import annotations

import functools
import gzip
import inspect
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from train.data.transforms import ImageTransform, decode_image, make_transform, mode_channels

__all__ = [
    "IMAGE_EXTENSIONS",
    "ArraySource",
    "FolderSource",
    "ImageSource",
    "ImageTransform",
    "TfdsSource",
    "make_image_source",
    "make_transform",
    "materialize",
    "read_idx",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
DIGITS_SPLITS = ("train", "validation", "test", "train_full")
DATA_ENV = "MIXER_ZOO_DATA"


class ImageSource:
    """Random access to labelled images. Subclasses implement `_get(i)` for 0 <= i < len(self)."""

    name: str
    num_classes: int
    image_shape: tuple[int, int, int] | None
    class_names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def _get(self, i: int) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, i) -> dict[str, Any]:
        n = len(self)
        j = int(i)
        if j < 0:
            j += n
        if not 0 <= j < n:
            raise IndexError(f"{self.name}: index {i} out of range for {n} examples")
        return self._get(j)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, len={len(self)}, num_classes={self.num_classes}, "
            f"image_shape={self.image_shape})"
        )


def _as_nhwc(images: np.ndarray, what: str) -> np.ndarray:
    """[N, H, W] or [N, H, W, 1|3] integer images -> uint8 [N, H, W, C]."""
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"{what}: expected images [N, H, W] or [N, H, W, 1|3], got shape {images.shape}")
    if images.dtype != np.uint8:
        if not (np.issubdtype(images.dtype, np.integer) or images.dtype == bool):
            raise ValueError(f"{what}: expected uint8 images (0..255), got dtype {images.dtype}")
        if images.size and (images.min() < 0 or images.max() > 255):
            raise ValueError(f"{what}: image values must lie in 0..255, got {images.min()}..{images.max()}")
        images = images.astype(np.uint8)
    return images


def _check_labels(labels: np.ndarray, n: int, num_classes: int, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"{what}: expected {n} labels [N] for {n} images, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{what}: labels must be integers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{what}: labels must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}")
    return labels.astype(np.int64)


class ArraySource(ImageSource):
    """In-memory images uint8 [N, H, W, C] (or [N, H, W]) with integer labels [N]."""

    def __init__(self, images, labels, num_classes: int | None = None, name: str = "arrays", class_names=None):
        self.name = name
        self.images = _as_nhwc(np.asarray(images), name)
        labels = np.asarray(labels)
        if num_classes is None:
            num_classes = int(labels.max()) + 1 if labels.size and np.issubdtype(labels.dtype, np.integer) else 0
        self.num_classes = int(num_classes)
        self.labels = _check_labels(labels, len(self.images), self.num_classes, name)
        self.image_shape = tuple(int(d) for d in self.images.shape[1:])
        self.class_names = None if class_names is None else tuple(class_names)

    def __len__(self) -> int:
        return len(self.images)

    def _get(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i], "label": int(self.labels[i])}


class FolderSource(ImageSource):
    """Image files decoded lazily with PIL: `paths[i]` has label `labels[i]`.

    decode=False returns the encoded file bytes as "image" (the transform then decodes them, possibly at reduced
    scale); pass the same `channels` to `make_transform` so that every example gets the same channel count.
    """

    def __init__(
        self,
        paths,
        labels,
        class_names,
        *,
        channels: int | None = None,
        fixed_size: bool = False,
        decode: bool = True,
        name: str = "folder",
    ):
        self.name, self.decode = name, decode
        self.paths = [str(p) for p in paths]
        self.labels = np.asarray(labels, np.int64)
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        if channels is None and self.paths:
            with _open_file(self.paths[0]) as img:
                channels = mode_channels(img.mode)
        self.channels = channels
        self.image_shape = None
        if fixed_size and self.paths:
            first = None
            for p in self.paths:
                with _open_file(p) as img:
                    if first is None:
                        first = (p, img.size)
                    elif img.size != first[1]:
                        raise ValueError(
                            f"{p}: image size {img.size[0]}x{img.size[1]} differs from {first[0]}: "
                            f"{first[1][0]}x{first[1][1]} (fixed_size=True needs all images of one size)"
                        )
            self.image_shape = (first[1][1], first[1][0], self.channels)

    def __len__(self) -> int:
        return len(self.paths)

    def _get(self, i: int) -> dict[str, Any]:
        p = self.paths[i]
        if not self.decode:
            return {"image": Path(p).read_bytes(), "label": int(self.labels[i])}
        return {"image": decode_image(p, self.channels, what=f"image file {p}"), "label": int(self.labels[i])}


class TfdsSource(ImageSource):
    """A `tfds.data_source` (array_record) with its image/label feature keys mapped to "image"/"label"."""

    def __init__(self, ds, *, image_key: str, label_key: str, num_classes: int, image_shape, class_names, name: str):
        self.ds, self.image_key, self.label_key = ds, image_key, label_key
        self.num_classes, self.image_shape, self.class_names, self.name = num_classes, image_shape, class_names, name

    def __len__(self) -> int:
        return len(self.ds)

    def _get(self, i: int) -> dict[str, Any]:
        ex = self.ds[i]
        image = ex[self.image_key]
        if isinstance(image, np.ndarray) and image.ndim == 2:
            image = image[..., None]
        return {"image": image, "label": int(ex[self.label_key])}


def _open_file(path):
    try:
        return Image.open(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot decode image file {path}: {e}") from e


# ----------------------------------------------------------------------------------------------------------------
# Splits and paths.

_SLICE = re.compile(r"^(?P<name>[\w\-]+)(?:\[(?P<start>-?\d+%?)?:(?P<stop>-?\d+%?)?\])?$")


def parse_split(split: str) -> tuple[str, tuple[str | None, str | None] | None]:
    """ "train[10%:50%]" -> ("train", ("10%", "50%")); "test" -> ("test", None)."""
    m = _SLICE.match(str(split).strip())
    if not m:
        raise ValueError(f"bad split {split!r}: expected a name with an optional slice, e.g. 'train[:90%]'")
    sl = (m["start"], m["stop"]) if "[" in split else None
    return m["name"], sl


def slice_indices(n: int, sl: tuple[str | None, str | None] | None, split: str = "") -> np.ndarray:
    """Indices of a TFDS-style slice of n examples; percent boundaries round to the closest example."""

    def bound(b, default):
        if b is None:
            return default
        if b.endswith("%"):
            pct = int(b[:-1])
            if not -100 <= pct <= 100:
                raise ValueError(f"bad split {split!r}: percent boundaries must lie in [-100, 100]")
            return round(pct * n / 100) if pct >= 0 else n - round(-pct * n / 100)
        return int(b)

    if sl is None:
        return np.arange(n)
    return np.arange(n)[slice(bound(sl[0], 0), bound(sl[1], n))]


def _resolve(path: str, data_dir: str | os.PathLike | None, spec: str) -> Path:
    """A relative path is looked up under data_dir (or $MIXER_ZOO_DATA) first, then as given."""
    if not path:
        raise ValueError(f"dataset spec {spec!r} names no path")
    p = Path(path).expanduser()
    base = data_dir if data_dir is not None else os.environ.get(DATA_ENV)
    tried = [p]
    if not p.is_absolute() and base:
        tried.insert(0, Path(base).expanduser() / p)
    for t in tried:
        if t.exists():
            return t
    raise FileNotFoundError(f"dataset spec {spec!r}: no such file or directory: {', '.join(map(str, tried))}")


# ----------------------------------------------------------------------------------------------------------------
# Digits.


DIGITS_CACHE_ENV = "MIXER_ZOO_DIGITS_CACHE"  # a file path; default ~/.cache/mixer_zoo/digits-sklearn-<version>.npz
_DIGITS_PARTS = ("train", "validation", "test", "train_full")


def _compute_digits() -> dict[str, np.ndarray]:
    """Images `[1797, 8, 8, 1]` uint8, labels, and each split's indices, by scikit-learn (the definition)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = d.target.astype(np.int64)
    idx = np.arange(len(labels))
    full, test = train_test_split(idx, test_size=0.2, random_state=0, stratify=labels)
    train, val = train_test_split(full, test_size=0.1, random_state=0, stratify=labels[full])
    return {"images": images, "labels": labels, "train": train, "validation": val, "test": test, "train_full": full}


def digits_cache_file() -> Path:
    from importlib.metadata import version

    default = f"~/.cache/mixer_zoo/digits-sklearn-{version('scikit-learn')}.npz"
    return Path(os.environ.get(DIGITS_CACHE_ENV) or default).expanduser()


def write_digits_cache(path: str | os.PathLike) -> None:
    """Computes the digits arrays and writes them to `path` atomically (run in a child process, below)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **_compute_digits())
    os.replace(tmp, path)


def _read_digits_cache(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in ("images", "labels", *_DIGITS_PARTS)}
    except (OSError, KeyError, ValueError, EOFError):
        return None
    n = len(arrays["labels"])
    if arrays["images"].shape != (n, 8, 8, 1) or any(np.any(arrays[k] >= n) for k in _DIGITS_PARTS):
        return None
    return arrays


@functools.lru_cache(maxsize=1)
def _digits_splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    # scikit-learn defines the data and the splits, but importing it (and scipy, pandas) would weigh on every
    # training process for a 1797 x 64 table (docs/benchmarks.md, Memory): the arrays are computed once per
    # scikit-learn version in a child process and cached; a run reads the cache. Without a writable cache they
    # are computed here.
    path = digits_cache_file()
    arrays = _read_digits_cache(path)
    if arrays is None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            program = "import sys; from train.data.images import write_digits_cache; write_digits_cache(sys.argv[1])"
            subprocess.run([sys.executable, "-c", program, str(path)], check=True, capture_output=True, timeout=600)
            arrays = _read_digits_cache(path)
        except (OSError, subprocess.SubprocessError):
            arrays = None
    if arrays is None:
        arrays = _compute_digits()
    return {k: (arrays["images"][arrays[k]], arrays["labels"][arrays[k]]) for k in _DIGITS_PARTS}


def digits_source(split: str) -> ArraySource:
    """scikit-learn digits as uint8 [8, 8, 1] (value * 255 / 16, rounded), 10 classes.

    Fixed stratified splits: test = 20% (360, `train_test_split(test_size=0.2, random_state=0, stratify=y)`),
    train_full = the other 1437, validation = 10% of train_full (144, same call), train = the remaining 1293.
    """
    name, sl = parse_split(split)
    if name not in DIGITS_SPLITS:
        raise ValueError(f"digits: unknown split {split!r}; available: {', '.join(DIGITS_SPLITS)}")
    images, labels = _digits_splits()[name]
    idx = slice_indices(len(labels), sl, split)
    return ArraySource(images[idx], labels[idx], 10, name=f"digits/{split}", class_names=[str(i) for i in range(10)])


# ----------------------------------------------------------------------------------------------------------------
# Folder of images.


def _image_files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _subdirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def _has_class_dirs(d: Path) -> bool:
    return any(any(p.suffix.lower() in IMAGE_EXTENSIONS for p in c.iterdir()) for c in _subdirs(d))


def folder_source(
    root: Path, split: str, *, channels: int | None = None, fixed_size: bool = False, decode: bool = True
) -> FolderSource:
    """root/<class>/<images> (split "train" only) or root/<split>/<class>/<images>; classes sorted by name.

    With split folders, the classes are the union over all of them, so label ids agree between splits.
    A slice ("train[:90%]") is taken within each class, so complementary slices stay stratified.
    """
    if not root.is_dir():
        raise NotADirectoryError(f"image folder {root} is not a directory")
    name, sl = parse_split(split)
    if (root / name).is_dir() and _has_class_dirs(root / name):
        split_dirs = [d for d in _subdirs(root) if _has_class_dirs(d)]
        classes = sorted({c.name for d in split_dirs for c in _subdirs(d)})
        base = root / name
    elif _has_class_dirs(root):
        if name != "train":
            raise ValueError(
                f"image folder {root} has no split folder {name!r}: its class folders hold the single split "
                f"'train' (slice it for held-out data, e.g. 'train[90%:]')"
            )
        classes, base = [c.name for c in _subdirs(root)], root
    else:
        subs = [d.name for d in _subdirs(root) if _has_class_dirs(d)]
        if subs:
            raise ValueError(f"image folder {root} has no split {name!r}; available: {', '.join(subs)}")
        raise ValueError(
            f"image folder {root} has no classes: expected {root}/<class>/*.png|jpg or {root}/<split>/<class>/..."
        )
    paths, labels = [], []
    for label, c in enumerate(classes):
        files = _image_files(base / c) if (base / c).is_dir() else []
        files = [files[i] for i in slice_indices(len(files), sl, split)]
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise ValueError(f"image folder {base}: split {split!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return FolderSource(
        paths, labels, classes, channels=channels, fixed_size=fixed_size, decode=decode, name=f"folder:{base}/{split}"
    )


# ----------------------------------------------------------------------------------------------------------------
# npz.

_NPZ_IMAGE_KEYS = ("{s}_images", "x_{s}", "images_{s}")
_NPZ_LABEL_KEYS = ("{s}_labels", "y_{s}", "labels_{s}")


def _npz_pair(files: Sequence[str], split: str | None) -> tuple[str, str] | None:
    def first(patterns):
        return next((p.format(s=split) for p in patterns if p.format(s=split) in files), None)

    if split is None:
        pair = first(("images", "x")), first(("labels", "y"))
    else:
        pair = first(_NPZ_IMAGE_KEYS), first(_NPZ_LABEL_KEYS)
    return pair if None not in pair else None


def _npz_splits(files: Sequence[str]) -> list[str]:
    out = []
    for k in files:
        for pattern in _NPZ_IMAGE_KEYS:
            pre, post = pattern.split("{s}")
            if k.startswith(pre) and k.endswith(post) and len(k) > len(pre) + len(post):
                s = k[len(pre) : len(k) - len(post)]
                if _npz_pair(files, s):
                    out.append(s)
    return sorted(set(out))


def _load_npz(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read npz file {path}: {e}") from e


def npz_source(path: Path, split: str, *, num_classes: int | None = None) -> ArraySource:
    """Images uint8 [N, H, W(, C)] and integer labels [N] from .npz files.

    A file holds splits under `<split>_images`/`<split>_labels` or `x_<split>`/`y_<split>` (Keras' mnist.npz),
    or one split "train" under `images`/`labels` (or `x`/`y`). A directory holds `<split>.npz` files with
    `images`/`labels` (or `x`/`y`). num_classes: argument, else a `num_classes` entry, else 1 + the largest label
    over all splits.
    """
    name, sl = parse_split(split)
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if not files:
            raise ValueError(f"npz directory {path} holds no .npz files")
        target = path / f"{name}.npz"
        if not target.is_file():
            raise ValueError(f"npz directory {path} has no split {name!r}; available: {[f.stem for f in files]}")
        members = {f.stem: (f, None) for f in files}
    else:
        with _load_npz(path) as z:
            keys = list(z.files)
        if _npz_pair(keys, None) and not _npz_splits(keys):
            members = {"train": (path, None)}
        else:
            members = {s: (path, s) for s in _npz_splits(keys)}
        if not members:
            raise ValueError(
                f"npz file {path} has none of the expected keys (images/labels, x/y, <split>_images/<split>_labels, "
                f"x_<split>/y_<split>); found: {keys}"
            )
        if name not in members:
            raise ValueError(f"npz file {path} has no split {name!r}; available: {sorted(members)}")
    file, key = members[name]
    with _load_npz(file) as z:
        pair = _npz_pair(z.files, key)
        if pair is None:
            raise ValueError(f"npz file {file} lacks images/labels (or x/y) arrays; found keys: {list(z.files)}")
        images, labels = z[pair[0]], z[pair[1]]
        if num_classes is None and "num_classes" in z.files:
            num_classes = int(z["num_classes"])
    what = f"npz file {file} ({pair[0]}, {pair[1]})"
    images = _as_nhwc(images, what)
    if num_classes is None:
        maxima = []
        for f, k in members.values():
            with _load_npz(f) as z:
                pair_k = _npz_pair(z.files, k)
                lab = z[pair_k[1]] if pair_k else np.zeros(0)
                if lab.size and np.issubdtype(lab.dtype, np.integer):
                    maxima.append(int(lab.max()))
        num_classes = max(maxima, default=-1) + 1
    labels = _check_labels(labels, len(images), num_classes, what)
    idx = slice_indices(len(labels), sl, split)
    return ArraySource(images[idx], labels[idx], num_classes, name=f"npz:{path}/{split}")


# ----------------------------------------------------------------------------------------------------------------
# MNIST idx files.

_IDX_PREFIX = {"train": "train", "test": "t10k", "t10k": "t10k"}


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """Reads an unsigned-byte idx file (optionally gzipped) with magic 0x0000080<ndim> into uint8 [d1, ..., dn]."""
    path = Path(path)
    try:
        with gzip.open(path) if path.suffix == ".gz" else open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"cannot read idx file {path}: {e}") from e
    expect = 0x0800 + ndim
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if magic != expect:
        got = "a file shorter than 4 bytes" if magic is None else f"0x{magic:08x}"
        raise ValueError(f"idx file {path}: bad magic number {got}, expected 0x{expect:08x} (ubyte, {ndim}-d)")
    head = 4 + 4 * ndim
    dims = tuple(int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    if len(data) != head + int(np.prod(dims)):
        raise ValueError(f"idx file {path}: header says {dims} ({np.prod(dims)} bytes), found {len(data) - head}")
    return np.frombuffer(data, np.uint8, offset=head).reshape(dims)


def _idx_file(root: Path, prefix: str, kind: str, required: bool = True) -> Path | None:
    pattern = rf"(.*-)?{prefix}-{kind}[-.]idx\d-ubyte(\.gz)?"
    found = [p for p in sorted(root.iterdir()) if re.fullmatch(pattern, p.name)]
    if len(found) > 1 or (required and not found):
        what = f"{len(found)} candidate" if found else "no"
        raise ValueError(f"idx directory {root}: {what} files named {prefix}-{kind}-idx?-ubyte[.gz] {found or ''}")
    return found[0] if found else None


def idx_source(root: Path, split: str, *, num_classes: int | None = None) -> ArraySource:
    """MNIST-format idx files in `root`: split "train" reads train-*, "test" (or "t10k") reads t10k-*.

    num_classes: argument, else 1 + the largest label of the train and test label files present.
    """
    if not root.is_dir():
        raise NotADirectoryError(f"idx directory {root} is not a directory")
    name, sl = parse_split(split)
    if name not in _IDX_PREFIX:
        raise ValueError(f"idx: unknown split {split!r}; available: train, test")
    images = read_idx(_idx_file(root, _IDX_PREFIX[name], "images"), 3)
    label_file = _idx_file(root, _IDX_PREFIX[name], "labels")
    labels = read_idx(label_file, 1)
    if len(labels) != len(images):
        raise ValueError(f"idx directory {root}: {len(images)} images but {len(labels)} labels in {label_file}")
    if num_classes is None:
        files = {_idx_file(root, p, "labels", required=False) for p in ("train", "t10k")} - {None, label_file}
        maxima = [int(a.max()) for a in [labels, *(read_idx(f, 1) for f in files)] if a.size]
        num_classes = max(maxima, default=-1) + 1
    idx = slice_indices(len(labels), sl, split)
    return ArraySource(images[idx], labels[idx].astype(np.int64), num_classes, name=f"idx:{root}/{split}")


# ----------------------------------------------------------------------------------------------------------------
# TFDS.


def tfds_source(
    name: str,
    split: str,
    *,
    data_dir=None,
    image_key: str = "image",
    label_key: str = "label",
    decode: bool = True,
    num_classes: int | None = None,
) -> TfdsSource:
    """A prepared TFDS data set (array_record) through `tfds.data_source`; never downloads.

    data_dir: argument, else $MIXER_ZOO_DATA, else TFDS' default (~/tensorflow_datasets). decode=False returns
    the encoded image bytes (the transform decodes them, using JPEG draft mode where it can).
    """
    import tensorflow_datasets as tfds

    if not name:
        raise ValueError("dataset spec 'tfds:' names no data set")
    data_dir = data_dir if data_dir is not None else os.environ.get(DATA_ENV)
    where = f"data_dir={data_dir}" if data_dir else "the default TFDS data_dir"
    prepare = f"prepare it once with `tfds build {name} --file_format=array_record" + (
        f" --data_dir={data_dir}`" if data_dir else "`"
    )
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ValueError(f"unknown TFDS data set {name!r} (spec 'tfds:{name}'): {str(e).splitlines()[0]}") from e
    except ValueError as e:  # e.g. an unknown config or version
        raise ValueError(f"TFDS data set {name!r}: {e}") from e
    features = builder.info.features
    for role, key in (("image", image_key), ("label", label_key)):
        if key not in features:
            raise ValueError(f"TFDS data set {name!r} has no {role} feature {key!r}; features: {list(features)}")
    image_feature, label_feature = features[image_key], features[label_key]
    if getattr(image_feature, "np_dtype", np.uint8) != np.uint8:
        raise ValueError(f"TFDS data set {name!r}: image feature {image_key!r} is {image_feature.np_dtype}, not uint8")
    if num_classes is None:
        num_classes = getattr(label_feature, "num_classes", None)
        if num_classes is None:
            raise ValueError(f"TFDS data set {name!r}: label {label_key!r} is not a ClassLabel; pass num_classes")
    if not decode and not isinstance(image_feature, tfds.features.Image):
        raise ValueError(f"TFDS data set {name!r}: decode=False needs an Image feature, {image_key!r} is not one")
    decoders = None if decode else {image_key: tfds.decode.SkipDecoding()}
    try:
        ds = builder.as_data_source(split=split, decoders=decoders)
    except (NotImplementedError, FileNotFoundError, AssertionError) as e:
        raise FileNotFoundError(
            f"TFDS data set {name!r} is not prepared as array_record in {where} (missing, or prepared in another "
            f"file format); {prepare}"
        ) from e
    except (ValueError, KeyError) as e:
        raise ValueError(f"TFDS data set {name!r}: bad split {split!r}: {e}") from e
    shape = tuple(getattr(image_feature, "shape", ()) or ())
    if len(shape) == 2:
        shape = (*shape, 1)
    image_shape = shape if len(shape) == 3 and None not in shape else None
    names = getattr(label_feature, "names", None)
    return TfdsSource(
        ds,
        image_key=image_key,
        label_key=label_key,
        num_classes=int(num_classes),
        image_shape=image_shape,
        class_names=tuple(names) if names else None,
        name=f"tfds:{name}/{split}",
    )


# ----------------------------------------------------------------------------------------------------------------
# Entry point.

_KINDS = {"digits": digits_source, "tfds": tfds_source, "folder": folder_source, "npz": npz_source, "idx": idx_source}


def make_image_source(spec: str, split: str, *, data_dir=None, **kwargs) -> ImageSource:
    """Opens split `split` of the data set named by `spec`.

    spec: "digits", "tfds:<name>", "folder:<path>", "npz:<path>" or "idx:<dir>".
    kwargs (per kind): tfds: image_key, label_key, decode, num_classes; folder: channels, fixed_size, decode;
      npz and idx: num_classes.
    """
    kind, colon, arg = str(spec).partition(":")
    if kind not in _KINDS or (kind == "digits" and colon) or (kind != "digits" and not colon):
        raise ValueError(
            f"unknown dataset spec {spec!r}; expected 'digits', 'tfds:<name>', 'folder:<path>', 'npz:<path>' or "
            "'idx:<dir>'"
        )
    fn = _KINDS[kind]
    allowed = [p for p in inspect.signature(fn).parameters if p not in ("name", "root", "path", "split", "data_dir")]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"dataset spec {spec!r} takes no argument(s) {unknown}; it takes {allowed}")
    if kind == "digits":
        return fn(split)
    if kind == "tfds":
        return fn(arg, split, data_dir=data_dir, **kwargs)
    return fn(_resolve(arg, data_dir, spec), split, **kwargs)


def materialize(src: ImageSource) -> tuple[np.ndarray, np.ndarray]:
    """All of a source as arrays (uint8 [N, H, W, C], int64 [N]); images must share one size (e.g. to write npz)."""
    images, labels, first = [], [], None
    for i in range(len(src)):
        ex = src[i]
        img = ex["image"] if isinstance(ex["image"], np.ndarray) else decode_image(ex["image"])
        if first is None:
            first = img.shape
        elif img.shape != first:
            where = src.paths[i] if isinstance(src, FolderSource) else f"{src.name}[{i}]"
            raise ValueError(f"{where}: image shape {img.shape} differs from the first image's {first}")
        images.append(img)
        labels.append(ex["label"])
    return np.stack(images) if images else np.zeros((0, 0, 0, 0), np.uint8), np.asarray(labels, np.int64)
