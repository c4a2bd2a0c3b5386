"""`python -m checkpoints inspect FILE` and `convert NAME FILE --out DIR`: output, presets verified by reloading,
never overwriting, and every user error one line on stderr with exit status 2."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.torch
import torch
from timm.models.mlp_mixer import MlpMixer

import checkpoints
import zoo
from checkpoints.__main__ import main
from checkpoints.tree import flatten

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A registered tiny model in the official .npz layout and a tiny timm Mixer (no registered size) as
    safetensors, with timm's logits."""
    root = tmp_path_factory.mktemp("files")
    model = zoo.create_model("mixer_ti2_8", num_classes=3)
    params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
    params = jax.tree.map(lambda p: p + 0.05, params)  # the head too (it starts at zero)
    np.savez(root / "ti.npz", **{k: np.asarray(v) for k, v in flatten(params).items()})
    torch.manual_seed(0)
    timm_model = MlpMixer(img_size=16, patch_size=8, num_blocks=2, embed_dim=32, num_classes=5).eval()
    with torch.no_grad():
        for p in timm_model.parameters():
            p.copy_(0.3 * torch.randn(p.shape))
    safetensors.torch.save_file(timm_model.state_dict(), root / "tiny.safetensors")
    return root, params


def test_inspect_lists_tensors_and_the_matching_model(files, capsys):
    root, params = files
    assert main(["inspect", str(root / "ti.npz")]) == 0
    out = capsys.readouterr().out
    assert f"{len(flatten(params))} tensors" in out and "sha256 " in out
    assert "stem/kernel" in out and "(2, 2, 1, 64)" in out and "float32" in out
    assert "matches: mixer_ti2_8 (family mlp_mixer, converter 'official')" in out
    assert main(["inspect", str(root / "tiny.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "blocks.1.mlp_tokens.fc1.weight" in out and "(16, 4)" in out
    assert "looks like: family mlp_mixer (converter 'timm')" in out


def test_convert_writes_a_verified_preset_and_never_overwrites(files, tmp_path, capsys):
    root, params = files
    out = tmp_path / "preset"
    assert main(["convert", "mixer_ti2_8", str(root / "ti.npz"), "--out", str(out)]) == 0
    assert "verified by reloading" in capsys.readouterr().out
    model, variables = checkpoints.load_pretrained(str(out))
    assert model.num_classes == 3
    for key, value in flatten(params).items():
        np.testing.assert_array_equal(flatten(variables["params"])[key], value)
    before = sorted(p.name for p in out.rglob("*"))
    assert main(["convert", "mixer_ti2_8", str(root / "ti.npz"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "exists; convert never overwrites" in err and err.count("\n") == 1
    assert sorted(p.name for p in out.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir()] == ["preset"]  # no staging directory left behind


@pytest.mark.parametrize(
    "argv, message",
    [
        (["inspect", "missing.pth"], "does not exist"),
        (["convert", "mixer_s33_224", "x.npz", "--out", "o"], "unknown model 'mixer_s33_224'"),
        (["convert", "mixer_ti2_8", "{ti}", "--out", "{out}", "--set", "num_blocks=3"], "does not match"),
        (["convert", "mixer_ti2_8", "{ti}"], "the following arguments are required: --out"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_user_errors_are_one_line_with_status_2(files, tmp_path, capsys, argv, message):
    root, _ = files
    argv = [a.format(ti=root / "ti.npz", out=tmp_path / "o") for a in argv]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert not (tmp_path / "o").exists()


def test_command_line_converts_from_an_offline_hub_cache(files, tmp_path):
    """The real `python -m checkpoints`, with HF_HUB_OFFLINE=1 and HF_HUB_CACHE set in the environment."""
    root, _ = files
    data = (root / "tiny.safetensors").read_bytes()
    repo = tmp_path / "hub" / "models--timm--tiny_mixer"
    blob = hashlib.sha256(data).hexdigest()
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / blob).write_bytes(data)
    (repo / "snapshots" / ("b" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("b" * 40) / "model.safetensors").symlink_to(f"../../blobs/{blob}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("b" * 40)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "JAX_PLATFORMS": "cpu"}
    sets = "img_size=16 patch_size=8 num_blocks=2 hidden_dim=32 tokens_mlp_dim=16 channels_mlp_dim=128"
    sets = [a for s in (*sets.split(), "approximate_gelu=false") for a in ("--set", s)]
    out = tmp_path / "from_hub"
    cmd = [sys.executable, "-m", "checkpoints", "convert", "mixer_s16_224", "hf-hub:timm/tiny_mixer", "--out"]
    result = subprocess.run(
        [*cmd, str(out), "--source", "timm", *sets], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["model_name"] == "mixer_s16_224" and config["overrides"]["num_classes"] == 5
    assert config["overrides"]["approximate_gelu"] is False
    result = subprocess.run([*cmd, str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "never overwrites" in result.stderr
