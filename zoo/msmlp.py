"""MS-MLP: Mixing and Shifting: Exploiting Global and Local Dependencies in Vision MLPs (Zheng, He, Chen, Zhou,
arXiv 2202.06510).

Official PyTorch code: https://github.com/JegZheng/MS-MLP (`models/ms_mlp.py`, configs
`msmlp_{tiny,small,base}_patch4_shift5_224.yaml`, a10d34d). We follow the code, NHWC instead of NCHW:

    patch_embed   conv p x p stride p (`proj`) + LayerNorm (`norm`)
    layers_{s}    `blocks_{b}` (MixShiftBlock), then for s < last a `downsample`: conv 2x2 stride 2 to 2C + LayerNorm
    head          mean over the grid -> LayerNorm (`norm`) -> `head` Linear

    MixShiftBlock(x) = x + DropPath(gamma * pwconv2(GELU(pwconv1(LN(lr(x) + td(x))))))
    lr(x)            = concat_g dwconv_lr_g(roll(x_g, shift_dist[g], W))     (paper Eq. 3-4: shift, then mix)
    td(x)            = concat_g dwconv_td_g(roll(x_g, shift_dist[g], H))

with x_g the `shift_size` channel groups of torch.chunk (`zoo.layers.shift`), dwconv_*_g a depthwise
mix_size[s][g] x mix_size[s][g] convolution with bias and zero padding k // 2 (applied after the circular roll, as in
the code; the two orders differ at the borders), no norm before the token mixer, LayerNorm epsilon 1e-6 everywhere,
exact GELU (`approximate_gelu=True` gives the tanh form), layer scale `gamma` initialised to 1e-6, stochastic depth
linear in the block index over all stages (timm's rule). Initialisation as the official code: Linear layers
trunc-normal 0.02 with zero bias, every convolution PyTorch's default, LayerNorms 1/0.

Parameter names mirror the official state dict, one rule: the PyTorch module path `a.3.b` is ours `a_3/b` (an index
joins the name before it), `weight` -> `kernel` (transposed) or `scale` (norms), so `layers.0.blocks.1.dwconv_lr.4.
weight` is `layers_0/blocks_1/dwconv_lr_4/kernel` and the classifier `head.weight` is `head/kernel` (see
checkpoints/convert/msmlp.py).

Speed. Each group's depthwise convolution is computed on its own (`DepthwiseConv`): measured on XLA:CPU (2 cores
under heavy shared load, so relative figures) for the whole token mixer at MS-MLP-T stage-1 shapes `[8, 56, 56, 96]`,
forward / forward + backward: per-group convolutions 199 / 1168 ms; one merged 7x7 convolution with every group's
kernel zero-padded to the largest size 672 / 3212 ms (and minutes of compilation with autodiff). With autodiff of
the shifted-slice sum the per-group form took 257 / 2365 ms: XLA:CPU computes the kernel gradient as k*k separate
reductions (260 ms for one 7x7 conv on 16 channels); `zoo.layers.depthwise_conv2d` writes it, for kernels of 5x5 and
up, as k matrix products over (batch, rows) followed by diagonal sums (20 ms), and keeps autodiff for 3x3, where
autodiff is faster.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.contract import as_hw, check_images
from zoo.layers import (
    ClassifierHead,
    DropPath,
    PatchEmbed,
    depthwise_conv2d,
    gelu,
    layer_norm,
    torch_bias_init,
    torch_kernel_init,
)
from zoo.layers.fusion import materialize_cotangent
from zoo.layers.shift import channel_groups, roll_groups
from zoo.registry import Paper, PretrainedCfg, register_model


def trunc_normal(std: float):
    """timm's `trunc_normal_(std=std)`: N(0, std^2) truncated to [-2, 2] (absolute bounds)."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return (jax.random.truncated_normal(key, -2.0 / std, 2.0 / std, shape, jnp.float32) * std).astype(dtype)

    return init


class DepthwiseConv(nn.Module):
    """Official `nn.Conv2d(c, c, k, padding=k // 2, groups=c)`: `[batch, H, W, c] -> [batch, H, W, c]`, parameters
    `kernel` `[k, k, 1, c]` and `bias` `[c]`, PyTorch's default initialisation."""

    kernel_size: int
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, channels = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", torch_kernel_init, (k, k, 1, channels), self.param_dtype)
        bias = self.param("bias", torch_bias_init(k * k), (channels,), self.param_dtype)
        dtype = self.dtype or jnp.result_type(x.dtype, self.param_dtype)
        x, kernel = x.astype(dtype), kernel.astype(dtype)
        y = x * kernel[0, 0, 0] if k == 1 else depthwise_conv2d(x, kernel)
        return y + bias.astype(dtype)


def mix_shift(
    x: jax.Array,
    shifts: Sequence[int],
    kernel_sizes: Sequence[int],
    *,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> jax.Array:
    """The token mixer of a MixShiftBlock, `[batch, H, W, C] -> [batch, H, W, C]`: the sum of a horizontal and a
    vertical branch; each rolls channel group g by `shifts[g]` (along W, resp. H) and mixes it with its own
    depthwise `kernel_sizes[g]` convolution (`dwconv_lr_{g}`, resp. `dwconv_td_{g}`).

    Called inside a compact method: the convolutions become children of the calling module (the official layout
    has them directly in the block)."""
    groups = channel_groups(x.shape[-1], len(shifts))
    out = None
    for branch, axis in (("dwconv_lr", 2), ("dwconv_td", 1)):
        mixed = [
            DepthwiseConv(k, dtype=dtype, param_dtype=param_dtype, name=f"{branch}_{g}")(group)
            for g, (group, k) in enumerate(zip(roll_groups(x, groups, shifts, axis), kernel_sizes))
        ]
        y = jnp.concatenate(mixed, axis=-1)
        out = y if out is None else out + y
    return out


class MixShift(nn.Module):
    """`mix_shift` as a module of its own (parameters `dwconv_lr_{g}`, `dwconv_td_{g}`)."""

    shifts: Sequence[int]
    kernel_sizes: Sequence[int]
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return mix_shift(x, self.shifts, self.kernel_sizes, dtype=self.dtype, param_dtype=self.param_dtype)


class MixShiftBlock(nn.Module):
    """One MS-MLP block, `[batch, H, W, C] -> [batch, H, W, C]` (module doc)."""

    shifts: Sequence[int]
    kernel_sizes: Sequence[int]
    mlp_ratio: float = 4.0
    layer_scale_init: float = 1e-6
    approximate_gelu: bool = False
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-6
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        channels = x.shape[-1]
        dense = lambda features, name: nn.Dense(
            features,
            kernel_init=trunc_normal(0.02),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )
        y = mix_shift(x, self.shifts, self.kernel_sizes, dtype=self.dtype, param_dtype=self.param_dtype)
        y = layer_norm(self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(y)
        y = dense(int(self.mlp_ratio * channels), "pwconv1")(y)
        y = dense(channels, "pwconv2")(gelu(self.approximate_gelu)(y))
        if self.layer_scale_init > 0:
            gamma = self.param("gamma", nn.initializers.constant(self.layer_scale_init), (channels,), self.param_dtype)
            y = y * gamma.astype(y.dtype)
        # materialize_cotangent: the identity; XLA:CPU computes the residual stream's gradient once per block
        # (zoo/layers/fusion.py).
        return materialize_cotangent(x + DropPath(self.drop_path_rate)(y, train=train))


class PatchEmbedNorm(nn.Module):
    """The official `PatchEmbed` (stem and downsamples): `[batch, H, W, C_in] -> [batch, H / p, W / p, features]`,
    a p x p stride-p convolution `proj` (bias, PyTorch's default initialisation) then a LayerNorm `norm`."""

    patch_size: int
    features: int
    norm_eps: float = 1e-6
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = self.patch_size * self.patch_size * x.shape[-1]
        x = PatchEmbed(
            self.patch_size,
            self.features,
            kernel_init=torch_kernel_init,
            bias_init=torch_bias_init(fan_in),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="proj",
        )(x)
        return layer_norm(self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x)


class BasicLayer(nn.Module):
    """One stage, `[batch, H, W, C] -> [batch, H / 2, W / 2, 2 C]` (with `downsample`) or the same shape:
    `blocks_{b}` then `downsample` (conv 2x2 stride 2 + LayerNorm)."""

    depth: int
    shifts: Sequence[int]
    kernel_sizes: Sequence[int]
    downsample: bool = False
    mlp_ratio: float = 4.0
    layer_scale_init: float = 1e-6
    approximate_gelu: bool = False
    drop_path_rates: tuple[float, ...] = ()
    norm_eps: float = 1e-6
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        kw = dict(norm_eps=self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype)
        for b in range(self.depth):
            x = MixShiftBlock(
                self.shifts,
                self.kernel_sizes,
                mlp_ratio=self.mlp_ratio,
                layer_scale_init=self.layer_scale_init,
                approximate_gelu=self.approximate_gelu,
                drop_path_rate=self.drop_path_rates[b] if self.drop_path_rates else 0.0,
                name=f"blocks_{b}",
                **kw,
            )(x, train=train)
        if self.downsample:
            x = PatchEmbedNorm(2, 2 * x.shape[-1], name="downsample", **kw)(x)
        return x


class MSMLP(nn.Module):
    """MS-MLP classifier: images `[batch, H, W, in_chans]` -> logits `[batch, num_classes]` (float32).

    Stage s has width `embed_dim * 2**s`, `depths[s]` blocks and the kernel sizes `mix_size[s]` (one per shift
    group). `num_classes=0` returns the pooled, normalised features `[batch, embed_dim * 2**(stages - 1)]`.
    """

    num_classes: int = 1000
    img_size: int | tuple[int, int] = 224
    in_chans: int = 3
    patch_size: int = 4
    embed_dim: int = 96
    depths: tuple[int, ...] = (3, 3, 9, 3)
    shift_dist: tuple[int, ...] = (-2, -1, 0, 1, 2)
    mix_size: tuple[tuple[int, ...], ...] = ((1, 1, 3, 5, 7), (1, 3, 3, 5, 7), (1, 5, 5, 5, 7), (1, 7, 7, 7, 7))
    mlp_ratio: float = 4.0
    layer_scale_init: float = 1e-6
    approximate_gelu: bool = False
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-6
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        name = type(self).__name__
        h, w = as_hw(self.img_size)
        for field in ("patch_size", "embed_dim", "in_chans"):
            if getattr(self, field) < 1:
                raise ValueError(f"{name}: {field} must be >= 1, got {getattr(self, field)}")
        if self.num_classes < 0:
            raise ValueError(f"{name}: num_classes must be >= 0, got {self.num_classes}")
        if not self.depths or any(d < 1 for d in self.depths):
            raise ValueError(f"{name}: depths must be a non-empty tuple of positive block counts, got {self.depths}")
        stride = self.patch_size * 2 ** (len(self.depths) - 1)
        if h < 1 or w < 1 or h % stride or w % stride:
            raise ValueError(
                f"{name}: img_size {self.img_size} must be divisible by patch_size * 2**(stages - 1) = {stride}"
            )
        if len(self.mix_size) != len(self.depths):
            raise ValueError(f"{name}: mix_size needs one tuple per stage ({len(self.depths)}), got {self.mix_size}")
        groups = len(self.shift_dist)
        for s, sizes in enumerate(self.mix_size):
            if len(sizes) != groups:
                raise ValueError(
                    f"{name}: mix_size[{s}] = {sizes} needs one kernel size per shift group "
                    f"({groups} shift_dist values)"
                )
            if any(k < 1 or k % 2 == 0 for k in sizes):
                raise ValueError(f"{name}: kernel sizes must be odd and positive, got mix_size[{s}] = {sizes}")
            width = self.embed_dim * 2**s
            try:
                channel_groups(width, groups)
            except ValueError as err:
                raise ValueError(f"{name}: stage {s} (width {width}): {err}") from None
        for field in ("drop_rate", "drop_path_rate"):
            if not 0.0 <= getattr(self, field) < 1.0:
                raise ValueError(f"{name}: {field} must be in [0, 1), got {getattr(self, field)}")
        if self.mlp_ratio <= 0 or self.layer_scale_init < 0 or self.norm_eps <= 0:
            raise ValueError(f"{name}: mlp_ratio and norm_eps must be > 0 and layer_scale_init >= 0")
        super().__post_init__()

    @property
    def num_features(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    def input_spec(self) -> dict[str, tuple[int, ...]]:
        return {"images": (*as_hw(self.img_size), self.in_chans)}

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        check_images(type(self).__name__, images, self.img_size, self.in_chans)
        kw = dict(norm_eps=self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype)
        x = PatchEmbedNorm(self.patch_size, self.embed_dim, name="patch_embed", **kw)(images)
        x = nn.Dropout(self.drop_rate)(x, deterministic=not train)
        total, done = sum(self.depths), 0
        for s, depth in enumerate(self.depths):
            x = BasicLayer(
                depth,
                self.shift_dist,
                self.mix_size[s],
                downsample=s < len(self.depths) - 1,
                mlp_ratio=self.mlp_ratio,
                layer_scale_init=self.layer_scale_init,
                approximate_gelu=self.approximate_gelu,
                drop_path_rates=tuple(self.drop_path_rate * (done + b) / max(total - 1, 1) for b in range(depth)),
                name=f"layers_{s}",
                **kw,
            )(x, train=train)
            done += depth
        x = jnp.mean(x, axis=(1, 2))
        x = layer_norm(self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x)
        return ClassifierHead(
            self.num_classes,
            kernel_init=trunc_normal(0.02),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="head",
        )(x[:, None, :], train=train)


MSMLP_PAPER = Paper(
    title="Mixing and Shifting: Exploiting Global and Local Dependencies in Vision MLPs",
    arxiv="2202.06510",
    code="https://github.com/JegZheng/MS-MLP",
)

# The official configs (configs/msmlp_*_patch4_shift5_224.yaml, Swin's data pipeline): ImageNet statistics, bicubic,
# evaluation resize 256 -> centre crop 224.
IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop_pct=0.875, interpolation="bicubic")

_register = lambda **kw: register_model(MSMLP, family="msmlp", task="classification", paper=MSMLP_PAPER, **kw)

_AZURE = "https://tsciencescu.blob.core.windows.net/projectshzheng/MSMLP/released_model"


def _release(size: str, paper_top1: float) -> dict[str, PretrainedCfg]:
    """The README's `msmlp_{size}` file: the Swin-style training checkpoint of the last of 300 epochs (no sha256 is
    published). The weights are under `model`; the file also holds `optimizer`, `lr_scheduler`, `max_accuracy`,
    `epoch` and the yacs `config`, which our reader keeps as an inert record (nothing of it runs)."""
    return {
        "in1k": PretrainedCfg(
            url=f"{_AZURE}/msmlp_{size}_patch4/msmlp_{size}_patch4_ckpt_epoch299.pth",
            source="official",
            num_classes=1000,
            mean=IMAGENET["mean"],
            std=IMAGENET["std"],
            input_size=(224, 224, 3),
            crop_pct=IMAGENET["crop_pct"],
            interpolation=IMAGENET["interpolation"],
            license="MIT (the official repository's LICENSE; no separate terms for the weights)",
            notes="Swin-style training checkpoint, weights under `model`; top-1 from the official README",
            dataset="ImageNet-1k from scratch (300 epochs)",
            paper_top1=paper_top1,
            state_dict_key="model",
        )
    }


@_register(data_config=IMAGENET, pretrained=_release("tiny", 82.1))
def msmlp_tiny():
    """MS-MLP-Tiny at 224x224: width 96, depths 3-3-9-3, 28.7M parameters, 82.1% ImageNet top-1 (README)."""
    return dict(embed_dim=96, depths=(3, 3, 9, 3), drop_path_rate=0.1)


@_register(data_config=IMAGENET, pretrained=_release("small", 83.4))
def msmlp_small():
    """MS-MLP-Small at 224x224: width 96, depths 3-3-27-3, 50.3M parameters, 83.4% ImageNet top-1 (README)."""
    return dict(embed_dim=96, depths=(3, 3, 27, 3), drop_path_rate=0.4)


@_register(data_config=IMAGENET, pretrained=_release("base", 83.8))
def msmlp_base():
    """MS-MLP-Base at 224x224: width 128, depths 3-3-27-3, 88.7M parameters, 83.8% ImageNet top-1 (README)."""
    return dict(embed_dim=128, depths=(3, 3, 27, 3), drop_path_rate=0.5)


@_register()
def msmlp_tiny_8():
    """A tiny MS-MLP for 8x8 grayscale images (scikit-learn digits): patch 2, stages on 4x4 and 2x2 grids."""
    return dict(
        img_size=8,
        in_chans=1,
        patch_size=2,
        embed_dim=40,
        depths=(2, 2),
        mix_size=((1, 1, 3, 3, 3), (1, 3, 3, 3, 3)),
    )
