"""Image data sources (digits, folder, npz, idx, tfds) and the numpy/PIL transforms. No network."""

import gzip
import io
import json
import os
import pickle
import subprocess
import sys
from collections import Counter
from types import MappingProxyType

import grain
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from train.data import images as I
from train.data import transforms as T

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def rng(seed=0):
    return np.random.default_rng(seed)


def png_bytes(a: np.ndarray, fmt="PNG", **kw) -> bytes:
    b = io.BytesIO()
    Image.fromarray(a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a).save(b, format=fmt, **kw)
    return b.getvalue()


def write_img(path, a):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(a))


def gradient(h, w):
    """R = 2x, G = 2y, B = 100: linear ramps that bilinear resampling reproduces exactly."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([2 * x, 2 * y, np.full_like(x, 100)], -1).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# Digits.


def test_digits_splits_sizes_range_and_stratification():
    sizes = {s: len(I.make_image_source("digits", s)) for s in I.DIGITS_SPLITS}
    assert sizes == {"train": 1293, "validation": 144, "test": 360, "train_full": 1437}
    src = I.make_image_source("digits", "train")
    assert src.num_classes == 10 and src.image_shape == (8, 8, 1)
    ex = src[0]
    assert ex["image"].dtype == np.uint8 and ex["image"].shape == (8, 8, 1) and isinstance(ex["label"], int)
    assert src.images.min() == 0 and src.images.max() == 255
    # train + validation = train_full, and the test split is stratified: every class 35..37 of 360.
    full = I.make_image_source("digits", "train_full")
    val = I.make_image_source("digits", "validation")
    assert Counter(src.labels.tolist()) + Counter(val.labels.tolist()) == Counter(full.labels.tolist())
    counts = Counter(I.make_image_source("digits", "test").labels.tolist())
    assert sorted(counts) == list(range(10)) and all(35 <= c <= 37 for c in counts.values())
    # Fixed split: the same call gives the same examples; slices partition the split.
    assert np.array_equal(I.make_image_source("digits", "train").images, src.images)
    a, b = I.make_image_source("digits", "train[:90%]"), I.make_image_source("digits", "train[90%:]")
    assert len(a) == 1164 and len(a) + len(b) == 1293
    assert np.array_equal(np.concatenate([a.images, b.images]), src.images)
    assert src[-1]["label"] == src.labels[-1]
    with pytest.raises(IndexError, match="out of range"):
        src[len(src)]


def test_digits_are_scikit_learns_cached_by_a_child_process(tmp_path, monkeypatch):
    """The run's process reads the cache (never importing scikit-learn); the cached split is scikit-learn's."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    cache = tmp_path / "digits.npz"
    cache.write_bytes(b"not an npz file")  # a damaged cache is rewritten
    code = (
        "import sys; from train.data import images as I; "
        "print(len(I.make_image_source('digits', 'test')), 'sklearn' in sys.modules)"
    )
    env = {**os.environ, I.DIGITS_CACHE_ENV: str(cache)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["360", "False"]

    d = load_digits()
    full, test = train_test_split(np.arange(len(d.target)), test_size=0.2, random_state=0, stratify=d.target)
    with np.load(cache) as f:
        np.testing.assert_array_equal(f["test"], test)
        np.testing.assert_array_equal(f["train_full"], full)
        np.testing.assert_array_equal(f["images"][..., 0], np.round(d.images * (255 / 16)).astype(np.uint8))
    try:
        monkeypatch.setenv(I.DIGITS_CACHE_ENV, str(cache))
        I._digits_splits.cache_clear()
        np.testing.assert_array_equal(I.make_image_source("digits", "test").labels, d.target[test])
        # No writable cache (its folder is a file): computed in the process, the same arrays.
        (tmp_path / "a_file").write_text("")
        monkeypatch.setenv(I.DIGITS_CACHE_ENV, str(tmp_path / "a_file" / "digits.npz"))
        I._digits_splits.cache_clear()
        np.testing.assert_array_equal(I.make_image_source("digits", "test").labels, d.target[test])
    finally:
        I._digits_splits.cache_clear()


# ----------------------------------------------------------------------------------------------------------------
# Folder.


def test_folder_flat_layout(tmp_path):
    imgs = {}
    for c, k in (("cat", 3), ("ant", 2)):
        for i in range(k):
            a = np.full((5, 7, 3), 10 * i + (100 if c == "cat" else 0), np.uint8)
            write_img(tmp_path / c / f"{i}.png", a)
            imgs[(c, i)] = a
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    src = I.make_image_source(f"folder:{tmp_path}", "train")
    assert src.class_names == ("ant", "cat") and src.num_classes == 2 and len(src) == 5
    assert src.image_shape is None and [src[i]["label"] for i in range(5)] == [0, 0, 1, 1, 1]
    assert np.array_equal(src[2]["image"], imgs[("cat", 0)]) and src[2]["image"].dtype == np.uint8
    # Slices are taken per class, so they stay stratified.
    head, tail = (I.make_image_source(f"folder:{tmp_path}", s) for s in ("train[:50%]", "train[50%:]"))
    assert head.labels.tolist() == [0, 1, 1] and tail.labels.tolist() == [0, 1]
    # Relative paths resolve against data_dir.
    assert len(I.make_image_source(f"folder:{tmp_path.name}", "train", data_dir=tmp_path.parent)) == 5
    fixed = I.make_image_source(f"folder:{tmp_path}", "train", fixed_size=True)
    assert fixed.image_shape == (5, 7, 3)
    with pytest.raises(ValueError, match="no split folder 'test'"):
        I.make_image_source(f"folder:{tmp_path}", "test")


def test_folder_split_layout_grayscale_and_bytes(tmp_path):
    for split, classes in (("train", ("one", "two", "zero")), ("test", ("two", "zero"))):
        for c in classes:
            write_img(tmp_path / split / c / "a.png", np.full((4, 4, 1), len(c), np.uint8))
    train = I.make_image_source(f"folder:{tmp_path}", "train")
    test = I.make_image_source(f"folder:{tmp_path}", "test")
    # Class ids are shared between splits: "one" exists only in train.
    assert train.class_names == test.class_names == ("one", "two", "zero")
    assert test.labels.tolist() == [1, 2]
    assert test[0]["image"].shape == (4, 4, 1) and test.channels == 1
    assert I.make_image_source(f"folder:{tmp_path}", "test", channels=3)[0]["image"].shape == (4, 4, 3)
    raw = I.make_image_source(f"folder:{tmp_path}", "test", decode=False)[0]
    assert isinstance(raw["image"], bytes)
    tr = T.make_transform(False, image_size=4, mean=MEAN, std=STD)
    assert np.array_equal(tr(raw, rng())["image"], tr(test[0], rng())["image"])
    with pytest.raises(ValueError, match=r"no split 'validation'; available: test, train"):
        I.make_image_source(f"folder:{tmp_path}", "validation")


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        I.make_image_source(f"folder:{tmp_path / 'nope'}", "train")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"empty has no classes"):
        I.make_image_source(f"folder:{tmp_path / 'empty'}", "train")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"f\.txt is not a directory"):
        I.make_image_source(f"folder:{tmp_path / 'f.txt'}", "train")
    mixed = tmp_path / "mixed"
    write_img(mixed / "a" / "0.png", np.zeros((4, 4, 3), np.uint8))
    write_img(mixed / "a" / "1.png", np.zeros((4, 6, 3), np.uint8))
    with pytest.raises(ValueError, match=r"1\.png: image size 6x4 differs from .*0\.png: 4x4"):
        I.make_image_source(f"folder:{mixed}", "train", fixed_size=True)
    with pytest.raises(ValueError, match=r"differs from the first"):
        I.materialize(I.make_image_source(f"folder:{mixed}", "train"))
    bad = tmp_path / "bad"
    write_img(bad / "a" / "0.png", np.zeros((4, 4, 3), np.uint8))
    (bad / "a" / "1.png").write_bytes(b"not a png")
    src = I.make_image_source(f"folder:{bad}", "train")
    with pytest.raises(ValueError, match=r"cannot decode image file .*1\.png"):
        src[1]


# ----------------------------------------------------------------------------------------------------------------
# npz.


def test_npz_layouts(tmp_path):
    xs = np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4)
    np.savez(tmp_path / "keras.npz", x_train=xs, y_train=np.array([0, 1, 2, 0, 1, 2]), x_test=xs[:2], y_test=[3, 0])
    train = I.make_image_source(f"npz:{tmp_path / 'keras.npz'}", "train")
    test = I.make_image_source(f"npz:{tmp_path / 'keras.npz'}", "test")
    assert len(train) == 6 and train.image_shape == (4, 4, 1) and np.array_equal(train[1]["image"][..., 0], xs[1])
    assert train.num_classes == test.num_classes == 4  # 1 + the largest label over all splits
    assert len(I.make_image_source(f"npz:{tmp_path / 'keras.npz'}", "train[-2:]")) == 2

    rgb = np.zeros((3, 2, 2, 3), np.int64)
    np.savez(tmp_path / "one.npz", images=rgb, labels=[0, 1, 1], num_classes=5)
    one = I.make_image_source(f"npz:{tmp_path / 'one.npz'}", "train")
    assert one.num_classes == 5 and one[0]["image"].dtype == np.uint8 and one.image_shape == (2, 2, 3)

    d = tmp_path / "dir"
    d.mkdir()
    np.savez(d / "train.npz", x=xs, y=np.arange(6) % 3)
    np.savez(d / "validation.npz", images=xs[:1], labels=[7])
    val = I.make_image_source(f"npz:{d}", "validation", num_classes=9)
    assert len(val) == 1 and val.num_classes == 9
    assert I.make_image_source(f"npz:{d}", "train").num_classes == 8


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "wrong.npz", pixels=np.zeros((2, 4, 4), np.uint8), targets=[0, 1])
    with pytest.raises(ValueError, match=r"wrong\.npz has none of the expected keys.*found: \['pixels', 'targets'\]"):
        I.make_image_source(f"npz:{tmp_path / 'wrong.npz'}", "train")
    np.savez(tmp_path / "k.npz", x_train=np.zeros((2, 4, 4), np.uint8), y_train=[0, 1])
    with pytest.raises(ValueError, match=r"k\.npz has no split 'test'; available: \['train'\]"):
        I.make_image_source(f"npz:{tmp_path / 'k.npz'}", "test")
    np.savez(tmp_path / "float.npz", images=np.zeros((2, 4, 4), np.float32), labels=[0, 1])
    with pytest.raises(ValueError, match=r"float\.npz.*expected uint8 images.*float32"):
        I.make_image_source(f"npz:{tmp_path / 'float.npz'}", "train")
    np.savez(tmp_path / "count.npz", images=np.zeros((3, 4, 4), np.uint8), labels=[0, 1])
    with pytest.raises(ValueError, match=r"count\.npz.*expected 3 labels"):
        I.make_image_source(f"npz:{tmp_path / 'count.npz'}", "train")
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.0, got 0\.\.1"):
        I.make_image_source(f"npz:{tmp_path / 'k.npz'}", "train", num_classes=1)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"cannot read npz file .*junk\.npz"):
        I.make_image_source(f"npz:{tmp_path / 'junk.npz'}", "train")
    (tmp_path / "nodir").mkdir()
    with pytest.raises(ValueError, match=r"nodir holds no \.npz files"):
        I.make_image_source(f"npz:{tmp_path / 'nodir'}", "train")


# ----------------------------------------------------------------------------------------------------------------
# idx.


def idx_bytes(a: np.ndarray) -> bytes:
    head = bytes([0, 0, 8, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    return head + a.astype(np.uint8).tobytes()


def write_mnist(d, gz_test=True):
    d.mkdir(exist_ok=True)
    xs = np.random.default_rng(0).integers(0, 256, (5, 6, 6), dtype=np.uint8)
    (d / "train-images-idx3-ubyte").write_bytes(idx_bytes(xs))
    (d / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([0, 1, 2, 3, 4])))
    w = gzip.compress if gz_test else (lambda b: b)
    suffix = ".gz" if gz_test else ""
    (d / f"t10k-images-idx3-ubyte{suffix}").write_bytes(w(idx_bytes(xs[:3])))
    (d / f"t10k-labels-idx1-ubyte{suffix}").write_bytes(w(idx_bytes(np.array([9, 0, 1]))))
    return xs


def test_idx(tmp_path):
    xs = write_mnist(tmp_path)
    train = I.make_image_source(f"idx:{tmp_path}", "train")
    test = I.make_image_source(f"idx:{tmp_path}", "test")
    assert len(train) == 5 and len(test) == 3 and train.image_shape == (6, 6, 1)
    assert np.array_equal(test[2]["image"][..., 0], xs[2]) and test[0]["label"] == 9
    assert train.num_classes == test.num_classes == 10
    assert len(I.make_image_source(f"idx:{tmp_path}", "train[1:3]")) == 2
    assert np.array_equal(I.read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 1), [9, 0, 1])


def test_idx_errors(tmp_path):
    write_mnist(tmp_path, gz_test=False)
    bad = bytearray((tmp_path / "t10k-images-idx3-ubyte").read_bytes())
    bad[2:4] = b"\x0d\x03"
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(bytes(bad))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte: bad magic number 0x00000d03, expected 0x00000803"):
        I.make_image_source(f"idx:{tmp_path}", "test")
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([0, 1])))
    with pytest.raises(ValueError, match=r"5 images but 2 labels"):
        I.make_image_source(f"idx:{tmp_path}", "train")
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([0, 1, 2, 3, 4]))[:-2])
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte: header says \(5,\)"):
        I.make_image_source(f"idx:{tmp_path}", "train")
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(ValueError, match=r"no files named train-labels-idx\?-ubyte"):
        I.make_image_source(f"idx:{tmp_path}", "train")
    with pytest.raises(ValueError, match=r"unknown split 'validation'"):
        I.make_image_source(f"idx:{tmp_path}", "validation")
    (tmp_path / "x-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match=r"cannot read idx file .*x-idx1-ubyte\.gz"):
        I.read_idx(tmp_path / "x-idx1-ubyte.gz", 1)


# ----------------------------------------------------------------------------------------------------------------
# TFDS: mock data for registered data sets, a tiny real array_record data set for data_dir, slicing and bytes.


def test_tfds_mock_mnist_and_cifar10():
    with tfds.testing.mock_data(num_examples=6):
        mnist = I.make_image_source("tfds:mnist", "train")
        cifar = I.make_image_source("tfds:cifar10", "test")
    assert len(mnist) == 6 and mnist.num_classes == 10 and mnist.image_shape == (28, 28, 1)
    ex = mnist[0]
    assert ex["image"].shape == (28, 28, 1) and ex["image"].dtype == np.uint8 and isinstance(ex["label"], int)
    assert cifar.image_shape == (32, 32, 3) and len(cifar.class_names) == 10 and len(cifar) == 6
    tr = T.make_transform(True, image_size=32, mean=MEAN, std=STD, augment="pad_crop")
    batch = grain.MapDataset.source(cifar).seed(0).shuffle().random_map(tr).batch(3)[1]
    assert batch["image"].shape == (3, 32, 32, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (3,) and np.all((batch["label"] >= 0) & (batch["label"] < 10))


class MzTestImages(tfds.core.GeneratorBasedBuilder):
    """Tiny real data set: PNG-encoded images of varying size under non-default feature keys."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {"img": tfds.features.Image(shape=(None, None, 3)), "cls": tfds.features.ClassLabel(num_classes=3)}
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(10), "test": self._generate_examples(4)}

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {"img": png_bytes(np.full((4 + i, 6, 3), 20 * i, np.uint8)), "cls": i % 3}


def test_tfds_prepared_data_dir_split_keys_and_bytes(tmp_path):
    MzTestImages(data_dir=tmp_path, file_format="array_record").download_and_prepare()
    kw = dict(data_dir=tmp_path, image_key="img", label_key="cls")
    src = I.make_image_source("tfds:mz_test_images", "train[:50%]", **kw)
    assert len(src) == 5 and src.num_classes == 3 and src.image_shape is None
    ex = src[0]
    value = int(ex["image"][0, 0, 0]) // 20
    assert ex["image"].shape == (4 + value, 6, 3) and ex["label"] == value % 3
    raw = I.make_image_source("tfds:mz_test_images", "train[:50%]", decode=False, **kw)[0]
    assert isinstance(raw["image"], bytes) and raw["image"].startswith(b"\x89PNG")
    tr = T.make_transform(False, image_size=4, mean=MEAN, std=STD, crop_pct=1.0)
    assert np.allclose(tr(raw, rng())["image"], tr(ex, rng())["image"])
    assert len(I.make_image_source("tfds:mz_test_images", "test", **kw)) == 4
    copy = pickle.loads(pickle.dumps(src))  # grain's worker processes receive the source pickled
    assert len(copy) == 5 and np.array_equal(copy[0]["image"], ex["image"])


def test_tfds_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown TFDS data set 'no_such_data_set_xyz'"):
        I.make_image_source("tfds:no_such_data_set_xyz", "train")
    with pytest.raises(FileNotFoundError, match=r"'mz_test_images' is not prepared.*tfds build mz_test_images"):
        I.make_image_source("tfds:mz_test_images", "train", data_dir=tmp_path, image_key="img", label_key="cls")
    MzTestImages(data_dir=tmp_path, file_format="array_record").download_and_prepare()
    with pytest.raises(ValueError, match=r"has no image feature 'image'; features: \['img', 'cls'\]"):
        I.make_image_source("tfds:mz_test_images", "train", data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"bad split 'validation'"):
        I.make_image_source("tfds:mz_test_images", "validation", data_dir=tmp_path, image_key="img", label_key="cls")
    with pytest.raises(ValueError, match=r"names no data set"):
        I.make_image_source("tfds:", "train")


# ----------------------------------------------------------------------------------------------------------------
# Spec parsing.


@pytest.mark.parametrize("spec", ["foo", "digits:x", "folder", "csv:/tmp/x", ""])
def test_unknown_spec(spec):
    with pytest.raises(ValueError, match="unknown dataset spec"):
        I.make_image_source(spec, "train")


def test_spec_argument_errors(tmp_path):
    with pytest.raises(TypeError, match=r"'digits' takes no argument\(s\) \['image_key'\]"):
        I.make_image_source("digits", "train", image_key="x")
    with pytest.raises(ValueError, match=r"digits: unknown split 'val'"):
        I.make_image_source("digits", "val")
    with pytest.raises(ValueError, match=r"bad split 'train\[a:b\]'"):
        I.make_image_source("digits", "train[a:b]")
    with pytest.raises(ValueError, match=r"percent boundaries"):
        I.make_image_source("digits", "train[:150%]")
    for kind in ("npz", "idx"):
        with pytest.raises(FileNotFoundError, match=rf"'{kind}:missing'.*missing"):
            I.make_image_source(f"{kind}:missing", "train", data_dir=tmp_path)


def test_sources_pickle(tmp_path):
    write_img(tmp_path / "a" / "0.png", np.zeros((3, 3, 3), np.uint8))
    for src in (I.make_image_source("digits", "test"), I.make_image_source(f"folder:{tmp_path}", "train")):
        copy = pickle.loads(pickle.dumps(src))
        assert np.array_equal(copy[0]["image"], src[0]["image"]) and len(copy) == len(src)


# ----------------------------------------------------------------------------------------------------------------
# Transforms.


def test_train_output_shapes_and_dtype():
    img = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    for augment in T.AUGMENTS:
        tr = T.make_transform(True, image_size=16, mean=MEAN, std=STD, augment=augment)
        out = tr({"image": img, "label": 3, "id": "x"}, rng())
        assert out["image"].shape == (16, 16, 3) and out["image"].dtype == np.float32
        assert out["label"] == 3 and out["id"] == "x"
        assert -1.0 <= out["image"].min() and out["image"].max() <= 1.0


def test_normalisation_by_hand():
    img = np.full((8, 8, 3), 51, np.uint8)  # 0.2 after / 255
    data_config = MappingProxyType(
        dict(mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 0.1), crop_pct=0.9, interpolation="bilinear")
    )
    tr = T.make_transform(False, image_size=8, **data_config)  # a model's data config passes straight through
    out = tr({"image": img}, rng())["image"]
    assert np.allclose(out, [(0.2 - 0.1) / 0.5, 0.0, (0.2 - 0.3) / 0.1], atol=1e-6)
    # One channel: the average of 3-value stats, (0.2 - 0.2) / (0.85 / 3).
    gray = tr({"image": np.full((8, 8, 1), 102, np.uint8)}, rng())["image"]
    assert gray.shape == (8, 8, 1) and np.allclose(gray, (0.4 - 0.2) / (0.85 / 3), atol=1e-6)


def test_eval_identity_at_image_size():
    src = I.make_image_source("digits", "test")
    tr = T.make_transform(False, image_size=8, mean=MEAN, std=STD, crop_pct=0.875)
    out = tr(src[5], rng())["image"]
    assert np.allclose(out, src[5]["image"] / 127.5 - 1.0, atol=1e-6)
    cifar = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = T.make_transform(False, image_size=32, mean=MEAN, std=STD)({"image": cifar}, rng())["image"]
    assert np.allclose(out, cifar / 127.5 - 1.0, atol=1e-6)


def test_eval_center_crop_geometry():
    h, w, size, crop_pct = 48, 64, 24, 0.75  # shorter side -> 32, so f = 2/3 and the crop spans 36 input pixels
    tr = T.make_transform(False, image_size=size, mean=(0.0,), std=(1.0,), crop_pct=crop_pct, interpolation="bilinear")
    out = tr({"image": gradient(h, w)}, rng())["image"] * 255.0
    assert T.center_crop_box(h, w, size, crop_pct) == (14.0, 6.0, 50.0, 42.0)
    centers = (np.arange(size) + 0.5) * 1.5 - 0.5  # output pixel centre -> input coordinate, from the box origin
    inner = slice(2, -2)
    assert np.allclose(out[inner, inner, 0], 2 * (14 + centers[None, inner]), atol=1.0)
    assert np.allclose(out[inner, inner, 1], 2 * (6 + centers[inner, None]), atol=1.0)
    assert np.allclose(out[..., 2], 100, atol=0.5)
    # The same geometry from JPEG-free PNG bytes.
    raw = tr({"image": png_bytes(gradient(h, w))}, rng())["image"] * 255.0
    assert np.allclose(raw, out, atol=1e-3)


def test_flip_and_determinism():
    img = gradient(12, 12)
    tr = T.make_transform(True, image_size=12, mean=MEAN, std=STD, augment="none")
    plain = T.make_transform(False, image_size=12, mean=MEAN, std=STD)({"image": img}, rng())["image"]
    seen = set()
    for s in range(16):
        out = tr({"image": img}, rng(s))["image"]
        flipped = np.array_equal(out, plain[:, ::-1])
        assert flipped or np.array_equal(out, plain)
        seen.add(flipped)
    assert seen == {True, False}
    full = T.make_transform(True, image_size=16, mean=MEAN, std=STD, randaugment=(2, 9))
    big = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    a, b, c = (full({"image": big}, rng(s))["image"] for s in (7, 7, 8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_pad_crop_is_a_shifted_window():
    img = np.random.default_rng(0).integers(1, 256, (8, 8, 1), dtype=np.uint8)
    tr = T.make_transform(True, image_size=8, mean=(0.0,), std=(1.0,), augment="pad_crop", flip=False, pad=2)
    padded = np.pad(img, ((2, 2), (2, 2), (0, 0)))
    windows = {padded[y : y + 8, x : x + 8].tobytes() for y in range(5) for x in range(5)}
    outs = [np.round(tr({"image": img}, rng(s))["image"] * 255).astype(np.uint8) for s in range(20)]
    assert all(o.tobytes() in windows for o in outs) and len({o.tobytes() for o in outs}) > 1


@pytest.mark.parametrize("shape", [(224, 224), (8, 8), (10, 300), (300, 10), (1, 1), (31, 17)])
def test_rrc_box_in_bounds(shape):
    h, w = shape
    for s in range(200):
        top, left, ch, cw = T.sample_rrc_box(rng(s), h, w)
        assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w and ch > 0 and cw > 0
    # No attempt fits a 10 x 300 strip at full scale: the fallback centre crop clamps the aspect ratio.
    top, left, ch, cw = T.sample_rrc_box(rng(), 10, 300, scale=(1.0, 1.0))
    assert (top, ch, cw) == (0, 10, 13) and left == (300 - 13) // 2


def _ramp(size: int, channels: int) -> tuple[np.ndarray, list]:
    """Channel c = a x + b y + k (x, y pixel indices): bilinear resampling reproduces it exactly inside."""
    coeffs = [(4, 5, 10), (9, 2, 20), (-3, -4, 200)][:channels]
    y, x = np.mgrid[0:size, 0:size]
    return np.stack([a * x + b * y + k for a, b, k in coeffs], -1).astype(np.uint8), coeffs


def _geometric_expected(name, sign, size, coeffs):
    """The op as a map from output pixel centres to input points (PIL's frame: pixel i spans [i, i + 1)), applied
    to the ramp; plus where the input point is inside the image and where it is clearly outside (fill 128)."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    t, c = np.deg2rad(30.0 * sign), size / 2
    source = {
        "shear_x": (x + sign * 0.3 * y, y),
        "shear_y": (x, y + sign * 0.3 * x),
        "translate_x": (x + sign * 0.45 * size, y),
        "translate_y": (x, y + sign * 0.45 * size),
        "rotate": (np.cos(t) * (x - c) - np.sin(t) * (y - c) + c, np.sin(t) * (x - c) + np.cos(t) * (y - c) + c),
    }[name]
    xi, yi = source[0] - 0.5, source[1] - 0.5
    values = np.stack([a * xi + b * yi + k for a, b, k in coeffs], -1)
    inside = (xi >= 0) & (xi <= size - 1) & (yi >= 0) & (yi <= size - 1)
    outside = (xi < -1) | (xi > size) | (yi < -1) | (yi > size)
    return values, inside, outside


def _pixel_expected(name, a, factor):
    """The colour ops from their definitions (PIL's ImageEnhance: blend a degenerate image with the original by
    `factor`; ITU-R 601 luma for grayscale)."""
    a = a.astype(np.float64)
    luma = a[..., :1] if a.shape[-1] == 1 else (a @ np.array([0.299, 0.587, 0.114]))[..., None]
    blend = lambda degenerate: np.clip(degenerate + factor * (a - degenerate), 0, 255)
    if name == "identity":
        return a
    if name == "autocontrast":  # each channel stretched to [0, 255]
        lo, hi = a.min((0, 1)), a.max((0, 1))
        return (a - lo) * 255 / (hi - lo)
    if name == "equalize":  # each channel's value -> 255 * (fraction of pixels below it), the top bin excluded
        out = np.empty_like(a)
        for ch in range(a.shape[-1]):
            v = a[..., ch].astype(int)
            hist = np.bincount(v.ravel(), minlength=256)
            below = np.cumsum(hist) - hist
            out[..., ch] = below[v] * 255 / (v.size - hist[v.max()])
        return out
    if name == "solarize":  # magnitude 10: threshold 0, every pixel inverted
        return 255 - a
    if name == "posterize":  # magnitude 10: 4 bits kept
        return (a.astype(np.uint8) & 0xF0).astype(np.float64)
    if name == "color":
        return blend(luma)
    if name == "contrast":
        return blend(np.full_like(a, luma.mean()))
    if name == "brightness":
        return blend(np.zeros_like(a))
    if name == "sharpness":  # blend with the 3x3 SMOOTH filter [[1,1,1],[1,5,1],[1,1,1]] / 13; the border is kept
        smooth = a.copy()
        h, w = a.shape[:2]
        window = [a[1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        smooth[1:-1, 1:-1] = (sum(window) + 4 * a[1:-1, 1:-1]) / 13
        return blend(smooth)
    raise AssertionError(name)


@pytest.mark.parametrize("channels", [1, 3])
def test_randaugment_every_op(channels):
    """Each op at magnitude 10 against its definition computed here; signed ops match exactly one of the two
    signs, and both signs occur across seeds."""
    geometric = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")
    ramp, coeffs = _ramp(20, channels)
    noise = (np.random.default_rng(6).uniform(size=(64, 64, 3)) ** 2 * 200 + 30).astype(np.uint8)[..., :channels]
    ops = [name for name in T.RANDAUGMENT_OPS if channels == 3 or name != "color"]
    colour = ("identity", "autocontrast", "equalize", "solarize", "posterize", "color", "contrast", "brightness")
    assert set(T.RANDAUGMENT_OPS) == {*geometric, *colour, "sharpness"}  # a new op needs its check here
    for name in ops:
        image = ramp if name in geometric else noise
        pil = T.array_to_pil(image)
        signs_seen = set()
        for seed in range(4):
            out_pil = T.randaugment(pil, rng(seed), num_ops=1, magnitude=10, ops=[name])
            assert out_pil.mode == pil.mode and out_pil.size == pil.size, name
            out = T.pil_to_array(out_pil).astype(np.float64).reshape(image.shape)
            matches = []
            for sign in (1.0, -1.0):
                if name in geometric:
                    values, inside, outside = _geometric_expected(name, sign, 20, coeffs)
                    assert inside.sum() > 150 and outside.sum() > 20
                    ok = np.abs(out - values)[inside].max() <= 1.01 and np.all(out[outside] == 128)
                else:
                    ok = np.abs(out - _pixel_expected(name, image, 1.0 + sign * 0.9)).max() <= 1.5
                matches.append(ok)
            signed = name in geometric or name in ("color", "contrast", "brightness", "sharpness")
            assert sum(matches) == (1 if signed else 2), (name, seed, matches)
            signs_seen.add(matches.index(True))
        assert len(signs_seen) == (2 if signed else 1), name
    solarized = T.randaugment(T.array_to_pil(noise), rng(), 1, 5, ops=["solarize"])  # threshold 128
    expected = np.where(noise >= 128, 255 - noise, noise)
    assert np.array_equal(T.pil_to_array(solarized).reshape(noise.shape), expected)
    tr = T.make_transform(True, image_size=16, mean=MEAN, std=STD, randaugment=(3, 10))
    outs = [tr({"image": gradient(20, 20)[..., :channels]}, rng(s))["image"] for s in range(12)]
    assert all(o.shape == (16, 16, channels) and np.isfinite(o).all() for o in outs)


def test_jpeg_bytes_draft_and_channels():
    big = np.asarray(Image.fromarray(gradient(128, 128)).resize((512, 512), Image.Resampling.BILINEAR))
    jpeg = png_bytes(big, fmt="JPEG", quality=95)
    kw = dict(image_size=64, mean=(0.0,), std=(1.0,), crop_pct=1.0)
    fast = T.make_transform(False, **kw)({"image": jpeg}, rng())["image"]
    slow = T.make_transform(False, draft=False, **kw)({"image": jpeg}, rng())["image"]
    assert fast.shape == (64, 64, 3) and np.abs(fast - slow).mean() * 255 < 2.0
    img = T.open_image(jpeg)
    assert T._draft(img, (64, 64)) == 0.125 and img.size == (64, 64)
    out = T.make_transform(True, image_size=32, mean=MEAN, std=STD, rrc_scale=(0.05, 0.1))({"image": jpeg}, rng())
    assert out["image"].shape == (32, 32, 3)
    gray = T.make_transform(False, channels=1, **kw)({"image": jpeg}, rng())["image"]
    assert gray.shape == (64, 64, 1)
    to_rgb = T.make_transform(False, image_size=8, mean=MEAN, std=STD, channels=3)
    rgb = to_rgb({"image": np.ones((8, 8, 1), np.uint8)}, rng())
    assert rgb["image"].shape == (8, 8, 3)


def test_transform_errors():
    ok = dict(image_size=8, mean=MEAN, std=STD)
    for bad, match in (
        (dict(augment="mixup"), "augment must be one of"),
        (dict(interpolation="cubic"), "interpolation must be one of"),
        (dict(crop_pct=0.0), "crop_pct must be in"),
        (dict(mean=(0.5, 0.5)), "mean must have 1 or 3 values"),
        (dict(std=(0.5, 0.0, 0.5)), "std > 0"),
        (dict(rrc_scale=(0.5, 0.1)), "rrc_scale"),
        (dict(randaugment=(2,)), "randaugment"),
        (dict(channels=2), "channels must be"),
        (dict(image_size=0), "image_size must be"),
    ):
        with pytest.raises(ValueError, match=match):
            T.make_transform(True, **{**ok, **bad})
    tr = T.make_transform(True, **ok)
    with pytest.raises(ValueError, match=r"must be uint8 \[H, W, C\] or encoded bytes, got ndarray float32"):
        tr({"image": np.zeros((8, 8, 3), np.float32)}, rng())
    with pytest.raises(ValueError, match=r"cannot decode example\['image'\] bytes"):
        tr({"image": b"garbage"}, rng())
    with pytest.raises(ValueError, match=r"cannot decode example\['image'\] bytes"):
        tr({"image": png_bytes(gradient(16, 16), fmt="JPEG")[:200]}, rng())
    with pytest.raises(ValueError, match="expected a uint8 image"):
        tr({"image": np.zeros((8, 8, 4), np.uint8)}, rng())
    assert pickle.loads(pickle.dumps(tr)) == tr


def test_benchmark_smoke(tmp_path):
    from benchmarks import data_pipeline

    out = tmp_path / "bench.json"
    argv = ["--workers", "0", "--batches", "1", "--batch-small", "8", "--batch-large", "2", "--num-jpegs", "4"]
    argv += ["--num-small", "8", "--latency-n", "2"]
    rows = data_pipeline.main([*argv, "--json", str(out)])
    assert len(rows) == 7 and all(r["images_per_s"] > 0 for r in rows)
    assert len(json.loads(out.read_text())["rows"]) == 7
