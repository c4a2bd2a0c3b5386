"""The trainer's configuration schema: every field, its default and its meaning.

Config files in `train/configs/` start from `base_config()` and change what they need; `validate` rejects keys
the schema does not know (naming the closest ones), so a typo never silently trains the wrong thing.
"""

import copy
import difflib
import fnmatch
import json
import logging
import math
from collections.abc import Iterable
from pathlib import Path

import ml_collections

from train.optim import default_optim_config

COMPUTE_DTYPES = ("float32", "bfloat16")
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"  # the config files shipped with the package
LENGTH_FIELDS = ("total_steps", "total_epochs")  # the training length: exactly one of them is > 0

# Dotted fields that mean nothing for a task (left out of its recorded hyper-parameters, see `hparams`).
_IMAGE_AUGMENTATION = ("augment", "flip", "rrc_scale", "crop_padding", "randaugment_ops", "randaugment_magnitude")
_SERIES_DATA = ("features", "target", "freq", "timeenc", "scale")
_CLASSIFICATION_LOSS = ("label_smoothing", "mixup_alpha", "cutmix_alpha", "mix_prob", "switch_prob")
NOT_APPLICABLE = {
    "classification": (*(f"data.{k}" for k in _SERIES_DATA), "task.metrics_original_scale", "task.season_length"),
    "forecasting": (*(f"data.{k}" for k in _IMAGE_AUGMENTATION), *(f"task.{k}" for k in _CLASSIFICATION_LOSS)),
}


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model_name = "mixer_ti2_8"  # any registered name, see zoo.list_models()
    # Constructor overrides for zoo.create_model. Config files fill it with configs.common.model_fields(name):
    # every field of the model, None (= the registered default) unless set, so that any field can be changed
    # from the command line (--config.model.<field>=...); only the fields that are not None are passed on.
    c.model = ml_collections.ConfigDict()
    c.compute_dtype = "float32"  # or "bfloat16": bf16 compute, float32 parameters and optimizer state
    # Fine-tuning: start a new run from these weights (a registered release such as mixer_b16_224.goog_in21k, a
    # weights file or URL, hf-hub:org/name, or a preset or run directory). A resumed run never re-applies it.
    c.init_from = ""
    # Comma-separated regexes over variable paths ("head/.*"): re-initialised instead of loaded. "" = the head
    # when the data's class count differs from the file's.
    c.init_dont_load = ""

    c.task = t = ml_collections.ConfigDict()
    t.name = "classification"  # or "forecasting"
    t.label_smoothing = 0.0
    t.mixup_alpha = 0.0  # > 0 turns mixup on
    t.cutmix_alpha = 0.0  # > 0 turns cutmix on
    t.mix_prob = 1.0  # probability of mixing a batch when mixup/cutmix is on
    t.switch_prob = 0.5  # probability of cutmix rather than mixup when both are on
    t.metrics_original_scale = False  # forecasting: also report MSE/MAE after inverse scaling
    # Forecasting: MASE's season length m (its scale is the training split's seasonal naive MAE, |z_t - z_{t-m}|).
    # 0 = from the data's sampling frequency: hourly 24, 30-minute 48, 15-minute 96, 10-minute 144, daily 7,
    # weekly 52, monthly 12, quarterly 4, any other 1 (1 also when the training split is shorter than a season).
    t.season_length = 0

    c.data = d = ml_collections.ConfigDict()
    d.dataset = "digits"  # 'digits', 'tfds:<name>', 'folder:<path>', 'npz:<path>', 'idx:<dir>'; or ETTh1, ..., a CSV
    d.data_dir = ""  # "" = $MIXER_ZOO_DATA (forecasting) or the spec's own default
    d.train_split = "train"
    d.val_split = ""  # "" = no validation (no early stopping)
    d.test_split = "test"
    d.train_drop_remainder = False  # False: the short last batch of an epoch is padded and masked, not dropped
    d.num_threads = 2  # grain prefetch threads
    d.prefetch = 4
    # Images.
    d.augment = "rrc"  # 'rrc' (random resized crop), 'pad_crop' (small images) or 'none'
    d.flip = True
    d.rrc_scale = (0.08, 1.0)
    d.crop_padding = 4  # 'pad_crop': zero padding before the random crop
    d.randaugment_ops = 0  # > 0 turns RandAugment on
    d.randaugment_magnitude = 9.0
    # Preprocessing; empty/0 = the init_from release's, else the model's registered data config.
    d.mean = ()
    d.std = ()
    d.crop_pct = 0.0
    d.interpolation = ""
    # Forecasting (the standard protocol, see train/data/timeseries.py).
    d.features = "M"  # M, S or MS
    d.target = "OT"
    d.freq = "h"
    d.timeenc = True  # timeF features (for models with num_time_features > 0)
    d.scale = True

    c.batch_size = 128  # global, over all devices and processes
    c.eval_batch_size = 0  # 0 = batch_size
    c.total_steps = 0  # give total_steps or total_epochs
    c.total_epochs = 0.0
    c.accum_steps = 1  # gradient accumulation: micro-batches of batch_size / accum_steps
    c.optim = default_optim_config()
    c.ema_decay = 0.0  # > 0: evaluate an exponential moving average of the parameters

    c.log_every_steps = 50
    c.eval_every_steps = 0  # validation every N steps; 0 = use eval_every_epochs
    c.eval_every_epochs = 1  # validation at the end of every N-th epoch (when a val split is set)

    c.checkpoint = k = ml_collections.ConfigDict()
    k.every_steps = 0  # also save every N steps (0 = only at evaluations and at the end)
    k.max_to_keep = 3
    k.async_save = True
    # Also save when this many minutes have passed since the last save (at a step boundary), so an interruption
    # loses at most that much work whatever the config's cadence; 0 = off.
    k.every_minutes = 5.0

    c.early_stopping = e = ml_collections.ConfigDict()
    e.metric = ""  # e.g. "val/mse": track the best evaluation and test the best checkpoint at the end
    e.mode = "min"
    e.patience = 0  # stop after this many evaluations without improvement; 0 = never stop early

    c.mesh = m = ml_collections.ConfigDict()
    m.fsdp = False  # shard large parameters (and their optimizer state) over the data axis
    m.fsdp_min_size = 2**18

    c.distributed = dist = ml_collections.ConfigDict()
    dist.coordinator_address = ""  # host:port; or JAX_COORDINATOR_ADDRESS
    dist.num_processes = 0  # or JAX_NUM_PROCESSES
    dist.process_id = -1  # or JAX_PROCESS_ID
    dist.timeout_s = 120

    # On resume, the config must equal the run's config.json except for fields that cannot change the result
    # (RESUME_FREE). Comma-separated dotted fields listed here may differ too (e.g. "total_steps" to train longer);
    # config.json keeps the original and the accepted changes are appended to resumes.jsonl.
    c.resume_changes = ""

    c.quicktest = False
    return c


# Fields that may differ between a run and its resumption: they change logging, cadence or speed, not the result.
RESUME_FREE = (
    "log_every_steps",
    "checkpoint.every_steps",
    "checkpoint.every_minutes",
    "checkpoint.max_to_keep",
    "checkpoint.async_save",
    "data.num_threads",
    "data.prefetch",
    "data.data_dir",
    "eval_batch_size",
    "distributed.*",
    "init_from",
    "init_dont_load",
    "resume_changes",
    "quicktest",
    "task.season_length",  # MASE's seasonal period: a reported metric only (runs from before it existed resume)
)
# The validation metrics each task reports (early_stopping.metric must name one; vector metrics such as
# forecasting's mse_per_channel cannot rank checkpoints and are not listed).
TASK_METRICS = {
    "classification": ("loss", "accuracy", "top5"),
    "forecasting": ("mse", "mae", "mase", "smape", "mse_original", "mae_original"),
}


def _unknown_keys(config, schema, prefix="") -> list[str]:
    problems = []
    for key in config.keys():
        path = f"{prefix}{key}"
        if key not in schema:
            close = difflib.get_close_matches(key, list(schema.keys()), n=3)
            hint = f" (did you mean {', '.join(prefix + c for c in close)}?)" if close else ""
            problems.append(f"{path}{hint}")
        elif key != "model" and isinstance(schema[key], ml_collections.ConfigDict):
            if not isinstance(config[key], ml_collections.ConfigDict | dict):
                problems.append(f"{path} (must be a group of fields)")
            else:
                sub = (
                    config[key]
                    if isinstance(config[key], ml_collections.ConfigDict)
                    else ml_collections.ConfigDict(config[key])
                )
                problems += _unknown_keys(sub, schema[key], path + ".")
    return problems


def model_overrides(config) -> dict:
    """The constructor overrides `config.model` stands for: its fields that are not None."""
    return {k: v for k, v in config.model.to_dict().items() if v is not None}


def validate(config) -> ml_collections.ConfigDict:
    """A checked, unlocked copy of `config` with every schema field present (defaults filled in)."""
    if isinstance(config, dict):
        config = ml_collections.ConfigDict(config)
    schema = base_config()
    unknown = _unknown_keys(config, schema)
    if unknown:
        raise ValueError(f"unknown config key(s): {'; '.join(unknown)}")
    merged = base_config()
    merged.update(config)
    c = ml_collections.ConfigDict(merged.to_dict())  # unlocked, independent copy
    if (c.total_steps > 0) == (c.total_epochs > 0):
        raise ValueError(f"give exactly one of total_steps and total_epochs (got {c.total_steps}, {c.total_epochs})")
    if c.batch_size <= 0 or c.accum_steps <= 0 or c.batch_size % c.accum_steps:
        raise ValueError(f"batch_size {c.batch_size} must be positive and divisible by accum_steps {c.accum_steps}")
    if c.compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {c.compute_dtype!r}")
    if c.early_stopping.mode not in ("min", "max"):
        raise ValueError(f"early_stopping.mode must be 'min' or 'max', got {c.early_stopping.mode!r}")
    if c.early_stopping.metric and not c.data.val_split:
        raise ValueError(f"early_stopping.metric={c.early_stopping.metric!r} needs a validation split (data.val_split)")
    _check_ranges(c)
    return c


def _check_ranges(c) -> None:
    """Numbers a run cannot use, named before anything is built (not found at step N, or never)."""
    problems = []

    def need(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    finite = lambda v: isinstance(v, int | float) and math.isfinite(v)
    need(finite(c.optim.lr) and c.optim.lr >= 0, f"optim.lr must be a finite number >= 0, got {c.optim.lr}")
    for field in ("weight_decay", "grad_clip_norm", "eps"):
        v = c.optim[field] or 0.0
        need(finite(v) and v >= 0, f"optim.{field} must be a finite number >= 0, got {v}")
    for field in ("b1", "b2", "momentum"):
        need(
            finite(c.optim[field]) and 0 <= c.optim[field] < 1, f"optim.{field} must be in [0, 1), got {c.optim[field]}"
        )
    need(c.total_steps >= 0 and c.total_epochs >= 0, "total_steps and total_epochs must be >= 0")
    need(finite(c.total_epochs), f"total_epochs must be finite, got {c.total_epochs}")
    need(finite(c.ema_decay) and 0 <= c.ema_decay <= 1, f"ema_decay must be in [0, 1], got {c.ema_decay}")
    need(c.log_every_steps > 0, f"log_every_steps must be > 0, got {c.log_every_steps}")
    need(c.eval_every_steps >= 0, f"eval_every_steps must be >= 0 (0 = by epochs), got {c.eval_every_steps}")
    need(
        c.eval_every_steps > 0 or c.eval_every_epochs > 0,
        f"eval_every_epochs must be > 0 when eval_every_steps is 0, got {c.eval_every_epochs}",
    )
    need(c.eval_batch_size >= 0, f"eval_batch_size must be >= 0 (0 = batch_size), got {c.eval_batch_size}")
    need(c.checkpoint.every_steps >= 0, f"checkpoint.every_steps must be >= 0, got {c.checkpoint.every_steps}")
    need(c.checkpoint.max_to_keep >= 1, f"checkpoint.max_to_keep must be >= 1, got {c.checkpoint.max_to_keep}")
    minutes = c.checkpoint.every_minutes
    need(finite(minutes) and minutes >= 0, f"checkpoint.every_minutes must be >= 0 (0 = off), got {minutes}")
    need(c.early_stopping.patience >= 0, f"early_stopping.patience must be >= 0, got {c.early_stopping.patience}")
    t = c.task
    need(0 <= t.label_smoothing < 1, f"task.label_smoothing must be in [0, 1), got {t.label_smoothing}")
    need(t.mixup_alpha >= 0 and t.cutmix_alpha >= 0, "task.mixup_alpha and task.cutmix_alpha must be >= 0")
    need(0 <= t.mix_prob <= 1 and 0 <= t.switch_prob <= 1, "task.mix_prob and task.switch_prob must be in [0, 1]")
    need(
        isinstance(t.season_length, int) and not isinstance(t.season_length, bool) and t.season_length >= 0,
        f"task.season_length must be an integer >= 0 (0 = from the data's frequency), got {t.season_length!r}",
    )
    need(0 <= c.data.crop_pct <= 1, f"data.crop_pct must be in (0, 1] (0 = the model's), got {c.data.crop_pct}")
    need(c.data.num_threads >= 0 and c.data.prefetch >= 0, "data.num_threads and data.prefetch must be >= 0")
    metric = c.early_stopping.metric.removeprefix("val/")
    known = TASK_METRICS.get(c.task.name)
    if metric and known and metric not in known:
        close = difflib.get_close_matches(metric, known, n=1)
        hint = f" (did you mean val/{close[0]}?)" if close else ""
        problems.append(
            f"early_stopping.metric {c.early_stopping.metric!r} is not a {c.task.name} metric{hint}; "
            f"known: {', '.join('val/' + m for m in known)}"
        )
    if problems:
        raise ValueError("; ".join(problems))


def resume_differences(stored: dict, config) -> dict[str, tuple]:
    """`{dotted field: (stored value, new value)}` for the fields where `config` differs from a run's stored
    config.json, leaving out RESUME_FREE and the fields listed in `config.resume_changes`."""
    new = json.loads(config.to_json_best_effort())
    allowed = [f.strip() for f in config.resume_changes.split(",") if f.strip()]
    free = lambda key: any(fnmatch.fnmatchcase(key, pattern) for pattern in (*RESUME_FREE, *allowed))
    old_flat, new_flat = _dotted(stored), _dotted(new)
    return {
        key: (old_flat.get(key), new_flat.get(key))
        for key in sorted(set(old_flat) | set(new_flat))
        if old_flat.get(key) != new_flat.get(key) and not free(key)
    }


def _dotted(tree, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def prefer_command_line_length(config, overridden: Iterable[str]) -> ml_collections.ConfigDict:
    """Lets a training length given on the command line replace the config file's.

    `overridden` are the dotted fields set on the command line (ml_collections' `override_values`). When it sets
    one of total_steps / total_epochs to a positive value and not the other, the other is cleared (0), so
    `--config.total_steps=400` works on a config file that gives epochs, and config.json records the length used.
    Setting both on the command line changes nothing here (`validate` then names the conflict). Edits `config` in
    place and returns it.
    """
    given = [f for f in LENGTH_FIELDS if f in set(overridden) and config[f] > 0]
    if len(given) == 1:
        (field,) = given
        (other,) = (f for f in LENGTH_FIELDS if f != field)
        if config[other] > 0:
            message = "%s=%s from the command line replaces the config file's %s=%s"
            logging.getLogger(__name__).info(message, field, config[field], other, config[other])
            config[other] = type(config[other])(0)
    return config


def hparams(config) -> dict:
    """`config.to_dict()` without the fields that do not apply to its task: a forecasting run records no image
    augmentation or classification-loss settings (mixup, cutmix, label smoothing), a classification run no
    forecasting data fields (features, target, freq, timeenc, scale), `task.metrics_original_scale` or
    `task.season_length`.
    Tasks other than these two keep every field."""
    out = config.to_dict() if hasattr(config, "to_dict") else copy.deepcopy(dict(config))
    for dotted in NOT_APPLICABLE.get(out.get("task", {}).get("name"), ()):
        group, field = dotted.split(".")
        out.get(group, {}).pop(field, None)
    return out


def find_config_file(spec: str) -> str:
    """A `--config` value `PATH[:ARG]` with PATH found: unchanged when PATH exists (relative to the working
    directory, or absolute); else, when PATH is `NAME`, `NAME.py` or `.../train/configs/NAME.py` and NAME is a config
    shipped in the package (`train/configs/`), that file's installed path. So `--config=softs:quicktest` and the
    README's `--config=train/configs/softs.py:quicktest` work from an installed wheel outside the checkout."""
    path, colon, arg = spec.partition(":")
    given = Path(path)
    if not path or given.exists():
        return spec
    if len(given.parts) == 1 or given.parts[-3:-1] == ("train", "configs"):
        name = given.name if given.suffix == ".py" else f"{given.name}.py"
        packaged = CONFIGS_DIR / name
        if packaged.is_file() and name not in ("__init__.py", "common.py"):
            return f"{packaged}{colon}{arg}"
    return spec
