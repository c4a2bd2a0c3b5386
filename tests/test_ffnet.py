"""FFNet: exact parameter counts (as trained and re-parameterised), the FFNified token mixer against NumPy, the
official fusion (`merge_branches`) against the unfused model and against the official `fuse()`, the official
state-dict layout and its converter (exact round trip), parity with a plain PyTorch FFNet written from the official
code (evaluation and training mode, running statistics), configuration errors, and training on digits."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.test_util import check_grads
from scipy.special import erf
from trainer_utils import read_results, run_train

import checkpoints
import zoo
from benchmarks.torch_ffnet import ffnet_peer, num_params
from checkpoints.convert.ffnet import infer_config, to_official
from zoo.ffnet import ChannelMixer, ResidualBlock, TokenMixer, merge_branches
from zoo.layers import DropPath

# vision_mixers.md §8.2, measured on the official PyTorch definition: as trained (unfused) and after the official
# re-parameterisation (fused; the README's 13.7M / 26.9M / 48.3M / 79.2M).
UNFUSED = {
    "ffnet_1": 13_775_656,
    "ffnet_2": 27_208_408,
    "ffnet_3": 48_817_896,
    "ffnet_3_384": 48_817_896,
    "ffnet_4_384": 79_868_968,
}
FUSED = {
    "ffnet_1": 13_660_152,
    "ffnet_2": 26_908_440,
    "ffnet_3": 48_330_632,
    "ffnet_3_384": 48_330_632,
    "ffnet_4_384": 79_200_360,
}

# A small configuration that reaches every code path: a non-square input and a stride-1 stem conv (12x10 -> 12x10
# -> 6x5 -> 3x3 -> 2x2), token-mixer convs of both kinds in both positions (plain 3x3, RepVGGDW 7x7), channel-mixer
# convs of both kinds (3x3 Conv_BN, 7x7 RepVGGDW), two downsamples (channel multiplier 2), a non-integer expansion
# ratio, layer scale, two blocks in one stage.
PARITY = dict(
    num_classes=5,
    img_size=(12, 10),
    in_chans=3,
    in_dim=8,
    stem_strides=(1, 2),
    depth=(1, 2, 1),
    embed_dim=(8, 16, 32),
    kernel_sizes=(3, 7, 7),
    kernel_sizes1=(3, 7, 7),
    kernel_sizes2=(7, 3, 7),
    expansion_ratios=(3, 2, 2.5),
    use_layer_scale=True,
    layer_scale_init_value=0.5,
)


# ---------------------------------------------------------------------------------------------------------------
# The official layout, written from the notes (§8.1, §8.4: key names and PyTorch shapes), independent of the code.


def official_shapes(cfg):
    """{key: PyTorch shape} of the official (unfused) FFNet state dict for a configuration in our field names."""
    shapes = {}

    def bn(prefix, c):
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{leaf}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    def conv_bn(prefix, cin, cout, k=1, groups=1):
        shapes[f"{prefix}.c.weight"] = (cout, cin // groups, k, k)
        bn(f"{prefix}.bn", cout)

    def rep_vgg_dw(prefix, cin, cout):
        conv_bn(f"{prefix}.conv", cin, cout, 7, cin)
        conv_bn(f"{prefix}.conv1", cin, cout, 3, cin)

    def token_conv(prefix, c, k):
        if k == 7:
            rep_vgg_dw(prefix, c, c)
        else:
            shapes[f"{prefix}.weight"], shapes[f"{prefix}.bias"] = (c, 1, k, k), (c,)

    layer_scale = cfg.get("use_layer_scale", False)
    dims = cfg["embed_dim"]
    conv_bn("patch_embed.0", cfg.get("in_chans", 3), cfg.get("in_dim", 64), 3)
    conv_bn("patch_embed.2", cfg.get("in_dim", 64), dims[0], 3)
    for s, c in enumerate(dims):
        first = 0
        if s > 0:
            rep_vgg_dw(f"stages.{s}.0.proj.0", dims[s - 1], c)
            bn(f"stages.{s}.0.proj.1.conv.bn", c)
            shapes[f"stages.{s}.0.proj.1.conv.c.weight"] = (c, c, 1, 1)
            first = 1
        for j in range(first, first + cfg["depth"][s]):
            p = f"stages.{s}.{j}"
            conv_bn(f"{p}.token_mixer.0.main.fc", c, c)
            token_conv(f"{p}.token_mixer.0.main.conv1", c, cfg["kernel_sizes1"][s])
            token_conv(f"{p}.token_mixer.0.main.conv2", c, cfg["kernel_sizes2"][s])
            k = cfg["kernel_sizes"][s]
            if k == 7:
                rep_vgg_dw(f"{p}.channel_mixer.main.conv", c, c)
            else:
                conv_bn(f"{p}.channel_mixer.main.conv", c, c, k, c)
            hidden = int(c * cfg["expansion_ratios"][s])
            shapes[f"{p}.channel_mixer.main.fc1.weight"], shapes[f"{p}.channel_mixer.main.fc1.bias"] = (
                (hidden, c, 1, 1),
                (hidden,),
            )
            shapes[f"{p}.channel_mixer.main.fc2.weight"], shapes[f"{p}.channel_mixer.main.fc2.bias"] = (
                (c, hidden, 1, 1),
                (c,),
            )
            if layer_scale:
                shapes[f"{p}.token_mixer.0.layer_scale"] = shapes[f"{p}.channel_mixer.layer_scale"] = (c, 1, 1)
    bn("norm", dims[-1])
    classes = cfg.get("num_classes", 1000)
    if classes:
        shapes["head.weight"], shapes["head.bias"] = (classes, dims[-1]), (classes,)
    return shapes


def is_parameter(key):
    return not key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def random_state_dict(cfg, seed=0):
    """Random values of a plausible scale: convs N(0, 1 / fan_in), norms and layer scales near 1 / 0, running
    variances in [0.5, 1.5]."""
    rng = np.random.default_rng(seed)
    sd = {}
    for key, shape in official_shapes(cfg).items():
        if key.endswith("num_batches_tracked"):
            sd[key] = np.array(11, np.int64)
            continue
        normal = rng.standard_normal(shape)
        if key.endswith("running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif key.endswith("layer_scale"):
            value = 0.5 + 0.2 * normal
        elif len(shape) >= 2:
            value = normal / math.sqrt(math.prod(shape[1:]))
        elif key.endswith(".weight"):
            value = 1.0 + 0.1 * normal
        else:
            value = 0.1 * normal
        sd[key] = value.astype(np.float32)
    return sd


# ---------------------------------------------------------------------------------------------------------------
# Counts and layout.


@pytest.mark.parametrize("name", ["ffnet_1", "ffnet_2", "ffnet_3", "ffnet_4_384"])
def test_parameter_counts_are_the_official_ones(name):
    model = zoo.create_model(name)
    cfg = dict(zoo.get_entry(name).defaults)
    by_layout = sum(math.prod(s) for k, s in official_shapes(cfg).items() if is_parameter(k))
    assert zoo.model_info(name).num_params == by_layout == UNFUSED[name]  # counted once per process, cached
    assert zoo.count_params(model.clone(merged=True)) == FUSED[name]


def test_ffnet_3_384_is_ffnet_3_at_384():
    """Same architecture, so the same counts (ffnet_3's are checked above with eval_shape)."""
    at_256, at_384 = dict(zoo.get_entry("ffnet_3").defaults), dict(zoo.get_entry("ffnet_3_384").defaults)
    assert at_256.pop("img_size") == 256 and at_384.pop("img_size") == 384
    assert at_256.pop("drop_path_rate") == 0.35 and at_384.pop("drop_path_rate") == 0.4
    assert at_256 == at_384
    cfg = dict(zoo.get_entry("ffnet_3_384").defaults)
    assert sum(math.prod(s) for k, s in official_shapes(cfg).items() if is_parameter(k)) == UNFUSED["ffnet_3_384"]


def test_pytorch_reference_has_the_official_keys_shapes_and_counts():
    model = zoo.create_model("ffnet_tiny_8", **PARITY)
    torch_model = ffnet_peer("ffnet_tiny_8", model)
    got = {k: tuple(v.shape) for k, v in torch_model.state_dict().items()}
    assert got == official_shapes(PARITY)
    assert num_params(torch_model) == zoo.count_params(model)
    torch_model.eval().fuse()
    assert num_params(torch_model) == zoo.count_params(model.clone(merged=True))
    assert num_params(ffnet_peer("ffnet_1", zoo.create_model("ffnet_1"))) == UNFUSED["ffnet_1"]


def test_layer_scale_and_head_are_optional():
    cfg = dict(PARITY, use_layer_scale=False, num_classes=0)
    model = zoo.create_model("ffnet_tiny_8", **cfg)
    flat = checkpoints.flatten(zoo.abstract_variables(model)["params"])
    assert not any("layer_scale" in k or k.startswith("head/") for k in flat)
    assert zoo.count_params(model) == sum(math.prod(s) for k, s in official_shapes(cfg).items() if is_parameter(k))


# ---------------------------------------------------------------------------------------------------------------
# The FFNified token mixer against NumPy (paper §3 / official Token_Mixer: conv2(GELU(conv1(fc(x))))).


def np_depthwise(x, kernel, bias=None, stride=1):
    """[B, H, W, C_in] x torch-layout depthwise weight [C_out, 1, k, k] (output o reads input o // (C_out / C_in)),
    zero padding k // 2: a direct sum over the window."""
    k, c_out = kernel.shape[-1], kernel.shape[0]
    multiplier = c_out // x.shape[-1]
    x = np.repeat(x, multiplier, axis=-1)
    pad = k // 2
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    h_out, w_out = (x.shape[1] + 2 * pad - k) // stride + 1, (x.shape[2] + 2 * pad - k) // stride + 1
    out = np.zeros((x.shape[0], h_out, w_out, c_out))
    for i in range(h_out):
        for j in range(w_out):
            window = xp[:, i * stride : i * stride + k, j * stride : j * stride + k, :]  # [B, k, k, C]
            out[:, i, j, :] = np.einsum("bpqc,cpq->bc", window, kernel[:, 0])
    return out if bias is None else out + bias


def np_bn(x, p):
    return (x - p["running_mean"]) / np.sqrt(p["running_var"] + 1e-5) * p["weight"] + p["bias"]


def np_token_mixer(x, sd, k1, k2):
    """The official Token_Mixer in evaluation mode, from a torch-layout state dict (float64)."""
    sub = lambda prefix: {k[len(prefix) + 1 :]: v.astype(np.float64) for k, v in sd.items() if k.startswith(prefix)}

    def conv_bn_dw(y, prefix):
        p = sub(prefix)
        return np_bn(np_depthwise(y, p["c.weight"]), {k[3:]: v for k, v in p.items() if k.startswith("bn.")})

    def dw(y, prefix, k):
        if k == 7:  # RepVGGDW: 7x7 Conv_BN + 3x3 Conv_BN
            return conv_bn_dw(y, f"{prefix}.conv") + conv_bn_dw(y, f"{prefix}.conv1")
        p = sub(prefix)
        return np_depthwise(y, p["weight"], p["bias"])

    fc = sub("fc")
    y = np.einsum("bhwi,oi->bhwo", x, fc["c.weight"][:, :, 0, 0])
    y = np_bn(y, {k[3:]: v for k, v in fc.items() if k.startswith("bn.")})
    y = dw(y, "conv1", k1)
    y = 0.5 * y * (1.0 + erf(y / np.sqrt(2.0)))  # exact GELU
    return dw(y, "conv2", k2)


def token_mixer_state_dict(c, k1, k2, seed=0):
    """Random torch-layout parameters and running statistics of one Token_Mixer (keys relative to it)."""
    cfg = dict(depth=(1,), embed_dim=(c,), kernel_sizes=(3,), kernel_sizes1=(k1,), kernel_sizes2=(k2,))
    cfg["expansion_ratios"] = (1,)
    prefix = "stages.0.0.token_mixer.0.main."
    full = random_state_dict(cfg, seed)
    return {k[len(prefix) :]: v for k, v in full.items() if k.startswith(prefix) and "num_batches" not in k}


def as_variables(sd):
    """A torch-layout Token_Mixer state dict -> our TokenMixer variables (via the converter's rule)."""
    from checkpoints.convert.ffnet import from_official

    return from_official({f"main.{k}": v for k, v in sd.items()})


def token_mixer_variables(c, k1, k2):
    sd = token_mixer_state_dict(c, k1, k2)
    converted = as_variables(sd)
    return sd, {"params": converted["params"]["main"], "batch_stats": converted["batch_stats"]["main"]}


@pytest.mark.parametrize("k1, k2", [(3, 3), (7, 7), (7, 3)])
def test_token_mixer_matches_numpy(k1, k2):
    c = 6
    sd, variables = token_mixer_variables(c, k1, k2)
    x = np.random.default_rng(1).standard_normal((2, 9, 7, c)).astype(np.float32)
    ours = jax.jit(TokenMixer(k1, k2).apply)(variables, jnp.asarray(x))
    expected = np_token_mixer(x.astype(np.float64), sd, k1, k2)
    np.testing.assert_allclose(np.asarray(ours), expected, rtol=1e-5, atol=1e-5)
    assert np.abs(expected).max() > 0.5


def test_token_mixer_gradients():
    """Derivatives w.r.t. the input and every parameter (evaluation mode: running statistics fixed), both conv kinds
    (RepVGGDW 7x7 then a plain 3x3), against finite differences."""
    _, variables = token_mixer_variables(3, 7, 3)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 5, 4, 3)), jnp.float32)
    stats = variables["batch_stats"]
    apply = jax.jit(lambda params, images: TokenMixer(7, 3).apply({"params": params, "batch_stats": stats}, images))
    check_grads(apply, (variables["params"], x), order=1, modes=("rev",), atol=2e-2, rtol=2e-2)


# ---------------------------------------------------------------------------------------------------------------
# Re-parameterisation.


def random_variables(model, seed=0):
    """Our variables with every parameter and running statistic randomised (through the official layout)."""
    cfg = {f: getattr(model, f) for f in ("depth", "embed_dim", "kernel_sizes", "kernel_sizes1", "kernel_sizes2")}
    cfg.update(
        expansion_ratios=model.expansion_ratios,
        in_chans=model.in_chans,
        in_dim=model.in_dim,
        num_classes=model.num_classes,
        use_layer_scale=model.use_layer_scale,
    )
    return checkpoints.convert("ffnet_tiny_8", random_state_dict(cfg, seed), **{**PARITY, **cfg})


def test_merge_branches_keeps_evaluation_outputs():
    model = zoo.create_model("ffnet_tiny_8", **PARITY)
    variables = random_variables(model)
    merged, merged_variables = merge_branches(model, variables)
    assert merged.merged and not model.merged
    assert set(merged_variables["batch_stats"]) == {"norm"}  # every other BatchNorm is folded
    assert zoo.count_params(merged_variables) == zoo.count_params(merged) < zoo.count_params(model)
    reference = checkpoints.flatten(zoo.abstract_variables(merged))
    assert set(checkpoints.flatten(merged_variables)) == set(reference)
    images = jnp.asarray(np.random.default_rng(2).standard_normal((3, 12, 10, 3)), jnp.float32)
    expected = np.asarray(jax.jit(lambda v, x: model.apply(v, x))(variables, images))
    ours = np.asarray(jax.jit(lambda v, x: merged.apply(v, x))(merged_variables, images))
    assert np.abs(expected).max() > 0.5
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    with pytest.raises(ValueError, match="unmerged"):
        merge_branches(merged, merged_variables)


def test_merge_branches_equals_the_official_fuse():
    """Our merged parameters == the official fuse() of the same weights, converted (the fused-layout converter)."""
    model = zoo.create_model("ffnet_tiny_8", **PARITY)
    torch_model = ffnet_peer("ffnet_tiny_8", model)
    torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in random_state_dict(PARITY, seed=3).items()})
    variables = checkpoints.convert("ffnet_tiny_8", torch_model.state_dict(), **PARITY)
    torch_model.eval().fuse()
    fused_sd = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    assert "stages.1.0.proj.1.weight" in fused_sd and "patch_embed.0.weight" in fused_sd
    assert infer_config(fused_sd) == dict(num_classes=5, use_layer_scale=True, in_chans=3, merged=True)
    official = checkpoints.convert("ffnet_tiny_8", fused_sd, **{**PARITY, "merged": True})
    _, ours = merge_branches(model, variables)
    flat_ours, flat_official = checkpoints.flatten(ours), checkpoints.flatten(official)
    assert set(flat_ours) == set(flat_official)
    for key, value in flat_official.items():
        np.testing.assert_allclose(flat_ours[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    assert set(to_official(official)) == {k for k in fused_sd if not k.endswith("num_batches_tracked")}


# ---------------------------------------------------------------------------------------------------------------
# Converter.


def test_official_round_trip_is_exact():
    sd = random_state_dict(PARITY)
    prefixed = {f"module.{k}": v for k, v in sd.items()}
    variables = checkpoints.convert("ffnet_tiny_8", prefixed, **PARITY)
    assert set(variables) == {"params", "batch_stats"}
    params, stats = variables["params"], variables["batch_stats"]
    down = params["stages_1_0"]["proj_0"]["conv"]["c"]["kernel"]
    assert down.shape == (7, 7, 1, 16)  # torch (2C, 1, 7, 7) with groups = C -> HWIO
    np.testing.assert_array_equal(down[:, :, 0, 11], sd["stages.1.0.proj.0.conv.c.weight"][11, 0])
    np.testing.assert_array_equal(params["head"]["kernel"], sd["head.weight"].T)
    scale = params["stages_1_2"]["token_mixer_0"]["layer_scale"]
    np.testing.assert_array_equal(scale, sd["stages.1.2.token_mixer.0.layer_scale"][:, 0, 0])
    fc1 = params["stages_2_1"]["channel_mixer"]["main"]["fc1"]["kernel"]
    np.testing.assert_array_equal(fc1[0, 0], sd["stages.2.1.channel_mixer.main.fc1.weight"][:, :, 0, 0].T)
    np.testing.assert_array_equal(
        stats["stages_2_1"]["token_mixer_0"]["main"]["conv1"]["conv1"]["bn"]["var"],
        sd["stages.2.1.token_mixer.0.main.conv1.conv1.bn.running_var"],
    )
    np.testing.assert_array_equal(
        stats["stages_2_0"]["proj_1"]["conv"]["bn"]["mean"], sd["stages.2.0.proj.1.conv.bn.running_mean"]
    )
    back = to_official(variables)
    assert set(back) == {k for k in sd if not k.endswith("num_batches_tracked")}
    for key, value in back.items():
        assert value.dtype == sd[key].dtype and value.shape == sd[key].shape, key
        np.testing.assert_array_equal(value, sd[key], err_msg=key)


def test_infer_config_and_headless_files():
    sd = random_state_dict({**PARITY, "num_classes": 7, "in_chans": 2, "use_layer_scale": False})
    assert infer_config(sd) == dict(num_classes=7, use_layer_scale=False, in_chans=2, merged=False)
    headless = {k: v for k, v in sd.items() if not k.startswith("head.")}
    assert infer_config(headless)["num_classes"] == 0
    fields = {k: v for k, v in PARITY.items() if k not in ("num_classes", "in_chans", "use_layer_scale")}
    variables = checkpoints.convert("ffnet_tiny_8", headless, **fields)
    assert "head" not in variables["params"]


def test_converter_names_unexpected_and_missing_keys():
    sd = random_state_dict(PARITY)
    extra = {**sd, "stages.0.0.token_mixer.1.fc.weight": np.zeros((2, 8, 1, 1), np.float32)}  # an SE block
    with pytest.raises(ValueError, match=r"unexpected .*stages_0_0/token_mixer_1/fc/kernel"):
        checkpoints.convert("ffnet_tiny_8", extra, **PARITY)
    missing = {k: v for k, v in sd.items() if k != "stages.1.0.proj.0.conv1.bn.running_mean"}
    with pytest.raises(ValueError, match=r"missing .*batch_stats/stages_1_0/proj_0/conv1/bn/mean"):
        checkpoints.convert("ffnet_tiny_8", missing, **PARITY)


# ---------------------------------------------------------------------------------------------------------------
# Parity with the PyTorch reference.


def randomise(torch_model, seed=0):
    """Random values for every parameter and buffer: norms and layer scales near their init (+ noise), positive
    running variances, conv and linear weights N(0, 1 / fan_in)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in torch_model.state_dict().items():
            if key.endswith("num_batches_tracked"):
                continue
            noise = torch.randn(t.shape, generator=g)
            if key.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif t.ndim == 1 or key.endswith("layer_scale"):
                t.copy_(t + 0.2 * noise)
            else:
                t.copy_(noise / math.sqrt(math.prod(t.shape[1:])))


def test_matches_pytorch_in_eval_and_train_mode():
    model = zoo.create_model("ffnet_tiny_8", **PARITY)
    torch_model = ffnet_peer("ffnet_tiny_8", model)
    randomise(torch_model)
    sd = {k: v.numpy().copy() for k, v in torch_model.state_dict().items()}
    variables = checkpoints.convert("ffnet_tiny_8", sd, **PARITY)
    x = np.random.default_rng(1).standard_normal((3, 3, 12, 10)).astype(np.float32)
    images = jnp.asarray(x.transpose(0, 2, 3, 1))

    torch_model.eval()
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x)).numpy()
    ours = jax.jit(lambda v, im: model.apply(v, im))(variables, images)
    np.testing.assert_allclose(np.asarray(ours), expected, rtol=1e-4, atol=1e-4)
    assert np.abs(expected).max() > 0.5  # not a near-constant output

    torch_model.train()
    with torch.no_grad():
        expected_train = torch_model(torch.from_numpy(x)).numpy()
    train_fn = jax.jit(lambda v, im: model.apply(v, im, train=True, mutable=["batch_stats"]))
    ours_train, state = train_fn(variables, images)
    np.testing.assert_allclose(np.asarray(ours_train), expected_train, rtol=1e-4, atol=1e-4)
    assert np.abs(np.asarray(ours_train) - np.asarray(ours)).max() > 1e-2  # training mode: batch statistics
    updated = to_official({"params": variables["params"], **state})
    torch_stats = {k: v.numpy() for k, v in torch_model.state_dict().items() if "running" in k}
    assert {k for k in updated if "running" in k} == set(torch_stats)
    for key, value in torch_stats.items():
        assert not np.allclose(value, sd[key])  # the forward pass moved them
        np.testing.assert_allclose(updated[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_drop_path_rates_are_linear_in_the_block_index():
    """torch.linspace(0, rate, sum(depth)) over the blocks, the same rate for both residuals of a block."""
    model = zoo.create_model("ffnet_tiny_8", **{**PARITY, "drop_path_rate": 0.3})
    rates = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, DropPath) and context.method_name == "__call__":
            rates.append(context.module.rate)
        return next_fun(*args, **kwargs)

    images = jax.ShapeDtypeStruct((2, 12, 10, 3), jnp.float32)
    abstract = zoo.abstract_variables(model)
    train = lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
    with nn.intercept_methods(record):
        jax.eval_shape(train, abstract, images)
    expected = np.repeat(np.linspace(0, 0.3, sum(PARITY["depth"])), 2)
    np.testing.assert_allclose(rates, expected, rtol=1e-6)


def test_residual_drop_path_keeps_or_drops_whole_examples():
    """x + DropPath(main(x)): per example either x or x + main(x) / keep (timm's rescaled stochastic depth)."""
    x = jnp.asarray(np.random.default_rng(4).standard_normal((16, 4, 3, 5)), jnp.float32)
    main = functools.partial(ChannelMixer, 3, 2.0)
    block = lambda rate: ResidualBlock(main, drop_path_rate=rate, layer_scale_init_value=0.7)
    variables = block(0.0).init(jax.random.key(0), x)
    run = lambda rate: jax.jit(
        lambda v, x: block(rate).apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)})
    )(variables, x)[0]
    branch = np.asarray(run(0.0)) - np.asarray(x)  # train-mode branch (batch statistics) times layer scale
    dropped = np.asarray(run(0.75)) - np.asarray(x)
    kept = [np.allclose(d, b / 0.25, rtol=1e-5, atol=1e-5) for d, b in zip(dropped, branch, strict=True)]
    zeroed = [np.all(d == 0) for d in dropped]
    assert all(k != z for k, z in zip(kept, zeroed, strict=True))
    assert 0 < sum(kept) < len(kept)
    np.testing.assert_array_equal(block(0.75).apply(variables, x), block(0.0).apply(variables, x))  # evaluation


# ---------------------------------------------------------------------------------------------------------------
# Configuration and registry.


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(depth=(1, 1, 1)), "one length"),
        (dict(embed_dim=(24, 36)), "not a multiple"),
        (dict(kernel_sizes=(3, 4)), "odd kernel"),
        (dict(kernel_sizes1=(0, 7)), "odd kernel"),
        (dict(depth=(1, 0)), "positive"),
        (dict(depth=()), "non-empty"),
        (dict(expansion_ratios=(3, 0)), "expansion_ratios"),
        (dict(stem_strides=(1, 4)), "stem_strides"),
        (dict(drop_path_rate=1.0), "drop_path_rate"),
        (dict(drop_path_rate=-0.1), "drop_path_rate"),
        (dict(num_classes=-1), "num_classes"),
        (dict(in_dim=0), "in_dim"),
        (dict(img_size=0), "img_size"),
    ],
)
def test_invalid_fields_are_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        zoo.create_model("ffnet_tiny_8", **overrides)


def test_registry_entries():
    assert zoo.list_models("ffnet*") == ["ffnet_1", "ffnet_2", "ffnet_3", "ffnet_3_384", "ffnet_4_384", "ffnet_tiny_8"]
    info = zoo.get_entry("ffnet_1")
    assert info.family == "ffnet" and info.paper.arxiv == "2406.02021" and info.paper.code.endswith("ysj9909/FFNet")
    assert zoo.create_model("ffnet_1").input_spec() == {"images": (256, 256, 3)}
    assert info.data_config["mean"] == (0.485, 0.456, 0.406) and info.data_config["interpolation"] == "bicubic"
    assert info.data_config["crop_pct"] == 0.9 and zoo.get_entry("ffnet_3").data_config["crop_pct"] == 0.95
    assert zoo.create_model("ffnet_4_384").input_spec() == {"images": (384, 384, 3)}
    rates = {n: zoo.get_entry(n).defaults["drop_path_rate"] for n in UNFUSED}
    assert rates == {"ffnet_1": 0.1, "ffnet_2": 0.15, "ffnet_3": 0.35, "ffnet_3_384": 0.4, "ffnet_4_384": 0.5}


@pytest.mark.slow
def test_tiny_model_learns_digits(tmp_path):
    """The default digits job (train/configs/default.py) with ffnet_tiny_8 for 6 of its 30 epochs, running statistics
    trained by the trainer (measured: 98.6% test accuracy after 10 epochs)."""
    args = ["--config.model_name=ffnet_tiny_8", "--config.total_epochs=6", f"--workdir={tmp_path}"]
    proc = run_train(args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = read_results(tmp_path)
    assert results["test_metrics"]["accuracy"] >= 0.80
    assert results["test_metrics"]["num_examples"] == 360
