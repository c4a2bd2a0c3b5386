"""NiNformer in plain PyTorch, written from the official code (Abdullah-88/NiNformer: `ninformer.py` and the image
wrapper `NiNformerImageClassification` of `train.py`), as the peer of `zoo.ninformer.NiNformer`.

The module names and `nn.Sequential` positions are the official ones (einops' `Rearrange` layers, which hold no
parameters, become `SwapTokensChannels` at the same positions), so `TorchNiNformer(...).state_dict()` has the keys
of an official checkpoint (`patcher.weight`, `model.0.norm.weight`, `model.0.mgu.Mixer.token_mix.2.net.0.weight`,
`model.0.mgu.proj.weight`, `model.0.ffn.net.3.bias`, `classifier.weight`, ...) and converts to our variables with
`checkpoints.convert("ninformer...", state_dict)`. Used by the parity tests (tests/test_ninformer.py) and as the
PyTorch peer of `benchmarks.peers` (`ninformer_peer`). Inputs are NCHW, as in PyTorch.

Plain torch only: nothing here imports the zoo.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


class FeedForward(nn.Module):
    """`net` = Linear(dim, hidden), GELU (exact), Dropout, Linear(hidden, dim), Dropout."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SwapTokensChannels(nn.Module):
    """`[b, n, d] <-> [b, d, n]` (the official `Rearrange('b n d -> b d n')` and back)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class MixerBlock(nn.Module):
    """`x + token_mix(x)`, then `+ channel_mix(x)`; token_mix = (LayerNorm, swap, FeedForward over tokens, swap)."""

    def __init__(self, dim: int, num_patch: int, token_dim: int, channel_dim: int, dropout: float):
        super().__init__()
        self.token_mix = nn.Sequential(
            nn.LayerNorm(dim), SwapTokensChannels(), FeedForward(num_patch, token_dim, dropout), SwapTokensChannels()
        )
        self.channel_mix = nn.Sequential(nn.LayerNorm(dim), FeedForward(dim, channel_dim, dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mix(x)
        return x + self.channel_mix(x)


class MixerGatingUnit(nn.Module):
    """`proj(x) * Mixer(x)`."""

    def __init__(self, dim: int, seq_len: int, token_dim: int, channel_dim: int, dropout: float):
        super().__init__()
        self.Mixer = MixerBlock(dim, seq_len, token_dim, channel_dim, dropout)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) * self.Mixer(x)


class NiNBlock(nn.Module):
    """One LayerNorm `norm`, used before the gating unit and again before the feed-forward."""

    def __init__(self, d_model: int, d_ffn: int, seq_len: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.mgu = MixerGatingUnit(d_model, seq_len, d_ffn, d_ffn, dropout)
        self.ffn = FeedForward(d_model, d_ffn, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mgu(self.norm(x))
        return x + self.ffn(self.norm(x))


class TorchNiNformer(nn.Module):
    """`NiNformerImageClassification`: `patcher` conv, NiN blocks `model`, mean over tokens, `classifier`."""

    def __init__(
        self,
        image_size: int | tuple[int, int] = 32,
        patch_size: int = 4,
        in_channels: int = 3,
        num_classes: int = 10,
        d_model: int = 256,
        d_ffn: int = 512,
        num_layers: int = 4,
        dropout: float = 0.5,
    ):
        super().__init__()
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        if h % patch_size or w % patch_size:
            raise ValueError(f"image_size {image_size} is not divisible by patch_size {patch_size}")
        seq_len = (h // patch_size) * (w // patch_size)
        self.model = nn.Sequential(*[NiNBlock(d_model, d_ffn, seq_len, dropout) for _ in range(num_layers)])
        self.patcher = nn.Conv2d(in_channels, d_model, kernel_size=patch_size, stride=patch_size)
        self.classifier = nn.Linear(d_model, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.patcher(x)
        patches = patches.permute(0, 2, 3, 1).reshape(patches.shape[0], -1, patches.shape[1])
        return self.classifier(self.model(patches).mean(dim=1))


def ninformer_peer(name: str, model: Any) -> nn.Module:
    """`TorchNiNformer` with the configuration of our `zoo.ninformer.NiNformer` instance `model` (registered as
    `name`). The registered numerics are the official ones (exact GELU, LayerNorm epsilon 1e-5); other values have
    no counterpart in the official code and are refused."""
    if model.approximate_gelu:
        raise ValueError(f"{name}: the PyTorch peer uses exact GELU; create the model with approximate_gelu=False")
    if model.norm_eps != 1e-5:
        raise ValueError(f"{name}: the PyTorch peer uses LayerNorm epsilon 1e-5, got {model.norm_eps}")
    size = model.img_size if isinstance(model.img_size, int) else tuple(model.img_size)
    return TorchNiNformer(
        image_size=size,
        patch_size=model.patch_size,
        in_channels=model.in_chans,
        num_classes=model.num_classes,
        d_model=model.d_model,
        d_ffn=model.d_ffn,
        num_layers=model.num_layers,
        dropout=model.dropout,
    )


def num_params(module: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in module.parameters())
