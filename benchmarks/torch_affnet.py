"""AFFNet in plain PyTorch, written from the official code (microsoft/TokenMixers, "Adaptive Frequency Filters/affnet"
at 99dbe38: `models/classification/affnet.py`, `modules/aff_block.py`, `modules/mobilenetv2.py`,
`layers/conv_layer.py`, `layers/normalization/layer_norm.py`), without CVNets' option plumbing.

Module names are the official ones, so `TorchAFFNet(...).state_dict()` has the keys of an official checkpoint
(`conv_1.block.conv.weight`, `layer_3.1.global_rep.0.filter.w1`, `classifier.fc.weight`, ...) and converts to our
variables with `checkpoints.convert("affnet...", state_dict)`. Used by the parity tests (tests/test_affnet.py) and as
the PyTorch peer of `benchmarks.peers` (`affnet_peer`).

Tensors are NCHW, as in the official code. The AFF filter runs in float32 and follows the official arithmetic
(einsum per real/imaginary part, softshrink, mask times the input spectrum, `irfft2(s=(H, W))`, plus the input).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"swish": nn.SiLU, "silu": nn.SiLU, "relu": nn.ReLU}


def make_divisible(value: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvLayer(nn.Module):
    """CVNets ConvLayer: `block` = Sequential(conv (no bias, padding k // 2), norm (BatchNorm2d), [act])."""

    def __init__(self, cin, cout, kernel_size=1, stride=1, groups=1, use_act=True, activation="swish"):
        super().__init__()
        self.block = nn.Sequential()
        self.block.add_module(
            "conv", nn.Conv2d(cin, cout, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        )
        self.block.add_module("norm", nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1))
        if use_act:
            self.block.add_module("act", ACTIVATIONS[activation]())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: exp_1x1 (when expand_ratio != 1), depthwise conv_3x3, red_1x1; + x when shapes allow."""

    def __init__(self, cin, cout, stride, expand_ratio, activation="swish"):
        super().__init__()
        hidden = make_divisible(round(cin * expand_ratio), 8)
        self.block = nn.Sequential()
        if expand_ratio != 1:
            self.block.add_module("exp_1x1", ConvLayer(cin, hidden, activation=activation))
        self.block.add_module("conv_3x3", ConvLayer(hidden, hidden, 3, stride, groups=hidden, activation=activation))
        self.block.add_module("red_1x1", ConvLayer(hidden, cout, use_act=False, activation=activation))
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.use_res_connect else self.block(x)


class ChannelLayerNorm(nn.LayerNorm):
    """CVNets `layer_norm` on a channel-first map: per pixel over C, (x - mean) / (std + eps) (biased std)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        std, mean = torch.std_mean(x, dim=1, keepdim=True, unbiased=False)
        x = (x - mean) / (std + self.eps)
        return x * self.weight[None, :, None, None] + self.bias[None, :, None, None]


def attn_norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "layer_norm":
        return ChannelLayerNorm(channels, eps=1e-5)
    if kind == "layer_norm_2d":  # CVNets LayerNorm2D_NCHW: GroupNorm with one group
        return nn.GroupNorm(1, channels, eps=1e-5)
    raise ValueError(f"unknown attn_norm {kind!r}")


class AFF(nn.Module):
    """`AFNO2D_channelfirst`: the adaptive frequency filter, [B, C, H, W] -> same (with + input)."""

    def __init__(self, channels, num_blocks=8, sparsity_threshold=0.01, activation="swish"):
        super().__init__()
        self.num_blocks, self.block_size = num_blocks, channels // num_blocks
        self.sparsity_threshold = sparsity_threshold
        k, b = num_blocks, self.block_size
        self.w1 = nn.Parameter(0.02 * torch.randn(2, k, b, b))
        self.b1 = nn.Parameter(0.02 * torch.randn(2, k, b))
        self.w2 = nn.Parameter(0.02 * torch.randn(2, k, b, b))
        self.b2 = nn.Parameter(0.02 * torch.randn(2, k, b))
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual, dtype = x, x.dtype
        x = x.float()
        batch, channels, height, width = x.shape
        spectrum = torch.fft.rfft2(x, dim=(2, 3), norm="ortho")
        z = spectrum.reshape(batch, self.num_blocks, self.block_size, height, spectrum.shape[-1])
        mix = lambda t, w: torch.einsum("bkihw,kio->bkohw", t, w)
        bias = lambda b: b[:, :, None, None]
        o1_real = self.act(mix(z.real, self.w1[0]) - mix(z.imag, self.w1[1]) + bias(self.b1[0]))
        o1_imag = self.act(mix(z.imag, self.w1[0]) + mix(z.real, self.w1[1]) + bias(self.b1[1]))
        o2_real = mix(o1_real, self.w2[0]) - mix(o1_imag, self.w2[1]) + bias(self.b2[0])
        o2_imag = mix(o1_imag, self.w2[0]) + mix(o1_real, self.w2[1]) + bias(self.b2[1])
        mask = F.softshrink(torch.stack([o2_real, o2_imag], dim=-1), lambd=self.sparsity_threshold)
        mask = torch.view_as_complex(mask).reshape(batch, channels, height, spectrum.shape[-1])
        out = torch.fft.irfft2(mask * spectrum, s=(height, width), dim=(2, 3), norm="ortho")
        return out.type(dtype) + residual


class Block(nn.Module):
    """Official `Block` (double_skip=False): x + filter(norm2(mlp(norm1(x))))."""

    def __init__(self, dim, ffn_ratio, attn_norm, activation):
        super().__init__()
        self.norm1 = attn_norm_layer(attn_norm, dim)
        self.filter = AFF(dim, activation=activation)
        self.norm2 = attn_norm_layer(attn_norm, dim)
        self.mlp = InvertedResidual(dim, dim, 1, ffn_ratio, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.filter(self.norm2(self.mlp(self.norm1(x))))


class AFFBlock(nn.Module):
    """Official `AFFBlock`: global_rep (blocks + norm) -> conv_proj -> fusion(concat(input, ...)) unless no_fusion."""

    def __init__(self, channels, num_blocks, ffn_ratio, no_fusion, attn_norm, activation):
        super().__init__()
        blocks = [Block(channels, ffn_ratio, attn_norm, activation) for _ in range(num_blocks)]
        self.global_rep = nn.Sequential(*blocks, attn_norm_layer(attn_norm, channels))
        self.conv_proj = ConvLayer(channels, channels, use_act=False, activation=activation)
        self.fusion = None if no_fusion else ConvLayer(2 * channels, channels, activation=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_proj(self.global_rep(x))
        return self.fusion(torch.cat((x, y), dim=1)) if self.fusion is not None else y


class GlobalPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


class TorchAFFNet(nn.Module):
    """AFFNet, `[B, in_chans, H, W] -> [B, num_classes]`; stage tuples as `zoo.affnet.AFFNet`."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        stem_channels: int = 16,
        stem_stride: int = 2,
        mv2_stages: Sequence[tuple] = ((32, 1, 1, 4), (64, 3, 2, 4)),
        aff_stages: Sequence[tuple] = ((128, 2, 2, 4), (256, 4, 2, 4), (320, 3, 2, 4)),
        ffn_ratio: float = 2.0,
        no_fuse_layers: Sequence[int] = (),
        last_layer_exp_factor: int = 4,
        activation: str = "swish",
        attn_norm: str = "layer_norm",
        classifier_dropout: float = 0.0,
        **_: Any,
    ):
        super().__init__()
        act = dict(activation=activation)
        self.conv_1 = ConvLayer(in_chans, stem_channels, 3, stem_stride, **act)
        channels, layer = stem_channels, 0
        for out, blocks, stride, expand in mv2_stages:
            layer += 1
            stage = [
                InvertedResidual(channels if i == 0 else out, out, stride if i == 0 else 1, expand, **act)
                for i in range(blocks)
            ]
            setattr(self, f"layer_{layer}", nn.Sequential(*stage))
            channels = out
        for out, blocks, stride, expand in aff_stages:
            layer += 1
            stage = [InvertedResidual(channels, out, 2, expand, **act)] if stride == 2 else []
            stage.append(AFFBlock(out, blocks, ffn_ratio, layer in no_fuse_layers, attn_norm, activation))
            setattr(self, f"layer_{layer}", nn.Sequential(*stage))
            channels = out
        self.num_layers = layer
        exp_channels = min(last_layer_exp_factor * channels, 960)
        self.conv_1x1_exp = ConvLayer(channels, exp_channels, **act)
        self.classifier = nn.Sequential()
        self.classifier.add_module("global_pool", GlobalPool())
        if 0.0 < classifier_dropout < 1.0:
            self.classifier.add_module("dropout", nn.Dropout(classifier_dropout))
        self.classifier.add_module("fc", nn.Linear(exp_channels, num_classes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """CVNets' initialisation: conv kaiming-normal (fan_out), norms 1/0, linear trunc-normal std 0.02, bias 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm | nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_1(x)
        for k in range(1, self.num_layers + 1):
            x = getattr(self, f"layer_{k}")(x)
        return self.classifier(self.conv_1x1_exp(x))


def affnet_peer(name: str, model: Any) -> nn.Module:
    """The PyTorch AFFNet with our model's configuration (for `benchmarks.peers`)."""
    del name
    fields = (
        "num_classes",
        "in_chans",
        "stem_channels",
        "stem_stride",
        "mv2_stages",
        "aff_stages",
        "ffn_ratio",
        "no_fuse_layers",
        "last_layer_exp_factor",
        "activation",
        "attn_norm",
        "classifier_dropout",
    )
    if getattr(model, "drop_path_rate", 0.0):
        raise ValueError("the PyTorch AFFNet has no stochastic depth (the official blocks use none)")
    return TorchAFFNet(**{f: getattr(model, f) for f in fields})


def num_params(module: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in module.parameters())
