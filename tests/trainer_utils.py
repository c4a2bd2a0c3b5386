"""Small configs and helpers shared by the trainer tests."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def set_path(config, dotted: str, value):
    *parents, last = dotted.split(".")
    node = config
    for p in parents:
        node = node[p]
    node[last] = value


def digits_config(**overrides):
    """The default digits job shrunk to a few seconds: a 2-block width-16 Mixer, 10 steps, batch 32."""
    from train.configs import default

    c = default.get_config("quicktest")
    c.model.update(dict(hidden_dim=16, tokens_mlp_dim=8, channels_mlp_dim=32, num_blocks=2))
    c.batch_size = 32
    c.total_steps = 10
    c.log_every_steps = 1
    c.data.num_threads = 1
    c.checkpoint.async_save = False
    for key, value in overrides.items():
        set_path(c, key.replace("__", "."), value)
    return c


CLI_TINY = [
    "--config=train/configs/default.py:quicktest",
    "--config.model.hidden_dim=16",
    "--config.model.tokens_mlp_dim=8",
    "--config.model.channels_mlp_dim=32",
    "--config.model.num_blocks=2",
    "--config.batch_size=32",
    "--config.log_every_steps=1",
    "--config.data.num_threads=1",
]


def run_train(args, env=None, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    """`python -m train ARGS` in the repo root, with a hard timeout."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "train", *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def read_metrics(workdir, prefix="train/loss") -> dict[int, float]:
    rows = [json.loads(line) for line in Path(workdir, "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[prefix] for r in rows if prefix in r}


def read_results(workdir) -> dict:
    return json.loads(Path(workdir, "results.json").read_text())


def read_checkpoint(workdir, step: int) -> tuple[dict, dict]:
    """The raw state tree (numpy) and metadata of training checkpoint `step` in `workdir`, read with orbax directly
    (no target structure, no code of the trainer's)."""
    import orbax.checkpoint as ocp

    step_dir = Path(workdir, "checkpoints", str(step)).absolute()
    with ocp.StandardCheckpointer() as checkpointer:
        state = checkpointer.restore(step_dir / "state")
    meta = json.loads((step_dir / "meta" / "metadata").read_text())
    return state, meta
