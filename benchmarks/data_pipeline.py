"""Image input pipeline throughput: decoding + augmentation through grain, in images/s.

    python -m benchmarks.data_pipeline                      # all configurations, 0 and 2 worker processes
    python -m benchmarks.data_pipeline --workers 0 --json runs/data_pipeline.json

Configurations: 32x32 uint8 arrays with pad-crop + flip (CIFAR style), and 224x224 from JPEG files (random crops
of scikit-learn's two sample photos, 256..427 x 256..640 pixels, quality 90, ImageNet-like sizes) with decoding
plus random resized crop + flip, with and without JPEG draft decoding, with RandAugment(2, 9), the evaluation
resize + centre crop, and random resized crop from already decoded arrays. Each row times `--batches` batches
after the first one; "start s" is the time to the first batch (worker start-up included).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import grain
import numpy as np
from PIL import Image

from train.data.images import ArraySource, FolderSource
from train.data.transforms import make_transform

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)  # china, flower: uint8 [427, 640, 3]


def jpeg_folder(root: Path, n: int, seed: int = 0) -> FolderSource:
    """n JPEG files (random crops of the sample photos) in root/<class>/, as a source of encoded bytes."""
    rng = np.random.default_rng(seed)
    photos, paths = _photos(), []
    for i in range(n):
        p = photos[i % 2]
        h, w = rng.integers(256, p.shape[0] + 1), rng.integers(256, p.shape[1] + 1)
        y, x = rng.integers(0, p.shape[0] - h + 1), rng.integers(0, p.shape[1] - w + 1)
        path = root / str(i % 2) / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(p[y : y + h, x : x + w]).save(path, quality=90)
        paths.append(path)
    return FolderSource(paths, [i % 2 for i in range(n)], ["china", "flower"], decode=False, name="jpeg")


def small_arrays(n: int, size: int = 32, seed: int = 0) -> ArraySource:
    """n uint8 [size, size, 3] images: downscaled random crops of the sample photos."""
    rng = np.random.default_rng(seed)
    tiles = []
    for p in _photos():
        for _ in range(32):
            y, x = rng.integers(0, p.shape[0] - 96), rng.integers(0, p.shape[1] - 96)
            tiles.append(np.asarray(Image.fromarray(p[y : y + 96, x : x + 96]).resize((size, size))))
    images = np.stack([tiles[i % len(tiles)] for i in range(n)])
    return ArraySource(images, np.arange(n) % 10, 10, name=f"{size}x{size}")


class DecodedSource:
    """The JPEG source decoded once, as ragged uint8 [H, W, 3] arrays (what `tfds.data_source` hands out)."""

    def __init__(self, src: FolderSource):
        self.images = [np.asarray(Image.open(p).convert("RGB")) for p in src.paths]
        self.labels = src.labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": int(self.labels[i])}


def measure(src, transform, *, batch: int, batches: int, threads: int, workers: int) -> dict:
    """Images/s of shuffle -> random_map(transform) -> batch through grain, excluding the first batch."""
    ds = grain.MapDataset.source(src).seed(0).shuffle().repeat().random_map(transform).batch(batch)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * batch))
    if workers:
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    t0 = time.perf_counter()
    it = iter(it)
    first = next(it)
    t1 = time.perf_counter()
    for _ in range(batches):
        b = next(it)
    t2 = time.perf_counter()
    assert b["image"].shape == first["image"].shape and b["image"].dtype == np.float32
    if hasattr(it, "close"):
        it.close()
    return {"images_per_s": batches * batch / (t2 - t1), "start_s": t1 - t0}


def per_image_ms(src, transform, n: int) -> float:
    """Single-thread latency of src[i] + transform, without grain."""
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for i in range(n):
        transform(src[i % len(src)], rng)
    return (time.perf_counter() - t) / n * 1e3


def configurations(tmp: Path, num_jpegs: int, num_small: int):
    small = small_arrays(num_small)
    jpegs = jpeg_folder(tmp, num_jpegs)
    train224 = make_transform(True, image_size=224, **IMAGENET)
    return [
        ("32x32 pad_crop+flip", small, make_transform(True, image_size=32, augment="pad_crop", **IMAGENET)),
        ("32x32 eval (normalise only)", small, make_transform(False, image_size=32, **IMAGENET)),
        ("224 jpeg rrc+flip", jpegs, train224),
        ("224 jpeg rrc+flip, no draft", jpegs, make_transform(True, image_size=224, draft=False, **IMAGENET)),
        ("224 jpeg rrc+flip+randaug(2,9)", jpegs, make_transform(True, image_size=224, randaugment=(2, 9), **IMAGENET)),
        ("224 jpeg eval resize+crop", jpegs, make_transform(False, image_size=224, **IMAGENET)),
        ("224 decoded rrc+flip", DecodedSource(jpegs), train224),
    ]


def run(
    *,
    threads: int,
    workers: list[int],
    num_jpegs: int,
    num_small: int,
    batches: int,
    latency_n: int,
    batch_sizes: tuple[int, int] = (128, 32),
    only: str | None = None,
) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, src, transform in configurations(Path(tmp), num_jpegs, num_small):
            if only and only not in name:
                continue
            batch = batch_sizes[0] if name.startswith("32") else batch_sizes[1]
            ms = per_image_ms(src, transform, latency_n)
            for w in workers:
                r = measure(src, transform, batch=batch, batches=batches, threads=threads, workers=w)
                rows.append({"config": name, "threads": threads, "workers": w, "batch": batch, "ms_per_image": ms, **r})
                print(f"{name:34s} {threads:7d} {w:7d} {r['images_per_s']:10.0f} {ms:8.2f} {r['start_s']:8.2f}")
    return rows


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="grain ReadOptions.num_threads (per process)")
    p.add_argument("--workers", default="0,2", help="comma-separated mp_prefetch worker counts (0: in-process)")
    p.add_argument("--batches", type=int, default=20, help="timed batches per row")
    p.add_argument("--batch-small", type=int, default=128, help="batch size of the 32x32 rows")
    p.add_argument("--batch-large", type=int, default=32, help="batch size of the 224x224 rows")
    p.add_argument("--num-jpegs", type=int, default=256)
    p.add_argument("--num-small", type=int, default=4096)
    p.add_argument("--latency-n", type=int, default=100, help="images for the single-thread ms/image column")
    p.add_argument("--only", default=None, help="run the configurations whose name contains this")
    p.add_argument("--json", default=None, help="also write the rows (and machine info) to this JSON file")
    args = p.parse_args(argv)
    from absl import flags

    if not flags.FLAGS.is_parsed():  # grain's worker processes read absl flags
        flags.FLAGS(sys.argv[:1])
    print(f"{'configuration':34s} {'threads':>7s} {'workers':>7s} {'images/s':>10s} {'ms/img':>8s} {'start s':>8s}")
    rows = run(
        threads=args.threads,
        workers=[int(w) for w in args.workers.split(",")],
        num_jpegs=args.num_jpegs,
        num_small=args.num_small,
        batches=args.batches,
        batch_sizes=(args.batch_small, args.batch_large),
        latency_n=args.latency_n,
        only=args.only,
    )
    if args.json:
        from benchmarks.step import command_line, machine_info

        info = {
            **machine_info(command_line("benchmarks.data_pipeline", argv)),
            "pillow": Image.__version__,
            "grain": getattr(grain, "__version__", "?"),
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
