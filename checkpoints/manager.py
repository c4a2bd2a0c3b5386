"""The trainer's checkpoints: one small class over orbax's `CheckpointManager`, plus preset directories.

A training checkpoint is `<workdir>/<step>/` with two orbax items:
  * `state`: the training pytree (params, optimizer state, step, PRNG key data ...), via StandardSave;
  * `meta`: JSON with the metrics, the data iterator state, free-form `extra`, and one crc32 per state leaf.

Rules (each from a known orbax pitfall, see docs/toolchain.md §3):
  * Typed PRNG keys cannot be saved: store `jax.random.key_data(key)` (uint32) and rebuild the key with
    `jax.random.wrap_key_data` after restoring.
  * Always restore against a target (abstract `jax.ShapeDtypeStruct`s carrying the *current* shardings, or
    concrete arrays). The tree is compared with the checkpoint first and every difference is named.
  * Orbax restores zeroed bytes silently, so every leaf is checksummed on save and verified on restore.
"""

import contextlib
import dataclasses
import itertools
import json
import math
import os
import re
import shutil
import warnings
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

_TMP_MARK = ".orbax-checkpoint-tmp"
_ITEMS = ("state", "meta")
# What a step folder written by this library (through orbax) may hold; anything else there is the user's.
_OWN_NAMES = frozenset((*_ITEMS, "_CHECKPOINT_METADATA", "commit_success.txt"))
_VARIABLES, _LEGACY_PARAMS = "variables", "params"  # a preset's orbax item (older presets: params)
_CHECKSUMS = "checksums.json"  # a preset's per-leaf crc32, shape and dtype, verified on every load
_barrier_ids = itertools.count()


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped, cleaned up, or found unreadable."""


class CheckpointStructureError(ValueError):
    """The restore target does not have the checkpoint's tree structure or shapes."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, quota, permissions); the previous checkpoints are intact."""


class CorruptCheckpointError(OSError):
    """A checkpoint's or preset's files are damaged: data differs from the checksums recorded on save, or a file
    cannot be read (an OSError, so every command line reports it in one line)."""


@dataclasses.dataclass
class Restored:
    """What `CheckpointManager.restore` returns; `metrics`, `data_state` and `extra` are as given to `save`."""

    step: int
    state: Any
    data_state: dict | None
    metrics: dict | None
    extra: dict | None


def _leaves(tree) -> list[tuple[str, Any]]:
    """[('params/Dense_0/kernel', leaf), ...]; namedtuple fields by name, sequence items by index."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path, simple=True, separator="/"), x) for path, x in flat]


def _shape(x) -> tuple[int, ...]:
    return tuple(x.shape) if hasattr(x, "shape") else np.shape(x)


def _crc32(a: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(a).reshape(-1).view(np.uint8))


def _to_host(leaves: list[tuple[str, Any]]) -> list[np.ndarray | None]:
    """Host copies of the leaves; None for arrays spread over other processes (they are not checksummed)."""
    local = [not (isinstance(x, jax.Array) and not x.is_fully_addressable) for _, x in leaves]
    fetched = iter(jax.device_get([x for (_, x), ok in zip(leaves, local) if ok]))
    return [np.asarray(next(fetched)) if ok else None for ok in local]


def _listing(items: list[str], limit: int = 10) -> str:
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _check_structure(saved: Mapping[str, tuple], target, what: str) -> None:
    """Raises CheckpointStructureError naming every path that differs between `saved` shapes and `target`."""
    wanted = {path: _shape(x) for path, x in _leaves(target)}
    missing = sorted(wanted.keys() - saved.keys())
    unexpected = sorted(saved.keys() - wanted.keys())
    common = sorted(wanted.keys() & saved.keys())
    shapes = [f"{p} {tuple(saved[p])} != {wanted[p]}" for p in common if tuple(saved[p]) != wanted[p]]
    problems = []
    if missing:
        problems.append(f"missing in {what}: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected in {what} (not in target): {_listing(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch ({what} != target): {_listing(shapes)}")
    if problems:
        raise CheckpointStructureError(f"{what} does not match the restore target; " + "; ".join(problems))


def _check_no_prng_keys(leaves: list[tuple[str, Any]]) -> None:
    keys = [p for p, x in leaves if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)]
    if keys:
        raise TypeError(f"typed PRNG keys cannot be checkpointed ({_listing(keys)}); save jax.random.key_data(key)")


def _mismatched(leaves: list[tuple[str, Any]], recorded: Mapping[str, dict]) -> list[str]:
    """Paths of leaves whose crc32 differs from the one recorded on save (leaves restored into another dtype, or
    not held by this process, are not checked)."""
    return [
        p
        for (p, _), a in zip(leaves, _to_host(leaves))
        if a is not None
        and recorded.get(p, {}).get("crc32") is not None
        and str(a.dtype) == recorded[p]["dtype"]
        and _crc32(a) != recorded[p]["crc32"]
    ]


def _reason(error: Exception) -> str:
    """The operating system's words from a tensorstore write error ("No space left on device (errno 28)"), else
    the error's first line."""
    text = str(error).strip()
    found = re.search(r"([A-Za-z][A-Za-z ]*?) \[os_error_code=\W*(\d+)", text)
    if found:
        return f"{found[1].strip()} (errno {found[2]})"
    return text.splitlines()[0][:400] if text else type(error).__name__


def _check_writable(directory: Path) -> None:
    """Fails at once, with the path, where orbax would otherwise hang or fail on a background thread."""
    existing = next((p for p in (directory, *directory.parents) if p.exists()), None)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"checkpoint folder {directory} is a file; move it away or use another workdir")
    if existing is not None and existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write checkpoints to {directory}: {existing} is not writable")


def _clean_directory(directory: Path) -> None:
    """Removes leftovers of interrupted saves: `<step>.orbax-checkpoint-tmp*` and step dirs missing an item."""
    if jax.process_index() == 0 and directory.is_dir():
        for path in sorted(directory.iterdir()):
            if _TMP_MARK in path.name:
                reason = "leftover temporary checkpoint folder from an interrupted save"
            elif path.is_dir() and path.name.isdigit() and not all((path / item).is_dir() for item in _ITEMS):
                foreign = sorted(p.name for p in path.iterdir() if p.name not in _OWN_NAMES)
                if foreign:  # not something this library wrote: never deleted
                    warnings.warn(
                        f"{path} is not a checkpoint (it holds {foreign[:3]}); left in place, not used",
                        CheckpointWarning,
                        stacklevel=3,
                    )
                    continue
                reason = f"incomplete checkpoint step (no {' / '.join(_ITEMS)} data)"
            else:
                continue
            warnings.warn(f"removing {path}: {reason}", CheckpointWarning, stacklevel=3)
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    # Other processes must not list the steps before process 0 has cleaned them.
    ocp.multihost.sync_global_processes(f"mixer_zoo_checkpoint_cleanup_{next(_barrier_ids)}")


class CheckpointManager:
    """Saves and resumes training checkpoints in one directory.

    Retention: the newest `max_to_keep` steps (None keeps all) plus the best step by `best_metric` (`best_mode`
    "min" or "max"), which is never pruned. Pruning happens in orbax's background thread after each save.

    Validity: a step counts only once its save has committed (orbax's atomic rename) and both items exist.
    Leftover tmp folders and step folders missing an item are removed with a warning on construction. A step
    whose data cannot be read or fails its checksum is skipped (with a warning) when restoring the latest.

    Integrity: `save` records a crc32 per leaf, computed on host from the arrays being saved, and `restore`
    recomputes it on the restored values. Leaves restored into another dtype, and arrays this process does not
    fully hold (multi-process sharding), are not verified. Cost: one extra device-to-host copy plus crc32 (~4 GB/s)
    and an isfinite scan in the blocking part of `save` (measured: 256 MB state, `save` blocks ~0.1-0.15 s
    instead of ~15 ms), and the same copy plus crc32 on restore.
    """

    def __init__(
        self,
        directory,
        *,
        max_to_keep: int | None = 3,
        best_metric: str | None = None,
        best_mode: str = "min",
        async_save: bool = True,
    ):
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}")
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep must be None or >= 1, got {max_to_keep}")
        self.directory = Path(directory).absolute()
        self.best_metric = best_metric
        _check_writable(self.directory)
        _clean_directory(self.directory)
        keep = [policies.LatestN(max_to_keep)]
        best_fn = None
        if best_metric is not None:
            best_fn = lambda metrics: metrics[best_metric]
            # BestN sorts ascending and keeps the tail, so "min" needs reverse=True (as orbax does).
            keep.append(
                policies.BestN(
                    get_metric_fn=best_fn, reverse=best_mode == "min", n=1, keep_checkpoints_without_metrics=False
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(keep),
            best_fn=best_fn,
            best_mode=best_mode,
            enable_async_checkpointing=async_save,
        )
        self._mngr = ocp.CheckpointManager(self.directory, options=options)
        self._bad: set[int] = set()  # steps found unreadable or corrupt in this session
        self._pending: int | None = None  # step of the last save, possibly still being written

    def save(
        self,
        step: int,
        state,
        *,
        data_state: dict | None = None,
        metrics: Mapping[str, float] | None = None,
        extra: dict | None = None,
    ) -> bool:
        """Starts saving `state` at `step` (in the background if async) and returns whether it did.

        `state` is a pytree of arrays without typed PRNG keys; `data_state`, `metrics` and `extra` must be
        JSON-serialisable. A state or metric that is not finite is not saved (warning, returns False), so a
        diverged run never replaces good checkpoints. Existing steps >= `step` (an abandoned continuation, e.g.
        after resuming from an older step) are deleted first, with a warning.
        """
        step = int(step)
        metrics = {k: float(v) for k, v in (metrics or {}).items()}
        leaves = _leaves(state)
        _check_no_prng_keys(leaves)
        host = _to_host(leaves)
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        bad += [
            p
            for (p, _), a in zip(leaves, host)
            if a is not None and jnp.issubdtype(a.dtype, jnp.inexact) and not np.isfinite(a).all()
        ]
        if bad:
            warnings.warn(
                f"not saving step {step}: non-finite values in {_listing(bad)}", CheckpointWarning, stacklevel=2
            )
            return False
        meta = {
            "step": step,
            "metrics": metrics,
            "data_state": data_state,
            "extra": extra,
            "leaves": {
                p: {
                    "shape": list(_shape(x)),
                    "dtype": None if a is None else str(a.dtype),
                    "crc32": None if a is None else _crc32(a),
                }
                for (p, x), a in zip(leaves, host)
            },
        }
        json.dumps(meta)  # fail here, not in orbax's background thread
        self.wait_until_finished()
        self._check_space(step, sum(a.nbytes for a in host if a is not None))
        stale = [s for s in self._mngr.all_steps() if s >= step]
        if stale:
            warnings.warn(
                f"deleting checkpoints at steps {stale} in {self.directory} before saving step {step}",
                CheckpointWarning,
                stacklevel=2,
            )
            for s in stale:
                self._mngr.delete(s)
                self._bad.discard(s)
        tracked = None
        if self.best_metric is not None and self.best_metric in metrics:
            tracked = {self.best_metric: metrics[self.best_metric]}
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        self._pending = step
        with self._writing(step):
            return bool(self._mngr.save(step, args=args, metrics=tracked, force=True))

    def _check_space(self, step: int, nbytes: int) -> None:
        """Refuses a save that cannot fit on the disk before anything of it is written."""
        free = shutil.disk_usage(next(p for p in (self.directory, *self.directory.parents) if p.exists())).free
        if free < 1.1 * nbytes + (16 << 20):
            raise CheckpointWriteError(
                f"not enough disk space to save checkpoint step {step} in {self.directory}: it needs about "
                f"{nbytes / 2**20:.0f} MiB, {free / 2**20:.0f} MiB are free. {self._intact()}"
            )

    def _intact(self) -> str:
        last = [s for s in self._mngr.all_steps() if s not in self._bad and s != self._pending]
        where = f"the last complete checkpoint (step {last[-1]}) is intact" if last else "no earlier checkpoint exists"
        return f"Nothing was overwritten: {where}. Free space and rerun the same command to resume."

    @contextlib.contextmanager
    def _writing(self, step: int | None):
        """Orbax's write failures (raised from its background threads, often several times over) as one error."""
        try:
            yield
        except CheckpointWriteError:
            raise
        except Exception as e:  # orbax raises ValueError / OSError / RuntimeError from tensorstore
            what = f"checkpoint step {step}" if step is not None else "a checkpoint"
            message = f"could not write {what} to {self.directory}: {_reason(e)}. {self._intact()}"
            raise CheckpointWriteError(message) from e

    def all_steps(self) -> list[int]:
        """Committed steps, oldest first, without those found unreadable in this session."""
        in_flight = self._pending if self._mngr.is_saving_in_progress() else None
        return [s for s in self._mngr.all_steps() if s not in self._bad and s != in_flight]

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def best_step(self) -> int | None:
        """The kept step with the best `best_metric`; None without a best metric or such a step."""
        if self.best_metric is None:
            return None
        best = self._mngr.best_step()
        return best if best in self.all_steps() else None

    def restore(self, target, step: int | None = None, check: Callable[[Restored], None] | None = None) -> Restored:
        """Restores `step` (None: the newest one that reads back intact) into `target`'s structure.

        `target` is a pytree of `jax.ShapeDtypeStruct`s (with `.sharding`) or of arrays; values come back with
        its dtypes and shardings, and namedtuples stay namedtuples. `check(restored)` may raise (e.g. ValueError)
        to reject a step whose contents disagree with each other; like an unreadable step, it is then skipped
        with a warning. Raises CheckpointStructureError when the trees differ, CorruptCheckpointError when an
        explicit `step` fails its checksum, FileNotFoundError when there is nothing to restore.
        """
        check = check or (lambda restored: None)
        self.wait_until_finished()
        if step is not None:
            if step not in self._mngr.all_steps():
                raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}")
            restored = self._restore(step, target)
            check(restored)
            return restored
        steps = self.all_steps()
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        error = None
        for s in reversed(steps):
            try:
                restored = self._restore(s, target)
                check(restored)
                return restored
            except CheckpointStructureError:
                raise
            except Exception as e:  # any read failure means: try the previous step
                error = e
                self._bad.add(s)
                message = str(e).splitlines()[0][:300] if str(e) else ""
                warnings.warn(
                    f"skipping checkpoint step {s} in {self.directory}: {type(e).__name__}: {message}",
                    CheckpointWarning,
                    stacklevel=2,
                )
        raise FileNotFoundError(f"no readable checkpoint in {self.directory} (tried steps {steps})") from error

    def _restore(self, step: int, target) -> Restored:
        meta = self._mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        saved = meta["leaves"]
        _check_structure({p: v["shape"] for p, v in saved.items()}, target, f"checkpoint step {step}")
        args = ocp.args.Composite(state=ocp.args.StandardRestore(target))
        state = self._mngr.restore(step, args=args).state
        corrupt = _mismatched(_leaves(state), saved)
        if corrupt:
            raise CorruptCheckpointError(f"checksum mismatch in checkpoint step {step}: {_listing(corrupt)}")
        return Restored(step, state, meta.get("data_state"), meta.get("metrics"), meta.get("extra"))

    def wait_until_finished(self) -> None:
        """Waits for a save in flight; raises CheckpointWriteError if it failed."""
        with self._writing(self._pending):
            self._mngr.wait_until_finished()

    def close(self) -> None:
        """Waits for a save in flight, then releases orbax's resources."""
        try:
            self.wait_until_finished()
        finally:
            self._mngr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _pure_dict(tree, path: str = "") -> dict:
    """A copy of a nested string-keyed mapping as plain dicts; raises naming the first other container or key."""
    if not isinstance(tree, Mapping):
        raise TypeError(f"variables must be nested string-keyed dicts, found {type(tree).__name__} at {path or '/'}")
    out = {}
    for key, value in tree.items():
        if not isinstance(key, str):
            raise TypeError(f"keys must be strings, found {key!r} at {path or '/'}")
        sub = f"{path}/{key}" if path else key
        if isinstance(value, Mapping):
            out[key] = _pure_dict(value, sub)
        elif isinstance(value, (list, tuple)) or value is None:
            raise TypeError(f"variables must be nested string-keyed dicts, found {type(value).__name__} at {sub}")
        else:
            out[key] = value
    return out


def save_variables(directory, variables, *, config: dict, metadata: dict | None = None) -> None:
    """Writes a preset directory: `variables/` (orbax), `checksums.json` (a crc32 per array, verified by every
    load), `metadata.json`, then `config.json` last.

    `config` is what rebuilds the model (the registered model name plus constructor overrides); `variables` the
    model's collections, `{"params": ..., "batch_stats": ...}`, as nested string-keyed dicts of arrays (a
    FrozenDict is fine). An existing preset there is overwritten.
    """
    directory = Path(directory).absolute()
    variables = _pure_dict(variables)
    if "params" not in variables:
        raise ValueError(f"variables must hold a 'params' collection, got collections {sorted(variables)}")
    _check_no_prng_keys(_leaves(variables))
    config_text = json.dumps(config, indent=2, sort_keys=True)
    metadata_text = json.dumps(metadata or {}, indent=2, sort_keys=True)
    leaves = _leaves(variables)
    checksums = {
        path: {"shape": list(_shape(x)), "dtype": str(x.dtype), "crc32": _crc32(a)}
        for (path, x), a in zip(leaves, _to_host(leaves))
        if a is not None
    }
    directory.mkdir(parents=True, exist_ok=True)
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(directory / _VARIABLES, variables, force=True)
    except Exception as e:  # disk full, quota: one error naming the preset
        raise CheckpointWriteError(f"could not write the preset {directory}: {_reason(e)}") from e
    if jax.process_index() == 0:
        (directory / _CHECKSUMS).write_text(json.dumps(checksums, indent=1, sort_keys=True))
        (directory / "metadata.json").write_text(metadata_text)
        (directory / "config.json").write_text(config_text)


def save_params(directory, params, *, config: dict, metadata: dict | None = None) -> None:
    """`save_variables` for a model with no state: `variables = {"params": params}`."""
    save_variables(directory, {"params": params}, config=config, metadata=metadata)


def is_preset(directory) -> bool:
    """Whether `directory` holds a preset (`config.json` and `variables/`, or an older preset's `params/`)."""
    directory = Path(directory)
    return (directory / "config.json").is_file() and any((directory / n).is_dir() for n in (_VARIABLES, _LEGACY_PARAMS))


def load_variables(directory, target=None) -> tuple[dict, dict, dict]:
    """Reads a preset directory written by `save_variables`: returns (variables, config, metadata).

    Without `target` the variables come back as numpy arrays; with one (arrays or `jax.ShapeDtypeStruct`s with
    shardings, every collection) they take its dtypes and shardings, after a strict structure check. A preset of
    an older version (a `params/` item) reads as `{"params": ...}`. Raises CorruptCheckpointError, naming the
    directory, when its files are damaged: an array differs from its checksum or a file cannot be read.
    """
    directory = Path(directory).absolute()
    item = _VARIABLES if (directory / _VARIABLES).exists() else _LEGACY_PARAMS
    for name in ("config.json", "metadata.json", item):
        if not (directory / name).exists():
            raise FileNotFoundError(
                f"{directory / name} not found (a preset directory holds config.json, metadata.json and variables/)"
            )
    config, metadata, checksums = (_read_json(directory / n) for n in ("config.json", "metadata.json", _CHECKSUMS))
    wrap = (lambda tree: {"params": tree}) if item == _LEGACY_PARAMS else (lambda tree: tree)
    try:
        with ocp.PyTreeCheckpointer() as checkpointer:
            stored = wrap(checkpointer.metadata(directory / item).item_metadata.tree)
        if target is None:
            restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), stored)
            if item == _LEGACY_PARAMS:
                restore_args = restore_args["params"]
            with ocp.PyTreeCheckpointer() as checkpointer:
                args = ocp.args.PyTreeRestore(restore_args=restore_args)
                tree = wrap(checkpointer.restore(directory / item, args=args))
        else:
            _check_structure({p: m.shape for p, m in _leaves(stored)}, target, f"preset {directory}")
            inner = target["params"] if item == _LEGACY_PARAMS else target
            with ocp.StandardCheckpointer() as checkpointer:
                tree = wrap(checkpointer.restore(directory / item, inner))
    except CheckpointStructureError:
        raise
    except Exception as e:  # tensorstore / orbax read errors of a damaged or half-deleted preset
        raise CorruptCheckpointError(f"preset {directory} is damaged or incomplete: {_reason(e)}") from None
    if checksums is not None:
        _verify_preset(directory, tree, checksums)
    return tree, config, metadata


def _read_json(path: Path):
    """A preset's JSON file (None when absent: presets written before checksums existed have none)."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptCheckpointError(f"{path} is damaged: it does not parse as JSON ({e})") from None


def _verify_preset(directory: Path, tree, checksums: dict) -> None:
    """Raises CorruptCheckpointError naming every leaf whose data differs from the checksums written on save."""
    leaves = _leaves(tree)
    missing = sorted(checksums.keys() - {p for p, _ in leaves})
    corrupt = _mismatched(leaves, checksums)
    if missing or corrupt:
        problems = [f"checksum mismatch in {_listing(corrupt)}"] if corrupt else []
        problems += [f"missing {_listing(missing)}"] if missing else []
        raise CorruptCheckpointError(
            f"preset {directory} is damaged: {'; '.join(problems)} (its files changed since it was saved; "
            "re-export or re-download it)"
        )


def load_params(directory, target=None) -> tuple[dict, dict, dict]:
    """`load_variables` for the `params` collection alone: returns (params, config, metadata); `target` is a
    params tree."""
    variables, config, metadata = load_variables(directory, None if target is None else {"params": target})
    return variables["params"], config, metadata
