"""MLP-Mixer: An all-MLP Architecture for Vision (Tolstikhin et al., NeurIPS 2021, arXiv 2105.01601).

Official JAX code: https://github.com/google-research/vision_transformer (`vit_jax/models_mixer.py`, c6de1e5).
We follow it exactly, and the parameter tree is the official release's (`stem`, `MixerBlock_{i}/LayerNorm_0`,
`MixerBlock_{i}/token_mixing/Dense_{0,1}`, `.../LayerNorm_1`, `.../channel_mixing/Dense_{0,1}`,
`pre_head_layer_norm`, `head`), so the released `.npz` files load without renaming.

Additions over the official inference code, all off by default: dropout inside the MLPs and before the head
(timm's `proj_drop_rate`/`drop_rate`) and stochastic depth with timm's linear rule and rescaling. GELU is the tanh
approximation of the official release (`approximate_gelu=True`); timm and other PyTorch ports use the exact form.

Speed (same numbers, measured in docs/benchmarks.md): each residual addition passes through
`materialize_cotangent`, so XLA:CPU computes the residual stream's gradient once per block instead of re-deriving it
from the head inside every consumer; GELU and LayerNorm have hand-written derivative rules (`zoo.layers`).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.contract import as_hw, check_images
from zoo.layers import ClassifierHead, DropPath, MlpBlock, PatchEmbed, layer_norm
from zoo.layers.fusion import materialize_cotangent
from zoo.registry import Paper, PretrainedCfg, register_model


class MixerBlock(nn.Module):
    """One Mixer layer, `[batch, tokens, channels] -> [batch, tokens, channels]` (paper Eq. 1):

    U = X + W2 GELU(W1 LayerNorm(X)^T)^T  (token mixing, shared over channels)
    Y = U + W4 GELU(W3 LayerNorm(U))      (channel mixing, shared over tokens)
    """

    tokens_mlp_dim: int
    channels_mlp_dim: int
    approximate_gelu: bool = True
    dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-6
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        mlp = lambda dim, name: MlpBlock(
            dim,
            approximate_gelu=self.approximate_gelu,
            dropout_rate=self.dropout_rate,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )
        norm = lambda name: layer_norm(self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        drop_path = DropPath(self.drop_path_rate)
        y = norm("LayerNorm_0")(x)
        y = jnp.swapaxes(y, 1, 2)
        y = mlp(self.tokens_mlp_dim, "token_mixing")(y, train=train)
        y = jnp.swapaxes(y, 1, 2)
        # materialize_cotangent: the identity; it makes XLA:CPU compute the residual stream's gradient once per
        # boundary instead of re-deriving it from the head in every consumer (see zoo/layers/fusion.py).
        x = materialize_cotangent(x + drop_path(y, train=train))
        y = norm("LayerNorm_1")(x)
        y = mlp(self.channels_mlp_dim, "channel_mixing")(y, train=train)
        return materialize_cotangent(x + drop_path(y, train=train))


class MlpMixer(nn.Module):
    """MLP-Mixer classifier: images `[batch, H, W, in_chans]` -> logits `[batch, num_classes]` (float32).

    `num_classes=0` returns the pooled features `[batch, hidden_dim]`.
    """

    num_classes: int = 1000
    img_size: int | tuple[int, int] = 224
    in_chans: int = 3
    patch_size: int = 16
    num_blocks: int = 12
    hidden_dim: int = 768
    tokens_mlp_dim: int = 384
    channels_mlp_dim: int = 3072
    approximate_gelu: bool = True
    proj_drop_rate: float = 0.0
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-6
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        h, w = as_hw(self.img_size)
        for field in ("patch_size", "num_blocks", "hidden_dim", "tokens_mlp_dim", "channels_mlp_dim", "in_chans"):
            if getattr(self, field) < 1:
                raise ValueError(f"MlpMixer: {field} must be >= 1, got {getattr(self, field)}")
        for field in ("proj_drop_rate", "drop_rate", "drop_path_rate"):
            if not 0 <= getattr(self, field) < 1:
                raise ValueError(f"MlpMixer: {field} must be in [0, 1), got {getattr(self, field)}")
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"MlpMixer: img_size {self.img_size} is not divisible by patch_size {self.patch_size}")
        if self.num_classes < 0:
            raise ValueError(f"MlpMixer: num_classes must be >= 0, got {self.num_classes}")
        super().__post_init__()

    @property
    def num_tokens(self) -> int:
        h, w = as_hw(self.img_size)
        return (h // self.patch_size) * (w // self.patch_size)

    def input_spec(self) -> dict[str, tuple[int, ...]]:
        return {"images": (*as_hw(self.img_size), self.in_chans)}

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        check_images(type(self).__name__, images, self.img_size, self.in_chans)
        x = PatchEmbed(self.patch_size, self.hidden_dim, dtype=self.dtype, param_dtype=self.param_dtype, name="stem")(
            images
        )
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        for i in range(self.num_blocks):
            x = MixerBlock(
                self.tokens_mlp_dim,
                self.channels_mlp_dim,
                approximate_gelu=self.approximate_gelu,
                dropout_rate=self.proj_drop_rate,
                drop_path_rate=self.drop_path_rate * i / max(self.num_blocks - 1, 1),
                norm_eps=self.norm_eps,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"MixerBlock_{i}",
            )(x, train=train)
        x = layer_norm(self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype, name="pre_head_layer_norm")(x)
        return ClassifierHead(
            self.num_classes, dropout_rate=self.drop_rate, dtype=self.dtype, param_dtype=self.param_dtype, name="head"
        )(x, train=train)


MIXER = Paper(
    title="MLP-Mixer: An all-MLP Architecture for Vision",
    arxiv="2105.01601",
    code="https://github.com/google-research/vision_transformer",
)

# Paper Table 1: (blocks, hidden C, token MLP D_S, channel MLP D_C).
SIZES = {
    "S": (8, 512, 256, 2048),
    "B": (12, 768, 384, 3072),
    "L": (24, 1024, 512, 4096),
    "H": (32, 1280, 640, 5120),
    "Ti": (4, 128, 64, 512),  # our small size for CPU training on small images
}

_GCS = "https://storage.googleapis.com/mixer_models"
_TIMM_GITHUB = "https://github.com/rwightman/pytorch-image-models/releases/download"
# timm tags its copies of the ImageNet-1k-from-scratch weights "goog_in21k_ft_in1k": a paper author said so in timm
# PR #651, and timm's own evaluation (76.6 / 72.1) matches the paper's ImageNet-1k rows (76.44 / 71.76).
_MISNOMER = "the ImageNet-1k-from-scratch weights despite the tag (timm PR #651)"


def _official(path: str, num_classes: int, notes: str = "", **kw) -> PretrainedCfg:
    """A google-research `.npz` on the `mixer_models` bucket (no sha256 is published for these files)."""
    return PretrainedCfg(
        url=f"{_GCS}/{path}",
        source="official",
        num_classes=num_classes,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        input_size=(224, 224, 3),
        crop_pct=0.875,
        interpolation="bicubic",
        license="Apache-2.0",
        notes=notes,
        **kw,
    )


def _timm_hub(name: str, num_classes: int, notes: str = "", **kw) -> PretrainedCfg:
    """A timm release on the Hugging Face Hub (`timm/<name>`: model.safetensors in timm's key layout); timm's
    default_cfgs give the preprocessing and license. Hub files are content-addressed: their sha256 is checked
    against the Hub's on every load."""
    cfg = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=0.875, interpolation="bicubic")
    return PretrainedCfg(
        url=f"hf-hub:timm/{name}",
        source="timm",
        num_classes=num_classes,
        input_size=(224, 224, 3),
        license="Apache-2.0",
        notes=notes,
        **{**cfg, **kw},
    )


# Weights trained in PyTorch (timm/miil) use exact GELU; ImageNet-21k-P preprocessing: [0, 1] inputs, bilinear.
_MIIL = dict(
    mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation="bilinear", model_overrides={"approximate_gelu": False}
)


def _config(size: str, patch: int, img_size: int, **kw) -> dict:
    blocks, hidden, tokens_mlp, channels_mlp = SIZES[size]
    config = dict(
        img_size=img_size,
        patch_size=patch,
        num_blocks=blocks,
        hidden_dim=hidden,
        tokens_mlp_dim=tokens_mlp,
        channels_mlp_dim=channels_mlp,
    )
    return {**config, **kw}


_register = lambda **kw: register_model(MlpMixer, family="mlp_mixer", task="classification", paper=MIXER, **kw)


@_register()
def mixer_s32_224():
    """Mixer-S/32 at 224x224 (paper Table 1)."""
    return _config("S", 32, 224)


@_register()
def mixer_s16_224():
    """Mixer-S/16 at 224x224 (paper Table 1)."""
    return _config("S", 16, 224)


@_register()
def mixer_b32_224():
    """Mixer-B/32 at 224x224 (paper Table 1)."""
    return _config("B", 32, 224)


@_register(
    pretrained={
        "goog_in1k": _official(
            "imagenet1k/Mixer-B_16.npz", 1000, dataset="ImageNet-1k from scratch (300 epochs)", paper_top1=76.44
        ),
        "goog_in21k": _official(
            "imagenet21k/Mixer-B_16.npz",
            21843,
            "fine-tuned on ImageNet-1k the paper reports 80.64% top-1 (Table 3); timm's copy: hf-hub:timm/"
            f"mixer_b16_224.goog_in21k, {_TIMM_GITHUB}/v0.1-vitjx/jx_mixer_b16_224_in21k-617b3de2.pth",
            dataset="ImageNet-21k pre-training (21,843 classes)",
        ),
        "goog_in21k_ft_in1k": _timm_hub(
            "mixer_b16_224.goog_in21k_ft_in1k",
            1000,
            f"{_MISNOMER}; also {_TIMM_GITHUB}/v0.1-vitjx/jx_mixer_b16_224-76587d61.pth",
            dataset="ImageNet-1k from scratch",
            paper_top1=76.44,
            eval_top1=76.616,
        ),
        "miil_in21k": _timm_hub(
            "mixer_b16_224.miil_in21k",
            11221,
            f"Alibaba-MIIL ImageNet-21K-P; also {_TIMM_GITHUB}/v0.1-tresnet/mixer_b16_224_miil_in21k-2a558a71.pth",
            dataset="ImageNet-21K-P pre-training (11,221 classes)",
            **_MIIL,
        ),
        "miil_in21k_ft_in1k": _timm_hub(
            "mixer_b16_224.miil_in21k_ft_in1k",
            1000,
            f"Alibaba-MIIL; also {_TIMM_GITHUB}/v0.1-tresnet/mixer_b16_224_miil-9229a591.pth",
            dataset="ImageNet-21K-P pre-training, fine-tuned on ImageNet-1k",
            eval_top1=82.314,
            **_MIIL,
        ),
    }
)
def mixer_b16_224():
    """Mixer-B/16 at 224x224 (paper Table 1)."""
    return _config("B", 16, 224)


@_register()
def mixer_l32_224():
    """Mixer-L/32 at 224x224 (paper Table 1)."""
    return _config("L", 32, 224)


@_register(
    pretrained={
        "goog_in1k": _official(
            "imagenet1k/Mixer-L_16.npz", 1000, dataset="ImageNet-1k from scratch (300 epochs)", paper_top1=71.76
        ),
        "goog_in21k": _official(
            "imagenet21k/Mixer-L_16.npz",
            21843,
            "fine-tuned on ImageNet-1k the paper reports 82.89% top-1 (Table 3); timm's copy: hf-hub:timm/"
            f"mixer_l16_224.goog_in21k, {_TIMM_GITHUB}/v0.1-vitjx/jx_mixer_l16_224_in21k-846aa33c.pth",
            dataset="ImageNet-21k pre-training (21,843 classes)",
        ),
        "goog_in21k_ft_in1k": _timm_hub(
            "mixer_l16_224.goog_in21k_ft_in1k",
            1000,
            f"{_MISNOMER}; also {_TIMM_GITHUB}/v0.1-vitjx/jx_mixer_l16_224-92f9adc4.pth",
            dataset="ImageNet-1k from scratch",
            paper_top1=71.76,
            eval_top1=72.084,
        ),
    }
)
def mixer_l16_224():
    """Mixer-L/16 at 224x224 (paper Table 1)."""
    return _config("L", 16, 224)


@_register()
def mixer_h14_224():
    """Mixer-H/14 at 224x224 (paper Table 1)."""
    return _config("H", 14, 224)


@_register()
def mixer_ti4_32():
    """A small Mixer for 32x32 images (CIFAR-size): patch 4, 64 tokens, 8 blocks of width 128."""
    return _config("Ti", 4, 32, num_blocks=8)


@_register()
def mixer_ti2_8():
    """A tiny Mixer for 8x8 grayscale images (scikit-learn digits): patch 2, 16 tokens, 4 blocks of width 64."""
    return dict(
        img_size=8, in_chans=1, patch_size=2, num_blocks=4, hidden_dim=64, tokens_mlp_dim=32, channels_mlp_dim=128
    )
