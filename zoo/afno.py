"""AFNO: Adaptive Fourier Neural Operators: Efficient Token Mixers for Transformers (Guibas et al., ICLR 2022,
arXiv 2111.13587).

Official PyTorch code: https://github.com/NVlabs/AFNO-transformer (`classification/afnonet.py`, `afno/afno2d.py`,
941e924). `AFNONet` is the classification network of that file: a patch embedding (convolution p x p, stride p),
a learned position embedding, `depth` blocks

    y = AFNO(LN1(x))                          # the filter includes its own `+ LN1(x)` (zoo.layers.SpectralFilter2D)
    if double_skip: y = y + x; x = y          # off in the official classification code (FourCastNet turns it on)
    out = x + DropPath(MLP(LN2(y)))           # MLP: Linear(C, r C), GELU, dropout, Linear(r C, C), dropout

then a final LayerNorm, the mean over tokens and a linear head. LayerNorm epsilon 1e-6, exact GELU (the official
`nn.GELU()`; `approximate_gelu=True` gives the tanh form), stochastic depth rate linear in the block index (timm's
rule), initialisation as the official code (Linear trunc-normal 0.02 with zero bias, filter 0.02 N(0, 1),
position embedding trunc-normal 0.02, patch convolution PyTorch's default).

The parameter tree mirrors the official state dict (`pos_embed`, `patch_embed/proj`, `blocks_{i}/norm1`,
`blocks_{i}/filter/{w1,b1,w2,b2}`, `blocks_{i}/norm2`, `blocks_{i}/mlp/fc{1,2}`, `norm`, `head`), so
`checkpoints/convert/afno.py` only renames and transposes. Tokens stay on their `[batch, h, w, channels]` grid between
blocks (the official code flattens them to `[batch, h w, channels]` and reshapes inside the filter); non-square
images work (the official filter assumes a square grid).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.contract import as_hw, check_images
from zoo.layers import ClassifierHead, DropPath, MlpBlock, PatchEmbed, layer_norm, torch_bias_init, torch_kernel_init
from zoo.layers.fourier import SpectralFilter2D
from zoo.layers.fusion import materialize_cotangent
from zoo.registry import Paper, register_model


def trunc_normal(std: float):
    """timm's `trunc_normal_(std=std)`: N(0, std^2) truncated to [-2, 2] (absolute bounds, as timm's defaults)."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return (jax.random.truncated_normal(key, -2.0 / std, 2.0 / std, shape, jnp.float32) * std).astype(dtype)

    return init


class AFNOBlock(nn.Module):
    """One AFNONet block on the token grid, `[batch, h, w, C] -> [batch, h, w, C]` (module doc)."""

    mlp_dim: int
    num_blocks: int = 1
    sparsity_threshold: float = 0.01
    hard_thresholding_fraction: float = 1.0
    hidden_size_factor: int = 1
    double_skip: bool = False
    approximate_gelu: bool = False
    dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-6
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        norm = lambda name: layer_norm(self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        residual = x
        y = norm("norm1")(x)
        y = SpectralFilter2D(
            num_blocks=self.num_blocks,
            hidden_size_factor=self.hidden_size_factor,
            sparsity_threshold=self.sparsity_threshold,
            hard_thresholding_fraction=self.hard_thresholding_fraction,
            param_dtype=self.param_dtype,
            name="filter",
        )(y)
        if self.double_skip:
            y = materialize_cotangent(y + residual)
            residual = y
        y = norm("norm2")(y)
        y = MlpBlock(  # the official `Mlp`: fc1 (C -> hidden), GELU, dropout, fc2 (hidden -> C), dropout
            self.mlp_dim,
            approximate_gelu=self.approximate_gelu,
            dropout_rate=self.dropout_rate,
            kernel_init=trunc_normal(0.02),
            layer_names=("fc1", "fc2"),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="mlp",
        )(y, train=train)
        # materialize_cotangent: the identity; the residual stream's gradient is computed once per block on XLA:CPU
        # (zoo/layers/fusion.py).
        return materialize_cotangent(residual + DropPath(self.drop_path_rate)(y, train=train))


class PatchEmbedding(nn.Module):
    """The official `PatchEmbed`: `[batch, H, W, in_chans] -> [batch, H / p, W / p, embed_dim]` through a
    convolution named `proj` (kernel = stride = p, with bias, PyTorch's default initialisation)."""

    patch_size: int
    embed_dim: int
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        fan_in = self.patch_size * self.patch_size * images.shape[-1]
        return PatchEmbed(
            self.patch_size,
            self.embed_dim,
            kernel_init=torch_kernel_init,
            bias_init=torch_bias_init(fan_in),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="proj",
        )(images)


class AFNONet(nn.Module):
    """AFNONet classifier: images `[batch, H, W, in_chans]` -> logits `[batch, num_classes]` (float32).

    `num_classes=0` returns the pooled features `[batch, embed_dim]`. `num_blocks` is the number of diagonal blocks of
    the filter's weights (the official `--fno-blocks`), `depth` the number of layers.
    """

    num_classes: int = 1000
    img_size: int | tuple[int, int] = 224
    in_chans: int = 3
    patch_size: int = 4
    embed_dim: int = 384
    depth: int = 12
    mlp_ratio: float = 4.0
    num_blocks: int = 1
    sparsity_threshold: float = 0.01
    hard_thresholding_fraction: float = 1.0
    hidden_size_factor: int = 1
    double_skip: bool = False
    approximate_gelu: bool = False
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    head_drop_rate: float = 0.0
    norm_eps: float = 1e-6
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        name = type(self).__name__
        h, w = as_hw(self.img_size)
        positive = dict(patch_size=self.patch_size, embed_dim=self.embed_dim, num_blocks=self.num_blocks)
        positive.update(in_chans=self.in_chans, hidden_size_factor=self.hidden_size_factor, img_size=min(h, w))
        for field, value in positive.items():
            if value < 1:
                raise ValueError(f"{name}: {field} must be >= 1, got {value}")
        if self.depth < 0 or self.num_classes < 0:
            raise ValueError(f"{name}: depth and num_classes must be >= 0, got {self.depth}, {self.num_classes}")
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"{name}: img_size {self.img_size} is not divisible by patch_size {self.patch_size}")
        if self.embed_dim % self.num_blocks:
            raise ValueError(f"{name}: embed_dim {self.embed_dim} is not divisible by num_blocks {self.num_blocks}")
        if int(self.embed_dim * self.mlp_ratio) < 1:
            raise ValueError(f"{name}: mlp_ratio must give a hidden width >= 1, got {self.mlp_ratio}")
        for field in ("drop_rate", "drop_path_rate", "head_drop_rate"):
            if not 0.0 <= getattr(self, field) < 1.0:
                raise ValueError(f"{name}: {field} must be in [0, 1), got {getattr(self, field)}")
        if not 0.0 < self.hard_thresholding_fraction <= 1.0:
            raise ValueError(
                f"{name}: hard_thresholding_fraction must be in (0, 1], got {self.hard_thresholding_fraction}"
            )
        if self.sparsity_threshold < 0:
            raise ValueError(f"{name}: sparsity_threshold must be >= 0, got {self.sparsity_threshold}")
        super().__post_init__()

    @property
    def grid_size(self) -> tuple[int, int]:
        h, w = as_hw(self.img_size)
        return h // self.patch_size, w // self.patch_size

    @property
    def num_tokens(self) -> int:
        h, w = self.grid_size
        return h * w

    def input_spec(self) -> dict[str, tuple[int, ...]]:
        return {"images": (*as_hw(self.img_size), self.in_chans)}

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        check_images(type(self).__name__, images, self.img_size, self.in_chans)
        x = PatchEmbedding(
            self.patch_size, self.embed_dim, dtype=self.dtype, param_dtype=self.param_dtype, name="patch_embed"
        )(images)
        pos_embed = self.param("pos_embed", trunc_normal(0.02), (1, self.num_tokens, self.embed_dim), self.param_dtype)
        x = x + pos_embed.reshape(1, *self.grid_size, self.embed_dim).astype(x.dtype)
        x = nn.Dropout(self.drop_rate)(x, deterministic=not train)
        for i in range(self.depth):
            x = AFNOBlock(
                int(self.embed_dim * self.mlp_ratio),
                num_blocks=self.num_blocks,
                sparsity_threshold=self.sparsity_threshold,
                hard_thresholding_fraction=self.hard_thresholding_fraction,
                hidden_size_factor=self.hidden_size_factor,
                double_skip=self.double_skip,
                approximate_gelu=self.approximate_gelu,
                dropout_rate=self.drop_rate,
                drop_path_rate=self.drop_path_rate * i / max(self.depth - 1, 1),
                norm_eps=self.norm_eps,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"blocks_{i}",
            )(x, train=train)
        x = layer_norm(self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(x)
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        return ClassifierHead(
            self.num_classes,
            dropout_rate=self.head_drop_rate,
            kernel_init=trunc_normal(0.02),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="head",
        )(x, train=train)


AFNO = Paper(
    title="Adaptive Fourier Neural Operators: Efficient Token Mixers for Transformers",
    arxiv="2111.13587",
    code="https://github.com/NVlabs/AFNO-transformer",
)

# The official model card (`_cfg` in classification/afnonet.py): ImageNet statistics, eval crop 0.9, bicubic.
IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop_pct=0.9, interpolation="bicubic")

_register = lambda **kw: register_model(AFNONet, family="afno", task="classification", paper=AFNO, **kw)
_NONE = "NVlabs/AFNO-transformer publishes no ImageNet weights (its committed classification/checkpoint_best.pth is of "
_NONE += "unknown configuration; FourCastNet's weights are a weather model)"


@_register(data_config=IMAGENET, releases_note=_NONE)
def afnonet_d256_224():
    """AFNONet of the official README command: width 256, 4 filter blocks, 12 layers, patch 4 at 224x224."""
    return dict(img_size=224, patch_size=4, embed_dim=256, depth=12, num_blocks=4)


@_register(data_config=IMAGENET, releases_note=_NONE)
def afnonet_d384_224():
    """AFNONet with the defaults of the official training script: width 384, 1 filter block, 12 layers, patch 4."""
    return dict(img_size=224, patch_size=4, embed_dim=384, depth=12, num_blocks=1)


@_register()
def afnonet_ti2_8():
    """A small AFNONet for 8x8 grayscale images (scikit-learn digits): patch 2, 16 tokens, 3 layers of width 96."""
    return dict(img_size=8, in_chans=1, patch_size=2, embed_dim=96, depth=3, num_blocks=4)
