"""MambaMixer (zoo/mambamixer.py): the selective mixers against NumPy written from the equations, the weighted
averaging of earlier features, ViM2's parameter counts against the paper, TSM2's shapes, causality, instance
normalisation and training, constructor errors, and a ViM2 digits run through `python -m train`."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from trainer_utils import read_results, run_train

import zoo
from zoo import mambamixer as mm


def silu(x):
    return x / (1.0 + np.exp(-x))


def softplus(x):
    return np.log1p(np.exp(x))


def numpy_scan(u, delta, A, B, C, D):
    """h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t, y_t = C_t . h_t + D u_t (Mamba's selective_scan_ref)."""
    batch, length, d = u.shape
    h = np.zeros((batch, d, A.shape[1]))
    y = np.zeros_like(u)
    for t in range(length):
        h = np.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        y[:, t] = np.einsum("bdn,bn->bd", h, C[:, t]) + D * u[:, t]
    return y


def numpy_s6(xs, p, k, rank, n):
    """Direction k of the S6 parameters `p` on xs `[batch, length, E]` (paper Eq. 7: B, C, delta from x)."""
    width = xs.shape[-1]
    projected = xs @ p["x_proj"][k]
    dt, B, C = projected[..., :rank], projected[..., rank : rank + n], projected[..., rank + n :]
    delta = softplus(dt @ p["dt_proj"]["kernel"][k] + p["dt_proj"]["bias"][k])
    A = -np.exp(p["A_logs"][k * width : (k + 1) * width])
    return numpy_scan(xs, delta, A, B, C, p["Ds"][k * width : (k + 1) * width])


def numpy_causal_conv(x, kernel, bias):
    taps, length = kernel.shape[0], x.shape[1]
    padded = np.concatenate([np.zeros((x.shape[0], taps - 1, x.shape[2])), x], axis=1)
    return sum(padded[:, j : j + length] * kernel[j] for j in range(taps)) + bias


def numpy_mamba_1d(x, p, bidirectional, rank, n):
    """The selective token mixer on a sequence: x_bar = SiLU(Conv(Linear(x))), y = SSM(x_bar) * SiLU(z), out_proj;
    bidirectional: plus Flip(SSM(Flip(x_bar))) * SiLU(z), with its own conv and S6 parameters."""
    u, z = np.split(x @ p["in_proj"]["kernel"], 2, axis=-1)
    y = 0.0
    for k, seq in enumerate([u, u[:, ::-1]] if bidirectional else [u]):
        conv = silu(numpy_causal_conv(seq, p["conv1d"]["kernel"][k], p["conv1d"]["bias"][k]))
        out = numpy_s6(conv, p["ssm"], k, rank, n)
        y = y + (out if k == 0 else out[:, ::-1])
    return (y * silu(z)) @ p["out_proj"]["kernel"]


def numpy_layer_norm(x, scale, bias, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps) * scale + bias


def numpy_ss2d(x, p, rank, n):
    """VMamba's SS2D: in_proj, depthwise 3x3 conv + SiLU, S6 over row-major, column-major and both reversed
    scans, de-scanned and summed, LayerNorm, times SiLU(z), out_proj."""
    batch, height, width_px, _ = x.shape
    u, z = np.split(x @ p["in_proj"]["kernel"], 2, axis=-1)
    kernel = p["conv2d"]["kernel"][:, :, 0]  # [3, 3, E]
    padded = np.pad(u, ((0, 0), (1, 1), (1, 1), (0, 0)))
    conv = sum(padded[:, i : i + height, j : j + width_px] * kernel[i, j] for i in range(3) for j in range(3))
    u = silu(conv + p["conv2d"]["bias"])
    e = u.shape[-1]
    rows = u.reshape(batch, -1, e)
    cols = u.transpose(0, 2, 1, 3).reshape(batch, -1, e)
    scans = [rows, cols, rows[:, ::-1], cols[:, ::-1]]
    outs = [numpy_s6(s, p["ssm"], k, rank, n) for k, s in enumerate(scans)]
    from_cols = lambda y: y.reshape(batch, width_px, height, e).transpose(0, 2, 1, 3)
    from_rows = lambda y: y.reshape(batch, height, width_px, e)
    y = from_rows(outs[0]) + from_cols(outs[1]) + from_rows(outs[2][:, ::-1]) + from_cols(outs[3][:, ::-1])
    y = numpy_layer_norm(y, p["out_norm"]["scale"], p["out_norm"]["bias"])
    return (y * silu(z)) @ p["out_proj"]["kernel"]


def perturbed(variables, seed=1, scale=0.1):
    """Every leaf moved off its init (one NumPy draw per leaf: no per-shape compilation)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: x + scale * rng.standard_normal(x.shape).astype(np.float32), variables)


def as_numpy(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_sequence_mixer_matches_numpy_equations(bidirectional):
    mixer = mm.SelectiveMixer1D(expand=2.0, d_state=3, d_conv=3, bidirectional=bidirectional)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 9, 4)), jnp.float32)
    variables = perturbed(jax.jit(mixer.init)(jax.random.key(0), x))
    got = jax.jit(mixer.apply)(variables, x)
    want = numpy_mamba_1d(np.asarray(x, np.float64), as_numpy(variables["params"]), bidirectional, rank=1, n=3)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_image_token_mixer_matches_numpy_cross_scan():
    mixer = mm.SelectiveTokenMixer2D(expand=2.0, d_state=2, d_conv=3)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 3, 4, 4)), jnp.float32)  # non-square grid
    variables = perturbed(jax.jit(mixer.init)(jax.random.key(0), x))
    got = jax.jit(mixer.apply)(variables, x)
    want = numpy_ss2d(np.asarray(x, np.float64), as_numpy(variables["params"]), rank=1, n=2)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_causal_mixer_output_depends_only_on_the_past():
    mixer = mm.SelectiveMixer1D(d_state=2, d_conv=4)
    x = jnp.asarray(np.random.default_rng(2).standard_normal((1, 12, 4)), jnp.float32)
    variables = perturbed(jax.jit(mixer.init)(jax.random.key(0), x))
    changed = x.at[:, 7:].add(1.0)
    apply = jax.jit(mixer.apply)
    y, y_changed = apply(variables, x), apply(variables, changed)
    np.testing.assert_allclose(np.asarray(y[:, :7]), np.asarray(y_changed[:, :7]), rtol=1e-6, atol=1e-6)
    assert not np.allclose(np.asarray(y[:, 7:]), np.asarray(y_changed[:, 7:]))


# ---------------------------------------------------------------------------------------------------------------
# Weighted averaging of earlier features.


def test_weighted_averaging_forms_the_papers_sums():
    rng = np.random.default_rng(3)
    layer = 3
    tokens = [jnp.asarray(rng.standard_normal((2, 5))) for _ in range(layer + 1)]  # y_T^(0..3)
    channels = [jnp.asarray(rng.standard_normal((2, 5))) for _ in range(layer)]  # y_C^(0..2)
    weights = mm.DenseWeights(layer)
    variables = weights.init(jax.random.key(0), tokens, channels, method=mm.DenseWeights.token_input)
    sizes = {k: v.shape for k, v in variables["params"].items()}
    assert sizes == {"alpha": (3,), "beta": (3,), "theta": (4,), "gamma": (3,)}
    # Identity init: the latest output, i.e. the plain sequential stack.
    token_in = weights.apply(variables, tokens, channels, method=mm.DenseWeights.token_input)
    channel_in = weights.apply(variables, tokens, channels, method=mm.DenseWeights.channel_input)
    np.testing.assert_allclose(np.asarray(token_in), np.asarray(channels[2]))
    np.testing.assert_allclose(np.asarray(channel_in), np.asarray(tokens[3]))
    # Any weights: x_Token = sum_{i<l} alpha_i y_T^(i) + beta_i y_C^(i); x_Channel = sum_{i<=l} theta_i y_T^(i) +
    # sum_{i<l} gamma_i y_C^(i).
    params = {k: jnp.asarray(rng.standard_normal(v.shape)) for k, v in variables["params"].items()}
    p = as_numpy(params)
    t, c = [np.asarray(a) for a in tokens], [np.asarray(a) for a in channels]
    want_token = sum(p["alpha"][i] * t[i] + p["beta"][i] * c[i] for i in range(3))
    want_channel = sum(p["theta"][i] * t[i] for i in range(4)) + sum(p["gamma"][i] * c[i] for i in range(3))
    got_token = weights.apply({"params": params}, tokens, channels, method=mm.DenseWeights.token_input)
    got_channel = weights.apply({"params": params}, tokens, channels, method=mm.DenseWeights.channel_input)
    np.testing.assert_allclose(np.asarray(got_token), want_token, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(got_channel), want_channel, rtol=1e-6)
    uniform = mm.dense_weight_inits(layer, "uniform")
    assert float(uniform["alpha"].sum() + uniform["beta"].sum()) == pytest.approx(1.0)
    assert float(uniform["theta"].sum() + uniform["gamma"].sum()) == pytest.approx(1.0)


def test_weighted_averaging_adds_l_times_2l_plus_3_scalars():
    """Paper §3.3: the weighted averaging of L layers costs L(2L + 3) scalars."""
    for layers in (1, 3):
        model = zoo.create_model("tsm2_tiny", e_layers=layers)
        params = zoo.abstract_variables(model)["params"]
        dense = sum(
            int(np.prod(x.shape)) for i in range(layers) for x in jax.tree.leaves(params[f"layers_{i}"]["dense"])
        )
        assert dense == layers * (2 * layers + 3)


# ---------------------------------------------------------------------------------------------------------------
# ViM2.

# Exact counts (jax.eval_shape) and the v1 paper table's 20M / 43M / 74M.
VIM2_COUNTS = {"vim2_tiny": (19_921_438, 20e6), "vim2_small": (42_499_564, 43e6), "vim2_base": (73_493_644, 74e6)}


@pytest.mark.parametrize("name", sorted(VIM2_COUNTS))
def test_vim2_counts_are_within_5_percent_of_the_paper(name):
    exact, paper = VIM2_COUNTS[name]
    assert zoo.model_info(name).num_params == exact
    assert abs(exact / paper - 1) < 0.05


def test_vim2_structure_and_registry():
    info = zoo.model_info("vim2_tiny")
    assert info.family == "vim2" and info.task == "classification" and info.paper.arxiv == "2403.19888"
    assert info.input_spec == {"images": (224, 224, 3)}
    params = zoo.abstract_variables(zoo.create_model("vim2_tiny"))["params"]
    layers = sorted(k for k in params if "_layer_" in k)
    assert layers == [
        "stage_0_layer_0",
        "stage_1_layer_0",
        "stage_2_layer_0",
        "stage_2_layer_1",
        "stage_2_layer_2",
        "stage_3_layer_0",
    ]
    assert params["head"]["kernel"].shape == (768, 1000)
    ssm = params["stage_0_layer_0"]["token_0"]["ssm"]  # width 96 * expand 1.5 = 144, d_state 16, dt_rank 6
    assert ssm["x_proj"].shape == (4, 144, 6 + 32) and ssm["A_logs"].shape == (4 * 144, 16)
    assert params["downsample_1"]["reduction"]["kernel"].shape == (4 * 96, 192)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(token_depths=(2, 3), channel_depths=(1, 2)), "multiple"),
        (dict(token_depths=(2,), channel_depths=(1, 1)), "same"),
        (dict(img_size=6), "divisible"),
        (dict(drop_path_rate=1.0), "drop_path_rate"),
        (dict(num_classes=-1), "num_classes"),
        (dict(dense_init="random"), "dense_init"),
        (dict(scan_method="fft"), "scan_method"),
        (dict(d_state=0), "d_state"),
    ],
)
def test_vim2_invalid_fields_are_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        zoo.create_model("vim2_tiny_8", **overrides)


@pytest.mark.slow
def test_vim2_tiny_learns_digits(tmp_path):
    """The default digits job (train/configs/default.py) with vim2_tiny_8 for 8 of its 30 epochs (measured: 90.3%
    test accuracy, 287 s wall of which ~3 minutes compilation on the shared 2 cores at load 9)."""
    args = ["--config.model_name=vim2_tiny_8", "--config.total_epochs=8", f"--workdir={tmp_path}"]
    proc = run_train(args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = read_results(tmp_path)
    assert results["test_metrics"]["accuracy"] >= 0.80
    assert results["test_metrics"]["num_examples"] == 360


# ---------------------------------------------------------------------------------------------------------------
# TSM2.

TINY = dict(seq_len=32, pred_len=8, enc_in=3, patch_len=8, stride=4, d_model=8, e_layers=2, d_state=4)


def series(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def test_tsm2_shapes_patches_and_time_features():
    model = zoo.create_model("tsm2_tiny", **TINY)
    assert model.num_patches == 7 and zoo.input_spec(model) == {"x": (32, 3)}
    x = series((2, 32, 3))
    variables = jax.jit(model.init)(jax.random.key(0), x)
    y, state = model.apply(variables, x, mutable=["intermediates"])
    assert y.shape == (2, 8, 3) and y.dtype == jnp.float32
    assert state["intermediates"]["features"][0].shape == (2, 3, 7, 8)
    assert variables["params"]["head"]["kernel"].shape == (7 * 8, 8)
    # Time features join as extra series; the parameters do not depend on them, and x_mark stays optional.
    marked = zoo.create_model("tsm2_tiny", **TINY, num_time_features=2)
    assert zoo.input_spec(marked) == {"x": (32, 3), "x_mark": (32, 2)}
    assert zoo.count_params(marked) == zoo.count_params(model)
    with_marks, state = marked.apply(variables, x, series((2, 32, 2), 1), mutable=["intermediates"])
    assert with_marks.shape == (2, 8, 3) and state["intermediates"]["features"][0].shape == (2, 5, 7, 8)
    np.testing.assert_allclose(np.asarray(marked.apply(variables, x)), np.asarray(y), rtol=1e-6)
    with pytest.raises(ValueError, match="expects no x_mark"):
        model.apply(variables, x, series((2, 32, 2)))


def test_tsm2_time_mixer_is_causal_over_patches():
    """Changing the last time steps changes only the last patch; before the head (which sees all patches) every
    earlier patch's features are unchanged in every series, although the variate mixer mixes the series."""
    model = zoo.create_model("tsm2_tiny", **TINY, use_norm=False)
    x = series((1, 32, 3))
    variables = perturbed(jax.jit(model.init)(jax.random.key(0), x), scale=0.05)
    features = lambda inputs: model.apply(variables, inputs, mutable=["intermediates"])[1]["intermediates"]["features"][
        0
    ]
    before, after = features(x), features(x.at[:, 28:, 0].add(3.0))  # rows 28..31 sit in the last patch only
    np.testing.assert_allclose(np.asarray(before[:, :, :6]), np.asarray(after[:, :, :6]), rtol=1e-6, atol=1e-6)
    assert not np.allclose(np.asarray(before[:, 1:, 6]), np.asarray(after[:, 1:, 6]))  # other series see it


def test_tsm2_instance_norm_makes_each_series_scale_and_shift_equivariant():
    model = zoo.create_model("tsm2_tiny", **TINY)
    x = series((2, 32, 3))
    variables = perturbed(jax.jit(model.init)(jax.random.key(0), x), scale=0.05)
    scale, shift = jnp.asarray([2.0, 0.5, 3.0]), jnp.asarray([1.0, -4.0, 0.25])
    apply = jax.jit(model.apply)
    y = apply(variables, x)
    y_moved = apply(variables, x * scale + shift)
    np.testing.assert_allclose(np.asarray(y_moved), np.asarray(y * scale + shift), rtol=1e-4, atol=1e-4)


def test_tsm2_short_training_reduces_the_loss():
    model = zoo.create_model("tsm2_tiny", **{**TINY, "e_layers": 1})
    t = np.arange(40)[None, :, None] + 3 * np.arange(16)[:, None, None]
    data = np.sin(2 * np.pi * t / 10.0 + np.arange(3)) + 0.1 * np.random.default_rng(0).standard_normal(t.shape)
    x, y = jnp.asarray(data[:, :32], jnp.float32), jnp.asarray(data[:, 32:], jnp.float32)
    params = jax.jit(model.init)(jax.random.key(0), x)["params"]
    tx = optax.adam(1e-2)
    loss_fn = lambda p: jnp.mean((model.apply({"params": p}, x) - y) ** 2)

    @jax.jit
    def step(p, opt):
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, opt = tx.update(grads, opt, p)
        return optax.apply_updates(p, updates), opt, loss

    opt = tx.init(params)
    losses = []
    for _ in range(30):
        params, opt, loss = step(params, opt)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(patch_len=40), "longer than seq_len"),
        (dict(stride=0), "stride"),
        (dict(dropout=1.0), "dropout"),
        (dict(e_layers=0), "e_layers"),
        (dict(num_time_features=-1), "num_time_features"),
        (dict(expand=0.0), "expand"),
        (dict(head_norm="batch"), "head_norm must be one of"),
    ],
)
def test_tsm2_invalid_fields_are_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        zoo.create_model("tsm2_tiny", **{**TINY, **overrides})


@pytest.mark.parametrize("head_norm", ["features_patches", "joint", "features", "none"])
def test_tsm2_head_norm_against_numpy(head_norm):
    """The forecast from the sown encoder features, written in NumPy: LayerNorm over the features, then over the
    patches ("features_patches"; "features" stops after the first, "none" skips both; "joint" one LayerNorm over
    patches and features together), flattened, the head's affine map."""
    model = zoo.create_model("tsm2_tiny", **TINY, use_norm=False, head_norm=head_norm)
    x = series((2, 32, 3))
    variables = perturbed(jax.jit(model.init)(jax.random.key(0), x), scale=0.05)
    params = variables["params"]
    assert sorted(k for k in params if k.startswith("norm_")) == {
        "features_patches": ["norm_features", "norm_patches"],
        "joint": ["norm_joint"],
        "features": ["norm_features"],
        "none": [],
    }[head_norm]
    y, state = model.apply(variables, x, mutable=["intermediates"])
    h = np.asarray(state["intermediates"]["features"][0], np.float64)  # [batch, series, patches, d_model]

    def layer_norm(a, axis, p):
        a = (a - a.mean(axis, keepdims=True)) / np.sqrt(a.var(axis, keepdims=True) + 1e-5)
        shape = [1] * a.ndim
        shape[axis] = -1
        return a * np.asarray(p["scale"]).reshape(shape) + np.asarray(p["bias"]).reshape(shape)

    if head_norm == "joint":
        h = layer_norm(h.reshape(2, 3, -1), 2, params["norm_joint"])
    if head_norm in ("features_patches", "features"):
        h = layer_norm(h, 3, params["norm_features"])
    if head_norm == "features_patches":
        h = layer_norm(h, 2, params["norm_patches"])
    want = h.reshape(2, 3, -1) @ np.asarray(params["head"]["kernel"]) + np.asarray(params["head"]["bias"])
    np.testing.assert_allclose(np.asarray(y), want.transpose(0, 2, 1), rtol=1e-4, atol=1e-5)


def test_tsm2_registry_defaults():
    info = zoo.model_info("tsm2")
    assert info.family == "tsm2" and info.task == "forecasting"
    assert info.input_spec == {"x": (512, 7)}
    model = zoo.create_model("tsm2")
    assert model.num_patches == 63 and (model.patch_len, model.stride, model.d_model) == (16, 8, 16)
