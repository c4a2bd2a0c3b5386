"""Registry-driven harness: every registered model, at a tiny size, honours the model contract, including models
with state (BatchNorm's `batch_stats`): init creates it, training-mode calls update it, evaluation reads it."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dtype_checks import contraction_dtypes

import zoo

# Tiny constructor overrides per family, so the harness is cheap on CPU; every family must have one.
TINY = {
    "mlp_mixer": lambda cfg: dict(
        img_size=2 * cfg["patch_size"], hidden_dim=16, tokens_mlp_dim=8, channels_mlp_dim=24, num_blocks=2
    ),
    "softs": lambda cfg: dict(seq_len=16, pred_len=8, enc_in=3, d_model=16, d_core=8, d_ff=24, e_layers=2),
    "afno": lambda cfg: dict(img_size=4 * cfg["patch_size"], embed_dim=16, depth=2, num_blocks=2),
    "affnet": lambda cfg: dict(
        img_size=8, stem_channels=8, stem_stride=2, mv2_stages=((8, 1, 1, 2),), aff_stages=((16, 1, 2, 2),)
    ),
    "ninformer": lambda cfg: dict(img_size=2 * cfg["patch_size"], d_model=16, d_ffn=24, num_layers=2),
    "msmlp": lambda cfg: dict(
        img_size=2 * cfg.get("patch_size", 4) * 2 ** (len(cfg["depths"]) - 1),
        embed_dim=10,
        depths=(1,) * len(cfg["depths"]),
    ),
    "ffnet": lambda cfg: dict(
        img_size=16,
        in_dim=8,
        depth=(1, 1),
        embed_dim=(8, 16),
        kernel_sizes=(3, 7),
        kernel_sizes1=(3, 7),
        kernel_sizes2=(7, 3),
        expansion_ratios=(2, 2),
    ),
    "vim2": lambda cfg: dict(
        img_size=8, patch_size=2, embed_dim=8, token_depths=(2, 2), channel_depths=(1, 1), d_state=2
    ),
    "tsm2": lambda cfg: dict(seq_len=16, pred_len=8, enc_in=3, patch_len=4, stride=4, d_model=8, e_layers=2, d_state=2),
}

# Exact parameter counts with the default (1000-class) head, computed with jax.eval_shape (no compute).
# B/16, B/32 and L/16 are the counts hard-coded in google-research/vision_transformer models_test.py; the others
# follow from paper Table 1 (see test_mixer_counts_follow_the_paper_formula).
EXPECTED_PARAMS = {
    "mixer_s32_224": 19_104_624,
    "mixer_s16_224": 18_528_264,
    "mixer_b32_224": 60_293_428,
    "mixer_b16_224": 59_880_472,
    "mixer_l32_224": 206_939_264,
    "mixer_l16_224": 208_196_168,
    "mixer_h14_224": 432_350_952,
    "mixer_ti4_32": 1_259_880,
    "mixer_ti2_8": 137_064,
    # SOFTS: the official run.py defaults (see test_softs_counts_follow_the_layer_arithmetic).
    "softs": 6_927_968,
    # AFNONet: the official classification code's model instantiated (README command / script default), see
    # tests/test_afno.py for the arithmetic.
    "afnonet_d256_224": 8_190_696,
    "afnonet_d384_224": 22_902_376,
    "afnonet_ti2_8": 351_784,
    # AFFNet: the official models' counts (README 1.4M / 2.6M / 5.5M; see tests/test_affnet.py for the arithmetic).
    "affnet_et": 1_436_264,
    "affnet_t": 2_654_232,
    "affnet": 5_568_696,
    "affnet_tiny_8": 263_032,
    # NiNformer: the official train.py model (2,652,170, vision_mixers.md §6.2); see tests/test_ninformer.py.
    "ninformer_cifar": 2_652_170,
    "ninformer_s16_224": 23_055_368,
    "ninformer_ti2_8": 84_842,
    # MS-MLP: the official models (vision_mixers.md §3.2, counted from the official code); see tests/test_msmlp.py.
    "msmlp_tiny": 28_656_232,
    "msmlp_small": 50_303_752,
    "msmlp_base": 88_696_792,
    "msmlp_tiny_8": 228_176,
    # FFNet: the official (unfused) counts; re-parameterised 13,660,152 / 26,908,440 / 48,330,632 / 79,200,360
    # (README 13.7M / 26.9M / 48.3M / 79.2M), see tests/test_ffnet.py.
    "ffnet_1": 13_775_656,
    "ffnet_2": 27_208_408,
    "ffnet_3": 48_817_896,
    "ffnet_3_384": 48_817_896,
    "ffnet_4_384": 79_868_968,
    "ffnet_tiny_8": 88_560,
    # ViM2: no official code; within 5% of the v1 table's 20M / 43M / 74M (see zoo/mambamixer.py).
    "vim2_tiny": 19_921_438,
    "vim2_small": 42_499_564,
    "vim2_base": 73_493_644,
    "vim2_tiny_8": 74_390,
    # TSM2: the public replication's ETTh1 settings at lookback 512. The joint 2-D LayerNorm's affine is
    # 2 * patches * d_model (2 * 63 * 16 = 2,016; tiny 2 * 15 * 16 = 480), where the replication's two LayerNorms had
    # 2 * (d_model + patches) (158; tiny 62): 115,532 and 16,924 with those.
    "tsm2": 117_390,
    "tsm2_tiny": 17_342,
}

NAMES = zoo.list_models()
BATCH = 2


def tiny_model(name, **overrides):
    entry = zoo.get_entry(name)
    return zoo.create_model(name, **{**TINY[entry.family](dict(entry.defaults)), **overrides})

def code_path(name) -> tuple:
    """What selects code in a model rather than sizing it, at the tiny size: its family and its flag fields (bools
    and strings, e.g. FFNet's `use_layer_scale`, the Mixer's `approximate_gelu`)."""
    model = tiny_model(name)
    fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model) if f.name not in ("parent", "name")}
    return (zoo.get_entry(name).family, *sorted((k, v) for k, v in fields.items() if isinstance(v, bool | str)))


# The harness runs on one model per code path (the smallest registered one); the other variants differ only in
# sizes and rates, which the exact parameter counts (every model, real size) and tests/test_properties.py cover.
HARNESS = sorted(
    {
        path: min((n for n in NAMES if code_path(n) == path), key=lambda n: EXPECTED_PARAMS[n])
        for path in {code_path(n) for n in NAMES}
    }.values()
)



def random_inputs(model, seed=0):
    rng = np.random.default_rng(seed)
    return {k: jnp.asarray(rng.standard_normal((BATCH, *s)), jnp.float32) for k, s in zoo.input_spec(model).items()}


def perturbed_variables(model, inputs):
    """Initialised variables with every leaf moved off its init (zero heads would hide upstream gradients)."""
    variables = model.init(jax.random.key(0), **inputs)
    leaves, treedef = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    leaves = [x + 0.05 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, leaves)


def state_collections(variables):
    """The model-state collections of a variables tree (everything but `params`)."""
    return sorted(k for k in variables if k != "params")


def train_apply(model, variables, inputs, rng):
    """A training-mode call: `(outputs, updated state)`, state collections mutable as the trainer passes them."""
    out, state = model.apply(
        variables, **inputs, train=True, rngs={"dropout": rng}, mutable=state_collections(variables)
    )
    return out, dict(state)


def expected_output_shape(name, model):
    if zoo.get_entry(name).task == "classification":
        return (BATCH, model.num_classes)
    return (BATCH, model.pred_len, model.enc_in)


def test_the_harness_covers_every_code_path():
    assert {code_path(n) for n in HARNESS} == {code_path(n) for n in NAMES}
    assert {zoo.get_entry(n).family for n in HARNESS} == {zoo.get_entry(n).family for n in NAMES}


def test_every_family_has_a_tiny_config():
    families = {zoo.get_entry(n).family for n in NAMES}
    assert families <= set(TINY), f"add a TINY entry for {sorted(families - set(TINY))}"


@pytest.mark.parametrize("name", HARNESS)
def test_forward_shape_finite_and_jit_equals_eager(name):
    model = tiny_model(name)
    inputs = random_inputs(model)
    variables = perturbed_variables(model, inputs)
    eager = model.apply(variables, **inputs, train=False)
    jitted = jax.jit(lambda v, x: model.apply(v, **x, train=False))(variables, inputs)
    assert eager.shape == expected_output_shape(name, model)
    assert eager.dtype == jnp.float32
    assert np.isfinite(np.asarray(eager)).all()
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", HARNESS)
def test_every_parameter_receives_a_gradient(name):
    model = tiny_model(name)
    inputs = random_inputs(model)
    variables = perturbed_variables(model, inputs)

    def loss(params):
        out, _ = train_apply(model, {**variables, "params": params}, inputs, jax.random.key(2))
        return jnp.mean(jnp.sin(3.0 * out) + out**2)

    grads = jax.jit(jax.grad(loss))(variables["params"])
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    dead = [jax.tree_util.keystr(path) for path, g in flat if not np.any(np.asarray(g) != 0)]
    assert not dead, f"parameters without gradient: {dead}"
    assert all(np.isfinite(np.asarray(g)).all() for _, g in flat)


@pytest.mark.parametrize("name", HARNESS)
def test_model_state_is_updated_in_training_and_read_in_evaluation(name):
    """Every state collection a model declares: a training call returns all of it (same tree, changed values),
    evaluation neither changes it nor depends on the rest of the batch, and evaluation reads it."""
    model = tiny_model(name)
    inputs = random_inputs(model)
    variables = model.init(jax.random.key(0), **inputs)
    collections = state_collections(variables)
    abstract = zoo.abstract_variables(model)
    assert state_collections(abstract) == collections
    out, state = train_apply(model, variables, inputs, jax.random.key(1))
    assert out.shape == expected_output_shape(name, model)
    assert sorted(state) == collections
    for c in collections:
        assert jax.tree.structure(state[c]) == jax.tree.structure(variables[c])
        changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state[c]), jax.tree.leaves(variables[c]))]
        assert all(changed), f"{c}: a training call left some of the state unchanged"
    # Evaluation: per-example outputs (each example alone equals it inside the batch), read from the state.
    eval_out = model.apply(variables, **inputs, train=False)
    first = model.apply(variables, **{k: v[:1] for k, v in inputs.items()}, train=False)
    np.testing.assert_allclose(np.asarray(first), np.asarray(eval_out[:1]), rtol=1e-5, atol=1e-5)
    if collections:
        updated = model.apply({**variables, **state}, **inputs, train=False)
        assert not np.allclose(np.asarray(updated), np.asarray(eval_out)), "evaluation ignores the model state"


@pytest.mark.parametrize("name", [n for n in HARNESS if zoo.get_entry(n).task == "classification"])
def test_num_classes_override_and_pooled_features(name):
    model = tiny_model(name, num_classes=3)
    inputs = random_inputs(model)
    variables = model.init(jax.random.key(0), **inputs)
    assert model.apply(variables, **inputs).shape == (BATCH, 3)
    features_model = tiny_model(name, num_classes=0)
    features_vars = features_model.init(jax.random.key(0), **inputs)
    features = features_model.apply(features_vars, **inputs)
    assert features.ndim == 2 and features.shape[0] == BATCH
    assert "head" not in features_vars["params"]
    # The features are what the head sees: logits = features @ kernel + bias.
    head = variables["params"]["head"]
    trunk = {k: v for k, v in variables["params"].items() if k != "head"}
    trunk_variables = {**variables, "params": trunk}
    logits = features_model.apply(trunk_variables, **inputs) @ head["kernel"] + head["bias"]
    np.testing.assert_allclose(np.asarray(logits), np.asarray(model.apply(variables, **inputs)), atol=1e-5)


@pytest.mark.parametrize("name", HARNESS)
def test_bf16_compute_keeps_float32_params(name):
    model = tiny_model(name, dtype=jnp.bfloat16)
    inputs = random_inputs(model)
    variables = model.init(jax.random.key(0), **inputs)
    assert {x.dtype for x in jax.tree.leaves(variables["params"])} == {jnp.dtype(jnp.float32)}
    out = model.apply(variables, **inputs)
    assert out.dtype == jnp.float32 and np.isfinite(np.asarray(out)).all()
    # The computation really runs in bf16: most matrix products / convolutions take bf16 operands, and the result
    # differs from float32's by bf16 rounding (off-init variables: a zero head would hide the difference).
    variables = perturbed_variables(model, inputs)
    out = np.asarray(model.apply(variables, **inputs))
    counts = contraction_dtypes(model.apply, variables, **inputs)
    assert counts["bfloat16"] > counts["float32"], counts
    reference = np.asarray(tiny_model(name).apply(variables, **inputs))
    relative = np.abs(out - reference).max() / np.abs(reference).max()
    # Above 1e-4: a model that ignored `dtype` would match float32 (< 1e-6). Below 0.25: rounding, not garbage
    # (measured: 0.5-1% for the vision models, ~11% for the tiny TSM2, whose normalised layers amplify it).
    assert 1e-4 < relative < 0.25, relative


@pytest.mark.parametrize("name", HARNESS)
def test_wrong_input_shape_is_a_clear_error(name):
    model = tiny_model(name)
    inputs = random_inputs(model)
    variables = model.init(jax.random.key(0), **inputs)
    first = next(iter(inputs))
    bad = {**inputs, first: inputs[first][..., :1] if inputs[first].shape[-1] > 1 else inputs[first][:, :1]}
    with pytest.raises(ValueError, match=r"expects .*got"):
        model.apply(variables, **bad)


def test_all_registered_models_have_an_expected_parameter_count():
    assert set(EXPECTED_PARAMS) == set(NAMES), "add the new model's exact parameter count to EXPECTED_PARAMS"


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count(name):
    # model_info counts with zoo.count_params (jax.eval_shape of the registered model), once per name per process:
    # tracing the largest models costs tens of seconds, so the other test modules' counts reuse it.
    assert zoo.model_info(name).num_params == EXPECTED_PARAMS[name]


def mixer_param_count(patch, in_chans, tokens, hidden, tokens_mlp, channels_mlp, blocks, classes):
    """Paper Table 1 arithmetic, independent of the model code."""
    stem = patch * patch * in_chans * hidden + hidden
    token_mlp = tokens * tokens_mlp + tokens_mlp + tokens_mlp * tokens + tokens
    channel_mlp = hidden * channels_mlp + channels_mlp + channels_mlp * hidden + hidden
    block = 2 * 2 * hidden + token_mlp + channel_mlp
    return stem + blocks * block + 2 * hidden + hidden * classes + classes


@pytest.mark.parametrize("name", zoo.list_models("mixer_*"))
def test_mixer_counts_follow_the_paper_formula(name):
    cfg = zoo.get_entry(name).defaults
    tokens = (cfg["img_size"] // cfg["patch_size"]) ** 2
    widths = cfg["hidden_dim"], cfg["tokens_mlp_dim"], cfg["channels_mlp_dim"]
    expected = mixer_param_count(cfg["patch_size"], cfg.get("in_chans", 3), tokens, *widths, cfg["num_blocks"], 1000)
    assert EXPECTED_PARAMS[name] == expected


def softs_param_count(seq_len, pred_len, d_model, d_core, d_ff, e_layers):
    """The official module's layers, counted by hand: embedding Linear(L, d); per layer STAR's Linear(d, d),
    Linear(d, d'), Linear(d + d', d), Linear(d, d), the feed-forward Conv1d(d, d_ff, 1), Conv1d(d_ff, d, 1) and two
    LayerNorms; projection Linear(d, H). Time-feature tokens share the embedding, so enc_in and F add nothing."""
    d, c = d_model, d_core
    embedding = seq_len * d + d
    star = (d * d + d) + (d * c + c) + ((d + c) * d + d) + (d * d + d)
    feed_forward = d * d_ff + d_ff + d_ff * d + d
    layer = star + feed_forward + 2 * 2 * d
    return embedding + e_layers * layer + d * pred_len + pred_len


@pytest.mark.parametrize("name", [n for n in NAMES if zoo.get_entry(n).family == "softs"])
def test_softs_counts_follow_the_layer_arithmetic(name):
    cfg = zoo.get_entry(name).defaults
    sizes = ("seq_len", "pred_len", "d_model", "d_core", "d_ff", "e_layers")
    assert EXPECTED_PARAMS[name] == softs_param_count(*(cfg[k] for k in sizes))
