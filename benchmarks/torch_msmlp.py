"""MS-MLP in plain PyTorch, written from the official code (JegZheng/MS-MLP, `models/ms_mlp.py` at a10d34d), as the
peer of `zoo.msmlp.MSMLP`.

Module names are the official ones, so `TorchMSMLP(...).state_dict()` has the keys of an official checkpoint
(`patch_embed.proj.weight`, `layers.0.blocks.1.dwconv_lr.4.weight`, `layers.0.downsample.norm.weight`, `norm.*`,
`head.*`) and converts with `checkpoints.convert("msmlp_...", state_dict)`. Tensors are NCHW, as in the official
code. Used by tests/test_msmlp.py and as the PyTorch peer of `benchmarks.peers` (`msmlp_peer`).

Plain torch only: nothing here imports the zoo.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm(nn.Module):
    """The official channels-last LayerNorm (`weight`, `bias`, eps 1e-6)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


class DropPath(nn.Module):
    """timm's DropPath (kept examples divided by the keep probability)."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        return x * x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep) / keep


class MixShiftBlock(nn.Module):
    def __init__(self, dim, shift_dist, mix_size, layer_scale_init_value=1e-6, mlp_ratio=4.0, drop_path=0.0):
        super().__init__()
        self.shift_size = len(shift_dist)
        self.shift_dist = list(shift_dist)
        self.chunk_size = [c.shape[0] for c in torch.chunk(torch.zeros(dim), self.shift_size)]
        self.dwconv_lr = nn.ModuleList(
            nn.Conv2d(c, c, kernel_size=k, padding=k // 2, groups=c) for c, k in zip(self.chunk_size, mix_size)
        )
        self.dwconv_td = nn.ModuleList(
            nn.Conv2d(c, c, kernel_size=k, padding=k // 2, groups=c) for c, k in zip(self.chunk_size, mix_size)
        )
        self.norm = LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, int(mlp_ratio * dim))
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(int(mlp_ratio * dim), dim)
        self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim)) if layer_scale_init_value > 0 else None
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        xs = torch.chunk(x, self.shift_size, 1)
        lr = [conv(torch.roll(c, s, 3)) for c, s, conv in zip(xs, self.shift_dist, self.dwconv_lr)]
        td = [conv(torch.roll(c, s, 2)) for c, s, conv in zip(xs, self.shift_dist, self.dwconv_td)]
        x = (torch.cat(lr, 1) + torch.cat(td, 1)).permute(0, 2, 3, 1)
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
        if self.gamma is not None:
            x = self.gamma * x
        return shortcut + self.drop_path(x.permute(0, 3, 1, 2))


class PatchEmbed(nn.Module):
    """Conv p x p stride p (`proj`) then LayerNorm (`norm`), NCHW in and out."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class BasicLayer(nn.Module):
    def __init__(self, dim, depth, shift_dist, mix_size, mlp_ratio, drop_path, downsample, layer_scale_init_value):
        super().__init__()
        self.blocks = nn.ModuleList(
            MixShiftBlock(dim, shift_dist, mix_size, layer_scale_init_value, mlp_ratio, drop_path[i])
            for i in range(depth)
        )
        self.downsample = PatchEmbed(2, dim, 2 * dim) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class TorchMSMLP(nn.Module):
    """The official MS_MLP: images `[B, in_chans, H, W]` -> logits `[B, num_classes]` (pooled features if 0)."""

    def __init__(
        self,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 96,
        depths: Sequence[int] = (3, 3, 9, 3),
        shift_dist: Sequence[int] = (-2, -1, 0, 1, 2),
        mix_size: Sequence[Sequence[int]] = ((1, 1, 3, 5, 7), (1, 3, 3, 5, 7), (1, 5, 5, 5, 7), (1, 7, 7, 7, 7)),
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 1e-6,
    ):
        super().__init__()
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_drop = nn.Dropout(drop_rate)
        rates = [r.item() for r in torch.linspace(0, drop_path_rate, sum(depths))]
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            done = sum(depths[:i])
            self.layers.append(
                BasicLayer(
                    embed_dim * 2**i,
                    depth,
                    shift_dist,
                    mix_size[i],
                    mlp_ratio,
                    rates[done : done + depth],
                    i < len(depths) - 1,
                    layer_scale_init_value,
                )
            )
        self.num_features = embed_dim * 2 ** (len(depths) - 1)
        self.norm = LayerNorm(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos_drop(self.patch_embed(x))
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x.mean((2, 3))))


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def msmlp_peer(name: str, model: Any) -> nn.Module:
    """`TorchMSMLP` with the configuration of our `zoo.msmlp.MSMLP` instance `model` (registered as `name`).

    The registered numerics match PyTorch's (exact GELU, LayerNorm epsilon 1e-6); `approximate_gelu=True` and other
    epsilons have no counterpart in the official code and are refused.
    """
    if model.approximate_gelu:
        raise ValueError(f"{name}: the PyTorch peer uses exact GELU; create the model with approximate_gelu=False")
    if model.norm_eps != 1e-6:
        raise ValueError(f"{name}: the PyTorch peer uses LayerNorm epsilon 1e-6, got {model.norm_eps}")
    return TorchMSMLP(
        patch_size=model.patch_size,
        in_chans=model.in_chans,
        num_classes=model.num_classes,
        embed_dim=model.embed_dim,
        depths=tuple(model.depths),
        shift_dist=tuple(model.shift_dist),
        mix_size=tuple(tuple(m) for m in model.mix_size),
        mlp_ratio=model.mlp_ratio,
        drop_rate=model.drop_rate,
        drop_path_rate=model.drop_path_rate,
        layer_scale_init_value=model.layer_scale_init,
    )
