"""load_pretrained: official files (local or downloaded, sha256-checked), new heads, and our own run presets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import timm

import checkpoints
import zoo
from checkpoints.tree import flatten


@pytest.fixture(scope="module")
def official_npz(tmp_path_factory):
    """An official-layout Mixer-S/32 .npz made from timm's random weights (converted independently of the npz path)."""
    model = timm.create_model("mixer_s32_224", pretrained=False)
    params = checkpoints.convert("mixer_s32_224", model.state_dict(), source="timm")["params"]
    path = tmp_path_factory.mktemp("weights") / "Mixer-S_32.npz"
    np.savez(path, **{k: np.asarray(v) for k, v in flatten(params).items()})
    return path, flatten(params)


def test_official_file_loads_and_runs(official_npz):
    path, expected = official_npz
    model, variables = checkpoints.load_pretrained("mixer_s32_224", str(path))
    assert model.num_classes == 1000
    for key, value in flatten(variables["params"]).items():
        np.testing.assert_array_equal(value, expected[key])
    logits = model.apply(variables, jnp.zeros((1, 224, 224, 3)))
    assert logits.shape == (1, 1000)


def test_new_head_is_reinitialised_and_the_trunk_kept(official_npz):
    path, expected = official_npz
    model, variables = checkpoints.load_pretrained("mixer_s32_224", str(path), num_classes=10)
    params = flatten(variables["params"])
    assert model.num_classes == 10 and params["head/kernel"].shape == (512, 10)
    assert not np.any(params["head/kernel"])  # Mixer heads start at zero
    key = "MixerBlock_3/token_mixing/Dense_1/kernel"
    np.testing.assert_array_equal(params[key], expected[key])


def test_download_is_cached_and_checked(official_npz, tmp_path, monkeypatch):
    path, _ = official_npz
    monkeypatch.setenv("MIXER_ZOO_CACHE", str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="unverified"):
        checkpoints.load_pretrained("mixer_s32_224", path.as_uri())
    cached = list((tmp_path / "cache").rglob("Mixer-S_32.npz"))
    assert len(cached) == 1 and checkpoints.sha256_file(cached[0]) == checkpoints.sha256_file(path)
    with pytest.raises(checkpoints.ChecksumError, match="expected 0000"):
        checkpoints.download(path.as_uri(), tmp_path / "other" / "x.npz", ("0000",))
    assert not (tmp_path / "other" / "x.npz").exists()
    with pytest.raises(checkpoints.DownloadError):
        checkpoints.download("http://127.0.0.1:9/x.npz", tmp_path / "x.npz", timeout=5)


def test_registered_release_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXER_ZOO_CACHE", str(tmp_path))
    cfg = zoo.pretrained_cfg("mixer_b16_224.goog_in1k")
    assert cfg.url.endswith("imagenet1k/Mixer-B_16.npz") and cfg.num_classes == 1000
    monkeypatch.setattr(checkpoints.pretrained, "download", _refuse)
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
