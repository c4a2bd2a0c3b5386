"""The one trainer of mixer-zoo: `train_and_evaluate(config, workdir)`.

Sections, as in big_vision's train.py: inputs, model and optimizer (abstract first), sharding, steps, checkpoint
resume, the loop (logging, evaluation, early stopping, checkpoints), final test evaluation. The trainer sees a
model only through the registry and the model contract, and a task only through its task object.
"""

import collections
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import signal
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import checkpoints
import zoo
from train import config as config_lib
from train import finetune, guard, sharding
from train.data.pipeline import EvalBatches, TrainBatches, iterate
from train.inputs import build_inputs
from train.optim import ema_update, make_optimizer
from train.tasks import reduce_metrics
from train.writers import Progress, create_writer

_log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; checkpoints written before it are intact."""


@dataclasses.dataclass
class EarlyStopping:
    """Tracks the best evaluation of `metric`; a tie counts as an improvement (as in the forecasting code)."""

    metric: str
    mode: str = "min"
    patience: int = 0
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    improvements: int = 0

    def update(self, value: float, step: int) -> bool:
        """Records an evaluation; returns True when training should stop."""
        better = self.best is None or (value <= self.best if self.mode == "min" else value >= self.best)
        if better:
            self.best, self.best_step, self.bad_evals = value, step, 0
            self.improvements += 1
        else:
            self.bad_evals += 1
        return self.patience > 0 and self.bad_evals >= self.patience

    def rank(self, improved: bool) -> float:
        """A checkpoint score whose maximum is exactly the latest improvement (so ties keep the newest step)."""
        return float(self.improvements) if improved else self.improvements - 0.5


def _check_batch_matches_model(model, task, batch: dict[str, np.ndarray], model_name: str, dataset: str) -> None:
    spec = zoo.input_spec(model)
    for name, array in task.model_inputs(batch).items():
        if name not in spec:
            raise ValueError(f"{model_name} takes no input {name!r} (it takes {sorted(spec)}); data set {dataset!r}")
        if tuple(array.shape[1:]) != tuple(spec[name]):
            raise ValueError(
                f"data set {dataset!r} gives {name} of shape {tuple(array.shape[1:])} per example but {model_name} "
                f"expects {tuple(spec[name])}; change the model's size fields in config.model or the data settings"
            )


def _consistent_step(restored: checkpoints.Restored) -> None:
    """A step folder whose training step or data position disagrees with its number (renamed, copied from another
    run) is rejected, so the newest consistent step is used instead."""
    step = int(jax.device_get(restored.state["step"]))
    position = (restored.data_state or {}).get("next_index", restored.step)
    if step != restored.step or position != restored.step:
        raise ValueError(f"its training step is {step} and its data position {position}, not {restored.step}")


def _abstract_with_shardings(abstract, shardings):
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def _host_metrics(sums) -> dict[str, float | list[float]]:
    """Device sums of one evaluation pass -> averages (a list for a vector metric), plus the number of real examples
    counted. The sums add up per batch whatever their shape (a vector sum, a scalar count)."""
    sums = jax.device_get(sums)
    return {**reduce_metrics(sums["metrics"]), "num_examples": int(sums["num_examples"])}


def _scalars(metrics: dict) -> dict[str, float]:
    """The scalar metrics, for the scalar writers and the progress line (results.json keeps the vectors too)."""
    return {k: v for k, v in metrics.items() if not isinstance(v, list)}


def _agreed_flags(*flags: bool) -> tuple[bool, ...]:
    """Process 0's values of `flags` on every process (a save is collective: all processes must decide alike)."""
    if jax.process_count() == 1:
        return tuple(flags)
    from jax.experimental import multihost_utils

    return tuple(bool(f) for f in multihost_utils.broadcast_one_to_all(np.asarray(flags, np.int32)))


def params_digest(tree) -> str:
    """sha256 of a parameter or variables tree as this process sees it (names, shapes, dtypes and bytes)."""
    digest = hashlib.sha256()
    for path, leaf in sorted(checkpoints.flatten(jax.device_get(tree)).items()):
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{path}:{array.shape}:{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def train_and_evaluate(config, workdir: str | Path) -> dict[str, Any]:
    """Trains `config` in `workdir` (resuming from its newest valid checkpoint) and returns the results dict that
    is also written to `workdir/results.json`.

    One trainer per workdir (a second one gets `guard.WorkdirInUseError`); a resumed run must have the same
    config as its `config.json` (see `config.resume_changes`); SIGINT/SIGTERM finish the step, save it and raise
    `guard.TrainingInterrupted`.
    """
    config = config_lib.validate(config)
    workdir = Path(workdir)
    entry = zoo.get_entry(config.model_name)
    if config.task.name == "classification":  # the preprocessing in effect, written down in config.json
        for key, value in finetune.preprocessing(config, entry).items():
            config.data[key] = tuple(value) if isinstance(value, list | tuple) else value
    sharding.initialize_distributed(config.distributed)
    is_main = jax.process_index() == 0
    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)
    lock = guard.workdir_lock(workdir) if is_main else contextlib.nullcontext()
    with lock, guard.StopSignals() as signals:
        return _train_and_evaluate(config, workdir, entry, signals)


def _train_and_evaluate(config, workdir: Path, entry, signals: guard.StopSignals) -> dict[str, Any]:
    is_main = jax.process_index() == 0
    traces = collections.Counter()
    stopper = EarlyStopping(config.early_stopping.metric, config.early_stopping.mode, config.early_stopping.patience)
    manager = checkpoints.CheckpointManager(
        workdir / "checkpoints",
        max_to_keep=config.checkpoint.max_to_keep,
        best_metric="early_stopping_rank" if stopper.metric else None,
        best_mode="max",
        async_save=config.checkpoint.async_save,
    )
    resuming, accepted_changes = manager.latest_step() is not None, {}
    if resuming:  # config.json of an existing run is never rewritten
        accepted_changes = guard.check_resume_config(workdir, config)
    elif is_main:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")

    # ---------------------------------------------------------------- Inputs.
    inputs = build_inputs(config, entry)
    _log.info("data: %s", inputs.describe)
    if config.batch_size > len(inputs.train):  # every step would be mostly padding (and may not fit in memory)
        raise ValueError(
            f"batch_size {config.batch_size} is larger than the training split ({len(inputs.train)} examples); "
            f"use at most {len(inputs.train)}"
        )
    dtype_override = {}
    if config.compute_dtype != "float32":
        if "dtype" not in entry.accepted_fields():
            raise ValueError(f"{entry.name} has no compute dtype field; compute_dtype must stay float32")
        dtype_override["dtype"] = jnp.dtype(config.compute_dtype)
    model_overrides = {**inputs.model_overrides, **config_lib.model_overrides(config)}
    model = zoo.create_model(config.model_name, **model_overrides, **dtype_override)
    task = inputs.task

    # The model's variables, abstractly: `params` are trained; every other collection (BatchNorm's `batch_stats`)
    # is model state, updated by the forward pass in training and read in evaluation.
    root = jax.random.key(config.seed)
    init_key, train_key = jax.random.split(root)
    example = {k: jnp.zeros((1, *s), jnp.float32) for k, s in zoo.input_spec(model).items()}
    abstract_variables = jax.eval_shape(lambda k: model.init(k, **example, train=False), init_key)
    abstract_params = abstract_variables["params"]
    state_collections = sorted(k for k in abstract_variables if k != "params")

    mesh = sharding.make_mesh()
    num_devices, process_count = jax.device_count(), jax.process_count()
    eval_batch_size = config.eval_batch_size or config.batch_size
    for what, size in (("batch_size", config.batch_size // config.accum_steps), ("eval_batch_size", eval_batch_size)):
        if size % num_devices:
            raise ValueError(f"{what} {size} (per micro-batch) is not divisible by the {num_devices} devices")
    # Padded rows (mask 0) would enter batch statistics, so models with state train on full batches only.
    drop_remainder = config.data.train_drop_remainder or bool(state_collections)
    if drop_remainder and not config.data.train_drop_remainder:
        _log.info("%s keeps %s: training drops each epoch's short last batch", entry.name, state_collections)
    train_batches = TrainBatches(
        inputs.train,
        config.batch_size,
        config.seed,
        drop_remainder=drop_remainder,
        process_index=jax.process_index(),
        process_count=process_count,
    )
    evals = {
        split: EvalBatches(source, eval_batch_size, jax.process_index(), process_count)
        for split, source in (("val", inputs.val), ("test", inputs.test))
        if source is not None
    }
    steps_per_epoch = train_batches.steps_per_epoch
    total_steps = config.total_steps or math.ceil(config.total_epochs * steps_per_epoch)
    _check_batch_matches_model(model, task, train_batches[0], entry.name, config.data.dataset)

    # ---------------------------------------------------------------- Model and optimizer (abstract first).
    tx, schedule = make_optimizer(
        config.optim, abstract_params, total_steps=total_steps, steps_per_epoch=steps_per_epoch
    )
    num_params = zoo.count_params({"params": abstract_params})
    use_ema = config.ema_decay > 0

    def init_state(key, variables=None):
        """The initial train state: fresh variables, or `variables` (config.init_from's) when given."""
        if variables is None:
            variables = model.init(key, **example, train=False)
        params = variables["params"]
        state = {
            "step": jnp.zeros((), jnp.int32),
            "params": params,
            "opt_state": tx.init(params),
            "rng": jax.random.key_data(train_key),
        }
        if state_collections:
            state["model_state"] = {k: variables[k] for k in state_collections}
        if use_ema:
            state["ema_params"] = params
            if state_collections:
                state["ema_model_state"] = state["model_state"]
        return state

    def eval_variables(state) -> dict:
        """What evaluation and the exported model use: the (EMA) parameters and the model state."""
        prefix = "ema_" if use_ema else ""
        return {"params": state[f"{prefix}params"], **state.get(f"{prefix}model_state", {})}

    # ---------------------------------------------------------------- Shard and place.
    abstract_state = jax.eval_shape(init_state, init_key)
    state_shardings = sharding.state_shardings(
        abstract_state, mesh, fsdp=config.mesh.fsdp, fsdp_min_size=config.mesh.fsdp_min_size
    )
    replicated, batch_sharding = sharding.replicated(mesh), sharding.batch_sharding(mesh)

    # ---------------------------------------------------------------- Steps (each compiled once).
    def forward(variables, batch, train, rng=None):
        """Model outputs, and in training the updated model state (the state collections are mutable)."""
        rngs = {"dropout": rng} if rng is not None else {}
        inputs = task.model_inputs(batch)
        if train and state_collections:
            return model.apply(variables, **inputs, train=True, rngs=rngs, mutable=state_collections)
        return model.apply(variables, **inputs, train=train, rngs=rngs), {}

    def train_step(state, batch):
        traces["train_step"] += 1
        rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        mix_rng, dropout_rng = jax.random.split(rng)
        batch = task.prepare_train_batch(batch, mix_rng)

        def loss_fn(params, model_state, micro, key):
            outputs, new_model_state = forward({"params": params, **model_state}, micro, True, key)
            loss_sum, count = task.loss(outputs, micro)
            return loss_sum, (count, new_model_state)

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        model_state = state.get("model_state", {})
        if config.accum_steps == 1:
            (loss_sum, (count, model_state)), grads = grad_fn(state["params"], model_state, batch, dropout_rng)
        else:
            # Micro-batch a takes rows a, a + A, a + 2A, ... so every device contributes to each micro-batch. The
            # model state (running statistics) is updated by each micro-batch in turn.
            a = config.accum_steps
            micro = jax.tree.map(lambda x: jnp.moveaxis(x.reshape(x.shape[0] // a, a, *x.shape[1:]), 1, 0), batch)

            def accumulate(carry, xs):
                grads, model_state, loss_sum, count = carry
                mb, i = xs
                key = jax.random.fold_in(dropout_rng, i)
                (mb_loss, (mb_count, model_state)), mb_grads = grad_fn(state["params"], model_state, mb, key)
                return (jax.tree.map(jnp.add, grads, mb_grads), model_state, loss_sum + mb_loss, count + mb_count), None

            zeros = jax.tree.map(jnp.zeros_like, state["params"])
            carry = (zeros, model_state, 0.0, 0.0)
            (grads, model_state, loss_sum, count), _ = jax.lax.scan(accumulate, carry, (micro, jnp.arange(a)))
        count = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: g / count, grads)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new_state = {**state, "step": state["step"] + 1, "params": params, "opt_state": opt_state}
        if state_collections:
            new_state["model_state"] = model_state
        if use_ema:
            new_state["ema_params"] = ema_update(state["ema_params"], params, config.ema_decay)
            if state_collections:
                new_state["ema_model_state"] = ema_update(state["ema_model_state"], model_state, config.ema_decay)
        metrics = {
            "loss": loss_sum / count,
            "grad_norm": optax.tree.norm(grads),
            "lr": schedule(state["step"]),
            "examples": jnp.sum(batch["mask"]),
        }
        return new_state, metrics

    def eval_step(variables, batch):
        traces["eval_step"] += 1
        outputs, _ = forward(variables, batch, False)
        return {"metrics": task.metrics(outputs, batch), "num_examples": jnp.sum(batch["mask"])}

    train_step = jax.jit(train_step, donate_argnums=0, out_shardings=(state_shardings, replicated))
    eval_step = jax.jit(eval_step, out_shardings=replicated)

    def evaluate(variables, split: str) -> dict[str, float]:
        batches = evals[split]
        sums = None
        for batch in iterate(batches, num_threads=config.data.num_threads, prefetch=config.data.prefetch):
            out = eval_step(variables, sharding.to_global(batch, batch_sharding))
            sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
        return _host_metrics(sums)

    # ---------------------------------------------------------------- Resume or initialise.
    target = _abstract_with_shardings(abstract_state, state_shardings)
    data_state, previous_wall_s, stopped_early, init_metrics = None, 0.0, False, None
    if resuming:
        restored = manager.restore(target, check=_consistent_step)
        state, data_state = restored.state, restored.data_state
        extra = restored.extra or {}
        for key, value in extra.get("early_stopping", {}).items():
            setattr(stopper, key, value)
        previous_wall_s = float(extra.get("train_wall_s", 0.0))
        stopped_early = bool(extra.get("stopped_early", False))
        init_metrics = extra.get("init_metrics")
        _log.info("resumed from step %d in %s", restored.step, workdir)
        if is_main and accepted_changes:
            guard.record_resume(workdir, restored.step, accepted_changes)
    else:
        loaded = None
        if config.init_from:  # fine-tuning: only a new run starts from these weights, never a resumed one
            fresh = jax.device_get(jax.jit(lambda k: model.init(k, **example, train=False))(init_key))
            loaded = finetune.init_variables(config, model, fresh)
        state = jax.jit(init_state, out_shardings=state_shardings)(init_key, loaded)
    start_step = int(jax.device_get(state["step"]))

    # ---------------------------------------------------------------- Train.
    writer = create_writer(workdir, enabled=is_main)
    if start_step == 0:
        writer.write_hparams(config_lib.hparams(config))
        if config.init_from:  # where fine-tuning starts: the loaded model's evaluation before any step
            init_metrics = {split: evaluate(eval_variables(state), split) for split in evals}
            for split, values in init_metrics.items():
                writer.write_scalars(0, _scalars(values), prefix=split)
    progress = Progress(total_steps, initial_step=start_step, log_every=config.log_every_steps) if is_main else None
    train_iter = iterate(
        train_batches, num_threads=config.data.num_threads, prefetch=config.data.prefetch, state=data_state
    )
    pending: list[dict[str, jax.Array]] = []
    last_good_step = start_step
    train_time, train_examples, timer_step = 0.0, 0.0, None
    t_mark = time.perf_counter()

    def flush_train_metrics(step: int) -> None:
        nonlocal pending, last_good_step, train_time, train_examples, timer_step, t_mark
        if not pending:
            return
        host = jax.device_get(pending)
        losses = np.array([m["loss"] for m in host])
        if not np.all(np.isfinite(losses)):
            bad = step - len(host) + 1 + int(np.argmin(np.isfinite(losses)))
            raise NonFiniteLossError(
                f"training loss became {losses[~np.isfinite(losses)][0]} at step {bad} (model {entry.name}, lr "
                f"{float(host[-1]['lr']):.3g}); the last checkpoint (at or before step {last_good_step}) is intact in "
                f"{workdir / 'checkpoints'}. Lower optim.lr, enable optim.grad_clip_norm, or check the data."
            )
        now = time.perf_counter()
        examples = float(sum(m["examples"] for m in host))
        if timer_step is not None:  # the first interval includes compilation: not counted in throughput
            train_time += now - t_mark
            train_examples += examples
        timer_step, t_mark = step, now
        rate = train_examples / train_time if train_time > 0 else None
        last = host[-1]
        scalars = {"loss": float(np.mean(losses)), "lr": float(last["lr"]), "grad_norm": float(last["grad_norm"])}
        if rate is not None:
            scalars["examples_per_s"] = rate
        writer.write_scalars(step, scalars, prefix="train")
        if progress is not None:
            progress.update(step, loss=scalars["loss"], examples_per_s=rate, epoch=step / steps_per_epoch)
        last_good_step = step
        pending = []

    t_start = time.perf_counter()
    save_every_s, last_save = 60 * config.checkpoint.every_minutes, time.monotonic()
    step = start_step
    while step < total_steps and not stopped_early:
        batch = sharding.to_global(next(train_iter), batch_sharding)
        state, metrics = train_step(state, batch)
        pending.append(metrics)
        step += 1
        epoch_end = step % steps_per_epoch == 0
        if step % config.log_every_steps == 0 or step == total_steps:
            flush_train_metrics(step)
        do_eval = "val" in evals and (
            (config.eval_every_steps and step % config.eval_every_steps == 0)
            or (not config.eval_every_steps and epoch_end and (step // steps_per_epoch) % config.eval_every_epochs == 0)
        )
        every = config.checkpoint.every_steps
        stop_now, time_due = _agreed_flags(
            signals.received is not None,
            bool(save_every_s) and time.monotonic() - last_save >= save_every_s,
        )
        do_save = do_eval or (every and step % every == 0) or step == total_steps or stop_now or time_due
        if not (do_eval or do_save):
            continue
        flush_train_metrics(step)  # also checks the loss before anything is saved
        ckpt_metrics = None
        if do_eval:
            val = evaluate(eval_variables(state), "val")
            writer.write_scalars(step, _scalars(val), prefix="val")
            if progress is not None:
                progress.write(f"step {step}: val " + " ".join(f"{k} {v:.4g}" for k, v in _scalars(val).items()))
            if stopper.metric:
                name = stopper.metric.removeprefix("val/")
                if name not in val:
                    raise ValueError(
                        f"early_stopping.metric {stopper.metric!r} is not a validation metric {sorted(val)}"
                    )
                before = stopper.improvements
                stopped_early = stopper.update(val[name], step)
                ckpt_metrics = {
                    "early_stopping_rank": stopper.rank(stopper.improvements > before),
                    stopper.metric: val[name],
                }
        extra = {
            "early_stopping": dataclasses.asdict(stopper),
            "train_wall_s": previous_wall_s + time.perf_counter() - t_start,
            "stopped_early": stopped_early,
            "init_metrics": init_metrics,
        }
        manager.save(step, state, data_state=train_iter.get_state(), metrics=ckpt_metrics, extra=extra)
        writer.flush()
        last_save = time.monotonic()
        if stop_now:
            manager.wait_until_finished()
            manager.close()
            writer.close()
            raise guard.TrainingInterrupted(signals.received or signal.SIGTERM, step, workdir)
        t_mark = time.perf_counter()  # evaluation and saving are not training time
    flush_train_metrics(step)
    manager.wait_until_finished()
    wall_s = previous_wall_s + time.perf_counter() - t_start
    if progress is not None:
        progress.close()

    # ---------------------------------------------------------------- Final evaluation.
    final_step = step
    if stopper.metric and stopper.best_step is not None:
        if stopper.best_step != step:
            state = manager.restore(target, step=stopper.best_step).state
        final_step = stopper.best_step
    final_variables = eval_variables(state)
    results: dict[str, Any] = {
        "model": entry.name,
        "dataset": config.data.dataset,
        "num_params": num_params,
        "steps": step,
        "evaluated_step": final_step,
        "stopped_early": stopped_early,
        "wall_s": wall_s,
        "examples_per_s": train_examples / train_time if train_time > 0 else None,
    }
    if init_metrics is not None:
        results["init_metrics"] = init_metrics
    if "val" in evals:
        results["val_metrics"] = evaluate(final_variables, "val")
    if "test" in evals:
        results["test_metrics"] = evaluate(final_variables, "test")
        writer.write_scalars(final_step, _scalars(results["test_metrics"]), prefix="test")
    results["traces"] = dict(traces)
    results["params_digest"] = params_digest(final_variables["params"])
    if state_collections:
        results["variables_digest"] = params_digest(final_variables)
    results["process_index"] = jax.process_index()
    manager.close()
    # The evaluated variables as a preset directory: checkpoints.load_pretrained(workdir) rebuilds the model.
    model_config = {"model_name": entry.name, "overrides": model_overrides}
    checkpoints.save_variables(
        workdir / "model",
        jax.device_get(final_variables),
        config=model_config,
        metadata={"step": final_step, **results, **({"data": inputs.data_spec} if inputs.data_spec else {})},
    )
    writer.close()
    if is_main:
        (workdir / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return results
