"""The orbax wrapper: round trips, retention, cleanup of interrupted saves, integrity, strict structure, presets."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from checkpoints.manager import (
    CheckpointManager,
    CheckpointStructureError,
    CheckpointWarning,
    CheckpointWriteError,
    CorruptCheckpointError,
    is_preset,
    load_params,
    load_variables,
    save_params,
    save_variables,
)

REPO = Path(__file__).resolve().parents[1]


def make_state(seed: int = 0, scale: float = 1.0):
    key = jax.random.key(seed)
    params = nn.Dense(8).init(key, jnp.ones((1, 16)))["params"]
    params = jax.tree.map(lambda x: x + scale * jax.random.normal(key, x.shape), params)
    opt_state = optax.adam(1e-3).init(params)
    opt_state = jax.tree.map(lambda x: x + scale if jnp.issubdtype(x.dtype, jnp.floating) else x, opt_state)
    return {
        "params": params,
        "opt_state": opt_state,
        "step": jnp.asarray(7 * seed + 1, jnp.int32),
        "rng": jax.random.key_data(jax.random.fold_in(key, seed)),
    }


def abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def assert_tree_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_with_optax_state_and_key_data(tmp_path):
    state = make_state(1)
    with CheckpointManager(tmp_path, async_save=False) as mngr:
        assert mngr.latest_step() is None
        assert mngr.save(
            10, state, data_state={"next_index": 7}, metrics={"loss": np.float32(0.5)}, extra={"config": "x"}
        )
        assert mngr.all_steps() == [10]
        r = mngr.restore(abstract(state))
    assert r.step == 10
    assert r.data_state == {"next_index": 7} and r.metrics == {"loss": 0.5} and r.extra == {"config": "x"}
    assert_tree_equal(r.state, state)
    assert isinstance(r.state["opt_state"][0], optax.ScaleByAdamState)
    key = jax.random.wrap_key_data(r.state["rng"])
    expected = jax.random.fold_in(jax.random.key(1), 1)
    np.testing.assert_array_equal(jax.random.uniform(key, (4,)), jax.random.uniform(expected, (4,)))

    # A concrete target works too, and the target's dtype wins.
    target = dict(state, params=jax.tree.map(lambda x: x.astype(jnp.bfloat16), state["params"]))
    with CheckpointManager(tmp_path) as mngr:
        r = mngr.restore(target)
    assert r.state["params"]["kernel"].dtype == jnp.bfloat16
    np.testing.assert_allclose(r.state["params"]["kernel"], state["params"]["kernel"], rtol=1e-2)

    with CheckpointManager(tmp_path / "keys") as mngr, pytest.raises(TypeError, match="key_data"):
        mngr.save(1, {"rng": jax.random.key(0)})


def test_async_save_then_restore(tmp_path):
    states = {s: make_state(s) for s in (1, 2)}
    with CheckpointManager(tmp_path, async_save=True) as mngr:
        mngr.save(1, states[1])
        mngr.wait_until_finished()
        assert mngr.all_steps() == [1]
        mngr.save(2, states[2], data_state={"next_index": 2})
        r = mngr.restore(abstract(states[2]))  # waits for the save in flight
        assert r.step == 2
        assert_tree_equal(r.state, states[2])
        mngr.save(3, states[1])  # closing must finish this one
    with CheckpointManager(tmp_path) as mngr:
        assert mngr.all_steps() == [1, 2, 3]
        assert_tree_equal(mngr.restore(abstract(states[1])).state, states[1])


@pytest.mark.parametrize("mode", ["min", "max"])
def test_retention_keeps_last_k_and_best(tmp_path, mode):
    losses = [5.0, 1.0, 3.0, 4.0, 2.0, 6.0]
    values = losses if mode == "min" else [-v for v in losses]
    state = {"w": jnp.ones(4)}
    with CheckpointManager(tmp_path, max_to_keep=2, best_metric="loss", best_mode=mode) as mngr:
        for step, value in enumerate(values, start=1):
            mngr.save(step, state, metrics={"loss": value, "other": 0.0})
        mngr.wait_until_finished()
        assert mngr.all_steps() == [2, 5, 6]
        assert mngr.best_step() == 2
        # A diverged step is not saved: the good checkpoints stay as they are.
        with pytest.warns(CheckpointWarning, match="non-finite"):
            assert not mngr.save(7, state, metrics={"loss": float("nan")})
        with pytest.warns(CheckpointWarning, match="non-finite values in w"):
            assert not mngr.save(7, {"w": jnp.array([1.0, jnp.inf, 0.0, 0.0])}, metrics={"loss": 0.0})
        assert mngr.all_steps() == [2, 5, 6]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2", "5", "6"]
    with CheckpointManager(tmp_path, max_to_keep=2, best_metric="loss", best_mode=mode) as mngr:
        assert mngr.best_step() == 2 and mngr.latest_step() == 6


def test_leftover_tmp_and_empty_step_are_cleaned(tmp_path):
    state = make_state(0)
    with CheckpointManager(tmp_path) as mngr:
        mngr.save(1, state)
        mngr.save(2, state)
    (tmp_path / "3.orbax-checkpoint-tmp-1234" / "state").mkdir(parents=True)
    (tmp_path / "4").mkdir()
    (tmp_path / "5" / "state").mkdir(parents=True)
    with pytest.warns(CheckpointWarning) as record:
        mngr = CheckpointManager(tmp_path)
    messages = " | ".join(str(w.message) for w in record)
    assert "3.orbax-checkpoint-tmp-1234" in messages and "temporary" in messages
    assert f"{tmp_path / '4'}:" in messages and f"{tmp_path / '5'}:" in messages
    with mngr:
        assert mngr.all_steps() == [1, 2] and mngr.latest_step() == 2
        assert mngr.restore(abstract(state)).step == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]


def _zero_middle_of_largest_file(step_dir: Path, item: str = "state") -> None:
    files = [p for p in (step_dir / item).rglob("*") if p.is_file() and p.parent.name == "d"]
    target = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(target.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(64)
    target.write_bytes(bytes(data))


def test_corrupted_bytes_fall_back_to_previous_step(tmp_path):
    # Random bits: tensorstore zstd-compresses chunks, and only incompressible data is stored raw, where zeroed
    # bytes go unnoticed by the decoder (compressed blocks would fail loudly, which also falls back).
    noise = jax.random.bits(jax.random.key(0), (128, 128), jnp.uint32)
    big = lambda v: {"w": noise + int(v), "b": jnp.arange(8.0) * v}
    with CheckpointManager(tmp_path) as mngr:
        mngr.save(1, big(1.0), data_state={"next_index": 1})
        mngr.save(2, big(2.0), data_state={"next_index": 2})
    _zero_middle_of_largest_file(tmp_path / "2")
    with CheckpointManager(tmp_path) as mngr:
        with pytest.warns(CheckpointWarning, match=r"step 2 .*checksum mismatch.*w"):
            r = mngr.restore(abstract(big(0.0)))
        assert r.step == 1 and r.data_state == {"next_index": 1}
        assert_tree_equal(r.state, big(1.0))
        assert mngr.latest_step() == 1
        with pytest.raises(CorruptCheckpointError, match="step 2"):
            mngr.restore(abstract(big(0.0)), step=2)
        # Resuming from step 1 and saving step 2 again replaces the corrupt step.
        with pytest.warns(CheckpointWarning, match=r"deleting checkpoints at steps \[2\]"):
            mngr.save(2, big(3.0))
        assert_tree_equal(mngr.restore(abstract(big(0.0))).state, big(3.0))


def test_unreadable_step_falls_back(tmp_path):
    state = {"w": jnp.ones(3)}
    with CheckpointManager(tmp_path) as mngr:
        mngr.save(1, state)
        mngr.save(2, state)
    (tmp_path / "2" / "meta" / "metadata").unlink()
    with CheckpointManager(tmp_path) as mngr:
        with pytest.warns(CheckpointWarning, match="skipping checkpoint step 2"):
            assert mngr.restore(abstract(state)).step == 1
    (tmp_path / "1" / "meta" / "metadata").unlink()
    with CheckpointManager(tmp_path) as mngr, pytest.warns(CheckpointWarning), pytest.raises(FileNotFoundError):
        mngr.restore(abstract(state))


def test_structure_mismatch_names_paths(tmp_path):
    state = make_state(0)
    with CheckpointManager(tmp_path) as mngr:
        mngr.save(1, state)
    target = abstract(state)
    target["params"]["extra"] = jax.ShapeDtypeStruct((3,), jnp.float32)
    del target["rng"]
    target["params"]["kernel"] = jax.ShapeDtypeStruct((16, 4), jnp.float32)
    with CheckpointManager(tmp_path) as mngr, warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)  # raised at once, not treated as an unreadable step
        with pytest.raises(CheckpointStructureError) as err:
            mngr.restore(target)
    message = str(err.value)
    assert "missing in checkpoint step 1: params/extra" in message
    assert "unexpected in checkpoint step 1 (not in target): rng" in message
    assert "params/kernel (16, 8) != (16, 4)" in message
    assert "opt_state/0/mu/kernel" not in message


KILL_SCRIPT = """
import os, signal, sys
import jax.numpy as jnp
from orbax.checkpoint._src.path import atomicity
from checkpoints.manager import CheckpointManager

# The kill lands inside step 2's save by construction: orbax has written every array of step 2 into its
# temporary folder and is about to commit it (rename to its final name) in the background thread.
def finalize_then_die(original):
    async def finalize(self, *args, **kwargs):
        if self.get_final().name == "2":
            print("killed while committing", self.get().name, sorted(os.listdir(self.get())), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return await original(self, *args, **kwargs)
    return finalize

for cls in (atomicity.AtomicRenameTemporaryPath, atomicity.CommitFileTemporaryPath):
    cls.finalize = finalize_then_die(cls.finalize)

mngr = CheckpointManager(sys.argv[1], async_save=True)
state = lambda v: {f"w{i}": jnp.full((256, 256), v + i, jnp.float32) for i in range(8)}
mngr.save(1, state(1.0))
mngr.wait_until_finished()
mngr.save(2, state(2.0))
mngr.wait_until_finished()
print("step 2 was committed: the kill never happened", flush=True)
"""


def test_kill_during_async_save_keeps_previous_checkpoint(tmp_path):
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(script), str(workdir)], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert proc.returncode == -9, proc.stdout + proc.stderr[-2000:]
    assert "killed while committing" in proc.stdout and "'state'" in proc.stdout  # step 2's data was written
    leftovers = [p.name for p in workdir.iterdir() if p.name != "1"]
    assert leftovers and all(name.startswith("2.") and "tmp" in name for name in leftovers), leftovers
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        mngr = CheckpointManager(workdir)
    assert any("temporary" in str(w.message) and leftovers[0] in str(w.message) for w in record)
    with mngr:
        assert mngr.all_steps() == [1]
        target = {f"w{i}": jax.ShapeDtypeStruct((256, 256), jnp.float32) for i in range(8)}
        r = mngr.restore(target)
    assert r.step == 1
    for i in range(8):
        np.testing.assert_array_equal(r.state[f"w{i}"], np.full((256, 256), 1 + i, np.float32))
    assert sorted(p.name for p in workdir.iterdir()) == ["1"]


MULTI_DEVICE_SCRIPT = """
import sys
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from checkpoints.manager import CheckpointManager, load_params, save_params

assert jax.device_count() == 4, jax.devices()
mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
state = {"params": {"w": jnp.arange(32.0).reshape(8, 4), "b": jnp.ones(4)}, "step": jnp.asarray(3)}
with CheckpointManager(sys.argv[1] + "/run") as mngr:  # saved from single-device arrays
    mngr.save(3, state)
replicated, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
target = {
    "params": {"w": jax.ShapeDtypeStruct((8, 4), jnp.bfloat16, sharding=rows),
               "b": jax.ShapeDtypeStruct((4,), jnp.float32, sharding=replicated)},
    "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated),
}
with CheckpointManager(sys.argv[1] + "/run") as mngr:
    r = mngr.restore(target)
for got, want in zip(jax.tree.leaves(r.state), jax.tree.leaves(target)):
    assert got.sharding == want.sharding and got.dtype == want.dtype, (got.sharding, got.dtype)
np.testing.assert_array_equal(np.asarray(r.state["params"]["w"], np.float32), np.arange(32.0).reshape(8, 4))
assert int(r.state["step"]) == 3
# Saving replicated arrays and restoring them again (checksums are computed from the replicas).
with CheckpointManager(sys.argv[1] + "/run") as mngr:
    mngr.save(4, r.state)
    again = mngr.restore(target)
assert again.step == 4 and again.state["params"]["b"].sharding == replicated
save_params(sys.argv[1] + "/preset", r.state["params"], config={"model": "m"})
params, _, _ = load_params(sys.argv[1] + "/preset", target["params"])
assert params["w"].sharding == rows
print("OK")
"""


def test_restore_into_replicated_sharding_on_four_devices(tmp_path):
    script = tmp_path / "multi.py"
    script.write_text(MULTI_DEVICE_SCRIPT)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=REPO, env=env
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


def test_save_and_load_params_preset(tmp_path):
    params = nn.Dense(8).init(jax.random.key(0), jnp.ones((1, 16)))["params"]
    params = {"Dense_0": dict(params), "scale": jnp.ones(3, jnp.bfloat16)}
    config = {"model": "mixer_s16_224", "num_classes": 10}
    save_params(tmp_path / "preset", params, config=config, metadata={"source": "test"})
    listing = sorted(p.name for p in (tmp_path / "preset").iterdir())
    assert listing == ["checksums.json", "config.json", "metadata.json", "variables"]
    assert json.loads((tmp_path / "preset" / "config.json").read_text()) == config

    loaded, cfg, meta = load_params(tmp_path / "preset")
    assert cfg == config and meta == {"source": "test"}
    assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(loaded))
    assert_tree_equal(loaded, jax.tree.map(np.asarray, params))

    loaded, _, _ = load_params(tmp_path / "preset", abstract(params))
    assert_tree_equal(loaded, params)
    wrong = abstract(params)
    wrong["head"] = jax.ShapeDtypeStruct((2,), jnp.float32)
    with pytest.raises(CheckpointStructureError, match=r"missing in preset .*: params/head"):
        load_params(tmp_path / "preset", wrong)

    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_params(tmp_path / "nowhere")
    (tmp_path / "preset" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_params(tmp_path / "preset")
    with pytest.raises(TypeError, match="keys must be strings"):
        save_params(tmp_path / "bad", {"a": {0: jnp.ones(2)}}, config={})
    with pytest.raises(TypeError, match="list at params/a"):
        save_params(tmp_path / "bad", {"a": [jnp.ones(2)]}, config={})


def test_damaged_presets_are_refused_naming_the_file(tmp_path):
    """Flipped bytes in a preset's data load silently through orbax; the checksums written on save catch them,
    with or without a restore target. An unreadable or half-deleted preset is the same one clear error."""
    noise = jax.random.bits(jax.random.key(1), (128, 128), jnp.uint32)  # incompressible: stored raw
    variables = {"params": {"w": noise, "b": jnp.arange(8.0)}, "batch_stats": {"mean": jnp.ones(4)}}
    save_variables(tmp_path / "preset", variables, config={"model_name": "m"})
    assert_tree_equal(load_variables(tmp_path / "preset")[0], jax.tree.map(np.asarray, variables))
    _zero_middle_of_largest_file(tmp_path / "preset", "variables")
    for target in (None, abstract(variables)):
        with pytest.raises(CorruptCheckpointError, match=r"preset .*preset is damaged: checksum mismatch in params/w"):
            load_variables(tmp_path / "preset", target)

    (tmp_path / "preset" / "checksums.json").write_text("{not json")
    with pytest.raises(CorruptCheckpointError, match=r"checksums\.json is damaged: it does not parse"):
        load_variables(tmp_path / "preset")
    save_variables(tmp_path / "half", variables, config={"model_name": "m"})
    for path in (tmp_path / "half" / "variables").rglob("*"):
        if path.is_file() and path.stat().st_size > 10_000:
            path.unlink()
    with pytest.raises(CorruptCheckpointError, match=r"half is damaged or incomplete"):
        load_variables(tmp_path / "half")


def test_preset_variables_keep_every_collection(tmp_path):
    """BatchNorm state travels with the parameters; an older preset (a `params/` item) still loads."""
    variables = {
        "params": {"conv": {"kernel": jnp.arange(6.0).reshape(2, 3)}},
        "batch_stats": {"bn": {"mean": jnp.asarray([0.5, -1.0]), "var": jnp.asarray([2.0, 3.0])}},
    }
    save_variables(tmp_path / "preset", variables, config={"model_name": "m"}, metadata={"step": 7})
    loaded, config, metadata = load_variables(tmp_path / "preset")
    assert config == {"model_name": "m"} and metadata == {"step": 7}
    assert_tree_equal(loaded, jax.tree.map(np.asarray, variables))
    restored, _, _ = load_variables(tmp_path / "preset", abstract(variables))
    assert_tree_equal(restored, variables)
    wrong = abstract(variables)
    del wrong["batch_stats"]
    with pytest.raises(CheckpointStructureError, match=r"unexpected in preset .*batch_stats/bn/mean"):
        load_variables(tmp_path / "preset", wrong)
    with pytest.raises(ValueError, match="'params' collection"):
        save_variables(tmp_path / "bad", {"batch_stats": variables["batch_stats"]}, config={})

    # A preset written before model state existed: config.json, metadata.json and params/ (orbax).
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(legacy / "params", variables["params"])
    (legacy / "config.json").write_text('{"model_name": "m"}')
    (legacy / "metadata.json").write_text("{}")
    assert is_preset(legacy)
    old, _, _ = load_variables(legacy)
    assert_tree_equal(old, {"params": jax.tree.map(np.asarray, variables["params"])})
    old, _, _ = load_variables(legacy, abstract({"params": variables["params"]}))
    assert_tree_equal(old, {"params": variables["params"]})


def _small_file_limit(nbytes: int):
    """Writes beyond `nbytes` per file fail with EFBIG, as on a full disk (SIGXFSZ ignored so the write errors)."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def test_a_failed_write_is_one_error_and_the_previous_step_survives(tmp_path):
    import resource
    import signal

    noise = lambda v: {"w": jax.random.bits(jax.random.key(v), (256, 512), jnp.uint32)}  # 512 KiB, incompressible
    with CheckpointManager(tmp_path, async_save=False) as mngr:
        mngr.save(1, noise(1))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.getsignal(signal.SIGXFSZ)
    try:
        _small_file_limit(300_000)
        for async_save in (False, True):
            with warnings.catch_warnings(record=True):  # the second round removes the first's leftover
                mngr = CheckpointManager(tmp_path, async_save=async_save)
            with pytest.raises(CheckpointWriteError) as e:
                mngr.save(2, noise(2))
                mngr.wait_until_finished()  # an async save fails here (or at the next save)
            message = str(e.value)
            assert message.startswith(f"could not write checkpoint step 2 to {tmp_path}: File too large (errno 27).")
            assert "the last complete checkpoint (step 1) is intact" in message
            mngr.close()  # releases orbax's resources, no hang
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    with pytest.warns(CheckpointWarning, match="leftover temporary checkpoint folder"):
        mngr = CheckpointManager(tmp_path)  # the interrupted save is cleaned up; step 1 reads back
    with mngr:
        assert mngr.all_steps() == [1] and sorted(p.name for p in tmp_path.iterdir()) == ["1"]
        assert_tree_equal(mngr.restore(abstract(noise(0))).state, noise(1))


def test_a_save_that_cannot_fit_on_the_disk_is_refused_before_writing(tmp_path, monkeypatch):
    import shutil

    with CheckpointManager(tmp_path, async_save=False) as mngr:
        mngr.save(1, {"w": jnp.ones(1000)})
        usage = shutil.disk_usage(tmp_path)
        monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=10 << 20))
        with pytest.raises(CheckpointWriteError, match=r"not enough disk space to save checkpoint step 2 .*10 MiB"):
            mngr.save(2, {"w": jnp.ones(1000)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]
