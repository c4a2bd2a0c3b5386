"""AFFNet: Adaptive Frequency Filters As Efficient Global Token Mixers (Huang et al., ICCV 2023, arXiv 2307.14008).

Official PyTorch code: https://github.com/microsoft/TokenMixers, folder "Adaptive Frequency Filters/affnet" (built on
Apple's CVNets), read at 99dbe38: `models/classification/affnet.py`, `models/classification/config/affnet.py`,
`modules/aff_block.py`, `modules/mobilenetv2.py`, `layers/conv_layer.py`, `layers/normalization/*.py`. We follow the
code, NHWC instead of NCHW:

    conv_1        3x3 stride-2 conv (in_chans -> 16) + BatchNorm + act
    layer_1, _2   MobileNetV2 inverted residuals (1x1 expand + BN + act, 3x3 depthwise + BN + act, 1x1 + BN, + x)
    layer_3.._5   [MV2 stride-2 downsample] + AFFBlock
    conv_1x1_exp  1x1 conv to min(4 * C5, 960) + BN + act; global mean pool; dropout; `head` (official classifier.fc)

    AFFBlock(x)   = fusion(concat(x, conv_proj(global_rep(x))))      (fusion: 1x1 conv + BN + act; conv_proj: + BN)
    global_rep    = n x Block, then a final norm
    Block(x)      = x + AFF(Z) with Z = norm2(IR(norm1(x))), IR(u) = u + MBConv(u)   (local conv first, then AFF;
                    AFF(Z) = Z + irfft2(M(Z) * rfft2(Z)) includes its own input, `zoo.layers.fourier`)

Choices where the official configuration is not public (the AFFNet YAML files live on a download share):
- `activation="swish"` (SiLU) everywhere, also inside the AFF mask MLP: the code reads one global
  `model.activation.name` for the convolutions and for the mask MLP, and every CVNets MobileViT configuration (v1,
  v2) sets it to "swish". "relu" (the mask MLP's code default) is selectable.
- `attn_norm="layer_norm"` for norm1/norm2/the final norm: it is the argparse default of
  `--model.classification.affnet.attn-norm-layer`, so it is what `main_train.py` passes unless a YAML overrides it.
  CVNets' `layer_norm` on a channel-first map normalises each pixel over the channels and divides by (std + eps),
  not sqrt(var + eps). "layer_norm_2d" (CVNets' GroupNorm with one group: statistics over H, W and C jointly, the
  default of `AFFBlock` and MobileViTv2) is selectable. Both have the same parameters, so counts do not change.

BatchNorm follows PyTorch (momentum 0.1, eps 1e-5): batch statistics in training with the two-pass biased variance,
running statistics updated with the *unbiased* batch variance (torch's rule; `flax.linen.BatchNorm` would use the
biased one), kept in the `batch_stats` collection as `mean`/`var`. Train-mode calls therefore need
`mutable=["batch_stats"]`. Initialisation is CVNets': convolutions kaiming-normal (fan_out), no conv biases (every
conv is followed by BatchNorm), norms 1/0, the classifier N(0, 0.02^2) (the MobileViT YAMLs' trunc_normal std 0.02,
whose +-2 cut-off is absolute), the AFF mask MLP 0.02 * N(0, 1).

Parameter names mirror the official state dict: a PyTorch key `a.b.3.c.weight` is ours `a/b_3/c/<leaf>` (an index
joins the name before it): `conv_1.block.conv.weight` -> `conv_1/block/conv/kernel`,
`layer_3.1.global_rep.0.filter.w1` -> `layer_3_1/global_rep_0/filter/w1`, BatchNorm `running_mean`/`running_var`
-> `batch_stats/.../mean`/`var`; the only rename is `classifier.fc` -> `head` (see checkpoints/convert/affnet.py).

Additions over the official model, off by default: stochastic depth in the AFF blocks (`drop_path_rate`, linear in
block index); configurable stem stride and stage tuples (for small images). A stage with stride 1 has no MV2
downsample (as in the official `_make_affnet_layer`), so its AFFBlock is `layer_k_0` and keeps the channel count.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.contract import as_hw, check_images
from zoo.layers import BatchNorm, ClassifierHead, Conv, DropPath, fourier
from zoo.registry import Paper, register_model

ACTIVATIONS = {"swish": nn.silu, "silu": nn.silu, "relu": nn.relu}
ATTN_NORMS = ("layer_norm", "layer_norm_2d")
AFF_NUM_BLOCKS = 8  # block-diagonal blocks of the AFF mask MLP (fixed by the official AFFBlock)

# torch.nn.init.kaiming_normal_(mode="fan_out"): N(0, 2 / fan_out), fan_out = out_channels * kh * kw.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """CVNets' (and TF MobileNet's) channel rounding: nearest multiple of `divisor`, never 10% below `value`."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def expanded_channels(in_channels: int, expand_ratio: float) -> int:
    """Hidden width of an inverted residual: make_divisible(round(C * ratio), 8), as CVNets."""
    return make_divisible(round(in_channels * expand_ratio), 8)


class AttnNorm(nn.Module):
    """The norm of the AFF blocks on `[batch, height, width, channels]`, per-channel `scale` and `bias`, float32.

    `kind="layer_norm"` (CVNets `layer_norm` on a channel-first map): per pixel over the channels,
    (x - mean) / (std + eps) with the biased std. `kind="layer_norm_2d"` (CVNets `layer_norm_2d`, GroupNorm with one
    group): over height, width and channels jointly, (x - mean) / sqrt(var + eps).
    """

    kind: str = "layer_norm"
    epsilon: float = 1e-5
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
        x32 = x.astype(jnp.float32)
        axes = (-1,) if self.kind == "layer_norm" else tuple(range(1, x.ndim))
        centred = x32 - jnp.mean(x32, axis=axes, keepdims=True)
        var = jnp.mean(jnp.square(centred), axis=axes, keepdims=True)
        if self.kind == "layer_norm":
            normed = centred / (jnp.sqrt(var) + self.epsilon)
        else:
            normed = centred * jax.lax.rsqrt(var + self.epsilon)
        y = normed * scale.astype(jnp.float32) + bias.astype(jnp.float32)
        return y.astype(self.dtype or x.dtype)


class ConvNorm(nn.Module):
    """The `block` of a CVNets ConvLayer: `conv` (no bias, 'same' zero padding k // 2, as PyTorch) and `norm`."""

    features: int
    kernel_size: int = 1
    strides: int = 1
    groups: int = 1
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x = Conv(
            self.features,
            self.kernel_size,
            strides=self.strides,
            groups=self.groups,
            use_bias=False,
            kernel_init=conv_kernel_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv",
        )(x)
        return BatchNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x, train=train)


class ConvLayer(nn.Module):
    """CVNets ConvLayer, `[batch, H, W, C_in] -> [batch, H / strides, W / strides, features]`: conv + BN (+ act)."""

    features: int
    kernel_size: int = 1
    strides: int = 1
    groups: int = 1
    use_act: bool = True
    activation: str = "swish"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x = ConvNorm(
            self.features,
            self.kernel_size,
            self.strides,
            self.groups,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="block",
        )(x, train=train)
        return ACTIVATIONS[self.activation](x) if self.use_act else x


class MBConv(nn.Module):
    """The `block` of an inverted residual: `exp_1x1` (if expand_ratio != 1), depthwise `conv_3x3`, `red_1x1`."""

    features: int
    strides: int = 1
    expand_ratio: float = 4
    activation: str = "swish"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        conv = lambda features, name, **kw: ConvLayer(
            features, activation=self.activation, dtype=self.dtype, param_dtype=self.param_dtype, name=name, **kw
        )
        hidden = expanded_channels(x.shape[-1], self.expand_ratio)
        if self.expand_ratio != 1:
            x = conv(hidden, "exp_1x1")(x, train=train)
        x = conv(hidden, "conv_3x3", kernel_size=3, strides=self.strides, groups=hidden)(x, train=train)
        return conv(self.features, "red_1x1", use_act=False)(x, train=train)


class InvertedResidual(nn.Module):
    """MobileNetV2 block, `[batch, H, W, C_in] -> [batch, H / strides, W / strides, features]`; adds its input when
    the shapes allow (stride 1 and C_in == features)."""

    features: int
    strides: int = 1
    expand_ratio: float = 4
    activation: str = "swish"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        y = MBConv(
            self.features,
            self.strides,
            self.expand_ratio,
            self.activation,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="block",
        )(x, train=train)
        return x + y if self.strides == 1 and x.shape[-1] == self.features else y


class AFFTransformerBlock(nn.Module):
    """Official `Block`, `[batch, H, W, C] -> same`: x + AFF(norm2(IR(norm1(x)))) (AFF includes its own input)."""

    ffn_ratio: float = 2.0
    attn_norm: str = "layer_norm"
    activation: str = "swish"
    drop_path_rate: float = 0.0
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        norm = lambda name: AttnNorm(self.attn_norm, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        y = norm("norm1")(x)
        y = InvertedResidual(
            x.shape[-1],
            expand_ratio=self.ffn_ratio,
            activation=self.activation,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="mlp",
        )(y, train=train)
        y = norm("norm2")(y)
        y = fourier.SpectralFilter2D(
            num_blocks=AFF_NUM_BLOCKS,
            adaptive_mask=True,
            activation="relu" if self.activation == "relu" else "silu",
            param_dtype=self.param_dtype,
            name="filter",
        )(y)
        return x + DropPath(self.drop_path_rate)(y.astype(x.dtype), train=train)


class AFFBlock(nn.Module):
    """Official `AFFBlock`, `[batch, H, W, C] -> same`: `global_rep` (n blocks + final norm), `conv_proj`, `fusion`."""

    num_blocks: int
    ffn_ratio: float = 2.0
    fuse: bool = True
    attn_norm: str = "layer_norm"
    activation: str = "swish"
    drop_path_rates: tuple[float, ...] = ()
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        kw = dict(activation=self.activation, dtype=self.dtype, param_dtype=self.param_dtype)
        channels = x.shape[-1]
        y = x
        for j in range(self.num_blocks):
            rate = self.drop_path_rates[j] if self.drop_path_rates else 0.0
            y = AFFTransformerBlock(self.ffn_ratio, self.attn_norm, drop_path_rate=rate, name=f"global_rep_{j}", **kw)(
                y, train=train
            )
        y = AttnNorm(
            self.attn_norm, dtype=self.dtype, param_dtype=self.param_dtype, name=f"global_rep_{self.num_blocks}"
        )(y)
        y = ConvLayer(channels, use_act=False, name="conv_proj", **kw)(y, train=train)
        if self.fuse:
            y = ConvLayer(channels, name="fusion", **kw)(jnp.concatenate([x, y.astype(x.dtype)], axis=-1), train=train)
        return y


def _check_stages(name: str, stages: Any) -> None:
    if not isinstance(stages, tuple) or not all(isinstance(s, tuple) and len(s) == 4 for s in stages):
        raise ValueError(f"AFFNet: {name} must be a tuple of (channels, blocks, stride, expand_ratio), got {stages}")
    for channels, blocks, stride, expand in stages:
        if channels <= 0 or blocks <= 0 or expand <= 0:
            raise ValueError(f"AFFNet: {name} needs positive channels, blocks and expand_ratio, got {stages}")
        if stride not in (1, 2):
            raise ValueError(f"AFFNet: stage strides must be 1 or 2, got {stride} in {name}")


class AFFNet(nn.Module):
    """AFFNet classifier: images `[batch, H, W, in_chans]` -> logits `[batch, num_classes]` (float32).

    `num_classes=0` returns the pooled features `[batch, min(4 * C_last, 960)]`. Stages are
    `(channels, blocks, stride, expand_ratio)`: `mv2_stages` are stacks of inverted residuals (`layer_1`, ...);
    `aff_stages` (the following `layer_k`) are an MV2 downsample with `expand_ratio` when the stride is 2, then an
    AFFBlock of `blocks` AFF blocks whose local FFN expands by `ffn_ratio`.
    """

    num_classes: int = 1000
    img_size: int | tuple[int, int] = 256
    in_chans: int = 3
    stem_channels: int = 16
    stem_stride: int = 2
    mv2_stages: tuple[tuple[int, int, int, float], ...] = ((32, 1, 1, 4), (64, 3, 2, 4))
    aff_stages: tuple[tuple[int, int, int, float], ...] = ((128, 2, 2, 4), (256, 4, 2, 4), (320, 3, 2, 4))
    ffn_ratio: float = 2.0
    no_fuse_layers: tuple[int, ...] = ()  # layer numbers (e.g. (4, 5)) whose AFFBlock has no fusion conv
    last_layer_exp_factor: int = 4
    activation: str = "swish"
    attn_norm: str = "layer_norm"
    classifier_dropout: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        if self.num_classes < 0:
            raise ValueError(f"AFFNet: num_classes must be >= 0, got {self.num_classes}")
        if self.in_chans <= 0 or self.stem_channels <= 0 or min(as_hw(self.img_size)) <= 0:
            raise ValueError("AFFNet: img_size, in_chans and stem_channels must be positive")
        if self.stem_stride not in (1, 2):
            raise ValueError(f"AFFNet: stem_stride must be 1 or 2, got {self.stem_stride}")
        _check_stages("mv2_stages", self.mv2_stages)
        _check_stages("aff_stages", self.aff_stages)
        if not self.mv2_stages and not self.aff_stages:
            raise ValueError("AFFNet: give at least one stage (mv2_stages or aff_stages)")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"AFFNet: activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if self.attn_norm not in ATTN_NORMS:
            raise ValueError(f"AFFNet: attn_norm must be one of {ATTN_NORMS}, got {self.attn_norm!r}")
        for field in ("classifier_dropout", "drop_path_rate"):
            if not 0.0 <= getattr(self, field) < 1.0:
                raise ValueError(f"AFFNet: {field} must be in [0, 1), got {getattr(self, field)}")
        if self.ffn_ratio <= 0 or self.last_layer_exp_factor <= 0:
            raise ValueError("AFFNet: ffn_ratio and last_layer_exp_factor must be positive")
        channels = self.mv2_stages[-1][0] if self.mv2_stages else self.stem_channels
        for k, (out, _, stride, _) in enumerate(self.aff_stages, start=len(self.mv2_stages) + 1):
            if out % AFF_NUM_BLOCKS:
                raise ValueError(
                    f"AFFNet: layer_{k} has {out} channels, not divisible by the AFF filter's {AFF_NUM_BLOCKS} blocks"
                )
            if stride == 1 and out != channels:
                raise ValueError(
                    f"AFFNet: layer_{k} has stride 1, so no MV2 layer to change the width: its channels must stay "
                    f"{channels}, got {out}"
                )
            channels = out
        super().__post_init__()

    @property
    def num_features(self) -> int:
        last = self.aff_stages[-1][0] if self.aff_stages else self.mv2_stages[-1][0]
        return min(self.last_layer_exp_factor * last, 960)

    def input_spec(self) -> dict[str, tuple[int, ...]]:
        return {"images": (*as_hw(self.img_size), self.in_chans)}

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        check_images(type(self).__name__, images, self.img_size, self.in_chans)
        kw = dict(activation=self.activation, dtype=self.dtype, param_dtype=self.param_dtype)
        x = images.astype(self.dtype)
        x = ConvLayer(self.stem_channels, kernel_size=3, strides=self.stem_stride, name="conv_1", **kw)(x, train=train)
        layer = 0
        for channels, blocks, stride, expand in self.mv2_stages:
            layer += 1
            for i in range(blocks):
                x = InvertedResidual(channels, stride if i == 0 else 1, expand, name=f"layer_{layer}_{i}", **kw)(
                    x, train=train
                )
        total = sum(s[1] for s in self.aff_stages)
        done = 0
        for channels, blocks, stride, expand in self.aff_stages:
            layer += 1
            index = 0
            if stride == 2:
                x = InvertedResidual(channels, 2, expand, name=f"layer_{layer}_0", **kw)(x, train=train)
                index = 1
            rates = tuple(self.drop_path_rate * (done + j) / max(total - 1, 1) for j in range(blocks))
            done += blocks
            x = AFFBlock(
                blocks,
                self.ffn_ratio,
                fuse=layer not in self.no_fuse_layers,
                attn_norm=self.attn_norm,
                drop_path_rates=rates,
                name=f"layer_{layer}_{index}",
                **kw,
            )(x, train=train)
        x = ConvLayer(self.num_features, name="conv_1x1_exp", **kw)(x, train=train)
        return ClassifierHead(
            self.num_classes,
            dropout_rate=self.classifier_dropout,
            kernel_init=nn.initializers.normal(0.02),  # torch trunc_normal_(std=0.02) cuts at +-2, i.e. never
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="head",
        )(x.reshape(x.shape[0], -1, x.shape[-1]), train=train)


AFFNET = Paper(
    title="Adaptive Frequency Filters As Efficient Global Token Mixers",
    arxiv="2307.14008",
    code="https://github.com/microsoft/TokenMixers",
)

# CVNets feeds RGB in [0, 1] without mean/std normalisation (its `to_tensor` divides by 255 and nothing else);
# evaluation resizes the short side to 288 and centre-crops 256 (bilinear in the MobileViT v1 YAML).
DATA_CONFIG = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), crop_pct=256 / 288, interpolation="bilinear")

# The official `get_configuration` modes: MV2 stages (layer_1, layer_2) and AFF stages (layer_3.._5), each
# (channels, blocks, stride, expand_ratio); ffn_dim = 2 * channels in every AFF stage.
MODES = {
    "xx_small": (((32, 1, 1, 2), (48, 3, 2, 2)), ((64, 2, 2, 2), (104, 4, 2, 2), (144, 3, 2, 2))),
    "x_small": (((32, 1, 1, 4), (48, 3, 2, 4)), ((96, 2, 2, 4), (160, 4, 2, 4), (192, 3, 2, 4))),
    "small": (((32, 1, 1, 4), (64, 3, 2, 4)), ((128, 2, 2, 4), (256, 4, 2, 4), (320, 3, 2, 4))),
}

_register = lambda **kw: register_model(
    AFFNet, family="affnet", task="classification", paper=AFFNET, data_config=DATA_CONFIG, **kw
)
# The official weights sit in OneDrive share folders (no direct-download URL).
_ONEDRIVE = dict(
    releases_note="the official weights are in OneDrive share folders linked from the microsoft/TokenMixers README "
    "(no direct-download URL); fetch a file by hand and pass its path to checkpoints.load_pretrained(name, path)"
)


def _mode(mode: str) -> dict:
    mv2, aff = MODES[mode]
    return dict(img_size=256, mv2_stages=mv2, aff_stages=aff)


@_register(**_ONEDRIVE)
def affnet_et():
    """AFFNet-ET (official mode xx_small) at 256x256: 1.4M parameters, 73.0% ImageNet top-1 (README)."""
    return _mode("xx_small")


@_register(**_ONEDRIVE)
def affnet_t():
    """AFFNet-T (official mode x_small) at 256x256: 2.6M parameters, 77.0% ImageNet top-1 (README)."""
    return _mode("x_small")


@_register(**_ONEDRIVE)
def affnet():
    """AFFNet (official mode small) at 256x256: 5.5M parameters, 79.8% ImageNet top-1 (README)."""
    return _mode("small")


@_register()
def affnet_tiny_8():
    """A tiny AFFNet for 8x8 grayscale images (scikit-learn digits): AFF stages on 4x4 and 2x2 grids."""
    return dict(
        img_size=8,
        in_chans=1,
        stem_stride=1,
        mv2_stages=((16, 1, 1, 2), (24, 1, 1, 2)),
        aff_stages=((32, 1, 2, 2), (48, 1, 2, 2), (48, 1, 1, 2)),
    )
