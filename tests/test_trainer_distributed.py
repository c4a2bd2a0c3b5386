"""The trainer across devices and processes, and killed mid-run: each run is a subprocess with a hard timeout."""

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
from trainer_utils import CLI_TINY, REPO, read_metrics, read_results, run_train

import checkpoints
from train.data.pipeline import EvalBatches, TrainBatches
from train.trainer import params_digest


def _free_port() -> int:
    """A free port below the kernel's ephemeral range (32768+), so that no outgoing connection of another process
    can take it between this check and the coordinator binding it."""
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


def _devices(n: int) -> dict[str, str]:
    return {"XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}


def _probe(workdir_args, devices) -> tuple[subprocess.CompletedProcess, dict]:
    """`python -m train` through tests/train_probe.py: the run, and the devices and split leaves it really had."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "train_probe.py"), *workdir_args],
        cwd=REPO,
        env={**os.environ, **_devices(devices)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("probe: ")]
    return proc, json.loads(lines[-1].removeprefix("probe: ")) if lines else {}


def test_one_device_and_eight_devices_give_the_same_losses(tmp_path):
    args = [*CLI_TINY, "--config.total_steps=12", "--config.data.val_split=validation", "--config.eval_every_steps=6"]
    runs = {
        "one": (args, 1),
        "eight": (args, 8),
        # FSDP-style: every parameter of 64+ elements (and its Adam moments) split over the 8 devices.
        "fsdp": ([*args, "--config.mesh.fsdp=true", "--config.mesh.fsdp_min_size=64"], 8),
    }
    probes = {}
    for name, (run_args, devices) in runs.items():
        proc, probes[name] = _probe([*run_args, f"--workdir={tmp_path / name}"], devices)
        assert proc.returncode == 0, proc.stderr[-3000:]
    # The runs really had 1, 8 and 8 devices; only the FSDP run stored state in pieces, and it split every
    # parameter of 64+ elements (with its Adam moments) 8 ways along one axis.
    assert [probes[n]["devices"] for n in runs] == [1, 8, 8]
    assert probes["one"]["split"] == probes["eight"]["split"] == {}
    split = probes["fsdp"]["split"]
    kernel = "params/MixerBlock_0/channel_mixing/Dense_0/kernel"  # [16, 32]: split along its 32 axis
    assert split[kernel] == [[16, 32], [16, 4]]
    assert any(path.startswith("opt_state/") and path.endswith(kernel.removeprefix("params/")) for path in split)
    for global_shape, shard_shape in split.values():
        assert np.prod(global_shape) >= 64 and np.prod(shard_shape) * 8 == np.prod(global_shape)
    losses_one = read_metrics(tmp_path / "one")
    assert sorted(losses_one) == list(range(1, 13))
    a = np.array(list(losses_one.values()))
    for name in ("eight", "fsdp"):
        losses = read_metrics(tmp_path / name)
        b = np.array([losses[s] for s in losses_one])
        assert np.max(np.abs(a - b) / np.abs(a)) <= 1e-5, name
        val_one, val = read_metrics(tmp_path / "one", "val/loss"), read_metrics(tmp_path / name, "val/loss")
        np.testing.assert_allclose([val[s] for s in val_one], list(val_one.values()), rtol=1e-5)


def test_two_processes_finish_with_identical_parameters(tmp_path):
    port = _free_port()
    workdir = tmp_path / "run"
    procs, logs = [], []
    for pid in range(2):
        env = {
            **os.environ,
            **_devices(2),
            "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
            "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": str(pid),
            "PYTHONFAULTHANDLER": "1",
        }
        cmd = [sys.executable, "-m", "train", *CLI_TINY, "--config.total_steps=8", "--config.distributed.timeout_s=60"]
        # Files, not pipes: an unread pipe could fill up and stall one process inside a collective.
        out, err = open(tmp_path / f"out{pid}", "w"), open(tmp_path / f"err{pid}", "w")
        logs.append((out, err))
        procs.append(subprocess.Popen([*cmd, f"--workdir={workdir}"], cwd=REPO, env=env, stdout=out, stderr=err))
    limit_s = 240  # a missing peer aborts within the 60 s initialisation timeout
    deadline, hung = time.monotonic() + limit_s, []
    try:
        for p in procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                hung.append(p)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: every thread's Python stack to stderr
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for out, err in logs:
            out.close(), err.close()
    outputs = [
        (p.returncode, (tmp_path / f"out{i}").read_text(), (tmp_path / f"err{i}").read_text())
        for i, p in enumerate(procs)
    ]
    # Both processes' ends, whatever failed: a hang in one is often an error in the other.
    report = "\n".join(f"--- process {i} (exit {rc}):\n{err[-10000:]}" for i, (rc, _, err) in enumerate(outputs))
    assert not hung, f"processes {[procs.index(p) for p in hung]} still running after {limit_s} s\n{report}"
    assert all(rc == 0 for rc, _, _ in outputs), report
    digests = [line.split(": ")[1] for _, out, _ in outputs for line in out.splitlines() if "params sha256" in line]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert "(process 0)" in outputs[0][1] and "(process 1)" in outputs[1][1]
    # The same global batches as one process with 4 devices: the same losses.
    single = run_train([*CLI_TINY, "--config.total_steps=8", f"--workdir={tmp_path / 'single'}"], env=_devices(4))
    assert single.returncode == 0, single.stderr[-3000:]
    a, b = read_metrics(tmp_path / "single"), read_metrics(workdir)
    np.testing.assert_allclose([b[s] for s in a], list(a.values()), rtol=1e-5)


def test_each_process_reads_only_its_rows_of_the_global_batch():
    class Source:
        def __len__(self):
            return 37

        def get_batch(self, indices, seeds):
            seed = np.asarray(seeds)[:, 2] if seeds is not None else np.zeros(len(indices), np.int64)
            return {"x": np.asarray(indices), "seed": seed}

    whole = TrainBatches(Source(), 8, seed=3)
    parts = [TrainBatches(Source(), 8, seed=3, process_index=p, process_count=2) for p in range(2)]
    for step in (0, 4, 5, 11):  # step 4 is the padded last batch of epoch 0 (37 = 4 * 8 + 5)
        joined = {k: np.concatenate([p[step][k] for p in parts]) for k in ("x", "mask", "seed")}
        for key, value in whole[step].items():
            np.testing.assert_array_equal(joined[key], value)
    assert whole[4]["mask"].sum() == 5
    epoch = np.concatenate([whole[s]["x"][whole[s]["mask"] > 0] for s in range(5)])
    assert sorted(epoch) == list(range(37))  # every example once per epoch
    evals = [EvalBatches(Source(), 8, p, 2) for p in range(2)]
    assert len(evals[0]) == 5
    last = np.concatenate([e[4]["x"][e[4]["mask"] > 0] for e in evals])
    assert list(last) == [32, 33, 34, 35, 36]


def test_killed_run_resumes_exactly(tmp_path):
    args = [*CLI_TINY, "--config.total_steps=150", "--config.checkpoint.every_steps=10", "--config.log_every_steps=10"]
    reference = run_train([*args, f"--workdir={tmp_path / 'reference'}"])
    assert reference.returncode == 0, reference.stderr[-3000:]

    workdir = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "train", *args, f"--workdir={workdir}"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            steps = [int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()]
            if steps and max(steps) >= 40:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (workdir / "results.json").exists()

    resumed = run_train([*args, f"--workdir={workdir}"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    match = re.search(r"resumed from step (\d+)", resumed.stderr)
    assert match, resumed.stderr[-3000:]
    assert 40 <= int(match[1]) < 150 and int(match[1]) % 10 == 0  # a real resume, from a checkpoint mid-run
    # Resuming is exact: the same parameters, bit for bit, and the same test metrics.
    reference_results, resumed_results = read_results(tmp_path / "reference"), read_results(workdir)
    assert resumed_results["params_digest"] == reference_results["params_digest"]
    expected, _, _ = checkpoints.load_params(tmp_path / "reference" / "model")
    actual, _, _ = checkpoints.load_params(workdir / "model")
    assert params_digest(actual) == params_digest(expected) == reference_results["params_digest"]
    assert resumed_results["test_metrics"] == reference_results["test_metrics"]
