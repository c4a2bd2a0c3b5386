"""The official MS-MLP and FFNet releases in the catalogue: what each registration says (against the notes'
table, docs/vision_mixers.md §3.5 and §8.2/§8.4), and the whole `load_pretrained("<name>.<tag>")` path offline, on
files built the way the official training code writes them (a tiny architecture stands in for the real one; the
release's converter, weights key and preprocessing are the registered ones). AFNO and AFFNet say why they have none.
"""

import argparse
import dataclasses
import hashlib
import importlib
import re
from types import MappingProxyType

import jax
import numpy as np
import pytest
import torch

import checkpoints
import zoo
from checkpoints.convert import ffnet as ffnet_convert
from checkpoints.convert import msmlp as msmlp_convert
from checkpoints.convert import sources
from checkpoints.download import published_digest
from checkpoints.pretrained import Opaque, read_torch_file
from checkpoints.tree import flatten
from zoo.contract import as_hw

AZURE = "https://tsciencescu.blob.core.windows.net/projectshzheng/MSMLP/released_model"
GITHUB = "https://github.com/ysj9909/FFNet/releases/download/v1.0"
IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), interpolation="bicubic")

# name.tag -> (url, README top-1, weights key, crop_pct), written out from the notes.
RELEASES = {
    "msmlp_tiny.in1k": (f"{AZURE}/msmlp_tiny_patch4/msmlp_tiny_patch4_ckpt_epoch299.pth", 82.1, "model", 0.875),
    "msmlp_small.in1k": (f"{AZURE}/msmlp_small_patch4/msmlp_small_patch4_ckpt_epoch299.pth", 83.4, "model", 0.875),
    "msmlp_base.in1k": (f"{AZURE}/msmlp_base_patch4/msmlp_base_patch4_ckpt_epoch299.pth", 83.8, "model", 0.875),
    "ffnet_1.in1k": (f"{GITHUB}/ffnet_1.pth.tar", 81.3, "state_dict", 0.9),
    "ffnet_1.in1k_dist": (f"{GITHUB}/ffnet_1_distillation.pth.tar", 82.1, "state_dict", 0.9),
    "ffnet_2.in1k": (f"{GITHUB}/ffnet_2.pth.tar", 82.9, "state_dict", 0.9),
    "ffnet_2.in1k_dist": (f"{GITHUB}/ffnet_2_distillation.pth.tar", 83.7, "state_dict", 0.9),
    "ffnet_3.in1k": (f"{GITHUB}/ffnet_3.pth.tar", 83.9, "state_dict", 0.95),
    "ffnet_3.in1k_dist": (f"{GITHUB}/ffnet_3_distillation.pth.tar", 84.5, "state_dict", 0.95),
    "ffnet_3_384.in1k": (f"{GITHUB}/ffnet_3_384.pth.tar", 84.5, "state_dict", 0.95),
    "ffnet_4_384.in1k": (f"{GITHUB}/ffnet_4_384.pth.tar", 85.3, "state_dict", 0.95),
}

# Tiny stand-ins for the registered architectures (same block kinds: every MS-MLP group kernel size, FFNet's plain
# 3x3 and RepVGGDW stages, the channel-multiplier downsample, layer scale), 3-channel input and the 1000-class head.
TINY_MSMLP = dict(img_size=16, embed_dim=10, depths=(1, 1), mix_size=((1, 1, 3, 5, 7), (1, 3, 3, 5, 7)))
TINY_FFNET = dict(
    img_size=16, in_dim=8, depth=(1, 1), embed_dim=(8, 16), kernel_sizes=(3, 7), kernel_sizes1=(3, 7),
    kernel_sizes2=(3, 7), expansion_ratios=(3, 3),
)  # fmt: skip

CONFIG_CALLS = []  # what CfgNode's methods record if anything ever runs them


class CfgNode(dict):
    """Stands in for yacs' CfgNode (a dict subclass with instance attributes) in the pickled `config`."""

    def __init__(self, *args, **kwargs):
        CONFIG_CALLS.append("__init__")
        super().__init__(*args, **kwargs)
        self.__dict__["__immutable__"] = True

    def __setstate__(self, state):
        CONFIG_CALLS.append("__setstate__")
        self.__dict__.update(state)

    def __setitem__(self, key, value):
        CONFIG_CALLS.append("__setitem__")
        super().__setitem__(key, value)


def _random_variables(model, seed):
    """Every leaf of the model's variables random (BatchNorm variances positive), as float32 numpy arrays."""
    rng = np.random.default_rng(seed)
    draw = lambda path, leaf: (
        rng.uniform(0.5, 2.0, leaf.shape) if path[-1].key == "var" else rng.normal(0.0, 0.5, leaf.shape)
    ).astype(np.float32)
    return jax.tree_util.tree_map_with_path(draw, zoo.abstract_variables(model))


def _fields(model):
    return {f.name: getattr(model, f.name) for f in dataclasses.fields(model) if f.name not in ("parent", "name")}


def _as_torch(flat):
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in flat.items()}


def _point_release_at(monkeypatch, name, url):
    """The registered release `name` (model.tag) with its url replaced; everything else as registered."""
    arch, tag = name.split(".")
    entry = zoo.get_entry(arch)
    release = dataclasses.replace(entry.pretrained[tag], url=url)
    patched = dataclasses.replace(entry, pretrained=MappingProxyType({**entry.pretrained, tag: release}))
    monkeypatch.setitem(zoo.registry._REGISTRY, arch, patched)
    return release


def _assert_bit_equal(loaded, expected):
    loaded, expected = flatten(jax.device_get(loaded)), flatten(expected)
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        assert loaded[key].dtype == value.dtype, key
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)


# --- the catalogue ---------------------------------------------------------------------------------------------


def test_every_release_is_registered_as_the_notes_say():
    registered = zoo.list_models("msmlp*", pretrained=True) + zoo.list_models("ffnet*", pretrained=True)
    assert sorted(registered) == sorted(RELEASES)
    for name, (url, top1, key, crop_pct) in RELEASES.items():
        entry, cfg = zoo.get_entry(name), zoo.pretrained_cfg(name)
        model = zoo.create_model(name, **cfg.model_overrides)
        assert (cfg.url, cfg.paper_top1, cfg.state_dict_key, cfg.crop_pct) == (url, top1, key, crop_pct), name
        assert cfg.format == "pytorch" and cfg.source == "official" and cfg.source in sources(entry.family), name
        assert cfg.num_classes == 1000 and model.num_classes == 1000, name
        assert cfg.input_size == (*as_hw(model.img_size), model.in_chans), name
        assert (cfg.mean, cfg.std, cfg.interpolation) == (IMAGENET["mean"], IMAGENET["std"], "bicubic"), name
        assert {k: entry.data_config[k] for k in ("mean", "std", "crop_pct", "interpolation")} == dict(
            mean=cfg.mean, std=cfg.std, crop_pct=cfg.crop_pct, interpolation=cfg.interpolation
        ), name
        assert cfg.sha256 is None and published_digest(cfg.url) is None, name  # none is published
        assert cfg.license and cfg.dataset, name
    # The models the weights were trained as: exact GELU and the official norms are already the defaults.
    assert zoo.create_model("msmlp_tiny").approximate_gelu is False
    assert zoo.create_model("msmlp_tiny").norm_eps == 1e-6
    assert zoo.create_model("ffnet_3_384").img_size == 384
    assert "distillation" in zoo.pretrained_cfg("ffnet_2.in1k_dist").dataset
    assert zoo.pretrained_cfg("msmlp_base.in1k").license.startswith("MIT")


def test_model_info_lists_releases_and_says_why_afno_and_affnet_have_none():
    info = zoo.model_info("msmlp_tiny")
    assert info.pretrained == ("in1k",)  # what `python -m zoo` prints in the table's pretrained column
    text = str(info)
    assert f"msmlp_tiny.in1k: {RELEASES['msmlp_tiny.in1k'][0]}; pytorch, converter 'official'; 1000 classes" in text
    assert "input 224x224x3" in text and "crop 0.875 bicubic" in text and "paper top-1 82.1%" in text
    text = str(zoo.model_info("ffnet_1"))
    assert "ffnet_1.in1k_dist: " + RELEASES["ffnet_1.in1k_dist"][0] in text and "input 256x256x3" in text
    assert "crop 0.9 bicubic" in text and "paper top-1 82.1%" in text
    # The paper-size AFFNet / AFNO models say why they have no release; our own small variants have none.
    affnet, afno = zoo.model_info("affnet_t"), zoo.model_info("afnonet_d256_224")
    for info in (affnet, afno):
        assert info.pretrained == () and "releases: none downloadable: " in str(info), info.name
    assert "OneDrive" in affnet.releases_note and "publishes no ImageNet weights" in afno.releases_note
    assert not zoo.list_models("affnet*", pretrained=True) and not zoo.list_models("afno*", pretrained=True)
    for name in ("msmlp_tiny_8", "affnet_tiny_8", "afnonet_ti2_8"):
        assert "releases: none published" in str(zoo.model_info(name))


@pytest.mark.parametrize("name", ["msmlp_small.in1k", "ffnet_4_384.in1k"])
def test_registered_release_offline_is_a_clear_error(name, tmp_path, monkeypatch):
    monkeypatch.setenv("MIXER_ZOO_CACHE", str(tmp_path))

    def refuse(url, dest, sha256=(), timeout=None):
        raise checkpoints.DownloadError(f"cannot reach {url} (offline)")

    monkeypatch.setattr(importlib.import_module("checkpoints.download"), "download", refuse)
    file = RELEASES[name][0].rsplit("/", 1)[-1]
    with pytest.raises(checkpoints.DownloadError, match=re.escape(file)):
        checkpoints.load_pretrained(name)


# --- end to end, offline -----------------------------------------------------------------------------------------


def test_msmlp_release_loads_a_swin_style_training_checkpoint(tmp_path, monkeypatch):
    """`torch.save` of what Swin's `save_checkpoint` writes, served by a file:// URL in place of the Azure blob."""
    model = zoo.create_model("msmlp_tiny", **TINY_MSMLP)
    variables = _random_variables(model, seed=0)
    state = msmlp_convert.to_official(variables)
    # The official layout, checked against the notes' key list rather than the converter.
    assert state["layers.0.blocks.0.dwconv_lr.4.weight"].shape == (2, 1, 7, 7)
    assert state["layers.0.downsample.proj.weight"].shape == (20, 10, 2, 2) and state["head.weight"].shape == (1000, 20)
    config = CfgNode(MODEL=CfgNode(TYPE="msmlp", NAME="msmlp_tiny_patch4_shift5_224"), TRAIN=CfgNode(EPOCHS=300))
    checkpoint = {
        "model": _as_torch(state),
        "optimizer": {"state": {}, "param_groups": [{"lr": 5e-6, "weight_decay": 0.05, "params": [0, 1]}]},
        "lr_scheduler": {"t_initial": 300, "last_epoch": 299},
        "max_accuracy": 82.1,
        "epoch": 299,
        "config": config,
    }
    path = tmp_path / "msmlp_tiny_patch4_ckpt_epoch299.pth"
    torch.save(checkpoint, path)
    CONFIG_CALLS.clear()

    release = _point_release_at(monkeypatch, "msmlp_tiny.in1k", path.as_uri())
    monkeypatch.setenv("MIXER_ZOO_CACHE", str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="unverified"):  # the release publishes no sha256
        loaded_model, loaded = checkpoints.load_pretrained("msmlp_tiny.in1k", **TINY_MSMLP)
    assert release.state_dict_key == "model" and loaded_model.num_classes == 1000
    assert _fields(loaded_model) == _fields(model)
    _assert_bit_equal(loaded, variables)

    # The yacs-like config came back as an inert record: its class was never imported, nothing of it ran.
    record = read_torch_file(path)["config"]
    assert isinstance(record, Opaque) and not isinstance(record, CfgNode)
    assert record.qualified_name.endswith(".CfgNode") and record.state == {"__immutable__": True}
    assert set(record.items) == {"MODEL", "TRAIN"} and record.items["TRAIN"].items == {"EPOCHS": 300}
    assert CONFIG_CALLS == []


def test_ffnet_release_loads_a_timm_training_checkpoint_with_running_stats(server, tmp_path, monkeypatch):
    """What timm's CheckpointSaver writes (raw weights, EMA weights, args), downloaded from a local HTTP server."""
    model = zoo.create_model("ffnet_3", **TINY_FFNET)
    variables = _random_variables(model, seed=1)
    assert model.use_layer_scale and set(variables) == {"params", "batch_stats"}
    state = ffnet_convert.to_official(variables)
    for key in [k for k in state if k.endswith(".running_var")]:  # torch's BatchNorm2d also saves this counter
        state[key.replace("running_var", "num_batches_tracked")] = np.array(1250 * 300, np.int64)
    # The official (unfused) layout, checked against the notes' key list rather than the converter.
    assert state["stages.1.0.proj.0.conv.c.weight"].shape == (16, 1, 7, 7)
    assert state["stages.1.1.token_mixer.0.layer_scale"].shape == (16, 1, 1)
    assert state["stages.0.0.token_mixer.0.main.fc.bn.running_var"].shape == (8,)
    checkpoint = {
        "epoch": 299,
        "arch": "ffnet_3",
        "state_dict": _as_torch(state),
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "params": [0]}]},
        "version": 2,
        "args": argparse.Namespace(model="ffnet_3", lr=1e-3, distillation_type="hard"),
        "state_dict_ema": {k: torch.zeros_like(v) for k, v in _as_torch(state).items()},
        "metric": 84.5,
    }
    path = tmp_path / "ffnet_3_distillation.pth.tar"
    torch.save(checkpoint, path)
    server.files["/ysj9909/FFNet/releases/download/v1.0/ffnet_3_distillation.pth.tar"] = path.read_bytes()

    url = f"{server.url}/ysj9909/FFNet/releases/download/v1.0/ffnet_3_distillation.pth.tar"
    _point_release_at(monkeypatch, "ffnet_3.in1k_dist", url)
    monkeypatch.setenv("MIXER_ZOO_CACHE", str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="unverified"):
        loaded_model, loaded = checkpoints.load_pretrained("ffnet_3.in1k_dist", **TINY_FFNET)
    assert _fields(loaded_model) == _fields(model) and set(loaded) == {"params", "batch_stats"}
    _assert_bit_equal(loaded, variables)  # the raw weights (`state_dict`), not the zero EMA copy

    # The EMA weights of the same file through the release's converter.
    _, ema = checkpoints.load_pretrained("ffnet_3.in1k_dist", state_dict_key="state_dict_ema", **TINY_FFNET)
    assert not any(np.any(v) for v in flatten(jax.device_get(ema)).values())


def test_a_converter_mismatch_names_the_keys(tmp_path, monkeypatch):
    """A release file for another architecture fails the strict merge with the offending key, not silently."""
    model = zoo.create_model("ffnet_1", **{**TINY_FFNET, "depth": (1, 2)})
    state = ffnet_convert.to_official(_random_variables(model, seed=2))
    path = tmp_path / "ffnet_1.pth.tar"
    torch.save({"state_dict": _as_torch(state), "epoch": 299}, path)
    _point_release_at(monkeypatch, "ffnet_1.in1k", path.as_uri())
    monkeypatch.setenv("MIXER_ZOO_CACHE", str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="unverified"), pytest.raises(ValueError, match=r"stages_1_2"):
        checkpoints.load_pretrained("ffnet_1.in1k", **TINY_FFNET)


def test_release_files_are_sha256_checked_when_a_digest_is_known(tmp_path, monkeypatch):
    """Registering a digest later (none is published today) makes a changed file a ChecksumError."""
    path = tmp_path / "msmlp_tiny_patch4_ckpt_epoch299.pth"
    state = msmlp_convert.to_official(_random_variables(zoo.create_model("msmlp_tiny", **TINY_MSMLP), seed=3))
    torch.save({"model": _as_torch(state), "epoch": 299}, path)
    release = _point_release_at(monkeypatch, "msmlp_tiny.in1k", path.as_uri())
    arch = zoo.get_entry("msmlp_tiny")
    wrong = dataclasses.replace(release, sha256=hashlib.sha256(b"another file").hexdigest())
    monkeypatch.setitem(
        zoo.registry._REGISTRY, "msmlp_tiny", dataclasses.replace(arch, pretrained=MappingProxyType({"in1k": wrong}))
    )
    monkeypatch.setenv("MIXER_ZOO_CACHE", str(tmp_path / "cache"))
    with pytest.raises(checkpoints.ChecksumError, match=r"msmlp_tiny_patch4_ckpt_epoch299\.pth"):
        checkpoints.load_pretrained("msmlp_tiny.in1k", **TINY_MSMLP)
