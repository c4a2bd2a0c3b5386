"""MambaMixer: Efficient Selective State Space Models with Dual Token and Channel Selection (Behrouz,
Santacatterina, Zabih; arXiv 2403.19888 v1): the MambaMixer block, ViM2 (images) and TSM2 (forecasting).

No official code or weights exist (github.com/MambaMixer/M2 holds a README and a figure). We follow the v1 paper
(§3.2 MambaMixer, §4 ViM2, §5 TSM2) and, for the S6 layer, Mamba's reference (state-spaces/mamba `mamba_simple.py`,
`selective_scan_ref`) and VMamba's SS2D (MzeroMiko/VMamba `vmamba.py`, v0), which the paper builds on.

The MambaMixer block (paper §3.2, Eqs. 7-9):
- Selective token mixer, `[batch, length, C] -> same`: in_proj C -> 2E (x, and the gate z of the "MLP" branch),
  a depthwise convolution and SiLU on x, then S6: (dt, B, C) = x_proj(x), delta = softplus(dt_proj(dt) + bias),
  y = selective_scan(x, delta, A = -exp(A_log), B, C, D) (`zoo.layers.scan`), gated y * SiLU(z), out_proj E -> C.
  With several scan directions (image cross-scan, bidirectional sequences) every direction has its own S6
  parameters and the re-ordered outputs are summed before the gate (paper: "d unidirectional S6 blocks ... added").
- Selective channel mixer: the same design along the channel axis, bidirectional (forward + flipped scan).
- Weighted averaging of earlier features (DenseFormer-like), in layer l = 1..L with y_T^(0) = y_C^(0) = input:
      x_token^(l)   = sum_{i<l}  alpha_{l,i} y_T^(i) + sum_{i<l} beta_{l,i}  y_C^(i)
      x_channel^(l) = sum_{i<=l} theta_{l,i} y_T^(i) + sum_{i<l} gamma_{l,i} y_C^(i)
  L(2L + 3) scalars in all (params `alpha` [l], `beta` [l], `theta` [l + 1], `gamma` [l] of layer l).

Choices where the paper is silent, and why:
- Weighted-averaging init `dense_init="identity"`: weight 1 on the latest output (beta_{l,l-1} for the token
  mixer, theta_{l,l} for the channel mixer), 0 elsewhere, plain scalars (no softmax). At initialisation the model
  is then exactly the plain sequential stack (the paper's "VMamba special case"), as DenseFormer initialises its
  DWA weights; training moves the weights only where earlier features help. `dense_init="uniform"` (all weights of
  a sum equal, summing to 1; the n8thantran replication's softmax-normalised weights start there) is selectable.
- Every mixer is a pre-norm residual unit, x + Mixer(LayerNorm(x)) (VMamba's VSSBlock; the replication does the
  same). LayerNorm epsilon 1e-5 (PyTorch's default, as both references). Stochastic depth on the residual branch.
- S6 numerics and init are Mamba's: A_log = log(1..N) per channel, D = 1, dt bias = softplus^-1 of log-uniform
  [1e-3, 0.1], dt_proj kernel U(+-dt_rank^-1/2), dt_rank = ceil(C / 16) for a C-wide mixer input; B uses the Euler
  step delta * B (not the paper's Eq. 2 zero-order hold), the state is float32.
- Two-direction mixers share in_proj (one gate for both directions, as the paper's Eq. for y_Channel, which
  multiplies both scans by the same MLP(x)); each direction has its own convolution and S6 parameters (Vim's
  bidirectional Mamba). The backward direction is the forward computation on the flipped sequence, flipped back.

ViM2 (paper §4 and v1 Table "Architectural overview"): stem conv 4x4 stride 4 + LayerNorm; four stages at widths
C, 2C, 4C, 8C, each but the first opening with VMamba's patch merging (2x2 neighbours concatenated, LayerNorm(4C),
Linear 4C -> 2C without bias); a stage with t token-mixer units and c channel-mixer units has c MambaMixer layers of
t / c token units followed by one channel unit, weighted averaging within the stage only; final LayerNorm, mean
pool, `head`. The token unit is VMamba's SS2D: in_proj C -> 4C, depthwise 3x3 conv + SiLU on x (2C), cross-scan in
four directions (row-major, column-major and both reversed; per-direction x_proj, dt_proj, A_log, D), the four
outputs summed, `out_norm` LayerNorm(2C), times SiLU(z), out_proj 2C -> C. The channel unit ("CW-Linear, CW-S6,
CW-Linear at width 2C" in the table) is our reading: in_proj C -> 2 E_c per token (x and gate, E_c = channel_expand
* C), then an S6 scan *along the E_c channels of every token* (one feature per position, causal 1-D conv of 4 taps,
bidirectional, dt_rank 1), gated, out_proj E_c -> C. Its cost is linear in the channels and independent of the
image size, as the paper's complexity claim requires; the "same scans as the token mixer" of the paper cannot be
read as a per-channel sequence of image-size features without parameters that grow with the resolution.
Parameter counts: the v1 table's 20M / 43M / 74M are not consistent with one unit design (T and S differ only in
12 token and 6 channel units of width 384, which fixes their size, and that size makes T about 25M). We keep
Mamba/VMamba's d_state 16, dt_rank auto (ceil(C / 16)) and the 3x3 / 4-tap convolutions for all three, use
`channel_expand` 1.5 for all three, VMamba's ssm_ratio `expand` 2 for S and B, and 1.5 for T: 19,921,438 (-0.4%),
42,499,564 (-1.2%) and 73,493,644 (-0.7%) parameters (with expand 2, T would be 24.2M, +21%).

TSM2 (paper §5; patching details from the n8thantran replication, the only code): RevIN-style non-affine instance
normalisation (`use_norm`: subtract the per-series mean and divide by sqrt(variance + 1e-5), statistics detached as
in RevIN's code, undone on the output); every series cut into patches of `patch_len` with `stride` (no padding:
N = (seq_len - patch_len) // stride + 1), a shared Linear(patch_len -> d_model) plus a learned positional embedding
(N(0, 0.02)), dropout; `e_layers` MambaMixer layers with a causal one-direction time mixer over each series'
patches (1-D causal conv of d_conv taps) and a bidirectional variate mixer over the series at each patch; the 2-D
normalisation, one LayerNorm over the patches and features of each series together (TSMixer's 2-D LayerNorm, see
`TSM2.head_norm`; the replication's LayerNorm over the features, then over the patches, normalises every patch on
its own and tests 10% worse on ETTh1-96, docs/results.md); a flatten head Linear(N * d_model -> pred_len) shared by
the series, after dropout. Time features (`num_time_features` > 0, `x_mark`) join as extra
series that the variate mixer sees and the head drops (like SOFTS' time tokens); off by default, as in the
replication. The paper's static and future covariates need inputs the forecasting contract does not have (a
per-series static matrix and future time features), so they are not implemented. Init: PyTorch defaults for the
Linear layers and convolutions (Mamba's modules are plain torch layers), S6 as above.
"""

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.contract import as_hw, check_images, check_series
from zoo.layers import ClassifierHead, Conv, DropPath, PatchEmbed, layer_norm, torch_bias_init, torch_kernel_init
from zoo.layers.scan import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_METHOD,
    METHODS,
    a_log_init,
    dt_bias_init,
    dt_kernel_init,
    selective_scan,
)
from zoo.registry import Paper, register_model

NORM_EPS = 1e-5
DENSE_INITS = ("identity", "uniform")
HEAD_NORMS = ("features_patches", "joint", "features", "none")  # TSM2's normalisation before the head
# torch.nn.Linear's default init for a stack of K kernels [K, in, out]: U(+-1/sqrt(in)).
stacked_torch_kernel_init = nn.initializers.variance_scaling(
    1.0 / 3.0, "fan_in", "uniform", in_axis=-2, out_axis=-1, batch_axis=(0,)
)
vmamba_dense_init = nn.initializers.truncated_normal(0.02)  # VMamba's _init_weights for nn.Linear (cut at +-2 std)


def auto_dt_rank(width: int) -> int:
    """Mamba's dt_rank="auto": ceil(width / 16)."""
    return math.ceil(width / 16)


# ---------------------------------------------------------------------------------------------------------------
# S6 and the selective mixers.


class S6(nn.Module):
    """K selective SSMs, one per scan direction: xs `[K, batch, length, E]` (each already in its scan order) ->
    `[K, batch, length, E]`.

    Parameters (VMamba's SS2D layout, ours in -> out): `x_proj` `[K, E, dt_rank + 2 d_state]` (no bias),
    `dt_proj/kernel` `[K, dt_rank, E]`, `dt_proj/bias` `[K, E]`, `A_logs` `[K * E, d_state]`, `Ds` `[K * E]`.
    """

    d_state: int = 16
    dt_rank: int = 1
    num_directions: int = 1
    scan_method: str = DEFAULT_METHOD
    chunk_size: int = DEFAULT_CHUNK_SIZE
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, xs: jax.Array) -> jax.Array:
        k, width = self.num_directions, xs.shape[-1]
        rank, n = self.dt_rank, self.d_state
        x_proj = self.param("x_proj", stacked_torch_kernel_init, (k, width, rank + 2 * n), self.param_dtype)
        dt_proj = DtProj(rank, width, k, param_dtype=self.param_dtype, name="dt_proj")
        a_logs = self.param("A_logs", a_log_init, (k * width, n), self.param_dtype)
        ds = self.param("Ds", nn.initializers.ones, (k * width,), self.param_dtype)
        dtype = self.dtype or xs.dtype
        projected = jnp.einsum("kble,ker->kblr", xs.astype(dtype), x_proj.astype(dtype))
        dt, b, c = jnp.split(projected, [rank, rank + n], axis=-1)
        delta = jax.nn.softplus(dt_proj(dt, dtype))  # float32
        A = -jnp.exp(a_logs.astype(jnp.float32)).reshape(k, width, n)
        ds = ds.astype(jnp.float32).reshape(k, width)
        # One scan per direction, not `jax.vmap`: batching the sequential scan's block loop makes it 2x slower.
        scan = lambda i: selective_scan(
            xs[i], delta[i], A[i], b[i], c[i], ds[i], method=self.scan_method, chunk_size=self.chunk_size
        )
        return jnp.stack([scan(i) for i in range(k)])


class DtProj(nn.Module):
    """The K dt projections `[K, ..., dt_rank] -> [K, ..., E]` in float32 after the bias (Mamba adds the bias and
    applies softplus in float32 inside its kernel). Params `kernel` `[K, dt_rank, E]` and `bias` `[K, E]`."""

    dt_rank: int
    width: int
    num_directions: int
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, dt: jax.Array, dtype: Any) -> jax.Array:
        k = self.num_directions
        kernel = self.param("kernel", dt_kernel_init(self.dt_rank), (k, self.dt_rank, self.width), self.param_dtype)
        bias = self.param("bias", dt_bias_init(), (k, self.width), self.param_dtype)
        out = jnp.einsum("kblr,kre->kble", dt, kernel.astype(dtype))
        return out.astype(jnp.float32) + bias.astype(jnp.float32)[:, None, None]


def causal_conv1d(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """Depthwise causal convolution along axis 1: `[batch, length, E]`, kernel `[taps, E]`, bias `[E]`; output t
    sees inputs t - taps + 1 .. t (torch Conv1d(E, E, taps, groups=E, padding=taps - 1) cropped to the length)."""
    taps, length = kernel.shape[0], x.shape[1]
    padded = jnp.pad(x, ((0, 0), (taps - 1, 0), (0, 0)))
    out = sum(padded[:, j : j + length] * kernel[j] for j in range(taps))
    return out + bias


class CausalConvs(nn.Module):
    """K depthwise causal 1-D convolutions, xs `[K, batch, length, E]` -> same; params `kernel` `[K, taps, E]`,
    `bias` `[K, E]`, PyTorch's Conv1d default init (U(+-1/sqrt(taps)))."""

    taps: int
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, xs: jax.Array) -> jax.Array:
        k, width = xs.shape[0], xs.shape[-1]
        kernel = self.param(
            "kernel", torch_bias_init(self.taps), (k, self.taps, width), self.param_dtype
        )  # U(+-1/sqrt(fan_in)), fan_in = taps for a depthwise Conv1d
        bias = self.param("bias", torch_bias_init(self.taps), (k, width), self.param_dtype)
        dtype = self.dtype or xs.dtype
        return jax.vmap(causal_conv1d)(xs.astype(dtype), kernel.astype(dtype), bias.astype(dtype))


class SelectiveMixer1D(nn.Module):
    """Mamba block along axis 1, `[batch, length, C] -> [batch, length, C]`: one direction (causal) or two
    (`bidirectional`: forward + flipped, one shared gate). Params `in_proj` (C -> 2E, no bias), `conv1d`
    (`[K, d_conv, E]`), `ssm` (S6), `out_proj` (E -> C, no bias); E = expand * C."""

    expand: float = 2.0
    d_state: int = 16
    d_conv: int = 4
    dt_rank: int = 0  # 0 = ceil(C / 16)
    bidirectional: bool = False
    scan_method: str = DEFAULT_METHOD
    chunk_size: int = DEFAULT_CHUNK_SIZE
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        width = int(self.expand * features)
        dense = lambda out, fan_in, name: nn.Dense(
            out,
            use_bias=False,
            kernel_init=torch_kernel_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )
        u, z = jnp.split(dense(2 * width, features, "in_proj")(x), 2, axis=-1)
        xs = jnp.stack([u, jnp.flip(u, 1)] if self.bidirectional else [u])
        xs = nn.silu(CausalConvs(self.d_conv, dtype=self.dtype, param_dtype=self.param_dtype, name="conv1d")(xs))
        ys = S6(
            self.d_state,
            self.dt_rank or auto_dt_rank(features),
            len(xs),
            self.scan_method,
            self.chunk_size,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="ssm",
        )(xs)
        y = ys[0] + jnp.flip(ys[1], 1) if self.bidirectional else ys[0]
        y = y.astype(z.dtype) * nn.silu(z)
        return dense(features, width, "out_proj")(y)


class SelectiveTokenMixer2D(nn.Module):
    """VMamba's SS2D (v0) on `[batch, height, width, C]` -> same: in_proj C -> 2E, depthwise d_conv x d_conv conv +
    SiLU, S6 over four scans (row-major, column-major, both reversed), de-scanned and summed, `out_norm`,
    times SiLU(z), out_proj E -> C."""

    expand: float = 2.0
    d_state: int = 16
    d_conv: int = 3
    dt_rank: int = 0
    scan_method: str = DEFAULT_METHOD
    chunk_size: int = DEFAULT_CHUNK_SIZE
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, height, width_px, features = x.shape
        width = int(self.expand * features)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        dense = lambda out, name: nn.Dense(out, use_bias=False, kernel_init=vmamba_dense_init, name=name, **kw)
        u, z = jnp.split(dense(2 * width, "in_proj")(x), 2, axis=-1)
        fan_in = self.d_conv * self.d_conv
        u = Conv(
            width,
            self.d_conv,
            groups=width,
            kernel_init=torch_kernel_init,
            bias_init=torch_bias_init(fan_in),
            name="conv2d",
            **kw,
        )(u)
        u = nn.silu(u)
        rows = u.reshape(batch, height * width_px, width)
        cols = jnp.swapaxes(u, 1, 2).reshape(batch, width_px * height, width)
        xs = jnp.stack([rows, cols, jnp.flip(rows, 1), jnp.flip(cols, 1)])
        ys = S6(
            self.d_state,
            self.dt_rank or auto_dt_rank(features),
            4,
            self.scan_method,
            self.chunk_size,
            name="ssm",
            **kw,
        )(xs)
        from_rows = ys[0] + jnp.flip(ys[2], 1)
        from_cols = ys[1] + jnp.flip(ys[3], 1)
        y = from_rows + jnp.swapaxes(from_cols.reshape(batch, width_px, height, width), 1, 2).reshape(from_rows.shape)
        y = layer_norm(NORM_EPS, name="out_norm", **kw)(y.reshape(batch, height, width_px, width))
        y = y * nn.silu(z)
        return dense(features, "out_proj")(y)


class SelectiveChannelMixer2D(nn.Module):
    """ViM2's channel unit on `[batch, height, width, C]` -> same: in_proj C -> 2E per token (x and gate), then a
    bidirectional S6 along the E channels of every token (one feature per channel position), gated by SiLU(z),
    out_proj E -> C. E = expand * C."""

    expand: float = 2.0
    d_state: int = 16
    d_conv: int = 4
    scan_method: str = DEFAULT_METHOD
    chunk_size: int = DEFAULT_CHUNK_SIZE
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        *lead, features = x.shape
        width = int(self.expand * features)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        dense = lambda out, name: nn.Dense(out, use_bias=False, kernel_init=vmamba_dense_init, name=name, **kw)
        u, z = jnp.split(dense(2 * width, "in_proj")(x), 2, axis=-1)
        sequences = u.reshape(-1, width, 1)  # every token's channels as a sequence of length E, one feature
        xs = jnp.stack([sequences, jnp.flip(sequences, 1)])
        xs = nn.silu(CausalConvs(self.d_conv, name="conv1d", **kw)(xs))
        ys = S6(self.d_state, 1, 2, self.scan_method, self.chunk_size, name="ssm", **kw)(xs)
        y = (ys[0] + jnp.flip(ys[1], 1)).reshape(*lead, width)
        y = y.astype(z.dtype) * nn.silu(z)
        return dense(features, "out_proj")(y)


# ---------------------------------------------------------------------------------------------------------------
# Weighted averaging of earlier features.


def dense_weight_inits(layer: int, kind: str) -> dict[str, jax.Array]:
    """Initial alpha [l], beta [l], theta [l + 1], gamma [l] of layer `layer` = l >= 1 (see the module docstring)."""
    one_hot = lambda size, index: jnp.zeros((size,), jnp.float32).at[index].set(1.0)
    if kind == "identity":
        zeros = jnp.zeros((layer,), jnp.float32)
        return dict(alpha=zeros, beta=one_hot(layer, layer - 1), theta=one_hot(layer + 1, layer), gamma=zeros)
    token = jnp.full((layer,), 1.0 / (2 * layer), jnp.float32)
    channel = 1.0 / (2 * layer + 1)
    return dict(alpha=token, beta=token, theta=jnp.full((layer + 1,), channel), gamma=jnp.full((layer,), channel))


def weighted_sum(weights: jax.Array, outputs: Sequence[jax.Array]) -> jax.Array:
    """sum_i weights[i] * outputs[i], in the outputs' dtype."""
    total = outputs[0] * weights[0].astype(outputs[0].dtype)
    for w, y in zip(weights[1:], outputs[1:]):
        total = total + y * w.astype(y.dtype)
    return total


class DenseWeights(nn.Module):
    """The weighted-averaging scalars of MambaMixer layer `layer` (1-based): params `alpha`, `beta`, `theta`,
    `gamma` (float32). `token_input` and `channel_input` form the paper's x_Token^(l) and x_Channel^(l)."""

    layer: int
    kind: str = "identity"  # the initialisation, see dense_weight_inits

    def setup(self):
        inits = dense_weight_inits(self.layer, self.kind)
        for name, value in inits.items():
            setattr(self, name, self.param(name, lambda key, v=value: v))

    def token_input(self, tokens: Sequence[jax.Array], channels: Sequence[jax.Array]) -> jax.Array:
        return weighted_sum(self.alpha, tokens[: self.layer]) + weighted_sum(self.beta, channels[: self.layer])

    def channel_input(self, tokens: Sequence[jax.Array], channels: Sequence[jax.Array]) -> jax.Array:
        return weighted_sum(self.theta, tokens[: self.layer + 1]) + weighted_sum(self.gamma, channels[: self.layer])


# ---------------------------------------------------------------------------------------------------------------
# ViM2.


class PatchMerging(nn.Module):
    """VMamba's PatchMerging2D, `[batch, H, W, C] -> [batch, H / 2, W / 2, 2C]`: the 2x2 neighbours concatenated
    (x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]), `norm` LayerNorm(4C), `reduction` 4C -> 2C."""

    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        x = jnp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
        x = layer_norm(NORM_EPS, dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x)
        return nn.Dense(
            2 * features,
            use_bias=False,
            kernel_init=vmamba_dense_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="reduction",
        )(x)


class ViM2Layer(nn.Module):
    """One MambaMixer layer of a ViM2 stage: `token_units` token units (`token_{j}`, each x + SS2D(LN(x))) on the
    weighted token input, then one channel unit (`channel`, x + ChannelMixer(LN(x))) on the weighted channel input.
    Returns (y_T, y_C), both `[batch, height, width, C]`."""

    layer: int
    token_units: int
    expand: float = 2.0
    channel_expand: float = 2.0
    d_state: int = 16
    d_conv: int = 3
    channel_d_conv: int = 4
    dt_rank: int = 0
    dense_init: str = "identity"
    drop_path_rates: tuple[float, ...] = ()
    scan_method: str = DEFAULT_METHOD
    chunk_size: int = DEFAULT_CHUNK_SIZE
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens, channels, *, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        scan = dict(scan_method=self.scan_method, chunk_size=self.chunk_size)
        rates = self.drop_path_rates or (0.0,) * (self.token_units + 1)
        weights = DenseWeights(self.layer, self.dense_init, name="dense")
        y = weights.token_input(tokens, channels)
        for j in range(self.token_units):
            mixed = SelectiveTokenMixer2D(
                self.expand, self.d_state, self.d_conv, self.dt_rank, name=f"token_{j}", **scan, **kw
            )(layer_norm(NORM_EPS, name=f"token_norm_{j}", **kw)(y))
            y = y + DropPath(rates[j])(mixed.astype(y.dtype), train=train)
        x = weights.channel_input([*tokens, y], channels)
        mixed = SelectiveChannelMixer2D(
            self.channel_expand, self.d_state, self.channel_d_conv, name="channel", **scan, **kw
        )(layer_norm(NORM_EPS, name="channel_norm", **kw)(x))
        return y, x + DropPath(rates[-1])(mixed.astype(x.dtype), train=train)


class ViM2(nn.Module):
    """ViM2 classifier: images `[batch, H, W, in_chans]` -> logits `[batch, num_classes]` (float32).

    `num_classes=0` returns the pooled features `[batch, 8 * embed_dim]` (the last stage's width). Stage s has
    width `embed_dim * 2**s`, `token_depths[s]` token units and `channel_depths[s]` channel units (= MambaMixer
    layers; token_depths[s] must be a multiple). Stochastic depth grows linearly over all units.
    """

    num_classes: int = 1000
    img_size: int | tuple[int, int] = 224
    in_chans: int = 3
    patch_size: int = 4
    embed_dim: int = 96
    token_depths: tuple[int, ...] = (2, 2, 6, 2)
    channel_depths: tuple[int, ...] = (1, 1, 3, 1)
    expand: float = 2.0
    channel_expand: float = 2.0
    d_state: int = 16
    d_conv: int = 3
    channel_d_conv: int = 4
    dt_rank: int = 0  # 0 = ceil(stage width / 16)
    dense_init: str = "identity"
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    scan_method: str = DEFAULT_METHOD
    chunk_size: int = DEFAULT_CHUNK_SIZE
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        name = "ViM2"
        h, w = as_hw(self.img_size)
        if self.num_classes < 0:
            raise ValueError(f"{name}: num_classes must be >= 0, got {self.num_classes}")
        for field in ("patch_size", "embed_dim", "in_chans", "d_state", "d_conv", "channel_d_conv"):
            if getattr(self, field) < 1:
                raise ValueError(f"{name}: {field} must be >= 1, got {getattr(self, field)}")
        if min(h, w) < 1:
            raise ValueError(f"{name}: img_size must be positive, got {self.img_size}")
        if self.dt_rank < 0:
            raise ValueError(f"{name}: dt_rank must be >= 0 (0 = auto), got {self.dt_rank}")
        if self.expand <= 0 or self.channel_expand <= 0:
            raise ValueError(f"{name}: expand and channel_expand must be positive")
        if len(self.token_depths) != len(self.channel_depths) or not self.token_depths:
            raise ValueError(
                f"{name}: token_depths {self.token_depths} and channel_depths {self.channel_depths} must name the "
                "same (non-zero) number of stages"
            )
        for t, c in zip(self.token_depths, self.channel_depths):
            if c < 1 or t < c or t % c:
                raise ValueError(
                    f"{name}: every stage needs >= 1 channel unit and a multiple of it as token units (one layer = "
                    f"t / c token units + 1 channel unit), got token_depths {self.token_depths}, channel_depths "
                    f"{self.channel_depths}"
                )
        grid = 2 ** (len(self.token_depths) - 1) * self.patch_size
        if h % grid or w % grid:
            raise ValueError(
                f"{name}: img_size {self.img_size} must be divisible by patch_size * 2**(stages - 1) = {grid}"
            )
        for field in ("drop_rate", "drop_path_rate"):
            if not 0.0 <= getattr(self, field) < 1.0:
                raise ValueError(f"{name}: {field} must be in [0, 1), got {getattr(self, field)}")
        if self.dense_init not in DENSE_INITS:
            raise ValueError(f"{name}: dense_init must be one of {DENSE_INITS}, got {self.dense_init!r}")
        if self.scan_method not in METHODS:
            raise ValueError(f"{name}: scan_method must be one of {METHODS}, got {self.scan_method!r}")
        super().__post_init__()

    @property
    def num_features(self) -> int:
        return self.embed_dim * 2 ** (len(self.token_depths) - 1)

    def input_spec(self) -> dict[str, tuple[int, ...]]:
        return {"images": (*as_hw(self.img_size), self.in_chans)}

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        check_images(type(self).__name__, images, self.img_size, self.in_chans)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = PatchEmbed(self.patch_size, self.embed_dim, name="stem", **kw)(images)
        x = layer_norm(NORM_EPS, name="stem_norm", **kw)(x)
        total = sum(self.token_depths) + sum(self.channel_depths)
        unit = 0
        for s, (token_depth, channel_depth) in enumerate(zip(self.token_depths, self.channel_depths)):
            if s > 0:
                x = PatchMerging(name=f"downsample_{s}", **kw)(x)
            per_layer = token_depth // channel_depth
            tokens, channels = [x], [x]
            for i in range(channel_depth):
                rates = tuple(self.drop_path_rate * (unit + j) / max(total - 1, 1) for j in range(per_layer + 1))
                unit += per_layer + 1
                y_token, y_channel = ViM2Layer(
                    i + 1,
                    per_layer,
                    self.expand,
                    self.channel_expand,
                    self.d_state,
                    self.d_conv,
                    self.channel_d_conv,
                    self.dt_rank,
                    self.dense_init,
                    rates,
                    self.scan_method,
                    self.chunk_size,
                    name=f"stage_{s}_layer_{i}",
                    **kw,
                )(tokens, channels, train=train)
                tokens.append(y_token)
                channels.append(y_channel)
            x = channels[-1]
        x = layer_norm(NORM_EPS, name="norm", **kw)(x)
        return ClassifierHead(
            self.num_classes,
            dropout_rate=self.drop_rate,
            kernel_init=vmamba_dense_init,
            name="head",
            **kw,
        )(x.reshape(x.shape[0], -1, x.shape[-1]), train=train)


# ---------------------------------------------------------------------------------------------------------------
# TSM2.


class TSM2Layer(nn.Module):
    """One MambaMixer layer of TSM2 on `[batch, series, patches, d_model]`: `time` (causal, along the patches of
    each series) on the weighted token input, then `variate` (bidirectional, along the series at each patch) on the
    weighted channel input; each a pre-norm residual unit with dropout. Returns (y_T, y_C)."""

    layer: int
    expand: float = 2.0
    d_state: int = 16
    d_conv: int = 4
    dt_rank: int = 0
    dropout: float = 0.0
    dense_init: str = "identity"
    scan_method: str = DEFAULT_METHOD
    chunk_size: int = DEFAULT_CHUNK_SIZE
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens, channels, *, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        mixer = lambda bidirectional, name: SelectiveMixer1D(
            self.expand,
            self.d_state,
            self.d_conv,
            self.dt_rank,
            bidirectional,
            self.scan_method,
            self.chunk_size,
            name=name,
            **kw,
        )
        drop = lambda y: nn.Dropout(self.dropout)(y, deterministic=not train)
        weights = DenseWeights(self.layer, self.dense_init, name="dense")
        x = weights.token_input(tokens, channels)
        batch, series, patches, width = x.shape
        h = layer_norm(NORM_EPS, name="time_norm", **kw)(x).reshape(batch * series, patches, width)
        y_time = x + drop(mixer(False, "time")(h).reshape(x.shape).astype(x.dtype))
        x = weights.channel_input([*tokens, y_time], channels)
        h = jnp.swapaxes(layer_norm(NORM_EPS, name="variate_norm", **kw)(x), 1, 2).reshape(-1, series, width)
        h = mixer(True, "variate")(h).reshape(batch, patches, series, width)
        return y_time, x + drop(jnp.swapaxes(h, 1, 2).astype(x.dtype))


class TSM2(nn.Module):
    """TSM2 forecaster: x `[batch, seq_len, enc_in]` (+ x_mark `[batch, seq_len, num_time_features]`) -> forecast
    `[batch, pred_len, enc_in]` (float32).

    N = (seq_len - patch_len) // stride + 1 patches per series. `num_time_features` F > 0 adds the F time-feature
    series of `x_mark` as extra (unnormalised) series for the variate mixer, dropped by the head; `x_mark` stays
    optional (without it the model uses the enc_in series only). The encoder's output before the 2-D norm,
    `[batch, series, N, d_model]`, is sown as `intermediates/features` (ask with `mutable=["intermediates"]`).

    `head_norm`, the paper's "2D normalization ... across both the time and the feature dimension" before the head:
    "joint" (default) one LayerNorm over the patches and features of a series together, with an elementwise affine
    of N * d_model (TSMixer's 2-D LayerNorm, `LayerNormalization(axis=[-2, -1])`; MambaMixer builds TSM2's inputs on
    TSMixer); "features_patches" a LayerNorm over the features, then one over the patches (the replication's
    reading); "features" the first LayerNorm only; "none" neither. Measured on ETTh1 in docs/results.md.
    """

    seq_len: int = 512
    pred_len: int = 96
    enc_in: int = 7
    patch_len: int = 16
    stride: int = 8
    d_model: int = 16
    e_layers: int = 2
    d_state: int = 16
    d_conv: int = 4
    expand: float = 2.0
    dt_rank: int = 0  # 0 = ceil(d_model / 16)
    dropout: float = 0.0
    use_norm: bool = True
    num_time_features: int = 0
    dense_init: str = "identity"
    head_norm: str = "joint"  # the 2-D normalisation, one of HEAD_NORMS (see the class docstring)
    scan_method: str = DEFAULT_METHOD
    chunk_size: int = DEFAULT_CHUNK_SIZE
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        name = "TSM2"
        for field in (
            "seq_len",
            "pred_len",
            "enc_in",
            "patch_len",
            "stride",
            "d_model",
            "e_layers",
            "d_state",
            "d_conv",
        ):
            if getattr(self, field) < 1:
                raise ValueError(f"{name}: {field} must be >= 1, got {getattr(self, field)}")
        if self.patch_len > self.seq_len:
            raise ValueError(f"{name}: patch_len {self.patch_len} is longer than seq_len {self.seq_len}")
        if self.num_time_features < 0 or self.dt_rank < 0:
            raise ValueError(f"{name}: num_time_features and dt_rank must be >= 0")
        if self.expand <= 0:
            raise ValueError(f"{name}: expand must be positive, got {self.expand}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{name}: dropout must be in [0, 1), got {self.dropout}")
        if self.dense_init not in DENSE_INITS:
            raise ValueError(f"{name}: dense_init must be one of {DENSE_INITS}, got {self.dense_init!r}")
        if self.head_norm not in HEAD_NORMS:
            raise ValueError(f"{name}: head_norm must be one of {HEAD_NORMS}, got {self.head_norm!r}")
        if self.scan_method not in METHODS:
            raise ValueError(f"{name}: scan_method must be one of {METHODS}, got {self.scan_method!r}")
        super().__post_init__()

    @property
    def num_patches(self) -> int:
        return (self.seq_len - self.patch_len) // self.stride + 1

    def input_spec(self) -> dict[str, tuple[int, ...]]:
        spec = {"x": (self.seq_len, self.enc_in)}
        if self.num_time_features:
            spec["x_mark"] = (self.seq_len, self.num_time_features)
        return spec

    def _check_inputs(self, x: jax.Array, x_mark: jax.Array | None) -> None:
        model = type(self).__name__
        check_series(model, "x", x, (self.seq_len, self.enc_in))
        if x_mark is None:
            return
        if not self.num_time_features:
            raise ValueError(
                f"{model} expects no x_mark (num_time_features=0), got shape {tuple(getattr(x_mark, 'shape', ()))}; "
                "create the model with num_time_features=F to add F time-feature series"
            )
        check_series(model, "x_mark", x_mark, (self.seq_len, self.num_time_features))
        if x_mark.shape[0] != x.shape[0]:
            raise ValueError(f"{model} expects x and x_mark of the same batch size, got {x.shape} and {x_mark.shape}")

    @nn.compact
    def __call__(self, x: jax.Array, x_mark: jax.Array | None = None, *, train: bool = False) -> jax.Array:
        self._check_inputs(x, x_mark)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = x.astype(jnp.float32)
        if self.use_norm:
            # RevIN without affine parameters; its statistics are constants for the gradient (RevIN's .detach()).
            mean = jax.lax.stop_gradient(jnp.mean(x, axis=1, keepdims=True))
            std = jax.lax.stop_gradient(jnp.sqrt(jnp.var(x, axis=1, keepdims=True) + NORM_EPS))
            x = (x - mean) / std
        series = x if x_mark is None else jnp.concatenate([x, x_mark.astype(jnp.float32)], axis=-1)
        starts = self.stride * jnp.arange(self.num_patches)
        patches = jnp.swapaxes(series, 1, 2)[:, :, starts[:, None] + jnp.arange(self.patch_len)]  # [B, M, N, P]
        h = torch_dense_layer(self.d_model, self.patch_len, "patch_embedding", **kw)(patches)
        pos = self.param("pos_embed", nn.initializers.normal(0.02), (self.num_patches, self.d_model), self.param_dtype)
        h = nn.Dropout(self.dropout)(h + pos.astype(h.dtype), deterministic=not train)
        tokens, channels = [h], [h]
        for i in range(self.e_layers):
            y_time, y_variate = TSM2Layer(
                i + 1,
                self.expand,
                self.d_state,
                self.d_conv,
                self.dt_rank,
                self.dropout,
                self.dense_init,
                self.scan_method,
                self.chunk_size,
                name=f"layers_{i}",
                **kw,
            )(tokens, channels, train=train)
            tokens.append(y_time)
            channels.append(y_variate)
        h = channels[-1]
        self.sow("intermediates", "features", h)
        # The 2-D normalisation (see `head_norm`).
        if self.head_norm == "joint":
            flat = h.reshape(*h.shape[:2], -1)
            h = layer_norm(NORM_EPS, name="norm_joint", **kw)(flat).reshape(h.shape)
        if self.head_norm in ("features_patches", "features"):
            h = layer_norm(NORM_EPS, name="norm_features", **kw)(h)
        if self.head_norm == "features_patches":
            h = jnp.swapaxes(layer_norm(NORM_EPS, name="norm_patches", **kw)(jnp.swapaxes(h, 2, 3)), 2, 3)
        h = h[:, : self.enc_in].reshape(h.shape[0], self.enc_in, -1)  # time-feature series dropped
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        y = torch_dense_layer(self.pred_len, h.shape[-1], "head", **kw)(h)  # [batch, enc_in, pred_len]
        y = jnp.swapaxes(y.astype(jnp.float32), 1, 2)
        if self.use_norm:
            y = y * std + mean
        return y


def torch_dense_layer(features: int, fan_in: int, name: str, *, dtype: Any = None, param_dtype: Any = jnp.float32):
    """`nn.Dense` with torch.nn.Linear's default init (kernel and bias U(+-1/sqrt(fan_in)))."""
    return nn.Dense(
        features,
        kernel_init=torch_kernel_init,
        bias_init=torch_bias_init(fan_in),
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
    )


# ---------------------------------------------------------------------------------------------------------------
# Registered models.

MAMBAMIXER = Paper(
    title="MambaMixer: Efficient Selective State Space Models with Dual Token and Channel Selection",
    arxiv="2403.19888",
    code="https://github.com/MambaMixer/M2",
)

_vim2 = lambda: register_model(ViM2, family="vim2", task="classification", paper=MAMBAMIXER)
_tsm2 = lambda: register_model(TSM2, family="tsm2", task="forecasting", paper=MAMBAMIXER)


@_vim2()
def vim2_tiny():
    """ViM2-T at 224x224 (v1 table: width 96, token units 2-2-6-2, channel units 1-1-3-1; 20M parameters)."""
    return dict(embed_dim=96, token_depths=(2, 2, 6, 2), channel_depths=(1, 1, 3, 1), expand=1.5, channel_expand=1.5)


@_vim2()
def vim2_small():
    """ViM2-S at 224x224 (v1 table: width 96, token units 2-2-18-2, channel units 1-1-9-1; 43M parameters)."""
    return dict(embed_dim=96, token_depths=(2, 2, 18, 2), channel_depths=(1, 1, 9, 1), channel_expand=1.5)


@_vim2()
def vim2_base():
    """ViM2-B at 224x224 (v1 table: width 128, token units 2-2-18-2, channel units 1-1-9-1; 74M parameters)."""
    return dict(embed_dim=128, token_depths=(2, 2, 18, 2), channel_depths=(1, 1, 9, 1), channel_expand=1.5)


@_vim2()
def vim2_tiny_8():
    """A tiny ViM2 for 8x8 grayscale images (scikit-learn digits): patch 2, widths 16 and 32 on 4x4 and 2x2 grids."""
    return dict(
        img_size=8,
        in_chans=1,
        patch_size=2,
        embed_dim=16,
        token_depths=(2, 2),
        channel_depths=(1, 1),
        d_state=4,
    )


@_tsm2()
def tsm2():
    """TSM2 for ETTh1 (7 series), lookback 512, horizon 96: patches 16 / stride 8 (63), d_model 16, 2 layers,
    d_state 16, d_conv 4, expand 2 (the replication's ETTh1 settings; the paper publishes none)."""
    return dict(seq_len=512, pred_len=96, enc_in=7, patch_len=16, stride=8, d_model=16, e_layers=2)


@_tsm2()
def tsm2_tiny():
    """A small TSM2 for tests: lookback 64, horizon 16, patches 8 / stride 4 (15), d_model 16, 2 layers, d_state 8."""
    return dict(seq_len=64, pred_len=16, enc_in=7, patch_len=8, stride=4, d_model=16, e_layers=2, d_state=8)
