"""Depthwise convolutions on XLA:CPU: autodiff of the shifted-slice sum against the written-out derivative that
`zoo.layers.depthwise_conv2d` uses for stride-1 kernels of 5x5 and up, forward + backward, side by side.

    python -m benchmarks.depthwise                       # FFNet's and MS-MLP's shapes, 7x7, 5x5 and 3x3
    python -m benchmarks.depthwise --shapes 16x16x16x320:7 --repeats 9

Each case is `batch x height x width x channels:kernel`. Timed: `jax.grad` of `sum(conv(x, K) * w)` with
respect to x and K (the forward included), the median of `--repeats` calls after one warm-up call, both variants
alternating. Both gradients are checked equal (relative 1e-4) before timing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from zoo.layers.conv import _depthwise_same, _shifted_sum

SHAPES = (
    "16x64x64x80:7",  # FFNet-1 stage 1 token mixer, batch 16
    "16x32x32x160:7",
    "16x16x16x320:7",
    "8x56x56x20:7",  # MS-MLP-T stage 1, one channel group
    "16x64x64x80:5",
    "16x64x64x80:3",
)


def parse_case(text: str) -> tuple[tuple[int, int, int, int], int]:
    try:
        shape, k = text.split(":")
        dims = tuple(int(v) for v in shape.lower().split("x"))
        if len(dims) != 4 or min(dims) < 1 or int(k) < 1 or int(k) % 2 == 0:
            raise ValueError
        return dims, int(k)
    except ValueError:
        expected = "BATCHxHEIGHTxWIDTHxCHANNELS:K with an odd K, e.g. 16x16x16x320:7"
        raise ValueError(f"case {text!r}: expected {expected}") from None


def compare(shape: tuple[int, int, int, int], k: int, repeats: int = 5) -> dict:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((k, k, 1, shape[-1])), jnp.float32)
    weights = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    variants = {
        "autodiff": lambda a, b: _shifted_sum(a, b, 1, k // 2),
        "written_out": _depthwise_same,
    }
    grads = {
        name: jax.jit(jax.grad(lambda a, b, w, f=f: jnp.sum(f(a, b) * w), argnums=(0, 1)))
        for name, f in variants.items()
    }
    results = {name: g(x, kernel, weights) for name, g in grads.items()}
    for a, b in zip(results["autodiff"], results["written_out"]):
        if float(jnp.max(jnp.abs(a - b))) > 1e-4 * float(jnp.max(jnp.abs(a))):
            raise AssertionError(f"{shape}:{k}: the two derivatives differ")
    times = {name: [] for name in grads}
    for _ in range(repeats):
        for name, g in grads.items():
            start = time.perf_counter()
            jax.block_until_ready(g(x, kernel, weights))
            times[name].append(1e3 * (time.perf_counter() - start))
    ms = {name: statistics.median(t) for name, t in times.items()}
    return {"shape": list(shape), "kernel": k, **{f"{n}_ms": v for n, v in ms.items()},
            "speedup": ms["autodiff"] / ms["written_out"]}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated BxHxWxC:K cases")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    try:
        cases = [parse_case(c) for c in args.shapes.split(",") if c.strip()]
    except ValueError as e:
        p.error(str(e))
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    print(f"{'shape':>18s} {'k':>2s} {'autodiff ms':>12s} {'written-out ms':>15s} {'speedup':>8s}")
    rows = []
    for shape, k in cases:
        row = compare(shape, k, args.repeats)
        rows.append(row)
        print(f"{'x'.join(map(str, shape)):>18s} {k:2d} {row['autodiff_ms']:12.1f} {row['written_out_ms']:15.1f} "
              f"{row['speedup']:8.2f}", flush=True)  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
