"""FFNet in plain PyTorch, written from the official code (ysj9909/FFNet at f3c3e4c: `models/ffnet.py`,
`export_model.py`), without timm's registration plumbing and the options no released variant uses (SqueezeExcite,
ReLU instead of GELU, LayerNorm2d as the last norm).

Module names are the official ones, so `TorchFFNet(...).state_dict()` has the keys of an official checkpoint
(`patch_embed.0.c.weight`, `stages.2.1.token_mixer.0.main.conv1.conv.bn.running_var`, `stages.1.0.proj.1.conv.c.weight`,
`norm.running_mean`, `head.weight`, ...) and converts to our variables with `checkpoints.convert("ffnet_...", sd)`.
`fuse()` re-parameterises in place as the official `export_model.replace_batchnorm`. Used by the parity tests
(tests/test_ffnet.py) and as the PyTorch peer of `benchmarks.peers` (`ffnet_peer`).

Tensors are NCHW, as in the official code. Addition: `stem_strides` (the official stem is two stride-2 convs), and
`in_chans` reaches the stem (the official stem always takes 3 channels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class DropPath(nn.Module):
    """timm DropPath: zero a sample's branch with probability p in training, divide the kept ones by 1 - p."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Conv2d_BN(nn.Sequential):
    """conv (no bias) `c` + BatchNorm2d `bn`."""

    def __init__(self, cin, cout, ks=1, stride=1, pad=0, groups=1):
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, ks, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        c, bn = self.c, self.bn
        scale = bn.weight / (bn.running_var + bn.eps) ** 0.5
        fused = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, groups=c.groups)
        fused.weight.copy_(c.weight * scale[:, None, None, None])
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        return fused


class BN_Conv2d(nn.Sequential):
    """BatchNorm2d `bn` then 1x1 conv (no bias) `c`."""

    def __init__(self, cin, cout):
        super().__init__()
        self.add_module("bn", nn.BatchNorm2d(cin))
        self.add_module("c", nn.Conv2d(cin, cout, 1, 1, 0, bias=False))

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        bn, c = self.bn, self.c
        scale = bn.weight / (bn.running_var + bn.eps) ** 0.5
        shift = bn.bias - bn.running_mean * scale
        fused = nn.Conv2d(c.in_channels, c.out_channels, 1)
        fused.weight.copy_(c.weight * scale[None, :, None, None])
        fused.bias.copy_(c.weight[:, :, 0, 0] @ shift)
        return fused


class RepVGGDW(nn.Module):
    """Depthwise k x k Conv2d_BN `conv` + depthwise (k // 2) x (k // 2) Conv2d_BN `conv1` (groups = cin)."""

    def __init__(self, cin, cout, ks=7, stride=1):
        super().__init__()
        small = ks // 2
        self.conv = Conv2d_BN(cin, cout, ks, stride, ks // 2, groups=cin)
        self.conv1 = Conv2d_BN(cin, cout, small, stride, small // 2, groups=cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.conv1(x)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        big, small = self.conv.fuse(), self.conv1.fuse()
        pad = (big.kernel_size[0] - small.kernel_size[0]) // 2
        big.weight.add_(nn.functional.pad(small.weight, [pad] * 4))
        big.bias.add_(small.bias)
        return big


class Conv2d_BN_skip(nn.Module):
    """x + BN_Conv2d(x) (1x1)."""

    def __init__(self, dim):
        super().__init__()
        self.conv = BN_Conv2d(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + x

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        fused = self.conv.fuse()
        fused.weight.add_(torch.eye(fused.in_channels)[:, :, None, None])
        return fused


class ResidualBlock(nn.Module):
    def __init__(self, main, dim, drop_path=0.0, use_layer_scale=False, layer_scale_init_value=1e-5):
        super().__init__()
        self.main = main
        self.use_layer_scale = use_layer_scale
        if use_layer_scale:
            self.layer_scale = nn.Parameter(layer_scale_init_value * torch.ones(dim, 1, 1))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.main(x)
        if self.use_layer_scale:
            y = y * self.layer_scale
        return x + self.drop_path(y)


def depthwise(dim, ks):
    """Token-mixer conv: RepVGGDW for k = 7, else a plain depthwise conv with bias."""
    return RepVGGDW(dim, dim, ks) if ks == 7 else nn.Conv2d(dim, dim, ks, 1, ks // 2, groups=dim)


class Token_Mixer(nn.Module):
    def __init__(self, dim, ks1, ks2):
        super().__init__()
        self.fc = Conv2d_BN(dim, dim)
        self.conv1 = depthwise(dim, ks1)
        self.act = nn.GELU()
        self.conv2 = depthwise(dim, ks2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(self.fc(x))))


class Channel_Mixer(nn.Module):
    def __init__(self, dim, ks, expansion_ratio):
        super().__init__()
        hidden = int(dim * expansion_ratio)
        self.conv = RepVGGDW(dim, dim, ks) if ks == 7 else Conv2d_BN(dim, dim, ks, 1, ks // 2, groups=dim)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.conv(x))))


class FFBlock(nn.Module):
    def __init__(self, dim, ks, ks1, ks2, expansion_ratio, drop_path, use_layer_scale, layer_scale_init_value):
        super().__init__()
        scale = (drop_path, use_layer_scale, layer_scale_init_value)
        self.token_mixer = nn.Sequential(ResidualBlock(Token_Mixer(dim, ks1, ks2), dim, *scale), nn.Identity())
        self.channel_mixer = ResidualBlock(Channel_Mixer(dim, ks, expansion_ratio), dim, *scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_mixer(self.token_mixer(x))


class PatchMerging(nn.Module):
    def __init__(self, dim, out_dim):
        super().__init__()
        self.proj = nn.Sequential(RepVGGDW(dim, out_dim, 7, 2), Conv2d_BN_skip(out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class TorchFFNet(nn.Module):
    """FFNet, `[B, in_chans, H, W] -> [B, num_classes]`; constructor arguments as `zoo.ffnet.FFNet`'s fields."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        in_dim: int = 64,
        stem_strides: Sequence[int] = (2, 2),
        depth: Sequence[int] = (2, 2, 8, 2),
        embed_dim: Sequence[int] = (80, 160, 320, 640),
        kernel_sizes: Sequence[int] = (3, 3, 3, 3),
        kernel_sizes1: Sequence[int] = (3, 3, 7, 7),
        kernel_sizes2: Sequence[int] = (3, 3, 7, 7),
        expansion_ratios: Sequence[float] = (3, 3, 3, 3),
        use_layer_scale: bool = False,
        layer_scale_init_value: float = 1e-5,
        drop_path_rate: float = 0.0,
        **_: Any,
    ):
        super().__init__()
        s0, s1 = stem_strides
        self.patch_embed = nn.Sequential(
            Conv2d_BN(in_chans, in_dim, 3, s0, 1), nn.GELU(), Conv2d_BN(in_dim, embed_dim[0], 3, s1, 1)
        )
        rates = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depth))]
        self.stages = nn.ModuleList()
        cur = 0
        for i, (dim, d) in enumerate(zip(embed_dim, depth)):
            stage = [PatchMerging(embed_dim[i - 1], dim)] if i > 0 else []
            for j in range(d):
                stage.append(
                    FFBlock(
                        dim,
                        kernel_sizes[i],
                        kernel_sizes1[i],
                        kernel_sizes2[i],
                        expansion_ratios[i],
                        rates[cur + j],
                        use_layer_scale,
                        layer_scale_init_value,
                    )
                )
            self.stages.append(nn.Sequential(*stage))
            cur += d
        self.norm = nn.BatchNorm2d(embed_dim[-1])
        self.head = nn.Linear(embed_dim[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear | nn.Conv2d):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for stage in self.stages:
            x = stage(x)
        x = self.norm(x).mean(dim=(2, 3))
        return self.head(x)

    @torch.no_grad()
    def fuse(self) -> TorchFFNet:
        """The official `replace_batchnorm`: every child with a `fuse()` is replaced by its fused conv."""

        def replace(net: nn.Module) -> None:
            for name, child in net.named_children():
                if hasattr(child, "fuse"):
                    setattr(net, name, child.fuse())
                else:
                    replace(child)

        replace(self)
        return self


def ffnet_peer(name: str, model: Any) -> nn.Module:
    """The PyTorch FFNet with our model's configuration (for `benchmarks.peers`); fused when `model.merged`."""
    del name
    fields = (
        "num_classes",
        "in_chans",
        "in_dim",
        "stem_strides",
        "depth",
        "embed_dim",
        "kernel_sizes",
        "kernel_sizes1",
        "kernel_sizes2",
        "expansion_ratios",
        "use_layer_scale",
        "layer_scale_init_value",
        "drop_path_rate",
    )
    peer = TorchFFNet(**{f: getattr(model, f) for f in fields})
    return peer.eval().fuse() if model.merged else peer


def num_params(module: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in module.parameters())
