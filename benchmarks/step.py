"""Train-step and inference throughput of any registered model, with compile time, memory and FLOP utilisation.

    python -m benchmarks.step --models mixer_s16_224,softs --batch 16
    python -m benchmarks.step --models softs --batch 32 --set enc_in=321 --set pred_len=720 --json runs/softs.json
    python -m benchmarks.step --models mixer_b16_224 --isolate          # every model in a fresh process

For every model and mode (`train`, `infer`):

- **train**: the trainer's step: forward in training mode, the task's masked loss (softmax cross-entropy for
  classifiers, MSE for forecasters), `jax.value_and_grad`, the optax AdamW update of `train.optim.make_optimizer`
  (default config, weight decay 0.05 with the default mask), jitted with the state donated.
  **infer**: the jitted `model.apply(..., train=False)`.
- **compile s**: `jit(...).lower(...)` plus `.compile()` (the command line turns the persistent compilation
  cache off, so the figure is a real compile).
- **ms/step, ex/s**: the median over `--repeats` timed runs of `--steps` steps each, after `--warmup` steps.
- **peak MB**: on CPU the process's peak resident set during the timed steps (VmHWM, reset through
  /proc/self/clear_refs after the warm-up; `ru_maxrss` where that is not possible) minus the resident set after
  compilation and before the mode's state was created: its copy of the parameters, the optimizer state,
  activations and gradients, and whatever the allocator keeps. On GPU/TPU the device's
  `peak_bytes_in_use` minus `bytes_in_use` before the state was built (a process-wide peak: use `--isolate` when
  several models run). **XLA MB**: XLA's static estimate of the compiled step (arguments + outputs + temporaries
  - aliased donations), the same on every platform.
- **GFLOP/step**: XLA's cost analysis of the compiled step (`compiled.cost_analysis()['flops']`), forward,
  backward and optimizer; **GFLOP/s** = that / the median step time; **% peak** = that / the device's peak:
  a table of dense peaks of common GPUs and TPUs (float32 on NVIDIA Ampere and newer is TF32 and on TPU bf16,
  JAX's default matmul precision), and on CPU the measured rate of a large float32 matmul on the same machine.

Nothing here is CPU-specific: the runner uses `jax.devices()[0]` of whatever backend JAX picked.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import zoo
from train.optim import default_optim_config, make_optimizer
from train.tasks import ClassificationTask, ForecastingTask

MODES = ("train", "infer")

# Dense peak FLOP/s per chip of common accelerators (vendor data sheets), by substring of `device.device_kind`
# (first match wins, so more specific names come first). Keys: the compute dtype class ("float32", "bfloat16").
# float32 on NVIDIA Ampere and newer is the TF32 tensor-core peak and on TPU the bf16 peak, because JAX's default
# matmul precision computes float32 dots that way there.
PEAK_FLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200", {"float32": 494.7e12, "bfloat16": 989.4e12}),
    ("H100 PCIe", {"float32": 378e12, "bfloat16": 756e12}),
    ("H100", {"float32": 494.7e12, "bfloat16": 989.4e12}),
    ("GH200", {"float32": 494.7e12, "bfloat16": 989.4e12}),
    ("A100", {"float32": 156e12, "bfloat16": 312e12}),
    ("A10G", {"float32": 35e12, "bfloat16": 70e12}),
    ("A10", {"float32": 62.5e12, "bfloat16": 125e12}),
    ("L40S", {"float32": 183e12, "bfloat16": 362e12}),
    ("L4", {"float32": 60e12, "bfloat16": 121e12}),
    ("RTX 4090", {"float32": 82.6e12, "bfloat16": 165e12}),
    ("V100", {"float32": 15.7e12, "bfloat16": 125e12}),  # no TF32 nor bf16: float16 tensor-core figure for bf16
    ("T4", {"float32": 8.1e12, "bfloat16": 65e12}),  # float16 tensor-core figure for bf16
    ("TPU v6 lite", {"float32": 918e12, "bfloat16": 918e12}),
    ("TPU v5 lite", {"float32": 197e12, "bfloat16": 197e12}),
    ("TPU v5p", {"float32": 459e12, "bfloat16": 459e12}),
    ("TPU v5", {"float32": 459e12, "bfloat16": 459e12}),
    ("TPU v4", {"float32": 275e12, "bfloat16": 275e12}),
    ("TPU v3", {"float32": 123e12, "bfloat16": 123e12}),
    ("TPU v2", {"float32": 45e12, "bfloat16": 45e12}),
)


# ----------------------------------------------------------------------------------------------- machine facts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    import flax
    import jaxlib

    out = {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__}
    out.update(flax=flax.__version__, optax=optax.__version__, numpy=np.__version__)
    return out


def machine_info(command: str | None = None) -> dict[str, Any]:
    """Where and with what a figure was measured; `command`: the command line that produced it."""
    device = jax.devices()[0]
    return {
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "backend": jax.default_backend(),
        "device": device.device_kind,
        "num_devices": jax.device_count(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "versions": _versions(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "command": command or " ".join(["python", *sys.argv]),
    }


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """The shell command that runs `module` with `argv` (sys.argv[1:] when None)."""
    return " ".join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def dtype_class(dtype: Any) -> str:
    """'bfloat16' for 16-bit floating compute, 'float32' otherwise (the key of PEAK_FLOPS)."""
    return "bfloat16" if jnp.dtype(dtype).itemsize == 2 else "float32"


_MEASURED_PEAK: dict[tuple[int, str], float] = {}


def measured_matmul_flops(n: int = 4096, dtype: Any = jnp.float32, repeats: int = 5) -> float:
    """FLOP/s of an `n x n @ n x n` matmul with jnp on the default device: the best of `repeats`, after a warm-up."""
    key = (n, jnp.dtype(dtype).name)
    if key not in _MEASURED_PEAK:
        a = jax.random.normal(jax.random.key(0), (n, n), dtype)
        b = jax.random.normal(jax.random.key(1), (n, n), dtype)
        f = jax.jit(jnp.matmul)
        f(a, b).block_until_ready()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            f(a, b).block_until_ready()
            times.append(time.perf_counter() - t)
        _MEASURED_PEAK[key] = 2 * n**3 / min(times)
    return _MEASURED_PEAK[key]


def table_peak_flops(device_kind: str, dtype: Any = jnp.float32) -> tuple[float, str] | None:
    """(peak FLOP/s, 'table: ...') of an accelerator named by `device_kind`, or None if it is not in PEAK_FLOPS."""
    kind = dtype_class(dtype)
    for pattern, peaks in PEAK_FLOPS:
        if pattern.lower() in device_kind.lower():
            return peaks[kind], f"table: {pattern} {kind}"
    return None


def device_peak_flops(dtype: Any = jnp.float32, *, matmul_n: int = 4096) -> tuple[float | None, str]:
    """(peak FLOP/s, where it comes from) for the default device and compute dtype; `matmul_n=0` measures nothing
    (None where the table has no entry)."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        found = table_peak_flops(device.device_kind, dtype)
        if found is not None:
            return found
    # CPU, or an accelerator missing from the table: what this machine achieves on a large matmul.
    kind = dtype_class(dtype)
    if not matmul_n:
        return None, "not measured"
    flops = measured_matmul_flops(matmul_n, jnp.float32 if kind == "float32" else jnp.bfloat16)
    return flops, f"measured: {matmul_n}x{matmul_n} {kind} matmul"


# ----------------------------------------------------------------------------------------------- memory


class MemoryProbe:
    """Peak memory of the default device between `start()` and `peak_bytes()` (see the module docstring)."""

    def __init__(self):
        self.device = jax.devices()[0]
        self.on_host = self.device.platform == "cpu"
        self.baseline = 0

    @staticmethod
    def _status_kb(field: str) -> int | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        except OSError:
            pass
        return None

    @staticmethod
    def _reset_host_peak() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            return True
        except OSError:
            return False

    def _device_stats(self) -> dict[str, int]:
        try:
            return self.device.memory_stats() or {}
        except Exception:  # some backends have no allocator statistics
            return {}

    def start(self) -> None:
        """Remembers the memory in use now: the baseline the peak is measured against."""
        if self.on_host:
            rss = self._status_kb("VmRSS")
            self.baseline = 1024 * rss if rss is not None else 1024 * resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        else:
            self.baseline = self._device_stats().get("bytes_in_use", 0)

    def reset_peak(self) -> None:
        """Forgets the peak so far (host only; device allocators keep a process-wide peak)."""
        if self.on_host:
            self._reset_host_peak()

    def peak_bytes(self) -> int | None:
        if self.on_host:
            hwm = self._status_kb("VmHWM")
            peak = 1024 * hwm if hwm is not None else 1024 * resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        else:
            peak = self._device_stats().get("peak_bytes_in_use")
            if peak is None:
                return None
        return max(peak - self.baseline, 0)


# ----------------------------------------------------------------------------------------------- the steps


def cost_flops(compiled: Any) -> float | None:
    """FLOPs of a compiled computation from XLA's cost analysis (a dict, or a list of per-module dicts)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:
        return None
    if cost is None:
        return None
    if isinstance(cost, dict):
        cost = [cost]
    total = sum(float(c.get("flops", 0.0)) for c in cost if c)
    return total if total > 0 else None


def xla_memory_bytes(compiled: Any) -> int | None:
    """XLA's static memory estimate: arguments + outputs + temporaries - donated (aliased) buffers."""
    try:
        m = compiled.memory_analysis()
    except Exception:
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


def make_task(model: Any, task_name: str):
    if task_name == "classification":
        return ClassificationTask(num_classes=max(int(model.num_classes), 1))
    return ForecastingTask(use_time_features="x_mark" in zoo.input_spec(model))


def make_batch(model: Any, task_name: str, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A random batch in the trainer's layout (`image`/`label` or `x`/`x_mark`/`y`, plus `mask`)."""
    rng = np.random.default_rng(seed)
    spec = zoo.input_spec(model)
    normal = lambda shape: rng.standard_normal((batch_size, *shape)).astype(np.float32)
    batch = {"mask": np.ones((batch_size,), np.float32)}
    if task_name == "classification":
        batch["image"] = normal(spec["images"])
        batch["label"] = rng.integers(0, max(int(model.num_classes), 1), (batch_size,)).astype(np.int32)
    else:
        batch.update({k: normal(s) for k, s in spec.items()})
        batch["y"] = normal((model.pred_len, model.enc_in))
    return batch


def default_optimizer(params: Any) -> optax.GradientTransformation:
    """AdamW as the trainer builds it from the default config (cosine schedule, lr 1e-3), weight decay 0.05."""
    cfg = default_optim_config()
    cfg.weight_decay = 0.05
    tx, _ = make_optimizer(cfg, params, total_steps=1_000_000, steps_per_epoch=1000)
    return tx


@dataclasses.dataclass
class Bench:
    """A model with its jitted train step and inference function, ready to run."""

    name: str
    model: Any
    task_name: str
    batch_size: int
    batch: dict[str, jax.Array]
    variables: Any
    train_step: Callable  # (state, batch) -> (state, loss), state donated
    infer: Callable  # (variables, inputs) -> outputs
    init_state: Callable  # () -> state
    inputs: dict[str, jax.Array]


def build(name: str, batch_size: int, overrides: dict[str, Any] | None = None, seed: int = 0) -> Bench:
    """The model `name` (registry defaults updated by the `overrides` it accepts) and its jitted functions."""
    entry = zoo.get_entry(name)
    accepted = set(entry.accepted_fields())
    model = zoo.create_model(name, **{k: v for k, v in (overrides or {}).items() if k in accepted})
    task = make_task(model, entry.task)
    host_batch = make_batch(model, entry.task, batch_size, seed)
    batch = jax.device_put(host_batch)
    inputs = task.model_inputs(batch)
    key = jax.random.key(seed)
    variables = jax.jit(lambda k: model.init(k, **inputs, train=False))(key)
    tx = default_optimizer(variables["params"])
    collections = sorted(k for k in variables if k != "params")  # model state, e.g. BatchNorm's batch_stats

    def init_state():
        variables_copy = jax.tree.map(jnp.copy, variables)
        params = variables_copy.pop("params")
        return {
            "step": jnp.zeros((), jnp.int32),
            "params": params,
            "model_state": variables_copy,
            "opt_state": tx.init(params),
            "rng": jax.random.key_data(jax.random.key(seed + 1)),
        }

    def train_step(state, batch):
        rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])

        def loss_fn(params):
            out, model_state = model.apply(
                {**state["model_state"], "params": params},
                **task.model_inputs(batch),
                train=True,
                rngs={"dropout": rng},
                mutable=collections,
            )
            loss_sum, count = task.loss(out, batch)
            return loss_sum, (count, model_state)

        (loss_sum, (count, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        count = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: g / count, grads)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new_state = {"step": state["step"] + 1, "params": params, "opt_state": opt_state, "model_state": model_state}
        return {**state, **new_state}, loss_sum / count

    def infer(variables, inputs):
        return model.apply(variables, **inputs, train=False)

    return Bench(
        name=name,
        model=model,
        task_name=entry.task,
        batch_size=batch_size,
        batch=batch,
        variables=variables,
        train_step=jax.jit(train_step, donate_argnums=0),
        infer=jax.jit(infer),
        init_state=jax.jit(init_state),
        inputs=inputs,
    )


class Runner:
    """One compiled mode of a Bench. Construction compiles from abstract shapes only; `allocate()` then creates the
    mode's own copy of the parameters (and optimizer state), and `run(k)` runs k steps and waits for them."""

    def __init__(self, bench: Bench, mode: str):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.bench, self.mode = bench, mode
        abstract = lambda tree: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
        if mode == "train":
            fn, args = bench.train_step, (jax.eval_shape(bench.init_state), abstract(bench.batch))
        else:
            fn, args = bench.infer, (abstract(bench.variables), abstract(bench.inputs))
        t0 = time.perf_counter()
        lowered = fn.lower(*args)
        t1 = time.perf_counter()
        self.compiled = lowered.compile()
        t2 = time.perf_counter()
        self.lower_s, self.compile_s = t1 - t0, t2 - t1
        self.flops = cost_flops(self.compiled)
        self.xla_bytes = xla_memory_bytes(self.compiled)
        self.state = self.last = None

    def allocate(self) -> None:
        """The train state (a copy of the parameters and the optimizer state), or a copy of the variables."""
        if self.mode == "train":
            self.state = self.bench.init_state()
        else:
            self.state = jax.tree.map(jnp.copy, self.bench.variables)
        jax.block_until_ready(self.state)

    def run(self, steps: int) -> None:
        if self.state is None:
            self.allocate()
        if self.mode == "train":
            for _ in range(steps):
                self.state, self.last = self.compiled(self.state, self.bench.batch)
        else:
            for _ in range(steps):
                self.last = self.compiled(self.state, self.bench.inputs)
        jax.block_until_ready((self.state, self.last))

    def check_finite(self) -> None:
        if self.last is not None and not np.all(np.isfinite(np.asarray(self.last))):
            raise FloatingPointError(f"{self.bench.name} {self.mode}: non-finite output")

    def close(self) -> None:
        self.state = self.last = None


def time_runner(runner: Runner, *, steps: int, repeats: int, warmup: int) -> list[float]:
    """Seconds per step of `repeats` timed runs of `steps` steps each, after `warmup` steps."""
    if warmup:
        runner.run(warmup)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        runner.run(steps)
        times.append((time.perf_counter() - t) / steps)
    runner.check_finite()
    return times


def measure(
    name: str,
    batch_size: int,
    *,
    modes: Sequence[str] = MODES,
    overrides: dict[str, Any] | None = None,
    steps: int = 3,
    repeats: int = 5,
    warmup: int = 2,
    matmul_n: int = 4096,
    given_peak: tuple[float, str] | None = None,
) -> list[dict[str, Any]]:
    """One row per mode for model `name` (see the module docstring for the columns); `given_peak`: (FLOP/s,
    source) to use instead of measuring one with `device_peak_flops`."""
    probe = MemoryProbe()
    bench = build(name, batch_size, overrides)
    dtype = getattr(bench.model, "dtype", None) or jnp.float32
    rows = []
    for mode in modes:
        runner = Runner(bench, mode)
        probe.start()
        runner.allocate()
        if warmup:
            runner.run(warmup)
        probe.reset_peak()
        times = time_runner(runner, steps=steps, repeats=repeats, warmup=0)
        peak_bytes = probe.peak_bytes()
        runner.close()
        step_s = statistics.median(times)
        peak, peak_source = given_peak or device_peak_flops(dtype, matmul_n=matmul_n)
        achieved = runner.flops / step_s if runner.flops else None
        rows.append(
            {
                "model": name,
                "mode": mode,
                "batch": batch_size,
                "overrides": dict(overrides or {}),
                "num_params": zoo.count_params(bench.variables),
                "compile_s": runner.lower_s + runner.compile_s,
                "lower_s": runner.lower_s,
                "step_ms": 1e3 * step_s,
                "step_ms_all": [1e3 * t for t in times],
                "examples_per_s": batch_size / step_s,
                "peak_mem_mb": peak_bytes / 2**20 if peak_bytes is not None else None,
                "xla_mem_mb": runner.xla_bytes / 2**20 if runner.xla_bytes is not None else None,
                "gflop_per_step": runner.flops / 1e9 if runner.flops else None,
                "gflop_per_s": achieved / 1e9 if achieved else None,
                "peak_gflop_per_s": peak / 1e9 if peak else None,
                "peak_source": peak_source,
                "fraction_of_peak": achieved / peak if achieved and peak else None,
                "steps": steps,
                "repeats": repeats,
                "warmup": warmup,
            }
        )
    return rows


# ----------------------------------------------------------------------------------------------- output


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    header = (
        f"{'model':24s} {'mode':5s} {'batch':>5s} {'compile s':>9s} {'ms/step':>9s} {'ex/s':>9s} {'peak MB':>8s} "
        f"{'XLA MB':>8s} {'GFLOP/step':>10s} {'GFLOP/s':>8s} {'% peak':>7s}"
    )
    lines = [header]
    for r in rows:
        frac = r.get("fraction_of_peak")
        lines.append(
            f"{r['model'][:24]:24s} {r['mode']:5s} {r['batch']:5d} {r['compile_s']:9.2f} {r['step_ms']:9.1f} "
            f"{r['examples_per_s']:9.2f} {_fmt(r['peak_mem_mb'], '8.0f')} {_fmt(r['xla_mem_mb'], '8.0f')} "
            f"{_fmt(r['gflop_per_step'], '10.2f')} {_fmt(r['gflop_per_s'], '8.1f')} "
            f"{_fmt(None if frac is None else 100 * frac, '7.1f')}"
        )
    return "\n".join(lines)


def write_json(path: str | Path, rows: Sequence[dict[str, Any]], *, command: str | None = None, **extra: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"machine": machine_info(command), **extra, "rows": list(rows)}
    path.write_text(json.dumps(data, indent=1) + "\n")


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """['enc_in=321', 'dtype=bfloat16', 'approximate_gelu=false'] -> typed values."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set takes key=value, got {item!r}")
        low = raw.lower()
        if low in ("true", "false"):
            value: Any = low == "true"
        elif low in ("bfloat16", "float32", "float16"):
            value = jnp.dtype(low)
        else:
            try:
                value = int(raw)
            except ValueError:
                try:
                    value = float(raw)
                except ValueError:
                    value = raw
        out[key.strip()] = value
    return out


def _jsonable(overrides: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if not isinstance(v, bool | int | float | str) else v) for k, v in overrides.items()}


def parse_models(spec: str, default_batch: int) -> list[tuple[str, int]]:
    """'mixer_s16_224,softs:32' -> [('mixer_s16_224', default_batch), ('softs', 32)]."""
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, batch = item.partition(":")
        zoo.get_entry(name)  # unknown names fail here, with the closest matches
        out.append((name, int(batch) if batch else default_batch))
    return out


def run_isolated(argv: Sequence[str], timeout: float | None = None) -> dict[str, Any]:
    """Runs `python -m benchmarks.step *argv` in a fresh process and returns its JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [sys.executable, "-m", "benchmarks.step", *argv, "--json", str(out), "--quiet"]
        subprocess.run(cmd, check=True, timeout=timeout, cwd=Path(__file__).resolve().parents[1])
        return json.loads(out.read_text())


def add_model_arguments(p: argparse.ArgumentParser, *, models: str | None = None) -> None:
    """--models, --batch, --modes and --set, shared by the runners that take a list of models."""
    p.add_argument(
        "--models", required=models is None, default=models, help="registered names, comma-separated; 'name:B' sets B"
    )
    p.add_argument("--batch", type=int, default=16, help="batch size (per model: name:B)")
    p.add_argument("--modes", default="train,infer", help="comma-separated subset of train,infer")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="constructor override, applied to every model that accepts it (repeatable)",
    )


def parse_modes(spec: str) -> list[str]:
    """'train,infer' -> ['train', 'infer']; anything else than a non-empty subset of MODES is an error."""
    modes = [m.strip() for m in spec.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES):
        raise ValueError(f"--modes must be a non-empty comma-separated subset of {MODES}, got {spec!r}")
    return modes


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--steps", type=int, default=3, help="steps per timed run")
    p.add_argument("--repeats", type=int, default=5, help="timed runs (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
    p.add_argument("--matmul-n", type=int, default=4096, help="size of the CPU peak matmul (0: no peak, no %% peak)")
    p.add_argument("--peak-gflops", type=float, default=None, help="use this peak instead of measuring one")
    p.add_argument("--isolate", action="store_true", help="measure every model in a fresh process")
    p.add_argument("--json", default=None, help="also write {machine, rows} to this file")
    p.add_argument("--quiet", action="store_true", help="no table")
    args = p.parse_args(argv)
    jax.config.update("jax_enable_compilation_cache", False)  # compile times are real compiles
    modes = parse_modes(args.modes)
    overrides = parse_overrides(args.set)
    peak = None
    if args.peak_gflops:
        peak = (1e9 * args.peak_gflops, f"given: {args.peak_gflops:.0f} GFLOP/s")
    elif args.isolate and jax.default_backend() == "cpu" and args.matmul_n:
        # One CPU reference for every row: measured here, once, and handed to the fresh processes.
        peak = device_peak_flops(overrides.get("dtype", jnp.float32), matmul_n=args.matmul_n)
    rows = []
    for name, batch in parse_models(args.models, args.batch):
        if args.isolate:
            sub = [f"--models={name}:{batch}", f"--modes={','.join(modes)}", f"--steps={args.steps}"]
            sub += [f"--repeats={args.repeats}", f"--warmup={args.warmup}", f"--matmul-n={args.matmul_n}"]
            sub += [f"--set={s}" for s in args.set]
            if peak is not None:
                sub += [f"--peak-gflops={peak[0] / 1e9}"]
            for r in run_isolated(sub)["rows"]:
                rows.append({**r, "peak_source": peak[1]} if peak is not None else r)
        else:
            for r in measure(
                name,
                batch,
                modes=modes,
                overrides=overrides,
                steps=args.steps,
                repeats=args.repeats,
                warmup=args.warmup,
                matmul_n=args.matmul_n,
                given_peak=peak,
            ):
                r["overrides"] = _jsonable(r["overrides"])
                rows.append(r)
    if not args.quiet:
        print(format_table(rows))
    if args.json:
        write_json(args.json, rows, command=command_line("benchmarks.step", argv))
    return rows


if __name__ == "__main__":
    main()
