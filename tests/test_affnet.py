"""AFFNet: exact parameter counts, the official state-dict layout and its converter (exact round trip), parity with
a plain PyTorch AFFNet written from the official code (evaluation and training mode, running statistics),
PyTorch-style BatchNorm, the AFF blocks' norms, configuration errors, and training on digits."""

import math

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from trainer_utils import read_results, run_train

import checkpoints
import zoo
from benchmarks.torch_affnet import affnet_peer, num_params
from checkpoints.convert.affnet import infer_config, to_official
from zoo.affnet import AFFBlock, AttnNorm
from zoo.layers import BatchNorm

# Exact counts with the 1000-class head (vision_mixers.md §5.3, measured on the official PyTorch definition).
OFFICIAL_COUNTS = {"affnet_et": 1_436_264, "affnet_t": 2_654_232, "affnet": 5_568_696}

# A small configuration that reaches every code path: an MV2 stage without expansion (no exp_1x1) and with its
# residual, a stride-1 AFF stage (no MV2 downsample: its AFFBlock is layer_3.0), an AFF stage without fusion, odd and
# non-square grids (12x10 -> 6x5 -> 3x3 -> 2x2).
PARITY = dict(
    num_classes=5,
    img_size=(12, 10),
    in_chans=3,
    stem_channels=8,
    stem_stride=2,
    mv2_stages=((8, 1, 1, 1), (16, 2, 2, 2)),
    aff_stages=((16, 2, 1, 2), (24, 1, 2, 3)),
    no_fuse_layers=(4,),
)


# ---------------------------------------------------------------------------------------------------------------
# The official layout, written from the notes (key names and PyTorch shapes), independent of the code under test.


def round8(value):
    """CVNets make_divisible(v, 8): nearest multiple of 8, at least 8, bumped up if more than 10% below v."""
    r = max(8, int(value + 4) // 8 * 8)
    return r + 8 if r < 0.9 * value else r


def official_shapes(cfg):
    """{key: PyTorch shape} of the official AFFNet state dict for a configuration in our field names."""
    shapes = {}

    def conv_layer(prefix, cin, cout, k=1, groups=1):
        shapes[f"{prefix}.block.conv.weight"] = (cout, cin // groups, k, k)
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.block.norm.{leaf}"] = (cout,)
        shapes[f"{prefix}.block.norm.num_batches_tracked"] = ()

    def mv2(prefix, cin, cout, expand):
        hidden = round8(round(cin * expand))
        if expand != 1:
            conv_layer(f"{prefix}.block.exp_1x1", cin, hidden)
        conv_layer(f"{prefix}.block.conv_3x3", hidden, hidden, 3, hidden)
        conv_layer(f"{prefix}.block.red_1x1", hidden, cout)

    def norm(prefix, c):
        shapes[f"{prefix}.weight"] = shapes[f"{prefix}.bias"] = (c,)

    conv_layer("conv_1", cfg.get("in_chans", 3), cfg.get("stem_channels", 16), 3)
    c, layer = cfg.get("stem_channels", 16), 0
    for out, blocks, _, expand in cfg["mv2_stages"]:
        layer += 1
        for i in range(blocks):
            mv2(f"layer_{layer}.{i}", c, out, expand)
            c = out
    for out, blocks, stride, expand in cfg["aff_stages"]:
        layer += 1
        index = 0
        if stride == 2:
            mv2(f"layer_{layer}.0", c, out, expand)
            index = 1
        c, b, p = out, out // 8, f"layer_{layer}.{index}"
        for j in range(blocks):
            norm(f"{p}.global_rep.{j}.norm1", c)
            norm(f"{p}.global_rep.{j}.norm2", c)
            shapes[f"{p}.global_rep.{j}.filter.w1"] = shapes[f"{p}.global_rep.{j}.filter.w2"] = (2, 8, b, b)
            shapes[f"{p}.global_rep.{j}.filter.b1"] = shapes[f"{p}.global_rep.{j}.filter.b2"] = (2, 8, b)
            mv2(f"{p}.global_rep.{j}.mlp", c, c, cfg.get("ffn_ratio", 2.0))
        norm(f"{p}.global_rep.{blocks}", c)
        conv_layer(f"{p}.conv_proj", c, c)
        if layer not in cfg.get("no_fuse_layers", ()):
            conv_layer(f"{p}.fusion", 2 * c, c)
    exp = min(4 * c, 960)
    conv_layer("conv_1x1_exp", c, exp)
    classes = cfg.get("num_classes", 1000)
    shapes["classifier.fc.weight"], shapes["classifier.fc.bias"] = (classes, exp), (classes,)
    return shapes


def is_parameter(key):
    return not key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def random_state_dict(cfg, seed=0):
    """Random values of a plausible scale: convs N(0, 1 / fan_in), norms near 1/0, running variances in
    [0.5, 1.5], the AFF mask MLP 0.3 N(0, 1) (strong enough to matter)."""
    rng = np.random.default_rng(seed)
    sd = {}
    for key, shape in official_shapes(cfg).items():
        normal = rng.standard_normal(shape)
        if key.endswith("num_batches_tracked"):
            sd[key] = np.array(7, np.int64)
            continue
        if key.endswith("running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif key.split(".")[-1] in ("w1", "b1", "w2", "b2"):
            value = 0.3 * normal
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


@pytest.mark.parametrize("name", sorted(OFFICIAL_COUNTS))
def test_parameter_counts_are_the_official_ones(name):
    cfg = dict(zoo.get_entry(name).defaults)
    by_layout = sum(math.prod(s) for k, s in official_shapes(cfg).items() if is_parameter(k))
    assert zoo.count_params(zoo.create_model(name)) == by_layout == OFFICIAL_COUNTS[name]
    assert num_params(affnet_peer(name, zoo.create_model(name))) == OFFICIAL_COUNTS[name]


def test_tiny_count_follows_the_layout_and_keeps_2x2_grids_in_the_aff_stages():
    model = zoo.create_model("affnet_tiny_8", num_classes=10)
    cfg = {**zoo.get_entry("affnet_tiny_8").defaults, "num_classes": 10}
    assert zoo.count_params(model) == sum(math.prod(s) for k, s in official_shapes(cfg).items() if is_parameter(k))
    images = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32)
    capture = lambda v, x: model.apply(
        v, x, capture_intermediates=lambda m, _: isinstance(m, AFFBlock), mutable=["intermediates"]
    )
    _, state = jax.eval_shape(capture, zoo.abstract_variables(model), images)
    grids = {k: v["__call__"][0].shape[1:3] for k, v in state["intermediates"].items()}
    assert grids == {"layer_3_1": (4, 4), "layer_4_1": (2, 2), "layer_5_0": (2, 2)}


def test_pytorch_reference_has_the_official_keys_and_shapes():
    torch_model = affnet_peer("affnet_tiny_8", zoo.create_model("affnet_tiny_8", **PARITY))
    got = {k: tuple(v.shape) for k, v in torch_model.state_dict().items()}
    assert got == official_shapes(PARITY)


# ---------------------------------------------------------------------------------------------------------------
# Converter.


def test_official_round_trip_is_exact():
    sd = random_state_dict(PARITY)
    prefixed = {f"module.{k}": v for k, v in sd.items()}
    variables = checkpoints.convert("affnet_tiny_8", prefixed, **PARITY)
    assert set(variables) == {"params", "batch_stats"}
    params, stats = variables["params"], variables["batch_stats"]
    np.testing.assert_array_equal(
        params["layer_3_0"]["global_rep_1"]["filter"]["w2"], sd["layer_3.0.global_rep.1.filter.w2"]
    )
    np.testing.assert_array_equal(params["head"]["kernel"], sd["classifier.fc.weight"].T)
    depthwise = params["layer_2_0"]["block"]["conv_3x3"]["block"]["conv"]["kernel"]
    assert depthwise.shape == (3, 3, 1, 16)  # (C, 1, 3, 3) -> HWIO with feature_group_count=C
    np.testing.assert_array_equal(depthwise[:, :, 0, 5], sd["layer_2.0.block.conv_3x3.block.conv.weight"][5, 0])
    np.testing.assert_array_equal(stats["conv_1"]["block"]["norm"]["var"], sd["conv_1.block.norm.running_var"])
    np.testing.assert_array_equal(params["layer_3_0"]["global_rep_2"]["scale"], sd["layer_3.0.global_rep.2.weight"])
    back = to_official(variables)
    assert set(back) == {k for k in sd if not k.endswith("num_batches_tracked")}
    for key, value in back.items():
        assert value.dtype == sd[key].dtype and value.shape == sd[key].shape, key
        np.testing.assert_array_equal(value, sd[key], err_msg=key)


def test_infer_config_reads_classes_and_input_channels():
    sd = random_state_dict({**PARITY, "num_classes": 7, "in_chans": 2})
    assert infer_config(sd) == {"num_classes": 7, "in_chans": 2}
    headless = {k: v for k, v in sd.items() if not k.startswith("classifier.")}
    assert infer_config(headless)["num_classes"] == 0
    fields = {k: v for k, v in PARITY.items() if k not in ("num_classes", "in_chans")}
    variables = checkpoints.convert("affnet_tiny_8", headless, **fields)
    assert "head" not in variables["params"]


def test_converter_names_unexpected_and_missing_keys():
    sd = random_state_dict(PARITY)
    extra = {**sd, "layer_3.0.global_rep.0.filter.w3": np.zeros((2, 8, 2, 2), np.float32)}
    with pytest.raises(ValueError, match=r"unexpected .*layer_3_0/global_rep_0/filter/w3"):
        checkpoints.convert("affnet_tiny_8", extra, **PARITY)
    missing = {k: v for k, v in sd.items() if k != "layer_4.1.conv_proj.block.norm.running_mean"}
    with pytest.raises(ValueError, match=r"missing .*batch_stats/layer_4_1/conv_proj/block/norm/mean"):
        checkpoints.convert("affnet_tiny_8", missing, **PARITY)


# ---------------------------------------------------------------------------------------------------------------
# Parity with the PyTorch reference.


def randomise(torch_model, seed=0):
    """Random values for every parameter and buffer: norms near 1/0, positive running variances, conv weights
    around their init, a strong AFF mask (0.3 N(0, 1) instead of 0.02, so that the filter matters)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in torch_model.state_dict().items():
            noise = lambda shape=t.shape: torch.randn(shape, generator=g)
            if key.endswith("num_batches_tracked"):
                continue
            if key.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif key.split(".")[-1] in ("w1", "b1", "w2", "b2"):
                t.copy_(0.3 * noise())
            elif key.startswith("classifier"):
                t.copy_(0.3 * noise())
            elif t.ndim == 1:
                t.copy_(t + 0.2 * noise())
            else:
                t.copy_(t * (1 + 0.1 * noise()))


@pytest.mark.parametrize("activation, attn_norm", [("swish", "layer_norm"), ("relu", "layer_norm_2d")])
def test_matches_pytorch_in_eval_and_train_mode(activation, attn_norm):
    fields = dict(PARITY, activation=activation, attn_norm=attn_norm)
    model = zoo.create_model("affnet_tiny_8", **fields)
    torch_model = affnet_peer("affnet_tiny_8", model)
    randomise(torch_model)
    sd = {k: v.numpy().copy() for k, v in torch_model.state_dict().items()}
    variables = checkpoints.convert("affnet_tiny_8", sd, **fields)
    x = np.random.default_rng(1).standard_normal((3, 3, 12, 10)).astype(np.float32)
    images = jnp.asarray(x.transpose(0, 2, 3, 1))

    torch_model.eval()
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x)).numpy()
    ours = jax.jit(lambda v, im: model.apply(v, im))(variables, images)
    np.testing.assert_allclose(np.asarray(ours), expected, rtol=1e-4, atol=1e-4)
    assert np.abs(expected).max() > 0.5  # not a near-constant output

    # The AFF filters matter: with a zero mask each filter returns its input and the logits move.
    no_mask = jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.zeros_like(a) if "filter" in jax.tree_util.keystr(path) else a, variables
    )
    assert np.abs(np.asarray(model.apply(no_mask, images)) - expected).max() > 1e-2

    torch_model.train()
    with torch.no_grad():
        expected_train = torch_model(torch.from_numpy(x)).numpy()
    train_fn = jax.jit(lambda v, im: model.apply(v, im, train=True, mutable=["batch_stats"]))
    ours_train, state = train_fn(variables, images)
    np.testing.assert_allclose(np.asarray(ours_train), expected_train, rtol=1e-4, atol=1e-4)
    updated = to_official({"params": variables["params"], **state})
    torch_stats = {k: v.numpy() for k, v in torch_model.state_dict().items() if "running" in k}
    assert set(k for k in updated if "running" in k) == set(torch_stats)
    for key, value in torch_stats.items():
        assert not np.allclose(value, sd[key])  # the forward pass moved them
        # torch: running = 0.9 running + 0.1 batch, the variance with the unbiased batch variance; so is ours.
        np.testing.assert_allclose(updated[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


# ---------------------------------------------------------------------------------------------------------------
# BatchNorm and the AFF blocks' norms against NumPy.


def test_batch_norm_follows_pytorch_update_rule():
    rng = np.random.default_rng(0)
    x = (3.0 + 2.0 * rng.standard_normal((2, 3, 5, 4))).astype(np.float32)
    bn = BatchNorm()
    variables = bn.init(jax.random.key(0), x)
    assert set(variables) == {"params", "batch_stats"}
    np.testing.assert_array_equal(variables["batch_stats"]["mean"], np.zeros(4))
    np.testing.assert_array_equal(variables["batch_stats"]["var"], np.ones(4))
    old_mean, old_var = rng.standard_normal(4).astype(np.float32), rng.uniform(0.5, 2, 4).astype(np.float32)
    scale, bias = rng.uniform(0.5, 2, 4).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    variables = {"params": {"scale": scale, "bias": bias}, "batch_stats": {"mean": old_mean, "var": old_var}}

    y, state = bn.apply(variables, x, train=True, mutable=["batch_stats"])
    x64 = x.astype(np.float64)
    mean, biased, unbiased = x64.mean((0, 1, 2)), x64.var((0, 1, 2)), x64.var((0, 1, 2), ddof=1)
    np.testing.assert_allclose(y, (x64 - mean) / np.sqrt(biased + 1e-5) * scale + bias, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state["batch_stats"]["mean"], 0.9 * old_mean + 0.1 * mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(state["batch_stats"]["var"], 0.9 * old_var + 0.1 * unbiased, rtol=1e-6)

    # flax.linen.BatchNorm updates with the biased variance; `unbiased_running_var=False` is exactly that rule.
    flax_bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5, use_fast_variance=False)
    flax_y, flax_state = flax_bn.apply(variables, x, mutable=["batch_stats"])
    biased_y, biased_state = BatchNorm(unbiased_running_var=False).apply(
        variables, x, train=True, mutable=["batch_stats"]
    )
    np.testing.assert_allclose(biased_state["batch_stats"]["var"], flax_state["batch_stats"]["var"], rtol=1e-6)
    np.testing.assert_allclose(biased_y, flax_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        state["batch_stats"]["var"], 0.9 * old_var + 0.1 * biased * 30 / 29, rtol=1e-6
    )  # n = 2 * 3 * 5

    # Evaluation: the running statistics, no state change needed.
    y_eval = bn.apply(variables, x, train=False)
    np.testing.assert_allclose(y_eval, (x64 - old_mean) / np.sqrt(old_var + 1e-5) * scale + bias, rtol=1e-5)


@pytest.mark.parametrize("kind", ["layer_norm", "layer_norm_2d"])
def test_attn_norms_match_numpy(kind):
    rng = np.random.default_rng(0)
    x = (1.0 + rng.standard_normal((2, 3, 4, 8))).astype(np.float32)
    scale, bias = rng.uniform(0.5, 2, 8).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    y = AttnNorm(kind).apply({"params": {"scale": scale, "bias": bias}}, x)
    x64 = x.astype(np.float64)
    if kind == "layer_norm":  # per pixel over channels, divided by std + eps (CVNets channel-first LayerNorm)
        expected = (x64 - x64.mean(-1, keepdims=True)) / (x64.std(-1, keepdims=True) + 1e-5)
    else:  # GroupNorm(1): over H, W, C of each example, sqrt(var + eps)
        m, v = x64.mean((1, 2, 3), keepdims=True), x64.var((1, 2, 3), keepdims=True)
        expected = (x64 - m) / np.sqrt(v + 1e-5)
    np.testing.assert_allclose(y, expected * scale + bias, rtol=1e-5, atol=1e-5)


def test_model_batch_stats_init_update_and_batch_independent_eval():
    model = zoo.create_model("affnet_tiny_8", **PARITY)
    abstract = zoo.abstract_variables(model)  # what init creates (values: see test_batch_norm_follows_pytorch_...)
    stats = [v.shape for v in jax.tree.leaves(abstract["batch_stats"])]
    official = [s for k, s in official_shapes(PARITY).items() if k.endswith(("running_mean", "running_var"))]
    assert sorted(stats) == sorted(official)

    variables = checkpoints.convert("affnet_tiny_8", random_state_dict(PARITY), **PARITY)
    images = jnp.asarray(np.random.default_rng(0).standard_normal((3, 12, 10, 3)), jnp.float32)
    train = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    out, state = train(variables, images)
    changed = jax.tree.map(
        lambda a, b: bool(np.any(np.asarray(a) != b)), variables["batch_stats"], state["batch_stats"]
    )
    assert all(jax.tree.leaves(changed))
    with pytest.raises(flax.errors.ModifyScopeVariableError, match="batch_stats"):  # training updates the stats
        model.apply(variables, images, train=True)

    evaluate = jax.jit(lambda v, x: model.apply(v, x, train=False))
    together = evaluate(variables, images)
    np.testing.assert_allclose(evaluate(variables, images[:1]), together[:1], rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(out) - np.asarray(together)).max() > 1e-3  # training mode uses the batch's statistics


# ---------------------------------------------------------------------------------------------------------------
# Configuration.


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(aff_stages=((36, 1, 2, 2),)), "not divisible"),
        (dict(aff_stages=((32, 1, 2, 2), (48, 1, 1, 2))), "stride 1"),
        (dict(mv2_stages=((16, 1, 3, 2),)), "strides must be 1 or 2"),
        (dict(mv2_stages=((16, 1, 1),)), "tuple of"),
        (dict(activation="gelu"), "activation"),
        (dict(attn_norm="batch_norm"), "attn_norm"),
        (dict(classifier_dropout=1.0), "classifier_dropout"),
        (dict(drop_path_rate=-0.1), "drop_path_rate"),
        (dict(num_classes=-1), "num_classes"),
        (dict(stem_stride=4), "stem_stride"),
        (dict(mv2_stages=(), aff_stages=()), "at least one stage"),
    ],
)
def test_invalid_fields_are_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        zoo.create_model("affnet_tiny_8", **overrides)


def test_registry_entries():
    info = zoo.model_info("affnet")
    assert info.family == "affnet" and info.paper.arxiv == "2307.14008"
    assert info.input_spec == {"images": (256, 256, 3)}
    assert info.data_config["mean"] == (0.0, 0.0, 0.0) and info.data_config["std"] == (1.0, 1.0, 1.0)
    assert zoo.list_models("affnet*") == ["affnet", "affnet_et", "affnet_t", "affnet_tiny_8"]


@pytest.mark.slow
def test_tiny_model_learns_digits(tmp_path):
    """The default digits job (train/configs/default.py) with affnet_tiny_8 for 10 of its 30 epochs (measured: 96.4%
    test accuracy; 98.6% after 30 epochs), running statistics trained by the trainer."""
    args = ["--config.model_name=affnet_tiny_8", "--config.total_epochs=10", f"--workdir={tmp_path}"]
    proc = run_train(args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = read_results(tmp_path)
    assert results["test_metrics"]["accuracy"] >= 0.80
    assert results["test_metrics"]["num_examples"] == 360


def test_load_pretrained_keeps_running_statistics_through_a_new_head(tmp_path):
    """An official-layout `.pth` through `load_pretrained`: every collection arrives; a new head re-initialises only
    `params/head`, the trunk's parameters and running statistics are the file's."""
    model = zoo.create_model("affnet_tiny_8", **PARITY)
    torch_model = affnet_peer("affnet_tiny_8", model)
    randomise(torch_model)
    torch.save({"model": torch_model.state_dict()}, tmp_path / "affnet.pth")
    fields = {k: v for k, v in PARITY.items() if k != "num_classes"}
    loaded_model, variables = checkpoints.load_pretrained("affnet_tiny_8", str(tmp_path / "affnet.pth"), **fields)
    assert loaded_model.num_classes == PARITY["num_classes"]
    x = np.random.default_rng(2).standard_normal((2, 3, 12, 10)).astype(np.float32)
    torch_model.eval()
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x)).numpy()
    ours = loaded_model.apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(np.asarray(ours), expected, rtol=1e-4, atol=1e-4)

    new_model, new_variables = checkpoints.load_pretrained(
        "affnet_tiny_8", str(tmp_path / "affnet.pth"), num_classes=3, **fields
    )
    assert new_model.num_classes == 3 and new_variables["params"]["head"]["kernel"].shape[-1] == 3
    old, new = checkpoints.flatten(variables), checkpoints.flatten(new_variables)
    assert {k for k in old if not k.startswith("params/head/")} == {k for k in new if not k.startswith("params/head/")}
    for key, value in old.items():
        if not key.startswith("params/head/"):
            np.testing.assert_array_equal(new[key], value, err_msg=key)
    assert any(k.startswith("batch_stats/") for k in new)
