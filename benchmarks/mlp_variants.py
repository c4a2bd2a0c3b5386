"""Ways to compute the MLP of a Mixer block on XLA:CPU, each a whole training step, timed in alternation.

    python -m benchmarks.mlp_variants                                   # Mixer-S/16, batch 16, exact GELU
    python -m benchmarks.mlp_variants --model mixer_b16_224 --rounds 5 --json runs/mlp_variants.json

Variants (`--variants`, the first is the baseline of the ratios):
- `erf`: the library as it is: exact GELU as x * 0.5 * (1 + erf(x / sqrt 2)), PyTorch's formula;
- `erfc`: exact GELU as `jax.nn.gelu(approximate=False)` computes it, 0.5 x erfc(-x / sqrt 2) (the library's
  form before);
- `wgrad`: `erf`, with every MLP `Dense` computing its kernel gradient as (dY^T X)^T through a `jax.custom_vjp`
  rule instead of autodiff's X^T dY, so that XLA:CPU reads the activation X as stored rather than writing a
  transposed copy of it; a custom VJP has no forward mode (`jax.jvp` through the model fails), which is why the
  library does not use it.
Also printed, before the steps: each GELU form alone (forward + backward on the channel MLP's hidden activations,
`--gelu-shape`) with its largest error against float64 math, and the matrix products of the model's MLPs alone
(`--gemm`, `M,K,N` triples) in GFLOP/s, XLA's against PyTorch's (`torch.matmul`, as many threads as cores) in
alternation: the rate every training step's largest share runs at.

Each variant's step is built from the same registry model (`benchmarks.step`) with the module functions swapped
while it is traced; after compilation and a warm-up step, `--rounds` rounds of `--steps` steps per variant
alternate and the medians are compared. Printed per variant: ms per step, the ratio to the baseline, the loss of
the last step (equal across variants up to float rounding) and the number of physical transposes or copies of
at least a million elements in the compiled step. Numbers stay the same: `tests/test_layers.py` checks the GELU.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import re
import statistics
import time
import types
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import zoo.layers.mlp as mlp
from benchmarks import step as bench_step

VARIANTS = ("erf", "erfc", "wgrad", "wgrad_jvp")


@jax.custom_jvp
def gelu_erfc(x: jax.Array) -> jax.Array:
    """`jax.nn.gelu(x, approximate=False)`'s form, with the library's JVP rule."""
    return 0.5 * x * jax.lax.erfc(-x * jnp.asarray(mlp._SQRT_HALF, x.dtype))


@gelu_erfc.defjvp
def _gelu_erfc_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    cdf = mlp.materialize(0.5 * jax.lax.erfc(-x * jnp.asarray(mlp._SQRT_HALF, x.dtype)))
    return x * cdf, (cdf + x * jnp.exp(-0.5 * x * x) * jnp.asarray(mlp._INV_SQRT_2PI, x.dtype)) * t


@jax.custom_vjp
def _matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jnp.matmul(x, kernel)


def _matmul_fwd(x, kernel):
    return jnp.matmul(x, kernel), (x, kernel)


def _matmul_bwd(residuals, grad):
    x, kernel = residuals
    rows = lambda a: a.reshape(-1, a.shape[-1])
    grad_kernel_t = jax.lax.dot_general(rows(grad), rows(x), (((0,), (0,)), ((), ())))  # [out, in]
    return jnp.matmul(grad, kernel.T), grad_kernel_t.T


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


@jax.custom_jvp
def _matmul_jvp(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jnp.matmul(x, kernel)


@_matmul_jvp.defjvp
def _matmul_jvp_rule(primals, tangents):
    (x, kernel), (dx, dkernel) = primals, tangents
    weight_term = jnp.moveaxis(jax.lax.dot_general(dkernel, x, (((0,), (x.ndim - 1,)), ((), ()))), 0, -1)
    return jnp.matmul(x, kernel), jnp.matmul(dx, kernel) + weight_term


def wgrad_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, *, rule=_matmul):
    """`flax.linen.Dense`'s product with the `wgrad` kernel gradient; any other product is `lax.dot_general`."""
    if dimension_numbers == (((lhs.ndim - 1,), (0,)), ((), ())) and preferred_element_type is None:
        return rule(lhs, rhs)
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type)


@contextlib.contextmanager
def variant_modules(variant: str):
    """Swaps `zoo.layers.mlp`'s GELU or Dense for the variant while the step is traced."""
    saved = mlp.gelu_exact, mlp.nn
    if variant == "erfc":
        mlp.gelu_exact = gelu_erfc
    elif variant in ("wgrad", "wgrad_jvp"):
        rule = _matmul if variant == "wgrad" else _matmul_jvp
        dense = functools.partial(nn.Dense, dot_general=functools.partial(wgrad_dot_general, rule=rule))
        names = {k: getattr(nn, k) for k in dir(nn) if not k.startswith("_")}
        mlp.nn = types.SimpleNamespace(**{**names, "Dense": dense})
    elif variant != "erf":
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    try:
        yield
    finally:
        mlp.gelu_exact, mlp.nn = saved


def big_copies(compiled: Any, min_elements: int = 1 << 20) -> int:
    """Physical transposes and copies of at least `min_elements` elements in a compiled module's text."""
    count = 0
    for match in re.finditer(r"= \w+\[([\d,]+)\]\{[\d,]+\} (?:copy|transpose)\(", compiled.as_text()):
        count += math.prod(int(d) for d in match.group(1).split(",")) >= min_elements
    return count


def compare_steps(
    name: str, batch: int, variants: Sequence[str], *, rounds: int, steps: int, overrides: dict[str, Any]
) -> list[dict[str, Any]]:
    runners = {}
    for variant in variants:
        with variant_modules(variant):
            runners[variant] = bench_step.Runner(bench_step.build(name, batch, overrides), "train")
    for runner in runners.values():
        runner.run(1)
    times = {v: [] for v in variants}
    for _ in range(rounds):
        for variant, runner in runners.items():
            t = time.perf_counter()
            runner.run(steps)
            times[variant].append((time.perf_counter() - t) / steps)
    base = statistics.median(times[variants[0]])
    rows = []
    for variant, runner in runners.items():
        runner.check_finite()
        median = statistics.median(times[variant])
        rows.append(
            {
                "model": name,
                "batch": batch,
                "variant": variant,
                "step_ms": 1e3 * median,
                "step_ms_all": [1e3 * t for t in times[variant]],
                "speedup_vs_first": base / median,
                "loss": float(runner.last),
                "big_copies": big_copies(runner.compiled),
            }
        )
        runner.close()
    return rows


def compare_gelu(shape: Sequence[int], repeats: int = 20) -> list[dict[str, Any]]:
    """Forward + backward of each GELU form alone, and its largest error against float64 math on [-12, 12]."""
    x = jax.random.normal(jax.random.key(0), tuple(shape), jnp.float32) * 3
    grid = np.linspace(-12, 12, 24001)
    exact64 = grid * 0.5 * np.array([math.erfc(-v * mlp._SQRT_HALF) for v in grid])
    forms = {"erf": mlp.gelu_exact, "erfc": gelu_erfc, "tanh": mlp.gelu_tanh}
    fns = {k: jax.jit(jax.grad(lambda a, f=f: jnp.sum(f(a) * a))) for k, f in forms.items()}
    for f in fns.values():
        jax.block_until_ready(f(x))
    times = {k: [] for k in forms}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(f(x))
            times[k].append(time.perf_counter() - t)
    rows = []
    for k, f in forms.items():
        error = float(np.max(np.abs(np.asarray(f(jnp.asarray(grid, jnp.float32)), np.float64) - exact64)))
        rows.append({"gelu": k, "shape": list(shape), "ms": 1e3 * statistics.median(times[k]), "max_abs_error": error})
    return rows


def compare_gemm(shapes: Sequence[Sequence[int]], repeats: int = 5) -> list[dict[str, Any]]:
    """GFLOP/s of one float32 [M, K] @ [K, N] product: XLA (jitted `jnp.matmul`) and PyTorch, in alternation."""
    import os

    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for m, k, n in shapes:
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
        xla = functools.partial(jax.jit(jnp.matmul), jnp.asarray(a), jnp.asarray(b))
        sides = {
            "xla": lambda f=xla: f().block_until_ready(),
            "torch": functools.partial(torch.matmul, torch.from_numpy(a), torch.from_numpy(b)),
        }
        times = {side: [] for side in sides}
        for f in sides.values():
            f()
        for _ in range(repeats):
            for side, f in sides.items():
                t = time.perf_counter()
                f()
                times[side].append(time.perf_counter() - t)
        rate = {side: 2 * m * k * n / statistics.median(ts) / 1e9 for side, ts in times.items()}
        rows.append({"gemm": [m, k, n], "xla_gflop_per_s": rate["xla"], "torch_gflop_per_s": rate["torch"]})
    return rows


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mixer_s16_224", help="a registered model whose MLPs are `MlpBlock`s")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (medians are compared)")
    p.add_argument("--steps", type=int, default=2, help="steps per variant per round")
    p.add_argument("--gelu-shape", default="3136,2048", help="the GELU-alone case; empty to skip")
    p.add_argument(
        "--gemm",
        default="3136,512,2048;3136,2048,512;4096,4096,4096",
        help="M,K,N products, ';'-separated; empty to skip",
    )
    p.add_argument("--json", default=None, help="also write {machine, rows} to this file")
    args = p.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        p.error(f"--variants: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(VARIANTS)}")
    jax.config.update("jax_enable_compilation_cache", False)
    rows = []
    if args.gelu_shape:
        shape = [int(d) for d in args.gelu_shape.split(",")]
        gelu_rows = compare_gelu(shape)
        for r in gelu_rows:
            print(f"GELU {r['gelu']:5s} {r['shape']} forward + backward {r['ms']:7.2f} ms, "
                  f"max |error| vs float64 {r['max_abs_error']:.1e}")  # fmt: skip
        rows += gelu_rows
    if args.gemm:
        gemm_rows = compare_gemm([[int(d) for d in t.split(",")] for t in args.gemm.split(";") if t.strip()])
        for r in gemm_rows:
            print(f"GEMM {r['gemm']} XLA {r['xla_gflop_per_s']:6.0f} GFLOP/s, PyTorch {r['torch_gflop_per_s']:6.0f}")
        rows += gemm_rows
    step_rows = compare_steps(
        args.model, args.batch, variants, rounds=args.rounds, steps=args.steps, overrides={"approximate_gelu": False}
    )
    for r in step_rows:
        print(
            f"{r['model']} batch {r['batch']} {r['variant']:6s} {r['step_ms']:8.1f} ms/step  "
            f"x{r['speedup_vs_first']:.3f} vs {variants[0]}  loss {r['loss']:.6f}  "
            f"big transposes/copies {r['big_copies']}"
        )
    rows += step_rows
    if args.json:
        bench_step.write_json(args.json, rows, command=bench_step.command_line("benchmarks.mlp_variants", argv))
    return rows


if __name__ == "__main__":
    main()
