"""NiNformer: exact parameter counts, the gating unit and the NiN block against NumPy written from the paper (plus
finite-difference gradients), the one shared LayerNorm per block, the official state-dict layout and its converter
(exact round trip), parity with a plain PyTorch NiNformer written from the official code, configuration errors, and
training on digits."""

import math

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
from benchmarks.torch_ninformer import ninformer_peer, num_params
from checkpoints.convert.ninformer import infer_config, to_official
from zoo.ninformer import MixerGatingUnit, NiNBlock

# The official train.py configuration: 2,652,170 parameters with 10 classes (vision_mixers.md §6.2, measured on
# the official PyTorch definition).
CIFAR_COUNT = 2_652_170

# A small configuration whose sizes are all different (tokens 24 != d 12 != d_ffn 20), on a non-square grid
# (12x8 pixels, patch 2 -> 6x4 tokens), so that a transposed weight or a wrong token order cannot go unnoticed.
PARITY = dict(num_classes=5, img_size=(12, 8), in_chans=3, patch_size=2, d_model=12, d_ffn=20, num_layers=2)


# ---------------------------------------------------------------------------------------------------------------
# The official layout, written from the notes (key names and PyTorch shapes), independent of the code under test.


def official_shapes(cfg):
    """{key: PyTorch shape} of the official NiNformerImageClassification state dict."""
    h, w = (cfg["img_size"],) * 2 if isinstance(cfg["img_size"], int) else cfg["img_size"]
    p, c, d, f = cfg["patch_size"], cfg.get("in_chans", 3), cfg["d_model"], cfg["d_ffn"]
    tokens = (h // p) * (w // p)
    shapes = {}

    def linear(prefix, n_in, n_out):
        shapes[f"{prefix}.weight"], shapes[f"{prefix}.bias"] = (n_out, n_in), (n_out,)

    def norm(prefix):
        shapes[f"{prefix}.weight"] = shapes[f"{prefix}.bias"] = (d,)

    for i in range(cfg["num_layers"]):
        b = f"model.{i}"
        norm(f"{b}.norm")
        norm(f"{b}.mgu.Mixer.token_mix.0")
        linear(f"{b}.mgu.Mixer.token_mix.2.net.0", tokens, f)
        linear(f"{b}.mgu.Mixer.token_mix.2.net.3", f, tokens)
        norm(f"{b}.mgu.Mixer.channel_mix.0")
        linear(f"{b}.mgu.Mixer.channel_mix.1.net.0", d, f)
        linear(f"{b}.mgu.Mixer.channel_mix.1.net.3", f, d)
        linear(f"{b}.mgu.proj", d, d)
        linear(f"{b}.ffn.net.0", d, f)
        linear(f"{b}.ffn.net.3", f, d)
    shapes["patcher.weight"], shapes["patcher.bias"] = (d, c, p, p), (d,)
    if cfg.get("num_classes", 1000):
        linear("classifier", d, cfg.get("num_classes", 1000))
    return shapes


def random_state_dict(cfg, seed=0):
    """Random values of a plausible scale: weights N(0, 1 / fan_in), norms near 1/0, biases 0.1 N(0, 1)."""
    rng = np.random.default_rng(seed)
    sd = {}
    for key, shape in official_shapes(cfg).items():
        normal = rng.standard_normal(shape)
        if len(shape) >= 2:
            value = normal / math.sqrt(math.prod(shape[1:]))
        elif key.endswith(".weight"):
            value = 1.0 + 0.2 * normal
        else:
            value = 0.1 * normal
        sd[key] = value.astype(np.float32)
    return sd


# ---------------------------------------------------------------------------------------------------------------
# Counts.


def test_published_configuration_has_the_official_count():
    model = zoo.create_model("ninformer_cifar")
    cfg = dict(zoo.get_entry("ninformer_cifar").defaults)
    by_layout = sum(math.prod(s) for s in official_shapes(cfg).values())
    assert zoo.count_params(model) == by_layout == CIFAR_COUNT
    assert num_params(ninformer_peer("ninformer_cifar", model)) == CIFAR_COUNT
    assert zoo.count_params(zoo.create_model("ninformer_cifar", num_classes=100)) == 2_675_300  # notes §6.2


@pytest.mark.parametrize("name", ["ninformer_s16_224", "ninformer_ti2_8"])
def test_other_counts_follow_the_layout(name):
    cfg = {"num_classes": 1000, **zoo.get_entry(name).defaults}
    assert zoo.count_params(zoo.create_model(name)) == sum(math.prod(s) for s in official_shapes(cfg).values())


def test_pytorch_reference_has_the_official_keys_and_shapes():
    torch_model = ninformer_peer("ninformer_ti2_8", zoo.create_model("ninformer_ti2_8", **PARITY))
    assert {k: tuple(v.shape) for k, v in torch_model.state_dict().items()} == official_shapes(PARITY)


# ---------------------------------------------------------------------------------------------------------------
# The gating unit and the NiN block against NumPy (paper Eqs.: MGU(z) = (z W_p + b_p) * Mixer(z); NiN block
# x + MGU(LN(x)), then + FF(LN(x)) with the same LN).


def np_layer_norm(x, p, eps=1e-5):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def np_gelu(x):
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def np_mlp(x, p, first="Dense_0", second="Dense_1"):
    h = np_gelu(x @ p[first]["kernel"] + p[first]["bias"])
    return h @ p[second]["kernel"] + p[second]["bias"]


def np_mixer(x, p):
    """MLP-Mixer layer on [batch, tokens, d]: token MLP over the token axis, channel MLP over the channels."""
    y = np_layer_norm(x, p["LayerNorm_0"]).swapaxes(1, 2)
    x = x + np_mlp(y, p["token_mixing"]).swapaxes(1, 2)
    return x + np_mlp(np_layer_norm(x, p["LayerNorm_1"]), p["channel_mixing"])


def np_mgu(z, p):
    return (z @ p["proj"]["kernel"] + p["proj"]["bias"]) * np_mixer(z, p["Mixer"])


def np_nin_block(x, p):
    x = x + np_mgu(np_layer_norm(x, p["norm"]), p["mgu"])
    return x + np_mlp(np_layer_norm(x, p["norm"]), p["ffn"], "net_0", "net_3")


def perturbed(variables, seed=1, scale=0.3):
    """Every leaf moved off its init (norm scales away from 1, biases away from 0)."""
    leaves, treedef = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(
        treedef, [x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    )


def to64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def test_gating_unit_matches_numpy():
    x = np.random.default_rng(0).standard_normal((2, 6, 8)).astype(np.float32)
    mgu = MixerGatingUnit(d_ffn=10)
    variables = perturbed(mgu.init(jax.random.key(0), x))
    assert set(variables["params"]) == {"proj", "Mixer"}
    out = mgu.apply(variables, x)
    np.testing.assert_allclose(out, np_mgu(x.astype(np.float64), to64(variables["params"])), rtol=1e-5, atol=1e-5)
    # The gate matters: a zero projection (u = 0) zeroes the unit.
    zero_proj = jax.tree.map(jnp.zeros_like, variables["params"]["proj"])
    assert not np.any(mgu.apply({"params": {**variables["params"], "proj": zero_proj}}, x))


def test_nin_block_matches_numpy_and_shares_one_layer_norm():
    x = np.random.default_rng(1).standard_normal((2, 6, 8)).astype(np.float32)
    block = NiNBlock(d_ffn=10)
    variables = perturbed(block.init(jax.random.key(0), x))
    params = variables["params"]
    # One outer norm (used twice) plus the inner Mixer's own two: three LayerNorms, as the official block.
    assert set(params) == {"norm", "mgu", "ffn"}
    assert set(params["norm"]) == {"scale", "bias"} and params["norm"]["scale"].shape == (8,)
    norms = [
        p for p in jax.tree_util.tree_flatten_with_path(params)[0] if jax.tree_util.keystr(p[0]).endswith("['scale']")
    ]
    assert len(norms) == 3
    out = block.apply(variables, x)
    np.testing.assert_allclose(out, np_nin_block(x.astype(np.float64), to64(params)), rtol=1e-5, atol=1e-5)
    # The same norm parameters act in both places: its gradient is the sum of the two uses, so a reference that
    # used the shared norm only before the gating unit (fresh norm before FF) gives a different output.
    fresh = {**to64(params), "norm": {"scale": np.ones(8), "bias": np.zeros(8)}}
    only_first = x + np_mgu(np_layer_norm(x.astype(np.float64), to64(params)["norm"]), fresh["mgu"])
    only_first = only_first + np_mlp(np_layer_norm(only_first, fresh["norm"]), fresh["ffn"], "net_0", "net_3")
    assert np.abs(np.asarray(out) - only_first).max() > 1e-2


def test_nin_block_gradients_match_finite_differences():
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(2).standard_normal((1, 5, 4)), jnp.float64)
        block = NiNBlock(d_ffn=6, param_dtype=jnp.float64)
        params = perturbed(block.init(jax.random.key(0), x))["params"]
        fn = jax.jit(lambda x, params: jnp.sum(jnp.sin(block.apply({"params": params}, x))))
        assert fn(x, params).dtype == jnp.float64
        check_grads(fn, (x, params), order=1, modes=("fwd", "rev"), eps=1e-6, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Converter.


def test_official_round_trip_is_exact():
    sd = random_state_dict(PARITY)
    variables = checkpoints.convert("ninformer_ti2_8", {f"module.{k}": v for k, v in sd.items()}, **PARITY)
    assert set(variables) == {"params"}
    params = variables["params"]
    np.testing.assert_array_equal(params["head"]["kernel"], sd["classifier.weight"].T)
    np.testing.assert_array_equal(params["patcher"]["kernel"][1, 0, 2], sd["patcher.weight"][:, 2, 1, 0])
    np.testing.assert_array_equal(
        params["model_1"]["mgu"]["Mixer"]["token_mixing"]["Dense_1"]["kernel"],
        sd["model.1.mgu.Mixer.token_mix.2.net.3.weight"].T,
    )
    np.testing.assert_array_equal(
        params["model_0"]["mgu"]["Mixer"]["LayerNorm_1"]["scale"], sd["model.0.mgu.Mixer.channel_mix.0.weight"]
    )
    np.testing.assert_array_equal(params["model_1"]["ffn"]["net_3"]["bias"], sd["model.1.ffn.net.3.bias"])
    back = to_official(variables)
    assert set(back) == set(sd)
    for key, value in back.items():
        assert value.dtype == sd[key].dtype and value.shape == sd[key].shape, key
        np.testing.assert_array_equal(value, sd[key], err_msg=key)


def test_infer_config_reads_every_size_the_file_fixes():
    cfg = dict(num_classes=7, img_size=12, in_chans=2, patch_size=3, d_model=10, d_ffn=14, num_layers=3)
    sd = random_state_dict(cfg)
    assert infer_config(sd) == cfg
    headless = {k: v for k, v in sd.items() if not k.startswith("classifier.")}
    assert infer_config(headless)["num_classes"] == 0
    variables = checkpoints.convert("ninformer_cifar", headless)  # every field from the file
    assert "head" not in variables["params"] and len([k for k in variables["params"] if k.startswith("model_")]) == 3
    # A non-square grid (24 tokens) cannot be read off the file: img_size is left to the caller.
    assert "img_size" not in infer_config(random_state_dict(PARITY))


def test_converter_names_unexpected_and_missing_keys():
    sd = random_state_dict(PARITY)
    extra = {**sd, "model.0.mgu.gate.weight": np.zeros((12, 12), np.float32)}
    with pytest.raises(ValueError, match=r"unexpected .*model\.0\.mgu\.gate\.weight"):
        checkpoints.convert("ninformer_ti2_8", extra, **PARITY)
    missing = {k: v for k, v in sd.items() if k != "model.1.norm.weight"}
    with pytest.raises(ValueError, match=r"missing .*params/model_1/norm/scale"):
        checkpoints.convert("ninformer_ti2_8", missing, **PARITY)


# ---------------------------------------------------------------------------------------------------------------
# Parity with the PyTorch reference.


def randomise(torch_model, seed=0):
    """Every parameter moved off its init: norms 1 + 0.2 N(0, 1) / 0.2 N(0, 1), weights scaled by 1 + 0.2 N(0, 1),
    biases shifted, the classifier 0.3 N(0, 1) (so the logits are not near zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in torch_model.state_dict().items():
            noise = torch.randn(t.shape, generator=g)
            if key.startswith("classifier"):
                t.copy_(0.3 * noise)
            elif t.ndim == 1:
                t.copy_(t + 0.2 * noise)
            else:
                t.copy_(t * (1 + 0.2 * noise))


def test_matches_pytorch_in_evaluation():
    model = zoo.create_model("ninformer_ti2_8", **PARITY)
    torch_model = ninformer_peer("ninformer_ti2_8", model)
    before = {k: v.clone() for k, v in torch_model.state_dict().items()}
    randomise(torch_model)
    sd = {k: v.numpy().copy() for k, v in torch_model.state_dict().items()}
    assert all(not np.allclose(sd[k], before[k].numpy()) for k in sd)  # every parameter randomised
    variables = checkpoints.convert("ninformer_ti2_8", sd, img_size=PARITY["img_size"])
    x = np.random.default_rng(1).standard_normal((3, 3, 12, 8)).astype(np.float32)
    torch_model.eval()
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x)).numpy()
    ours = jax.jit(lambda v, im: model.apply(v, im))(variables, jnp.asarray(x.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(np.asarray(ours), expected, rtol=1e-4, atol=1e-4)
    assert np.abs(expected).max() > 0.5 and np.abs(expected[0] - expected[1]).max() > 0.1  # not a constant output
    # Dropout is active in training mode only.
    train_out = model.apply(
        variables, jnp.asarray(x.transpose(0, 2, 3, 1)), train=True, rngs={"dropout": jax.random.key(0)}
    )
    assert np.abs(np.asarray(train_out) - expected).max() > 1e-2


def test_load_pretrained_from_an_official_pth(tmp_path):
    model = zoo.create_model("ninformer_ti2_8", **PARITY)
    torch_model = ninformer_peer("ninformer_ti2_8", model)
    randomise(torch_model, seed=3)
    torch.save(torch_model.state_dict(), tmp_path / "ninformer.pth")
    loaded, variables = checkpoints.load_pretrained(
        "ninformer_ti2_8", str(tmp_path / "ninformer.pth"), img_size=(12, 8)
    )
    assert (loaded.num_classes, loaded.d_model, loaded.d_ffn, loaded.num_layers) == (5, 12, 20, 2)
    x = np.random.default_rng(4).standard_normal((2, 3, 12, 8)).astype(np.float32)
    torch_model.eval()
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x)).numpy()
    ours = loaded.apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(np.asarray(ours), expected, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Configuration and registry.


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(img_size=10, patch_size=4), "not divisible by patch_size"),
        (dict(d_model=0), "d_model must be positive"),
        (dict(d_ffn=-8), "d_ffn must be positive"),
        (dict(num_layers=0), "num_layers must be positive"),
        (dict(patch_size=0), "patch_size must be positive"),
        (dict(in_chans=0), "in_chans must be positive"),
        (dict(img_size=(0, 8)), "img_size must be positive"),
        (dict(num_classes=-1), "num_classes must be >= 0"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
        (dict(dropout=-0.1), r"dropout must be in \[0, 1\)"),
        (dict(norm_eps=0.0), "norm_eps must be positive"),
    ],
)
def test_invalid_fields_are_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        zoo.create_model("ninformer_ti2_8", **overrides)


def test_registry_entries():
    info = zoo.model_info("ninformer_cifar")
    assert info.family == "ninformer" and info.paper.arxiv == "2403.02411"
    assert info.code == "https://github.com/Abdullah-88/NiNformer"
    assert info.input_spec == {"images": (32, 32, 3)} and info.num_params == CIFAR_COUNT
    assert zoo.model_info("ninformer_s16_224").input_spec == {"images": (224, 224, 3)}
    assert zoo.list_models("ninformer*") == ["ninformer_cifar", "ninformer_s16_224", "ninformer_ti2_8"]


@pytest.mark.slow
def test_tiny_model_learns_digits(tmp_path):
    """The default digits job (train/configs/default.py) with ninformer_ti2_8 for 10 of its 30 epochs (measured:
    92.8% test accuracy, 80 s of CPU time; 97.8% after 30 epochs)."""
    args = ["--config.model_name=ninformer_ti2_8", "--config.total_epochs=10", f"--workdir={tmp_path}"]
    proc = run_train(args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = read_results(tmp_path)
    assert results["test_metrics"]["accuracy"] >= 0.80
    assert results["test_metrics"]["num_examples"] == 360
