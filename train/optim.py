"""Optimizer and learning-rate schedule from `config.optim`, plus EMA of parameters.

`make_optimizer` returns `(tx, schedule)`: `tx` reads its learning rate from exactly that `schedule`, so the
trainer logs `schedule(step)`. Gradient accumulation lives in the trainer's step and EMA is the separate pure
`ema_update`; neither is part of `tx`.
"""

import math
import re

import jax
import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZERS = ("adamw", "adam", "sgd", "lamb")
SCHEDULES = ("constant", "cosine", "linear", "step", "epoch_cosine", "type1")
WD_MASKS = ("default", "all")
_NO_DECAY_NAMES = ("bias", "scale", "A_logs")  # A_logs: S6 state matrices, not decayed in Mamba


def default_optim_config() -> ml_collections.ConfigDict:
    """Every field of `config.optim` with its default."""
    c = ml_collections.ConfigDict()
    c.name = "adamw"  # One of OPTIMIZERS.
    c.lr = 1e-3  # Peak learning rate (after warmup); >= 0.
    c.b1 = 0.9  # adam/adamw/lamb first-moment decay.
    c.b2 = 0.999  # adam/adamw/lamb second-moment decay.
    c.eps = 1e-8  # adam/adamw/lamb denominator epsilon (added outside the square root, as in PyTorch).
    c.momentum = 0.9  # sgd momentum; 0 = plain sgd.
    c.nesterov = False  # sgd Nesterov momentum.
    # Decoupled (multiplied by the lr, not by the adaptive scaling) for adamw and lamb. For sgd it is L2: wd*param
    # is added to the gradient before momentum. adam requires 0 (use adamw).
    c.weight_decay = 0.0
    # "default": decay only leaves with ndim >= 2 whose name is not bias/scale (so Dense/Conv kernels and
    # embeddings; not biases, norm scales, 1-D layer-scale gammas). "all": decay every leaf.
    c.wd_mask = "default"
    c.grad_clip_norm = 0.0  # Clip gradients to this global norm before the optimizer; 0 or None = off.
    # Regex over parameter paths ("a/b/kernel"): matching parameters are frozen (no update, no weight decay, not
    # in the clipped norm), e.g. "(?!head/).*" trains only the head (a linear probe). "" = train everything.
    c.frozen = ""

    c.schedule = s = ml_collections.ConfigDict()
    s.name = "cosine"  # One of SCHEDULES; epoch = step // steps_per_epoch.
    # Linear warmup (constant/cosine/linear/step) from warmup_init_factor*lr to lr; give steps or epochs, not both.
    s.warmup_steps = 0
    s.warmup_epochs = 0.0  # Rounded to whole steps: round(warmup_epochs * steps_per_epoch).
    s.warmup_init_factor = 0.0
    s.end_lr_factor = 0.0  # cosine/linear reach end_lr_factor*lr at total_steps.
    s.decay_rate = 0.1  # step: lr * decay_rate ** (epoch // decay_epochs) after warmup.
    s.decay_epochs = 30
    # epoch_cosine: the nominal number of epochs of the cosine (TSLib `train_epochs`, which early stopping does
    # not shorten); 0 = ceil(total_steps / steps_per_epoch).
    s.epochs = 0
    return c


def _epoch(step, steps_per_epoch):
    return jnp.asarray(step) // steps_per_epoch


def _epoch_cosine(lr, steps_per_epoch, num_epochs):
    """TSLib `lradj='cosine'`: during 0-based epoch e, lr/2 * (1 + cos(pi * e / num_epochs))."""

    def schedule(step):
        e = _epoch(step, steps_per_epoch).astype(jnp.float32)
        return lr * jnp.cos(jnp.pi * e / (2 * num_epochs)) ** 2  # = lr/2 * (1 + cos(...)), stable near 0.

    return schedule


def _type1(lr, steps_per_epoch):
    """TSLib `lradj='type1'`: epochs 0 and 1 at lr, then 0-based epoch e at lr * 0.5 ** (e - 1)."""

    def schedule(step):
        e = _epoch(step, steps_per_epoch)
        return lr * 0.5 ** jnp.maximum(e - 1, 0).astype(jnp.float32)

    return schedule


def _step_decay(lr, steps_per_epoch, decay_rate, decay_epochs):
    def schedule(step):
        k = _epoch(step, steps_per_epoch) // decay_epochs
        return lr * decay_rate ** k.astype(jnp.float32)

    return schedule


def _warmup_steps(s, steps_per_epoch):
    steps, epochs = s.get("warmup_steps") or 0, s.get("warmup_epochs") or 0
    if steps and epochs:
        raise ValueError(f"Give schedule.warmup_steps ({steps}) or schedule.warmup_epochs ({epochs}), not both.")
    if steps < 0 or epochs < 0:
        raise ValueError(f"Warmup must be >= 0, got warmup_steps={steps}, warmup_epochs={epochs}.")
    return int(steps) if steps else round(epochs * steps_per_epoch)


def make_schedule(optim_cfg, *, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
    """The learning rate as a function of the (0-based) step, per `optim_cfg.schedule`."""
    s, lr = optim_cfg.schedule, optim_cfg.lr
    if lr is None or lr < 0:
        raise ValueError(f"optim.lr must be >= 0, got {lr}.")
    if total_steps <= 0 or steps_per_epoch <= 0:
        raise ValueError(f"total_steps ({total_steps}) and steps_per_epoch ({steps_per_epoch}) must be > 0.")
    if s.name not in SCHEDULES:
        raise ValueError(f"Unknown schedule {s.name!r}; valid names: {', '.join(SCHEDULES)}.")
    warmup = _warmup_steps(s, steps_per_epoch)

    if s.name in ("epoch_cosine", "type1"):
        if warmup:
            raise ValueError(f"Schedule {s.name!r} (TSLib per-epoch rule) has no warmup; set warmup to 0.")
        if s.name == "type1":
            return _type1(lr, steps_per_epoch)
        num_epochs = s.get("epochs") or math.ceil(total_steps / steps_per_epoch)
        if num_epochs <= 0:
            raise ValueError(f"schedule.epochs must be > 0, got {num_epochs}.")
        return _epoch_cosine(lr, steps_per_epoch, num_epochs)

    if warmup >= total_steps:
        raise ValueError(f"Warmup ({warmup} steps) must be shorter than training (total_steps={total_steps}).")
    end = s.end_lr_factor * lr
    decay_steps = total_steps - warmup
    if s.name == "constant":
        main = optax.schedules.constant_schedule(lr)
    elif s.name == "cosine":
        main = optax.schedules.cosine_decay_schedule(lr, decay_steps, alpha=s.end_lr_factor)
    elif s.name == "linear":
        main = optax.schedules.linear_schedule(lr, end, decay_steps)
    else:  # step: counts epochs from step 0, so the warmup epochs are part of the first decay period.
        if s.decay_epochs <= 0:
            raise ValueError(f"schedule.decay_epochs must be > 0, got {s.decay_epochs}.")
        step_fn = _step_decay(lr, steps_per_epoch, s.decay_rate, s.decay_epochs)
        main = lambda step: step_fn(step + warmup)  # join_schedules shifts the step by the boundary.
    if not warmup:
        return main
    ramp = optax.schedules.linear_schedule(s.warmup_init_factor * lr, lr, warmup)
    return optax.schedules.join_schedules([ramp, main], [warmup])


def _leaf_name(path) -> str:
    k = path[-1] if path else None
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return ""


def weight_decay_mask(params):
    """True for leaves that get weight decay: ndim >= 2 and not named bias/scale (works on abstract shapes)."""
    decay = lambda path, x: len(getattr(x, "shape", ())) >= 2 and _leaf_name(path) not in _NO_DECAY_NAMES
    return jax.tree_util.tree_map_with_path(decay, params)


def _path(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def frozen_mask(params, pattern: str):
    """True for the leaves whose path ("a/b/kernel") fully matches `pattern`; a pattern that matches no leaf, or
    every leaf, is an error (naming a few paths)."""
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"optim.frozen {pattern!r} is not a valid regex: {e}") from None
    mask = jax.tree_util.tree_map_with_path(lambda path, _: bool(regex.fullmatch(_path(path))), params)
    flags = jax.tree.leaves(mask)
    if not any(flags) or all(flags):
        paths = [_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
        what = "no parameter" if not any(flags) else "every parameter (nothing would train)"
        raise ValueError(f"optim.frozen {pattern!r} matches {what}; parameter paths look like {paths[:4]}")
    return mask


def make_optimizer(
    optim_cfg, params, *, total_steps: int, steps_per_epoch: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """`(tx, schedule)`: optional global-norm clipping, then the optimizer driven by `schedule`; parameters matching
    `optim.frozen` get zero updates."""
    c = optim_cfg
    if c.name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {c.name!r}; valid names: {', '.join(OPTIMIZERS)}.")
    wd = c.get("weight_decay") or 0.0
    if wd < 0:
        raise ValueError(f"optim.weight_decay must be >= 0, got {wd}.")
    if c.name == "adam" and wd:
        raise ValueError(f"optim.name='adam' has no weight decay (got weight_decay={wd}); use name='adamw'.")
    wd_mask = c.get("wd_mask", "default")
    if wd_mask not in WD_MASKS:
        raise ValueError(f"Unknown optim.wd_mask {wd_mask!r}; valid: {', '.join(WD_MASKS)}.")
    mask = weight_decay_mask(params) if wd_mask == "default" else None
    clip = c.get("grad_clip_norm") or 0.0
    if clip < 0:
        raise ValueError(f"optim.grad_clip_norm must be >= 0 (0 = off), got {clip}.")

    schedule = make_schedule(c, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    if c.name == "adamw":
        tx = optax.adamw(schedule, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=wd, mask=mask)
    elif c.name == "adam":
        tx = optax.adam(schedule, b1=c.b1, b2=c.b2, eps=c.eps)
    elif c.name == "lamb":
        tx = optax.lamb(schedule, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=wd, mask=mask)
    else:
        sgd = optax.sgd(schedule, momentum=c.momentum or None, nesterov=bool(c.nesterov))
        tx = optax.chain(optax.add_decayed_weights(wd, mask), sgd) if wd else sgd
    if clip:
        tx = optax.chain(optax.clip_by_global_norm(clip), tx)
    if c.get("frozen"):
        labels = jax.tree.map(lambda f: "frozen" if f else "trained", frozen_mask(params, c.frozen))
        tx = optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
    return tx, schedule


def ema_update(ema_params, params, decay: float):
    """`decay * ema + (1 - decay) * params` leaf by leaf; each leaf keeps the dtype of `ema_params`."""
    return jax.tree.map(lambda e, p: (decay * e + (1 - decay) * p).astype(e.dtype), ema_params, params)
