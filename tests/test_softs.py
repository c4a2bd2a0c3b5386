"""SOFTS and its STAR module: parity with a NumPy transcription of the official forward pass through the official
state-dict layout, stochastic pooling statistics, PRNG behaviour, instance-normalisation properties, time-feature
tokens, PyTorch-default initialisation and input errors."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import checkpoints
import zoo
from checkpoints.tree import flatten
from zoo.layers import STAR, stochastic_pool

TINY = dict(seq_len=12, pred_len=5, enc_in=3, d_model=8, d_core=6, d_ff=10, e_layers=2)
F = 4  # time-feature tokens (timeF, freq 'h')
SIZES = {k: v for k, v in TINY.items() if k != "enc_in"}  # what the weights determine


# ---------------------------------------------------------------------------------------------------------------
# An official-layout state dict and the official forward pass, in NumPy (float64) from the PyTorch-layout arrays.


def official_state_dict(seq_len, pred_len, d_model, d_core, d_ff, e_layers, seed=0, residual_gain=1.0):
    """Keys and PyTorch shapes of the official `Model.state_dict()` (models/SOFTS.py, layers/Embed.py,
    layers/Transformer_EncDec.py), random values. A small `residual_gain` scales the embedding and STAR's output
    layer so that the first LayerNorm's input variance is comparable to its epsilon."""
    rng = np.random.default_rng(seed)
    uniform = lambda shape, fan_in, gain=1.0: gain * rng.uniform(-1, 1, shape) / math.sqrt(fan_in)

    def linear(prefix, fan_in, fan_out, gain=1.0):
        return {
            f"{prefix}.weight": uniform((fan_out, fan_in), fan_in, gain),
            f"{prefix}.bias": uniform(fan_out, fan_in, gain),
        }

    sd = linear("enc_embedding.value_embedding", seq_len, d_model, gain=residual_gain)
    for i in range(e_layers):
        p = f"encoder.attn_layers.{i}"
        sd |= linear(f"{p}.attention.gen1", d_model, d_model)
        sd |= linear(f"{p}.attention.gen2", d_model, d_core, gain=4.0)  # peaked softmax over channels
        sd |= linear(f"{p}.attention.gen3", d_model + d_core, d_model)
        sd |= linear(f"{p}.attention.gen4", d_model, d_model, gain=residual_gain)
        sd[f"{p}.conv1.weight"] = uniform((d_ff, d_model, 1), d_model)
        sd[f"{p}.conv1.bias"] = uniform(d_ff, d_model)
        sd[f"{p}.conv2.weight"] = uniform((d_model, d_ff, 1), d_ff)
        sd[f"{p}.conv2.bias"] = uniform(d_model, d_ff)
        for norm in ("norm1", "norm2"):
            sd[f"{p}.{norm}.weight"] = 1.0 + 0.2 * rng.standard_normal(d_model)
            sd[f"{p}.{norm}.bias"] = 0.2 * rng.standard_normal(d_model)
    sd |= linear("projection", d_model, pred_len)
    return {k: v.astype(np.float32) for k, v in sd.items()}


_erf = np.vectorize(math.erf)


def np_gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def np_linear(sd, prefix, x):
    return x @ sd[f"{prefix}.weight"].astype(np.float64).T + sd[f"{prefix}.bias"]


def np_conv1x1(sd, prefix, x):
    """Conv1d(kernel 1) over the token axis of `x [batch, tokens, in]` (PyTorch applies it to [batch, in, tokens])."""
    weight = sd[f"{prefix}.weight"].astype(np.float64)[:, :, 0]
    return np.einsum("bti,oi->bto", x, weight) + sd[f"{prefix}.bias"]


def np_layer_norm(sd, prefix, x, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * sd[f"{prefix}.weight"] + sd[f"{prefix}.bias"]


def np_softmax(a, axis):
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_star_eval(sd, prefix, h):
    core = np_linear(sd, f"{prefix}.gen2", np_gelu(np_linear(sd, f"{prefix}.gen1", h)))
    pooled = (np_softmax(core, axis=1) * core).sum(axis=1, keepdims=True)
    fused = np.concatenate([h, np.repeat(pooled, h.shape[1], axis=1)], axis=-1)
    return np_linear(sd, f"{prefix}.gen4", np_gelu(np_linear(sd, f"{prefix}.gen3", fused)))


def np_softs_eval(sd, x, x_mark, use_norm, e_layers):
    """The official `Model.forecast` in evaluation mode, float64."""
    x = x.astype(np.float64)
    n = x.shape[-1]
    if use_norm:
        means = x.mean(axis=1, keepdims=True)
        x = x - means
        stdev = np.sqrt(x.var(axis=1, keepdims=True) + 1e-5)
        x = x / stdev
    tokens = x.transpose(0, 2, 1)
    if x_mark is not None:
        tokens = np.concatenate([tokens, x_mark.transpose(0, 2, 1)], axis=1)
    h = np_linear(sd, "enc_embedding.value_embedding", tokens)
    for i in range(e_layers):
        p = f"encoder.attn_layers.{i}"
        h = np_layer_norm(sd, f"{p}.norm1", h + np_star_eval(sd, f"{p}.attention", h))
        y = np_conv1x1(sd, f"{p}.conv2", np_gelu(np_conv1x1(sd, f"{p}.conv1", h)))
        h = np_layer_norm(sd, f"{p}.norm2", h + y)
    out = np_linear(sd, "projection", h).transpose(0, 2, 1)[:, :, :n]
    if use_norm:
        out = out * stdev + means
    return out


def random_series(batch=2, seed=0, cfg=TINY, features=F):
    """Channels of different offsets and scales; channel 0 has a variance near the normalisation's epsilon."""
    rng = np.random.default_rng(seed)
    scales = np.concatenate([[3e-3], rng.uniform(0.5, 3.0, cfg["enc_in"] - 1)])
    x = rng.standard_normal((batch, cfg["seq_len"], cfg["enc_in"])) * scales
    x = (x + rng.uniform(-5, 5, cfg["enc_in"])).astype(np.float32)
    x_mark = rng.uniform(-0.5, 0.5, (batch, cfg["seq_len"], features)).astype(np.float32) if features else None
    return x, x_mark


# ---------------------------------------------------------------------------------------------------------------
# Parity and conversion.


@pytest.mark.parametrize(
    "use_norm, features, residual_gain", [(True, F, 1.0), (False, F, 1.0), (True, 0, 1.0), (False, 0, 0.01)]
)
def test_converted_official_weights_match_numpy_reference(use_norm, features, residual_gain):
    sd = official_state_dict(**SIZES, seed=1, residual_gain=residual_gain)
    variables = checkpoints.convert("softs", sd, enc_in=TINY["enc_in"], num_time_features=features, use_norm=use_norm)
    model = zoo.create_model("softs", **TINY, num_time_features=features, use_norm=use_norm)
    x, x_mark = random_series(features=features)
    ours = np.asarray(model.apply(variables, x, x_mark, train=False))
    expected = np_softs_eval(sd, x, x_mark, use_norm, TINY["e_layers"])
    assert ours.shape == expected.shape == (2, TINY["pred_len"], TINY["enc_in"])
    assert ours.dtype == np.float32
    assert np.abs(expected).max() > 0.1
    assert np.abs(ours - expected).max() <= 1e-4


def test_infer_config_reads_every_size_from_the_file():
    sd = official_state_dict(seq_len=10, pred_len=7, d_model=8, d_core=4, d_ff=12, e_layers=3)
    from checkpoints.convert.softs import infer_config

    assert infer_config(sd) == dict(seq_len=10, pred_len=7, d_model=8, d_core=4, d_ff=12, e_layers=3)
    # A DataParallel prefix is accepted, and the converted tree has our shapes.
    variables = checkpoints.convert("softs", {f"module.{k}": v for k, v in sd.items()}, enc_in=2)
    params = flatten(variables["params"])
    assert params["encoder/attn_layers_2/conv1/kernel"].shape == (8, 12)
    np.testing.assert_array_equal(
        params["encoder/attn_layers_2/conv1/kernel"], sd["encoder.attn_layers.2.conv1.weight"][:, :, 0].T
    )
    np.testing.assert_array_equal(params["encoder/attn_layers_0/norm2/scale"], sd["encoder.attn_layers.0.norm2.weight"])
    np.testing.assert_array_equal(params["projection/kernel"], sd["projection.weight"].T)


def test_converter_names_unexpected_and_missing_keys():
    sd = official_state_dict(**SIZES)
    del sd["encoder.attn_layers.1.attention.gen3.bias"]
    sd["encoder.norm.weight"] = np.ones(TINY["d_model"], np.float32)  # a final LayerNorm SOFTS does not have
    with pytest.raises(ValueError) as err:
        checkpoints.convert("softs", sd, enc_in=3)
    assert "encoder/attn_layers_1/attention/gen3/bias" in str(err.value)
    assert "encoder.norm.weight" in str(err.value)


# ---------------------------------------------------------------------------------------------------------------
# STAR: stochastic pooling.


def test_star_training_samples_follow_the_softmax_of_the_core():
    """Identify the channel drawn for every (batch, core dimension) from STAR's output alone, over many keys, and
    compare the frequencies with softmax over channels of the core computed here from the parameters."""
    batch, channels, d_model, d_core, draws = 2, 3, 5, 2, 3000
    star = STAR(d_core=d_core)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, channels, d_model)), jnp.float32)
    params = star.init(jax.random.key(0), x)["params"]
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    xs = np.asarray(x, np.float64)
    core = np_gelu(xs @ p["gen1"]["kernel"] + p["gen1"]["bias"]) @ p["gen2"]["kernel"] + p["gen2"]["bias"]
    expected = np_softmax(core, axis=1)  # [batch, channels, d_core]
    assert expected.min() > 0.05  # every channel is drawn often enough to be counted

    def fuse(pooled):  # pooled [batch, d_core] -> STAR output [batch, channels, d_model]
        cat = np.concatenate([xs, np.repeat(pooled[:, None], channels, axis=1)], axis=-1)
        return np_gelu(cat @ p["gen3"]["kernel"] + p["gen3"]["bias"]) @ p["gen4"]["kernel"] + p["gen4"]["bias"]

    combos = list(itertools.product(range(channels), repeat=d_core))
    candidates = np.stack([fuse(core[:, list(c), range(d_core)]) for c in combos])  # [combos, batch, ch, d_model]

    keys = jax.random.split(jax.random.key(42), draws)
    sample = jax.jit(jax.vmap(lambda k: star.apply({"params": params}, x, train=True, rngs={"dropout": k})))
    outputs = np.asarray(sample(keys), np.float64)  # [draws, batch, channels, d_model]
    distance = np.abs(outputs[:, None] - candidates[None]).max(axis=(3, 4))  # [draws, combos, batch]
    assert distance.min(axis=1).max() < 1e-4  # every output is one of the candidates
    chosen = np.asarray(combos)[distance.argmin(axis=1)]  # [draws, batch, d_core]: the drawn channel indices
    frequency = np.stack([(chosen == c).mean(axis=0) for c in range(channels)], axis=1)  # [batch, channels, d_core]
    # Binomial standard error is at most sqrt(0.25 / 3000) ~ 0.009.
    np.testing.assert_allclose(frequency, expected, atol=0.035)
    # The draws are independent across core dimensions: the joint frequency factorises.
    joint = np.mean((chosen[:, 0, 0] == 0) & (chosen[:, 0, 1] == 0))
    assert abs(joint - expected[0, 0, 0] * expected[0, 0, 1]) < 0.035


def test_stochastic_pool_gathers_values_and_passes_gradient_only_to_them():
    core = jax.random.normal(jax.random.key(0), (2, 5, 7))
    key = jax.random.key(3)
    pooled = np.asarray(stochastic_pool(core, key))
    assert pooled.shape == (2, 1, 7)
    hits = np.isclose(np.asarray(core), pooled)  # [2, 5, 7]: the drawn channel of every (batch, dim)
    assert (hits.sum(axis=1) == 1).all()
    grad = np.asarray(jax.grad(lambda a: stochastic_pool(a, key).sum())(core))
    np.testing.assert_array_equal(grad, hits.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(stochastic_pool(core, key)), pooled)  # same key, same draw


def test_star_eval_is_deterministic_without_rng_and_matches_numpy():
    star = STAR(d_core=4)
    x = jax.random.normal(jax.random.key(0), (2, 6, 8))
    variables = star.init(jax.random.key(1), x)
    out = np.asarray(star.apply(variables, x))
    np.testing.assert_array_equal(out, np.asarray(star.apply(variables, x, train=False)))
    sd = {}
    for name, layer in variables["params"].items():  # our kernels back to the PyTorch layout
        sd[f"s.{name}.weight"] = np.asarray(layer["kernel"]).T
        sd[f"s.{name}.bias"] = np.asarray(layer["bias"])
    expected = np_star_eval(sd, "s", np.asarray(x, np.float64))
    assert out.shape == (2, 6, 8)
    assert np.abs(out - expected).max() <= 1e-5
    with pytest.raises(ValueError, match=r"STAR expects \[batch, channels, 16\]"):
        STAR(d_core=4, d_model=16).init(jax.random.key(1), x)


# ---------------------------------------------------------------------------------------------------------------
# The forecaster: PRNG, normalisation, time features, initialisation, errors.


@pytest.fixture(scope="module")
def tiny():
    model = zoo.create_model("softs", **TINY)
    x, x_mark = random_series()
    variables = model.init(jax.random.key(0), x, x_mark)
    return model, variables, x, x_mark


def test_train_mode_is_reproducible_for_a_key_and_eval_is_deterministic(tiny):
    model, variables, x, x_mark = tiny
    run = lambda key: np.asarray(model.apply(variables, x, x_mark, train=True, rngs={"dropout": key}))
    np.testing.assert_array_equal(run(jax.random.key(5)), run(jax.random.key(5)))
    assert np.abs(run(jax.random.key(5)) - run(jax.random.key(6))).max() > 1e-4
    np.testing.assert_array_equal(np.asarray(model.apply(variables, x, x_mark)), model.apply(variables, x, x_mark))
    evaluate = jax.jit(lambda v: model.apply(v, x, x_mark))
    np.testing.assert_array_equal(np.asarray(evaluate(variables)), np.asarray(evaluate(variables)))
    np.testing.assert_allclose(evaluate(variables), model.apply(variables, x, x_mark), rtol=1e-5, atol=1e-5)
    with pytest.raises(Exception, match="dropout"):  # training draws need the `dropout` stream
        model.apply(variables, x, x_mark, train=True)


def test_instance_norm_makes_each_channel_scale_and_shift_equivariant(tiny):
    model, variables, x, x_mark = tiny
    base = np.asarray(model.apply(variables, x, x_mark), np.float64)
    scale, shift, c = 3.0, -7.5, 1
    moved = x.copy()
    moved[:, :, c] = scale * x[:, :, c] + shift
    out = np.asarray(model.apply(variables, moved, x_mark), np.float64)
    # Exact up to the epsilon inside the std (var(x) >= 0.25 here, so its effect is ~1e-5 relative).
    np.testing.assert_allclose(out[:, :, c], scale * base[:, :, c] + shift, atol=2e-3 * scale)
    np.testing.assert_allclose(np.delete(out, c, axis=2), np.delete(base, c, axis=2), atol=1e-3)
    # Without instance normalisation the property fails.
    plain = zoo.create_model("softs", **TINY, use_norm=False)
    a = np.asarray(plain.apply(variables, x, x_mark))[:, :, c]
    b = np.asarray(plain.apply(variables, moved, x_mark))[:, :, c]
    assert np.abs(b - (scale * a + shift)).max() > 0.1


def test_instance_norm_gradients_detach_the_mean_but_not_the_std(tiny):
    """Directional derivatives (jvp) of the forecast w.r.t. x, against closed forms:

    - along a scaling of channel c about its mean, the std carries the gradient, so autodiff sees the function's
      true scale-equivariance: d y = (y_c - mean_c) on channel c, 0 elsewhere;
    - along a constant shift of channel c the mean carries none, so autodiff sees the network's response to a
      constant input, d y_k = std_k / std_c * [d g(x_normalised) along the shift]_k, g the model without norm.
    """
    model, variables, x, x_mark = tiny
    plain = zoo.create_model("softs", **TINY, use_norm=False)
    f = lambda xs: model.apply(variables, xs, x_mark)
    c = 2
    mean = x.mean(axis=1, keepdims=True)
    std = np.sqrt(x.var(axis=1, keepdims=True, dtype=np.float64) + 1e-5).astype(np.float32)
    y, dy = jax.jvp(f, (x,), (_channel(x - mean, c),))
    expected = np.zeros_like(np.asarray(y))
    expected[:, :, c] = np.asarray(y)[:, :, c] - mean[:, :, c]
    np.testing.assert_allclose(np.asarray(dy), expected, atol=1e-3)

    ones = _channel(np.ones_like(x), c)
    _, dy_shift = jax.jvp(f, (x,), (ones,))
    normalised = (x - mean) / std
    _, dg = jax.jvp(lambda xs: plain.apply(variables, xs, x_mark), (normalised,), (ones,))
    expected_shift = np.asarray(dg) * std[:, 0][:, None, :] / std[:, 0, c][:, None, None]
    np.testing.assert_allclose(np.asarray(dy_shift), expected_shift, rtol=1e-4, atol=1e-5)
    indicator = np.zeros_like(expected_shift)
    indicator[:, :, c] = 1.0  # what a non-detached mean would give
    assert np.abs(np.asarray(dy_shift) - indicator).max() > 1e-2


def _channel(values, c):
    out = np.zeros_like(values)
    out[:, :, c] = values[:, :, c]
    return out


def test_time_feature_tokens_act_only_through_the_pooled_core(tiny):
    model, variables, x, x_mark = tiny
    other_marks = np.asarray(random_series(seed=9)[1])
    out = np.asarray(model.apply(variables, x, x_mark))
    assert out.shape == (2, TINY["pred_len"], TINY["enc_in"])  # the F time tokens are not forecast
    assert np.abs(out - np.asarray(model.apply(variables, x, other_marks))).max() > 1e-4
    # Cut the core's way into the fusion MLP (gen3's rows for the core): tokens no longer see each other, so the
    # time features cannot change the forecast.
    flat = flatten(jax.tree.map(np.array, variables["params"]))
    for i in range(TINY["e_layers"]):
        flat[f"encoder/attn_layers_{i}/attention/gen3/kernel"][TINY["d_model"] :] = 0.0
    params = checkpoints.unflatten(flat)
    np.testing.assert_allclose(
        np.asarray(model.apply({"params": params}, x, x_mark)),
        np.asarray(model.apply({"params": params}, x, other_marks)),
        atol=1e-6,
    )


def test_initialisation_is_pytorch_default(tiny):
    _, variables, _, _ = tiny
    for path, value in flatten(variables["params"]).items():
        value = np.asarray(value)
        if "/norm" in path:
            np.testing.assert_array_equal(value, 1.0 if path.endswith("scale") else 0.0)
            continue
        kernel = flatten(variables["params"])[path.rsplit("/", 1)[0] + "/kernel"]
        bound = 1.0 / math.sqrt(kernel.shape[0])  # U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias
        assert np.abs(value).max() <= bound + 1e-7, path
        assert np.abs(value).max() > 0.3 * bound, path  # not zeros, not lecun_normal-sized
    # Statistics of a large layer: uniform on [-b, b] has standard deviation b / sqrt(3).
    big = zoo.create_model("softs", **{**TINY, "d_model": 256, "d_ff": 512})
    params = jax.jit(big.init)(jax.random.key(1), *random_series(cfg={**TINY, "d_model": 256}))["params"]
    kernel = np.asarray(params["encoder"]["attn_layers_0"]["conv1"]["kernel"])
    assert kernel.shape == (256, 512)
    np.testing.assert_allclose(kernel.std(), 1.0 / math.sqrt(256) / math.sqrt(3.0), rtol=0.02)
    assert abs(kernel.mean()) < 1e-3


def test_registered_defaults_are_the_official_run_py_defaults():
    model = zoo.create_model("softs")
    fields = ("seq_len", "pred_len", "enc_in", "d_model", "d_core", "d_ff", "e_layers", "dropout", "use_norm")
    assert tuple(getattr(model, f) for f in fields) == (96, 96, 7, 512, 512, 2048, 2, 0.0, True)
    assert zoo.input_spec(model) == {"x": (96, 7), "x_mark": (96, 4)}
    assert zoo.input_spec(zoo.create_model("softs", num_time_features=0)) == {"x": (96, 7)}
    info = zoo.model_info("softs")
    assert (info.family, info.task, info.paper.arxiv) == ("softs", "forecasting", "2404.14197")


def test_input_errors_are_clear(tiny):
    model, variables, x, x_mark = tiny
    with pytest.raises(ValueError, match=r"expects x of shape \[batch, 12, 3\], got \(2, 12, 4\)"):
        model.apply(variables, np.concatenate([x, x[..., :1]], axis=-1), x_mark)
    with pytest.raises(ValueError, match=r"expects x of shape \[batch, 12, 3\], got \(2, 3, 12\)"):
        model.apply(variables, x.transpose(0, 2, 1), x_mark)
    with pytest.raises(ValueError, match=r"expects x_mark of shape \[batch, 12, 4\], got \(2, 12, 5\)"):
        model.apply(variables, x, np.zeros((2, 12, 5), np.float32))
    with pytest.raises(ValueError, match=r"same batch size"):
        model.apply(variables, x, x_mark[:1])
    with pytest.raises(TypeError, match=r"floating-point x"):
        model.apply(variables, x.astype(np.int32), x_mark)
    no_marks = zoo.create_model("softs", **TINY, num_time_features=0)
    with pytest.raises(ValueError, match=r"expects no x_mark \(num_time_features=0\), got shape \(2, 12, 4\)"):
        no_marks.apply(variables, x, x_mark)
    with pytest.raises(ValueError, match=r"d_core must be >= 1"):
        zoo.create_model("softs", d_core=0)


def test_time_features_are_optional_for_a_model_built_with_them(tiny):
    """x_mark=None on a num_time_features=4 model: only the series tokens (official `x_mark is None` path), i.e.
    the same weights built with num_time_features=0, and the NumPy reference without marks."""
    model, variables, x, x_mark = tiny
    assert model.num_time_features == F > 0
    without = np.asarray(model.apply(variables, x))
    no_marks = zoo.create_model("softs", **TINY, num_time_features=0)
    np.testing.assert_array_equal(without, np.asarray(no_marks.apply(variables, x)))
    np.testing.assert_allclose(without, jax.jit(lambda v, x: model.apply(v, x))(variables, x), rtol=1e-5, atol=1e-5)
    assert without.shape == (2, TINY["pred_len"], TINY["enc_in"]) and np.isfinite(without).all()
    # The time-feature tokens do take part when given: dropping them changes the forecast.
    assert np.abs(without - np.asarray(model.apply(variables, x, x_mark))).max() > 1e-3
    sd = official_state_dict(**SIZES, seed=1)
    converted = checkpoints.convert("softs", sd, enc_in=TINY["enc_in"], num_time_features=F)
    expected = np_softs_eval(sd, x, None, True, TINY["e_layers"])
    np.testing.assert_allclose(np.asarray(model.apply(converted, x)), expected, rtol=0, atol=1e-4)
    out = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
    assert out.shape == without.shape
