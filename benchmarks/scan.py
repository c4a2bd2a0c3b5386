"""Time and memory of the selective scan (`zoo.layers.scan`) against the sequence length, per method, forward and
forward + backward, with a plain PyTorch `selective_scan_ref` (written from state-spaces/mamba's reference
recurrence, `mamba_ssm/ops/selective_scan_interface.py`) side by side.

    python -m benchmarks.scan                                    # lengths 256 .. 16384, batch 2, width 64, n 16
    python -m benchmarks.scan --lengths 256,1024 --batch 4 --width 128 --json runs/scan.json
    python -m benchmarks.scan --methods chunked,parallel --no-torch
    python -m benchmarks.scan --methods sequential,autodiff --lengths 256,1024 --no-torch --repeats 5
    python -m benchmarks.scan --torch-max-length 4096 --json docs/benchmarks_data/scan.json --plot docs/scan_scaling.png
    python -m benchmarks.scan --methods sequential@512,sequential@1024,sequential@2048,sequential@4096 --no-torch \
        --batch 8064 --width 32 --lengths 7                      # the sequential scan's block size, side by side

- **ms**: the median of `--repeats` timed calls of the jitted function after one warm-up call; forward is
  `selective_scan(...)`, backward is `jax.grad` of `sum(y * w)` for a fixed random `w` with respect to u, delta,
  A, B, C and D (the forward included). Method `autodiff` is the plain `lax.scan` recurrence differentiated by
  JAX (`autodiff_scan`), the baseline of "sequential"'s written-out derivative. `sequential@E` is "sequential" with
  blocks of E state numbers per step instead of the library's 2,048 (`zoo.layers.scan._STEP_ELEMENTS`; at n = 16,
  E / 16 columns of batch rows times channels): how that default was chosen.
- **XLA MB**: XLA's static estimate of the compiled function's temporaries (`memory_analysis().temp_size_in_bytes`),
  deterministic and the same on every platform; the arguments (the inputs) are not counted.
- **torch ms**: the reference recurrence, a Python loop over the length, forward and `backward()` through autograd
  (same sizes, float32, on the CPU, `--torch-threads` threads, default 1: on the shared 2-core machine two torch
  threads next to JAX's pool made every small op ~50x slower); no memory figure. Lengths above
  `--torch-max-length` (default: no limit) skip it: its Python loop grows too slow there.
- `--plot FILE`: forward + backward time against the length, every method (and the reference), log-log, with the
  line of linear growth through each method's first point.

The figures measured on the project's machine, lengths 256 to 16,384, and their plot are in docs/benchmarks.md.
The figures change with the machine's load; the ranking is what `zoo.layers.scan.DEFAULT_METHOD` is chosen from.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from zoo.layers import scan as scan_lib
from zoo.layers.scan import DEFAULT_CHUNK_SIZE, METHODS, selective_scan

LENGTHS = (256, 1024, 4096, 16384)


def make_inputs(batch: int, length: int, width: int, state: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Mamba-like inputs: delta = softplus(N(0,1) - 4) (~0.02), A = -(1..n), B, C, u ~ N(0, 1), D = 1."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    return dict(
        u=normal(batch, length, width),
        delta=np.log1p(np.exp(normal(batch, length, width) - 4.0)),
        A=-np.tile(np.arange(1, state + 1, dtype=np.float32), (width, 1)),
        B=normal(batch, length, state),
        C=normal(batch, length, state),
        D=np.ones(width, np.float32),
    )


def _time(fn: Callable[[], object], repeats: int) -> float:
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def autodiff_scan(u, delta, A, B, C, D):
    """The reference recurrence as one `jax.lax.scan`, differentiated by JAX (method "autodiff": what "sequential"
    is without its written-out derivative)."""

    def step(h, inputs):
        u_t, delta_t, B_t, C_t = inputs
        h = jnp.exp(delta_t[..., None] * A) * h + (delta_t * u_t)[..., None] * B_t[:, None, :]
        return h, jnp.sum(h * C_t[:, None, :], axis=-1)

    h0 = jnp.zeros((u.shape[0], u.shape[2], A.shape[1]), jnp.float32)
    _, y = jax.lax.scan(step, h0, tuple(jnp.swapaxes(a, 0, 1) for a in (u, delta, B, C)))
    return jnp.swapaxes(y, 0, 1) + u * D


BENCH_METHODS = (*METHODS, "autodiff")


def parse_method(method: str) -> tuple[str, int | None]:
    """"sequential@E" -> ("sequential", E), any other name -> (name, None); ValueError for an unknown or bad one."""
    name, at, elements = method.partition("@")
    if name not in BENCH_METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(BENCH_METHODS)} (and sequential@E)")
    if not at:
        return name, None
    if name != "sequential" or not elements.isdigit() or int(elements) < 1:
        raise ValueError(f"bad method {method!r}: only sequential takes @E, E a positive number of state elements")
    return name, int(elements)


@contextlib.contextmanager
def step_elements(elements: int | None):
    """Trace the sequential scan with blocks of `elements` state numbers (None: the library's default)."""
    default = scan_lib._STEP_ELEMENTS
    scan_lib._STEP_ELEMENTS = elements or default
    try:
        yield
    finally:
        scan_lib._STEP_ELEMENTS = default


def jax_case(inputs: dict[str, np.ndarray], method: str, chunk_size: int, repeats: int) -> dict[str, float]:
    args = {k: jnp.asarray(v) for k, v in inputs.items()}
    weights = jnp.asarray(np.random.default_rng(1).standard_normal(inputs["u"].shape).astype(np.float32))
    method, elements = parse_method(method)
    if method == "autodiff":
        scan = lambda a: autodiff_scan(**a)
    else:
        scan = lambda a: selective_scan(**a, method=method, chunk_size=chunk_size)
    forward = jax.jit(scan)
    backward = jax.jit(jax.grad(lambda a: jnp.sum(scan(a) * weights)))
    out = {}
    for mode, fn in (("forward", forward), ("backward", backward)):
        with step_elements(elements):  # the block layout is fixed when the function is traced
            compiled = fn.lower(args).compile()
        memory = compiled.memory_analysis()
        out[f"{mode}_ms"] = _time(lambda c=compiled: c(args), repeats)
        out[f"{mode}_xla_mb"] = (memory.temp_size_in_bytes if memory else float("nan")) / 2**20
    return out


def torch_selective_scan_ref(u, delta, A, B, C, D):
    """The reference recurrence in PyTorch (state-spaces/mamba layout: u, delta [b, d, l], B, C [b, n, l])."""
    import torch

    decay = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    drive = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[2]):
        h = decay[:, :, t] * h + drive[:, :, t]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t]))
    return torch.stack(ys, dim=2) + u * D[:, None]


def torch_case(inputs: dict[str, np.ndarray], repeats: int, threads: int = 1) -> dict[str, float]:
    import torch

    torch.set_num_threads(threads)  # more threads than free cores makes torch's small ops ~50x slower here

    layout = {"u": (0, 2, 1), "delta": (0, 2, 1), "B": (0, 2, 1), "C": (0, 2, 1)}
    tensors = {
        k: torch.from_numpy(np.ascontiguousarray(v.transpose(layout.get(k, range(v.ndim))))) for k, v in inputs.items()
    }
    weights = torch.randn(tensors["u"].shape)

    def forward():
        with torch.no_grad():
            return torch_selective_scan_ref(**tensors)

    def backward():
        leaves = {k: v.clone().requires_grad_(True) for k, v in tensors.items()}
        (torch_selective_scan_ref(**leaves) * weights).sum().backward()

    timed = lambda fn: 1e3 * statistics.median(_wall(fn) for _ in range(repeats))
    forward()
    return {"torch_forward_ms": timed(forward), "torch_backward_ms": timed(backward)}


def _wall(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(
    lengths: Sequence[int],
    methods: Sequence[str],
    *,
    batch: int,
    width: int,
    state: int,
    chunk_size: int,
    repeats: int,
    with_torch: bool,
    torch_threads: int = 1,
    torch_max_length: int | None = None,
) -> list[dict]:
    rows = []
    for length in lengths:
        inputs = make_inputs(batch, length, width, state)
        row = {"length": length, "batch": batch, "width": width, "state": state}
        for method in methods:
            for key, value in jax_case(inputs, method, chunk_size, repeats).items():
                row[f"{method}_{key}"] = value
        if with_torch and (torch_max_length is None or length <= torch_max_length):
            row.update(torch_case(inputs, repeats, torch_threads))
        rows.append(row)
        print(format_row(row, methods, with_torch), flush=True)
    return rows


def format_header(methods: Sequence[str], with_torch: bool) -> str:
    cells = [f"{m} ms fwd / fwd+bwd (XLA MB bwd)" for m in methods] + (
        ["torch ref ms fwd / fwd+bwd"] if with_torch else []
    )
    return "| length | " + " | ".join(cells) + " |\n|---|" + "---|" * len(cells)


def format_row(row: dict, methods: Sequence[str], with_torch: bool) -> str:
    cells = [
        f"{row[f'{m}_forward_ms']:.1f} / {row[f'{m}_backward_ms']:.1f} ({row[f'{m}_backward_xla_mb']:.0f})"
        for m in methods
    ]
    if with_torch:
        measured = "torch_forward_ms" in row
        cells.append(f"{row['torch_forward_ms']:.1f} / {row['torch_backward_ms']:.1f}" if measured else "-")
    return f"| {row['length']} | " + " | ".join(cells) + " |"


def plot(rows: Sequence[dict], methods: Sequence[str], path: Path) -> None:
    """Forward + backward ms against the length (log-log) per method, with a dotted line of linear growth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    series = [(m, f"{m}_backward_ms") for m in methods] + [("torch ref", "torch_backward_ms")]
    for label, key in series:
        points = [(r["length"], r[key]) for r in rows if key in r]
        if not points:
            continue
        (line,) = ax.plot(*zip(*points, strict=True), marker="o", label=label)
        (l0, t0), last = points[0], points[-1][0]
        ax.plot([l0, last], [t0, t0 * last / l0], ls=":", color=line.get_color(), lw=1)
    first = rows[0]
    ax.set(xscale="log", yscale="log", xlabel="sequence length", ylabel="forward + backward, ms")
    ax.set_title(
        f"selective scan, batch {first['batch']}, width {first['width']}, n {first['state']} "
        f"({jax.default_backend()}; dotted: linear growth)",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--state", type=int, default=16)
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--torch-max-length", type=int, default=None, help="longest length the reference runs")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--plot", type=Path, help="also write the scaling plot (PNG) here")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    for method in methods:
        try:
            parse_method(method)
        except ValueError as error:
            parser.error(str(error))
    lengths = [int(n) for n in args.lengths.split(",") if n]
    with_torch = not args.no_torch
    print(
        f"backend {jax.default_backend()}, batch {args.batch}, width {args.width}, n {args.state}, "
        f"chunk {args.chunk_size}"
    )
    print(format_header(methods, with_torch), flush=True)
    rows = run(
        lengths,
        methods,
        batch=args.batch,
        width=args.width,
        state=args.state,
        chunk_size=args.chunk_size,
        repeats=args.repeats,
        with_torch=with_torch,
        torch_threads=args.torch_threads,
        torch_max_length=args.torch_max_length,
    )
    if args.plot:
        plot(rows, methods, args.plot)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
