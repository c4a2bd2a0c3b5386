"""AFNONet: the official checkpoint layout converts and round-trips exactly, logits match the official architecture
written in PyTorch (benchmarks/torch_afno.py), exact parameter counts, argument errors, the ImageNet config's
quicktest on mock data, and the digits job learns."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from trainer_utils import read_results, run_train

import checkpoints
import zoo
from benchmarks.torch_afno import afno_peer
from checkpoints.convert.afno import infer_config, to_official
from zoo.afno import AFNONet

# img 16, patch 4 (a 4x4 grid of 16 tokens), width 32, 2 filter blocks, 2 layers, MLP 4x, 5 classes.
TINY = dict(img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=2, num_blocks=2, num_classes=5)


def official_state_dict(
    img_size,
    patch_size,
    in_chans,
    embed_dim,
    depth,
    num_blocks,
    num_classes,
    mlp_hidden=None,
    hidden_size_factor=1,
    seed=0,
):
    """The keys and PyTorch shapes of the official `AFNONet.state_dict()` (vision_mixers.md §4.5, afno2d.py),
    random values."""
    rng = np.random.default_rng(seed)
    c, k, f = embed_dim, num_blocks, hidden_size_factor
    b = c // k
    hidden = mlp_hidden or 4 * c
    tokens = (img_size // patch_size) ** 2
    shapes = {
        "pos_embed": (1, tokens, c),
        "patch_embed.proj.weight": (c, in_chans, patch_size, patch_size),
        "patch_embed.proj.bias": (c,),
    }
    for i in range(depth):
        shapes |= {
            f"blocks.{i}.norm1.weight": (c,),
            f"blocks.{i}.norm1.bias": (c,),
            f"blocks.{i}.filter.w1": (2, k, b, b * f),
            f"blocks.{i}.filter.b1": (2, k, b * f),
            f"blocks.{i}.filter.w2": (2, k, b * f, b),
            f"blocks.{i}.filter.b2": (2, k, b),
            f"blocks.{i}.norm2.weight": (c,),
            f"blocks.{i}.norm2.bias": (c,),
            f"blocks.{i}.mlp.fc1.weight": (hidden, c),
            f"blocks.{i}.mlp.fc1.bias": (hidden,),
            f"blocks.{i}.mlp.fc2.weight": (c, hidden),
            f"blocks.{i}.mlp.fc2.bias": (c,),
        }
    shapes |= {"norm.weight": (c,), "norm.bias": (c,)}
    if num_classes:
        shapes |= {"head.weight": (num_classes, c), "head.bias": (num_classes,)}
    return {key: rng.standard_normal(shape).astype(np.float32) for key, shape in shapes.items()}


def test_official_layout_converts_with_the_documented_renames():
    sd = official_state_dict(**TINY, hidden_size_factor=2, mlp_hidden=48)
    variables = checkpoints.convert("afnonet_d256_224", sd, source="official")
    assert set(variables) == {"params"}
    p = variables["params"]
    np.testing.assert_array_equal(p["pos_embed"], sd["pos_embed"])
    kernel = sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0)  # OIHW -> HWIO
    np.testing.assert_array_equal(p["patch_embed"]["proj"]["kernel"], kernel)
    np.testing.assert_array_equal(p["patch_embed"]["proj"]["bias"], sd["patch_embed.proj.bias"])
    block = p["blocks_1"]
    for name in ("w1", "b1", "w2", "b2"):
        np.testing.assert_array_equal(block["filter"][name], sd[f"blocks.1.filter.{name}"])
    np.testing.assert_array_equal(block["norm2"]["scale"], sd["blocks.1.norm2.weight"])
    np.testing.assert_array_equal(block["mlp"]["fc1"]["kernel"], sd["blocks.1.mlp.fc1.weight"].T)
    np.testing.assert_array_equal(block["mlp"]["fc2"]["bias"], sd["blocks.1.mlp.fc2.bias"])
    np.testing.assert_array_equal(p["norm"]["bias"], sd["norm.bias"])
    np.testing.assert_array_equal(p["head"]["kernel"], sd["head.weight"].T)
    # The file fixes the architecture: the model built from what it says accepts the converted variables.
    config = infer_config(sd)
    assert config == dict(
        num_classes=5,
        embed_dim=32,
        in_chans=3,
        patch_size=4,
        img_size=16,
        depth=2,
        num_blocks=2,
        hidden_size_factor=2,
        mlp_ratio=1.5,
    )
    model = zoo.create_model("afnonet_d256_224", **config)
    logits = model.apply(variables, jnp.zeros((1, 16, 16, 3)))
    assert logits.shape == (1, 5)


def test_round_trip_official_ours_official_is_exact():
    sd = official_state_dict(**TINY)
    back = to_official(checkpoints.convert("afnonet_ti2_8", sd, source="official"))
    assert set(back) == set(sd)
    for key, value in sd.items():
        assert back[key].dtype == value.dtype and back[key].shape == value.shape, key
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_module_prefix_headless_file_and_unknown_keys():
    sd = official_state_dict(**{**TINY, "num_classes": 0})
    variables = checkpoints.convert("afnonet_ti2_8", {f"module.{k}": v for k, v in sd.items()}, source="official")
    assert "head" not in variables["params"]
    assert set(to_official(variables)) == set(sd)
    with pytest.raises(ValueError, match=r"unexpected in official checkpoint .*blocks\.0\.attn\.qkv\.weight"):
        checkpoints.convert("afnonet_ti2_8", {**sd, "blocks.0.attn.qkv.weight": np.zeros((3, 3))}, source="official")
    missing = {k: v for k, v in sd.items() if k != "blocks.1.filter.b2"}
    with pytest.raises(ValueError, match=r"missing in official checkpoint .*blocks_1/filter/b2"):
        checkpoints.convert("afnonet_ti2_8", missing, source="official")


# ---------------------------------------------------------------------------------------------------------------
# Parity with the official architecture in PyTorch.


def randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter off its init: Linear/Conv U(+-1/sqrt(fan_in)), norms 1 + 0.2 N / 0.2 N, filter 0.3 N / sqrt(b),
    position embedding 0.5 N (biases included)."""
    gen = torch.Generator().manual_seed(seed)
    normal = lambda shape: torch.randn(shape, generator=gen)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if ".filter." in name:
                p.copy_(0.3 * normal(p.shape) / math.sqrt(p.shape[2 if p.ndim == 4 else -1]))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * normal(p.shape))
            elif "norm" in name:
                p.copy_(0.2 * normal(p.shape))
            elif name == "pos_embed":
                p.copy_(0.5 * normal(p.shape))
            else:  # Linear / Conv weights and biases
                owner = module.get_submodule(name.rsplit(".", 1)[0])
                fan_in = owner.weight[0].numel()
                p.copy_((2 * torch.rand(p.shape, generator=gen) - 1) / math.sqrt(fan_in))


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(double_skip=True, hidden_size_factor=2),
        dict(hard_thresholding_fraction=0.3, mlp_ratio=2.5),
        dict(num_classes=0, num_blocks=4),
    ],
    ids=["default", "double_skip-factor2", "truncated-ratio2.5", "features-4blocks"],
)
def test_logits_match_the_official_pytorch_model(options):
    model = zoo.create_model("afnonet_d256_224", **{**TINY, **options})
    peer = afno_peer("afnonet_d256_224", model).eval()
    randomise(peer)
    if options.get("hard_thresholding_fraction"):
        assert model.num_tokens // 2 + 1 > 3 and int((model.num_tokens // 2 + 1) * 0.3) == 2  # 2 of 3 bins kept
    variables = checkpoints.convert("afnonet_d256_224", peer.state_dict(), source="official", **options)
    images = np.random.default_rng(1).standard_normal((3, 16, 16, 3)).astype(np.float32)
    with torch.no_grad():
        expected = peer(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, jnp.asarray(images))
    assert out.shape == expected.shape == (3, options.get("num_classes", 5) or 32)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-4, rtol=1e-4)


def test_registered_models_match_their_peer_in_parameter_count():
    for name in ("afnonet_ti2_8", "afnonet_d256_224"):
        model = zoo.create_model(name)
        peer = afno_peer(name, model)
        assert sum(p.numel() for p in peer.parameters()) == zoo.count_params(model), name
        zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), zoo.abstract_variables(model))
        official = to_official(zeros)
        assert {k: v.shape for k, v in official.items()} == {k: tuple(v.shape) for k, v in peer.state_dict().items()}


# ---------------------------------------------------------------------------------------------------------------
# Registry, counts, arguments.


def afno_param_count(img, patch, in_chans, dim, depth, num_blocks, factor=1, mlp_ratio=4, classes=1000):
    """vision_mixers.md §4.1-4.2 arithmetic: patch conv, position embedding, per layer two LayerNorms, the filter
    (4 C b f + 2 C f + 2 C) and the MLP; final LayerNorm and head."""
    b, hidden = dim // num_blocks, int(dim * mlp_ratio)
    stem = patch * patch * in_chans * dim + dim + (img // patch) ** 2 * dim
    layer = 4 * dim + (4 * dim * b * factor + 2 * dim * factor + 2 * dim) + (2 * dim * hidden + hidden + dim)
    return stem + depth * layer + 2 * dim + dim * classes + classes


def test_parameter_counts():
    assert zoo.count_params(zoo.create_model("afnonet_d256_224")) == 8_190_696  # vision_mixers.md §4.2 [run]
    assert zoo.count_params(zoo.create_model("afnonet_d384_224")) == 22_902_376
    assert zoo.count_params(zoo.create_model("afnonet_d384_224", num_blocks=4)) == 17_593_960
    assert zoo.count_params(zoo.create_model("afnonet_d384_224", num_blocks=8)) == 16_709_224
    assert afno_param_count(224, 4, 3, 256, 12, 4) == 8_190_696
    assert zoo.count_params(zoo.create_model("afnonet_ti2_8")) == afno_param_count(8, 2, 1, 96, 3, 4) == 351_784


def test_model_info_and_data_config():
    info = zoo.model_info("afnonet_d256_224")
    assert info.family == "afno" and info.paper.arxiv == "2111.13587"
    assert info.paper.code == "https://github.com/NVlabs/AFNO-transformer"
    assert info.data_config["mean"] == (0.485, 0.456, 0.406) and info.data_config["std"] == (0.229, 0.224, 0.225)
    assert info.data_config["crop_pct"] == 0.9 and info.data_config["interpolation"] == "bicubic"
    assert info.input_spec == {"images": (224, 224, 3)}
    assert zoo.model_info("afnonet_ti2_8").input_spec == {"images": (8, 8, 1)}


def test_init_follows_the_official_code():
    model = zoo.create_model("afnonet_ti2_8", embed_dim=128, depth=1, num_classes=7)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
    fc1 = np.asarray(params["blocks_0"]["mlp"]["fc1"]["kernel"])
    assert 0.018 < fc1.std() < 0.022 and np.abs(fc1).max() < 0.2  # trunc-normal 0.02
    assert not np.any(params["blocks_0"]["mlp"]["fc1"]["bias"]) and not np.any(params["head"]["bias"])
    assert 0.018 < np.asarray(params["pos_embed"]).std() < 0.022
    assert 0.018 < np.asarray(params["blocks_0"]["filter"]["w1"]).std() < 0.022
    stem = np.asarray(params["patch_embed"]["proj"]["kernel"])  # PyTorch default: U(+-1/sqrt(fan_in)), fan_in 4
    assert np.abs(stem).max() <= 0.5 and stem.std() > 0.2
    np.testing.assert_array_equal(params["blocks_0"]["norm1"]["scale"], np.ones(128))


def test_non_square_images_and_drop_path_in_training():
    model = zoo.create_model(
        "afnonet_ti2_8", img_size=(8, 12), embed_dim=16, depth=2, drop_path_rate=0.5, drop_rate=0.1, num_classes=3
    )
    images = jnp.asarray(np.random.default_rng(0).standard_normal((4, 8, 12, 1)), jnp.float32)
    variables = jax.jit(model.init)(jax.random.key(0), images)
    assert variables["params"]["pos_embed"].shape == (1, 24, 16)
    apply = jax.jit(model.apply, static_argnames="train")
    evaluation = apply(variables, images, train=False)
    assert evaluation.shape == (4, 3)
    a = apply(variables, images, train=True, rngs={"dropout": jax.random.key(1)})
    b = apply(variables, images, train=True, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(a, b) and not np.allclose(a, evaluation)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="embed_dim 30 is not divisible by num_blocks 4"):
        AFNONet(embed_dim=30, num_blocks=4)
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        AFNONet(img_size=30, patch_size=4)
    with pytest.raises(ValueError, match="drop_path_rate must be in"):
        AFNONet(drop_path_rate=1.0)
    with pytest.raises(ValueError, match="hard_thresholding_fraction must be in"):
        AFNONet(hard_thresholding_fraction=0.0)
    with pytest.raises(ValueError, match="depth and num_classes must be >= 0"):
        AFNONet(num_classes=-1)
    with pytest.raises(ValueError, match="num_blocks must be >= 1"):
        AFNONet(num_blocks=0)
    model = zoo.create_model("afnonet_ti2_8")
    with pytest.raises(ValueError, match="looks like NCHW"):
        model.init(jax.random.key(0), jnp.zeros((1, 1, 8, 8)))


# ---------------------------------------------------------------------------------------------------------------
# Training.


def test_imagenet_config_quicktest_with_mock_tfds(tmp_path):
    import tensorflow_datasets as tfds

    from train import config as config_lib
    from train import train_and_evaluate
    from train.configs import afno_imagenet

    full = config_lib.validate(afno_imagenet.get_config())
    assert full.model_name == "afnonet_d256_224" and full.data.dataset == "tfds:imagenet2012"
    assert (full.batch_size, full.optim.lr, full.optim.weight_decay) == (1024, 1e-3, 0.05)
    config = afno_imagenet.get_config("quicktest")
    config.data.num_threads = 1
    with tfds.testing.mock_data(num_examples=64):
        results = train_and_evaluate(config, tmp_path)
    assert results["traces"] == {"train_step": 1, "eval_step": 1}
    assert results["test_metrics"]["num_examples"] == 64
    assert 0.0 <= results["test_metrics"]["accuracy"] <= 1.0


@pytest.mark.slow
def test_digits_job_learns(tmp_path):
    """`python -m train --config.model_name=afnonet_ti2_8`: the default digits job with AFNO (30 epochs)."""
    proc = run_train(["--config.model_name=afnonet_ti2_8", f"--workdir={tmp_path}"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = read_results(tmp_path)
    assert results["test_metrics"]["num_examples"] == 360
    assert results["test_metrics"]["accuracy"] >= 0.80, results["test_metrics"]
