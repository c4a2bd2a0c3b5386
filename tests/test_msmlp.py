"""MS-MLP: exact parameter counts, torch.chunk channel groups, the shift layer and the mix-shift token mixer against
NumPy (values and gradients), the official state-dict layout and its converter (exact round trip), parity with a
plain PyTorch MS-MLP written from the official code (every parameter randomised), configuration errors, and training
on digits."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.test_util import check_grads
from trainer_utils import read_results, run_train

import checkpoints
import zoo
from benchmarks.torch_msmlp import msmlp_peer, num_params
from checkpoints.convert.msmlp import infer_config, to_official
from zoo.layers.shift import channel_groups, shift_groups
from zoo.msmlp import MixShift

# Exact counts with the 1000-class head (vision_mixers.md §3.2, measured on the official PyTorch definition).
OFFICIAL_COUNTS = {"msmlp_tiny": 28_656_232, "msmlp_small": 50_303_752, "msmlp_base": 88_696_792}

# Three stages on a non-square grid (16x24 -> 8x12 -> 4x6 -> 2x3), uneven torch.chunk groups (13 -> 3,3,3,3,1;
# 26 -> 6,6,6,6,2; 52 -> 11,11,11,11,8), kernels larger than the last grid.
PARITY = dict(
    num_classes=5,
    img_size=(16, 24),
    in_chans=3,
    patch_size=2,
    embed_dim=13,
    depths=(2, 1, 2),
    mix_size=((1, 3, 5, 3, 1), (3, 1, 3, 5, 7), (1, 5, 5, 7, 3)),
)


# ---------------------------------------------------------------------------------------------------------------
# The official layout, written from the notes (key names and PyTorch shapes), independent of the code under test.


def chunk_sizes(channels, groups):
    size = -(-channels // groups)
    return [min(size, channels - i) for i in range(0, channels, size)]


def official_shapes(cfg):
    """{key: PyTorch shape} of the official MS_MLP state dict (vision_mixers.md §3.5) for our field names."""
    c = cfg.get("embed_dim", 96)
    p, cin = cfg.get("patch_size", 4), cfg.get("in_chans", 3)
    depths = cfg.get("depths", (3, 3, 9, 3))
    mix = cfg.get("mix_size", ((1, 1, 3, 5, 7), (1, 3, 3, 5, 7), (1, 5, 5, 5, 7), (1, 7, 7, 7, 7)))
    shapes = {"patch_embed.proj.weight": (c, cin, p, p), "patch_embed.proj.bias": (c,)}
    shapes |= {"patch_embed.norm.weight": (c,), "patch_embed.norm.bias": (c,)}
    for s, depth in enumerate(depths):
        for b in range(depth):
            pre = f"layers.{s}.blocks.{b}"
            for g, (cg, k) in enumerate(zip(chunk_sizes(c, 5), mix[s])):
                for branch in ("dwconv_lr", "dwconv_td"):
                    shapes[f"{pre}.{branch}.{g}.weight"] = (cg, 1, k, k)
                    shapes[f"{pre}.{branch}.{g}.bias"] = (cg,)
            shapes |= {f"{pre}.norm.weight": (c,), f"{pre}.norm.bias": (c,)}
            shapes |= {f"{pre}.pwconv1.weight": (4 * c, c), f"{pre}.pwconv1.bias": (4 * c,)}
            shapes |= {f"{pre}.pwconv2.weight": (c, 4 * c), f"{pre}.pwconv2.bias": (c,), f"{pre}.gamma": (c,)}
        if s < len(depths) - 1:
            shapes |= {
                f"layers.{s}.downsample.proj.weight": (2 * c, c, 2, 2),
                f"layers.{s}.downsample.proj.bias": (2 * c,),
            }
            shapes |= {f"layers.{s}.downsample.norm.weight": (2 * c,), f"layers.{s}.downsample.norm.bias": (2 * c,)}
            c *= 2
    shapes |= {"norm.weight": (c,), "norm.bias": (c,)}
    classes = cfg.get("num_classes", 1000)
    if classes:
        shapes |= {"head.weight": (classes, c), "head.bias": (classes,)}
    return shapes


def random_state_dict(cfg, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in official_shapes(cfg).items()}


# ---------------------------------------------------------------------------------------------------------------
# Counts.


@pytest.mark.parametrize("name", sorted(OFFICIAL_COUNTS))
def test_parameter_counts_are_the_official_ones(name):
    cfg = dict(zoo.get_entry(name).defaults)
    by_layout = sum(math.prod(s) for s in official_shapes(cfg).values())
    assert zoo.model_info(name).num_params == by_layout == OFFICIAL_COUNTS[name]
    assert num_params(msmlp_peer(name, zoo.create_model(name))) == OFFICIAL_COUNTS[name]


def test_tiny_count_follows_the_layout():
    cfg = {**zoo.get_entry("msmlp_tiny_8").defaults, "num_classes": 10}
    expected = sum(math.prod(s) for s in official_shapes(cfg).values())
    assert zoo.count_params(zoo.create_model("msmlp_tiny_8", num_classes=10)) == expected


def test_pytorch_reference_has_the_official_keys_and_shapes():
    torch_model = msmlp_peer("msmlp_tiny_8", zoo.create_model("msmlp_tiny_8", **PARITY))
    assert {k: tuple(v.shape) for k, v in torch_model.state_dict().items()} == official_shapes(PARITY)


# ---------------------------------------------------------------------------------------------------------------
# Channel groups, the shift, the token mixer.


def test_channel_groups_follow_torch_chunk():
    assert channel_groups(96, 5) == (20, 20, 20, 20, 16)  # jnp.array_split would give 20, 19, 19, 19, 19
    table = {192: (39, 39, 39, 39, 36), 768: (154, 154, 154, 154, 152), 1024: (205, 205, 205, 205, 204)}
    for channels, sizes in table.items():
        assert channel_groups(channels, 5) == sizes
    for channels in range(5, 60):
        torch_sizes = tuple(c.shape[0] for c in torch.chunk(torch.zeros(channels), 5))
        if len(torch_sizes) == 5:
            assert channel_groups(channels, 5) == torch_sizes
        else:  # e.g. 6 -> 2, 2, 2: torch.chunk returns fewer chunks
            with pytest.raises(ValueError, match=r"torch\.chunk"):
                channel_groups(channels, 5)


@pytest.mark.parametrize("axis", [1, 2])
def test_shift_groups_is_a_per_group_roll(axis):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 7, 13)).astype(np.float32)
    sizes, shifts = (3, 3, 3, 3, 1), (-2, -1, 0, 1, 9)
    expected = np.concatenate(
        [np.roll(x[..., 3 * g : 3 * g + n], s, axis) for g, (n, s) in enumerate(zip(sizes, shifts))], -1
    )
    np.testing.assert_array_equal(shift_groups(jnp.asarray(x), sizes, shifts, axis), expected)
    # torch.roll is the reference of the official code
    t = torch.cat([torch.roll(c, s, axis) for c, s in zip(torch.chunk(torch.from_numpy(x), 5, -1), shifts)], -1)
    np.testing.assert_array_equal(expected, t.numpy())
    check_grads(lambda v: shift_groups(v, sizes, shifts, axis), (jnp.asarray(x),), order=1, modes=["rev", "fwd"])


def numpy_depthwise(x, kernel, bias):
    """Zero-padded 'same' correlation per channel (torch Conv2d groups=C): x [B, H, W, C], kernel [k, k, C]."""
    k = kernel.shape[0]
    p = k // 2
    padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    out = np.zeros_like(x, dtype=np.float64)
    for i in range(k):
        for j in range(k):
            out += padded[:, i : i + x.shape[1], j : j + x.shape[2]] * kernel[i, j]
    return out + bias


def numpy_mix_shift(x, params, sizes, shifts, kernels):
    """Paper Eq. 3-4 / the official forward: per group roll along W (lr) or H (td), depthwise conv, sum."""
    out = 0
    for branch, axis in (("dwconv_lr", 2), ("dwconv_td", 1)):
        parts, start = [], 0
        for g, (n, s) in enumerate(zip(sizes, shifts)):
            p = params[f"{branch}_{g}"]
            group = np.roll(x[..., start : start + n], s, axis)
            parts.append(numpy_depthwise(group, np.asarray(p["kernel"])[:, :, 0], np.asarray(p["bias"])))
            start += n
        out = out + np.concatenate(parts, -1)
    return out


def test_mix_shift_matches_numpy_with_gradients():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 7, 13)).astype(np.float32)
    shifts, kernels = (-2, -1, 0, 1, 2), (1, 3, 5, 7, 3)
    mixer = MixShift(shifts, kernels)
    params = mixer.init(jax.random.key(0), x)["params"]
    params = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape), jnp.float32), params)
    assert params["dwconv_td_3"]["kernel"].shape == (7, 7, 1, 3) and params["dwconv_lr_4"]["bias"].shape == (1,)
    got = mixer.apply({"params": params}, x)
    expected = numpy_mix_shift(x.astype(np.float64), params, (3, 3, 3, 3, 1), shifts, kernels)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # gradients through the written-out backward pass of the depthwise convolutions (reverse mode)
    check_grads(
        lambda p, v: mixer.apply({"params": p}, v),
        (params, jnp.asarray(x)),
        order=1,
        modes=["rev"],
        atol=2e-2,
        rtol=2e-2,
    )


# ---------------------------------------------------------------------------------------------------------------
# Converter.


def test_official_round_trip_is_exact():
    sd = random_state_dict(PARITY)
    variables = checkpoints.convert("msmlp_tiny_8", {f"module.{k}": v for k, v in sd.items()}, **PARITY)
    assert set(variables) == {"params"}
    params = variables["params"]
    block = params["layers_1"]["blocks_0"]
    np.testing.assert_array_equal(
        block["dwconv_td_3"]["kernel"][:, :, 0, 5], sd["layers.1.blocks.0.dwconv_td.3.weight"][5, 0]
    )
    np.testing.assert_array_equal(block["pwconv1"]["kernel"], sd["layers.1.blocks.0.pwconv1.weight"].T)
    np.testing.assert_array_equal(block["gamma"], sd["layers.1.blocks.0.gamma"])
    np.testing.assert_array_equal(
        params["layers_0"]["downsample"]["norm"]["scale"], sd["layers.0.downsample.norm.weight"]
    )
    np.testing.assert_array_equal(
        params["patch_embed"]["proj"]["kernel"], sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(params["head"]["kernel"], sd["head.weight"].T)
    back = to_official(variables)
    assert set(back) == set(sd)
    for key, value in back.items():
        assert value.dtype == sd[key].dtype and value.shape == sd[key].shape, key
        np.testing.assert_array_equal(value, sd[key], err_msg=key)


def test_infer_config_and_strict_merge():
    sd = random_state_dict({**PARITY, "num_classes": 7, "in_chans": 2})
    assert infer_config(sd) == {"num_classes": 7, "in_chans": 2}
    headless = {k: v for k, v in sd.items() if not k.startswith("head.")}
    assert infer_config(headless)["num_classes"] == 0
    fields = {k: v for k, v in PARITY.items() if k not in ("num_classes", "in_chans")}
    assert "head" not in checkpoints.convert("msmlp_tiny_8", headless, **fields)["params"]
    sd = random_state_dict(PARITY)
    with pytest.raises(ValueError, match=r"unexpected .*layers_0/blocks_0/dwconv_lr_5/kernel"):
        checkpoints.convert(
            "msmlp_tiny_8", {**sd, "layers.0.blocks.0.dwconv_lr.5.weight": np.zeros((1, 1, 1, 1))}, **PARITY
        )
    missing = {k: v for k, v in sd.items() if k != "layers.2.blocks.1.gamma"}
    with pytest.raises(ValueError, match=r"missing .*layers_2/blocks_1/gamma"):
        checkpoints.convert("msmlp_tiny_8", missing, **PARITY)


# ---------------------------------------------------------------------------------------------------------------
# Parity with the PyTorch reference.


def test_matches_pytorch_with_every_parameter_randomised():
    model = zoo.create_model("msmlp_tiny_8", **PARITY)
    torch_model = msmlp_peer("msmlp_tiny_8", model).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, t in torch_model.state_dict().items():
            noise = torch.randn(t.shape, generator=g)
            if key.endswith("gamma"):  # 1e-6 at init would hide the blocks
                t.copy_(0.5 + 0.3 * noise)
            elif t.ndim == 1 and key.endswith("weight"):
                t.copy_(1.0 + 0.2 * noise)
            elif t.ndim == 1:
                t.copy_(0.2 * noise)
            else:
                t.copy_(noise / math.sqrt(math.prod(t.shape[1:])))
    sd = {k: v.numpy().copy() for k, v in torch_model.state_dict().items()}
    variables = checkpoints.convert("msmlp_tiny_8", sd, **PARITY)
    x = np.random.default_rng(1).standard_normal((3, 3, 16, 24)).astype(np.float32)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x)).numpy()
    ours = jax.jit(lambda v, im: model.apply(v, im))(variables, jnp.asarray(x.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(np.asarray(ours), expected, rtol=1e-4, atol=1e-4)
    assert np.abs(expected).max() > 0.5
    # the shifts matter: without them (all distances 0) the logits move
    unshifted_model = model.clone(shift_dist=(0, 0, 0, 0, 0))
    unshifted = jax.jit(lambda v, im: unshifted_model.apply(v, im))(variables, jnp.asarray(x.transpose(0, 2, 3, 1)))
    assert np.abs(np.asarray(unshifted) - expected).max() > 1e-2


# ---------------------------------------------------------------------------------------------------------------
# Configuration.


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(embed_dim=6), r"torch\.chunk"),
        (dict(img_size=10), "divisible"),
        (dict(mix_size=((1, 1, 3, 3, 3),)), "one tuple per stage"),
        (dict(mix_size=((1, 1, 3, 3), (1, 1, 3, 3, 3))), "one kernel size per shift group"),
        (dict(mix_size=((1, 1, 3, 3, 4), (1, 1, 3, 3, 3))), "odd"),
        (dict(drop_path_rate=1.0), "drop_path_rate"),
        (dict(drop_rate=-0.1), "drop_rate"),
        (dict(num_classes=-1), "num_classes"),
        (dict(depths=(2, 0)), "depths"),
        (dict(patch_size=0), "patch_size"),
    ],
)
def test_invalid_fields_are_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        zoo.create_model("msmlp_tiny_8", **overrides)


def test_registry_entries():
    info = zoo.model_info("msmlp_tiny")
    assert info.family == "msmlp" and info.paper.arxiv == "2202.06510"
    assert info.input_spec == {"images": (224, 224, 3)}
    assert info.data_config["mean"] == (0.485, 0.456, 0.406) and info.data_config["crop_pct"] == 0.875
    assert [zoo.get_entry(n).defaults["drop_path_rate"] for n in ("msmlp_tiny", "msmlp_small", "msmlp_base")] == [
        0.1,
        0.4,
        0.5,
    ]
    assert zoo.list_models("msmlp*") == ["msmlp_base", "msmlp_small", "msmlp_tiny", "msmlp_tiny_8"]


@pytest.mark.slow
def test_tiny_model_learns_digits(tmp_path):
    """The default digits job (train/configs/default.py) with msmlp_tiny_8 for 15 of its 30 epochs (measured: 91.9%
    test accuracy; 2m14s of CPU time)."""
    args = ["--config.model_name=msmlp_tiny_8", "--config.total_epochs=15", f"--workdir={tmp_path}"]
    proc = run_train(args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = read_results(tmp_path)
    assert results["test_metrics"]["accuracy"] >= 0.80
    assert results["test_metrics"]["num_examples"] == 360
