"""load_pretrained and its files: formats (.pth read without torch, .safetensors, .npz), the Hugging Face Hub
offline from a pre-populated cache, downloads from a local HTTP server (success, interruption, wrong sha256), the
cache (one entry per URL, tampering caught), unsafe pickles refused, new heads, presets, the release catalogue."""

import argparse
import collections
import hashlib
import importlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.torch
import timm
import torch
from timm.models.mlp_mixer import MlpMixer

import checkpoints
import zoo
from checkpoints.download import digest_matches, published_digest
from checkpoints.pretrained import UnsafeCheckpointError, read_torch_file
from checkpoints.tree import flatten

# timm's MlpMixer(img_size=16, patch_size=8, num_blocks=2, embed_dim=32) as our mixer_s16_224 with overrides.
TINY = dict(
    img_size=16, patch_size=8, num_blocks=2, hidden_dim=32, tokens_mlp_dim=16, channels_mlp_dim=128,
    approximate_gelu=False,  # timm uses exact GELU
)  # fmt: skip
IMAGES = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_timm():
    """A tiny timm Mixer with every parameter random (timm zeroes the head and norms start at 1/0), its logits."""
    torch.manual_seed(0)
    model = MlpMixer(img_size=16, patch_size=8, num_blocks=2, embed_dim=32, num_classes=5).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(0.3 * torch.randn(param.shape))
        logits = model(torch.from_numpy(IMAGES.transpose(0, 3, 1, 2))).numpy()
    assert np.abs(logits).max() > 0.1
    return model.state_dict(), logits


def _check_logits(model, variables, expected):
    assert model.num_classes == 5
    logits = np.asarray(model.apply(variables, jnp.asarray(IMAGES), train=False))
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".pth.tar"])
def test_timm_files_load_and_match_timm(tiny_timm, tmp_path, suffix):
    state, expected = tiny_timm
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        safetensors.torch.save_file(state, path)
    elif suffix == ".pth":
        torch.save(state, path)
    else:  # a timm training checkpoint: raw weights are preferred to EMA, the args Namespace is an inert record
        zeros = {k: torch.zeros_like(v) for k, v in state.items()}
        torch.save({"epoch": 3, "state_dict": state, "state_dict_ema": zeros, "args": argparse.Namespace(lr=1)}, path)
    model, variables = checkpoints.load_pretrained("mixer_s16_224", str(path), source="timm", **TINY)
    _check_logits(model, variables, expected)
    if suffix == ".pth.tar":
        _, ema = checkpoints.load_pretrained(
            "mixer_s16_224", str(path), source="timm", state_dict_key="state_dict_ema", **TINY
        )
        assert not any(np.any(v) for v in flatten(ema["params"]).values())


def test_torch_files_read_without_torch_like_torch(tmp_path):
    """Our unpickler against torch.load: dtypes, views, offsets, shared storages, parameters, metadata."""
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = collections.OrderedDict(
        plain=base, transposed=base.t(), window=base[1:, 2:4], half=torch.randn(3).half(),
        bf16=torch.randn(2, 2).bfloat16(), scalar=torch.tensor(3), flags=torch.tensor([True, False]),
        param=torch.nn.Parameter(torch.ones(2)), empty=torch.zeros(0, 3),
    )  # fmt: skip
    torch.save({"model": tensors, "metric": np.float64(0.5), "args": argparse.Namespace(lr=0.1)}, tmp_path / "c.pth")
    loaded = read_torch_file(tmp_path / "c.pth")
    assert loaded["metric"] == 0.5 and loaded["args"].state == {"lr": 0.1}
    for key, tensor in tensors.items():
        ours, ref = loaded["model"][key], tensor.detach()
        if ref.dtype == torch.bfloat16:
            ours, ref = ours.view(np.int16), ref.view(torch.int16)
        assert ours.shape == tuple(ref.shape) and ours.dtype == ref.numpy().dtype, key
        np.testing.assert_array_equal(ours, ref.numpy(), err_msg=key)
    assert set(checkpoints.read_state_dict(tmp_path / "c.pth")) == set(tensors)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # what a malicious checkpoint does: run a command while being unpickled
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_runs_code_is_refused(tiny_timm, tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": tiny_timm[0], "extra": _Payload(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pth was refused.*system.*safetensors"):
        checkpoints.load_pretrained("mixer_s16_224", str(path), source="timm", **TINY)
    with pytest.raises(UnsafeCheckpointError):
        checkpoints.read_state_dict(path)
    assert not marker.exists()


# --- the Hugging Face Hub, offline, from a cache laid out as huggingface_hub writes it -----------------------


def _hub_cache(root, repo, files: dict[str, bytes], commit="a" * 40):
    """`models--org--name/{blobs/<etag>, snapshots/<commit>/<file> -> ../../blobs/<etag>, refs/main}`; LFS
    files (weights) are named by their sha256, small files by a git sha1."""
    folder = root / f"models--{repo.replace('/', '--')}"
    for name, data in files.items():
        lfs = not name.endswith(".json")
        etag = hashlib.sha256(data).hexdigest() if lfs else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        (folder / "blobs").mkdir(parents=True, exist_ok=True)
        (folder / "blobs" / etag).write_bytes(data)
        (folder / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
        (folder / "snapshots" / commit / name).symlink_to(f"../../blobs/{etag}")
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    return folder


@pytest.fixture
def offline_hub(tiny_timm, tmp_path, monkeypatch):
    from huggingface_hub import constants

    state, _ = tiny_timm
    weights = safetensors.torch.save(state)
    config = json.dumps({"architecture": "mixer_s16_224", "num_classes": 5}).encode()
    folder = _hub_cache(tmp_path / "hub", "timm/tiny_mixer", {"model.safetensors": weights, "config.json": config})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return folder


def test_hub_offline_from_the_cache(offline_hub, tiny_timm):
    _, expected = tiny_timm
    model, variables = checkpoints.load_pretrained("hf-hub:timm/tiny_mixer", **TINY)  # config.json names the model
    _check_logits(model, variables, expected)
    model, variables = checkpoints.load_pretrained("mixer_s16_224", f"hf-hub:timm/tiny_mixer@{'a' * 40}", **TINY)
    _check_logits(model, variables, expected)
    with pytest.raises(checkpoints.DownloadError, match=r"HF_HUB_OFFLINE|offline"):
        checkpoints.load_pretrained("mixer_s16_224", "hf-hub:timm/not_cached", **TINY)


def test_hub_cache_tampering_is_caught(offline_hub):
    blob = next(p for p in (offline_hub / "blobs").iterdir() if len(p.name) == 64)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(checkpoints.ChecksumError, match=r"model\.safetensors.*changed on disk"):
        checkpoints.load_pretrained("hf-hub:timm/tiny_mixer", **TINY)


# --- downloads from a local HTTP server --------------------------------------------------------------------


def _cache_files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_download_success_reuse_and_tampering(server, tiny_timm, tmp_path, monkeypatch):
    state, expected = tiny_timm
    cache = tmp_path / "cache"
    monkeypatch.setenv("MIXER_ZOO_CACHE", str(cache))
    server.files["/w/mixer.safetensors"] = safetensors.torch.save(state)
    url = server.url + "/w/mixer.safetensors"
    with pytest.warns(UserWarning, match="unverified"):
        model, variables = checkpoints.load_pretrained("mixer_s16_224", url, source="timm", **TINY)
    _check_logits(model, variables, expected)
    model, variables = checkpoints.load_pretrained("mixer_s16_224", url, source="timm", **TINY)  # from the cache
    _check_logits(model, variables, expected)
    assert server.hits["/w/mixer.safetensors"] == 1
    (entry,) = [p for p in cache.rglob("mixer.safetensors")]
    recorded = json.loads(entry.with_name("mixer.safetensors.sha256.json").read_text())
    assert recorded == {"url": url, "sha256": checkpoints.sha256_file(entry)}

    entry.write_bytes(entry.read_bytes()[:-1] + b"\0")  # tampered after download
    with pytest.raises(checkpoints.ChecksumError, match=f"{entry}.*changed on disk"):
        checkpoints.load_pretrained("mixer_s16_224", url, source="timm", **TINY)


def test_same_file_name_different_urls_are_different_entries(server, tiny_timm, tmp_path):
    state, _ = tiny_timm
    other = {k: v + 1 for k, v in state.items()}
    server.files["/in1k/Mixer.safetensors"] = safetensors.torch.save(state)
    server.files["/in21k/Mixer.safetensors"] = safetensors.torch.save(other)
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning):
        first = checkpoints.cached_download(server.url + "/in1k/Mixer.safetensors", cache)
        second = checkpoints.cached_download(server.url + "/in21k/Mixer.safetensors", cache)
    assert first != second and first.read_bytes() != second.read_bytes()
    assert second.read_bytes() == server.files["/in21k/Mixer.safetensors"]


def test_interrupted_and_wrong_downloads_leave_nothing(server, tmp_path):
    cache = tmp_path / "cache"
    server.files["/cut.npz"] = b"x" * 100_000
    server.truncated.add("/cut.npz")
    with pytest.raises(checkpoints.DownloadError, match="closed after 50000 of 100000 bytes"):
        checkpoints.cached_download(server.url + "/cut.npz", cache)
    server.files["/ok.npz"] = b"y" * 1000
    with pytest.raises(checkpoints.ChecksumError, match="expected 0000"):
        checkpoints.cached_download(server.url + "/ok.npz", cache, "0" * 64)
    assert _cache_files(cache) == []  # no partial file, no entry, no sidecar
    good = hashlib.sha256(b"y" * 1000).hexdigest()
    path = checkpoints.cached_download(server.url + "/ok.npz", cache, good)
    assert path.read_bytes() == b"y" * 1000
    with pytest.raises(checkpoints.DownloadError):
        checkpoints.download("http://127.0.0.1:9/x.npz", tmp_path / "x.npz", timeout=5)


def test_published_digest_prefixes_are_checked():
    assert published_digest("https://x/jx_mixer_b16_224-76587d61.pth") == "76587d61"
    assert published_digest("https://x/Mixer-B_16.npz") is None
    assert digest_matches("76587d61" + "0" * 56, "76587d61")
    assert not digest_matches("76587d61" + "0" * 56, "7658")  # too short to count


# --- releases, official files, heads, presets -------------------------------------------------------------


def test_release_catalogue():
    text = str(zoo.model_info("mixer_b16_224"))
    assert "mixer_b16_224.goog_in21k_ft_in1k: hf-hub:timm/mixer_b16_224.goog_in21k_ft_in1k" in text
    assert "Mixer-B_16.npz; npz, converter 'official'; 1000 classes" in text and "paper top-1 76.44%" in text
    assert "releases: none published" in str(zoo.model_info("mixer_s16_224"))
    miil = zoo.pretrained_cfg("mixer_b16_224.miil_in21k_ft_in1k")
    assert miil.model_overrides == {"approximate_gelu": False} and miil.std == (1.0, 1.0, 1.0)
    assert (miil.source, miil.format, miil.interpolation) == ("timm", "safetensors", "bilinear")
    entry, release, location = checkpoints.pretrained.resolve("mixer_l16_224.goog_in21k_ft_in1k")
    assert (entry.name, release.source, location) == (
        "mixer_l16_224",
        "timm",
        "hf-hub:timm/mixer_l16_224.goog_in21k_ft_in1k",
    )


@pytest.fixture(scope="module")
def official_npz(tmp_path_factory):
    """An official-layout Mixer-S/32 .npz made from timm's random weights (converted independently of the npz path)."""
    model = timm.create_model("mixer_s32_224", pretrained=False)
    params = checkpoints.convert("mixer_s32_224", model.state_dict(), source="timm")["params"]
    path = tmp_path_factory.mktemp("weights") / "Mixer-S_32.npz"
    np.savez(path, **{k: np.asarray(v) for k, v in flatten(params).items()})
    return path, flatten(params)


def test_official_file_and_new_head(official_npz):
    path, expected = official_npz
    model, variables = checkpoints.load_pretrained("mixer_s32_224", str(path))
    assert model.num_classes == 1000
    for key, value in flatten(variables["params"]).items():
        np.testing.assert_array_equal(value, expected[key])
    model, variables = checkpoints.load_pretrained("mixer_s32_224", str(path), num_classes=10)
    params = flatten(variables["params"])
    assert model.num_classes == 10 and params["head/kernel"].shape == (512, 10)
    assert not np.any(params["head/kernel"])  # Mixer heads start at zero
    key = "MixerBlock_3/token_mixing/Dense_1/kernel"
    np.testing.assert_array_equal(params[key], expected[key])


def test_registered_release_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXER_ZOO_CACHE", str(tmp_path))
    cfg = zoo.pretrained_cfg("mixer_b16_224.goog_in1k")
    assert cfg.url.endswith("imagenet1k/Mixer-B_16.npz") and cfg.num_classes == 1000
    monkeypatch.setattr(importlib.import_module("checkpoints.download"), "download", _refuse)
    with pytest.raises(checkpoints.DownloadError, match=r"Mixer-B_16\.npz"):
        checkpoints.load_pretrained("mixer_b16_224.goog_in1k")


def _refuse(url, dest, sha256=(), timeout=None):
    raise checkpoints.DownloadError(f"cannot reach {url} (offline) for {dest}")


def test_own_run_preset_round_trip(tmp_path):
    model = zoo.create_model("mixer_ti2_8", num_classes=4)
    x = jnp.ones((2, 8, 8, 1))
    params = model.init(jax.random.key(3), x)["params"]
    params = jax.tree.map(lambda p: p + 0.01, params)
    config = {"model_name": "mixer_ti2_8", "overrides": {"num_classes": 4}}
    checkpoints.save_params(tmp_path / "run" / "model", params, config=config)
    loaded_model, variables = checkpoints.load_pretrained(str(tmp_path / "run"))
    assert loaded_model.num_classes == 4
    np.testing.assert_allclose(loaded_model.apply(variables, x), model.apply({"params": params}, x), rtol=1e-6)


def test_bad_paths_and_formats(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a preset directory"):
        checkpoints.load_pretrained(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpoints.load_pretrained("mixer_s32_224", str(tmp_path / "missing.npz"))
    (tmp_path / "w.h5").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unknown checkpoint format '\.h5'"):
        checkpoints.load_pretrained("mixer_s32_224", str(tmp_path / "w.h5"))
    with pytest.raises(ValueError, match="unknown model 'mixer_s33_224'"):
        checkpoints.load_pretrained("mixer_s33_224", str(tmp_path / "w.h5"))
    with pytest.raises(ValueError, match="not a Hugging Face Hub name"):
        checkpoints.load_pretrained("hf-hub:no-slash")
