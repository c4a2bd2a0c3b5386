"""AFNONet in plain PyTorch, written from the official classification code (NVlabs/AFNO-transformer,
`classification/afnonet.py` and `afno/afno2d.py` at 941e924), as the peer of `zoo.afno.AFNONet`.

The module names are the official ones, so `TorchAFNONet(...).state_dict()` has the official keys (`pos_embed`,
`patch_embed.proj.*`, `blocks.{i}.norm1.*`, `blocks.{i}.filter.{w1,b1,w2,b2}`, `blocks.{i}.norm2.*`,
`blocks.{i}.mlp.fc{1,2}.*`, `norm.*`, `head.*`) and converts with `checkpoints.convert(name, sd, source="official")`.
What the official file reads from its command line (`--fno-blocks`, `--double-skip`, `--hidden-size`) is passed to
the constructor here. Inputs are NCHW, as in PyTorch; tokens are `[batch, N, C]` with a square grid.

Plain torch only: nothing here imports the zoo.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class TorchAFNO2D(nn.Module):
    """The official AFNO2D: `[B, N, C] -> [B, N, C]`, including the `+ input` at the end."""

    def __init__(
        self, hidden_size, num_blocks=8, sparsity_threshold=0.01, hard_thresholding_fraction=1.0, hidden_size_factor=1
    ):
        super().__init__()
        if hidden_size % num_blocks:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_blocks {num_blocks}")
        self.num_blocks = num_blocks
        self.block_size = hidden_size // num_blocks
        self.sparsity_threshold = sparsity_threshold
        self.hard_thresholding_fraction = hard_thresholding_fraction
        k, b, h = num_blocks, self.block_size, self.block_size * hidden_size_factor
        self.w1 = nn.Parameter(0.02 * torch.randn(2, k, b, h))
        self.b1 = nn.Parameter(0.02 * torch.randn(2, k, h))
        self.w2 = nn.Parameter(0.02 * torch.randn(2, k, h, b))
        self.b2 = nn.Parameter(0.02 * torch.randn(2, k, b))

    @staticmethod
    def _mul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.einsum("...bi,bio->...bo", x, w)

    def forward(self, x: torch.Tensor, spatial_size: tuple[int, int] | None = None) -> torch.Tensor:
        bias = x
        dtype = x.dtype
        x = x.float()
        batch, n, channels = x.shape
        height, width = spatial_size or (int(math.sqrt(n)),) * 2
        x = torch.fft.rfft2(x.reshape(batch, height, width, channels), dim=(1, 2), norm="ortho")
        x = x.reshape(batch, x.shape[1], x.shape[2], self.num_blocks, self.block_size)
        hidden = self.w1.shape[-1]
        o1_real = torch.zeros(*x.shape[:-1], hidden, device=x.device)
        o1_imag = torch.zeros(*x.shape[:-1], hidden, device=x.device)
        o2_real = torch.zeros(x.shape, device=x.device)
        o2_imag = torch.zeros(x.shape, device=x.device)
        kept = int((n // 2 + 1) * self.hard_thresholding_fraction)  # the official rule: N = tokens
        xr, xi = x[:, :, :kept].real, x[:, :, :kept].imag
        o1_real[:, :, :kept] = F.relu(self._mul(xr, self.w1[0]) - self._mul(xi, self.w1[1]) + self.b1[0])
        o1_imag[:, :, :kept] = F.relu(self._mul(xi, self.w1[0]) + self._mul(xr, self.w1[1]) + self.b1[1])
        hr, hi = o1_real[:, :, :kept], o1_imag[:, :, :kept]
        o2_real[:, :, :kept] = self._mul(hr, self.w2[0]) - self._mul(hi, self.w2[1]) + self.b2[0]
        o2_imag[:, :, :kept] = self._mul(hi, self.w2[0]) + self._mul(hr, self.w2[1]) + self.b2[1]
        x = F.softshrink(torch.stack([o2_real, o2_imag], dim=-1), lambd=self.sparsity_threshold)
        x = torch.view_as_complex(x).reshape(batch, x.shape[1], x.shape[2], channels)
        x = torch.fft.irfft2(x, s=(height, width), dim=(1, 2), norm="ortho")
        return x.reshape(batch, n, channels).type(dtype) + bias


class TorchMlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class TorchDropPath(nn.Module):
    """timm's DropPath (kept examples divided by the keep probability)."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class TorchBlock(nn.Module):
    def __init__(
        self,
        dim,
        mlp_ratio=4.0,
        drop=0.0,
        drop_path=0.0,
        num_blocks=1,
        sparsity_threshold=0.01,
        hard_thresholding_fraction=1.0,
        hidden_size_factor=1,
        double_skip=False,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.filter = TorchAFNO2D(dim, num_blocks, sparsity_threshold, hard_thresholding_fraction, hidden_size_factor)
        self.drop_path = TorchDropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = TorchMlp(dim, int(dim * mlp_ratio), drop)
        self.double_skip = double_skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        x = self.filter(self.norm1(x))
        if self.double_skip:
            x = x + residual
            residual = x
        x = self.drop_path(self.mlp(self.norm2(x)))
        return x + residual


class TorchPatchEmbed(nn.Module):
    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class TorchAFNONet(nn.Module):
    """The official AFNONet: images `[B, in_chans, H, W]` -> logits `[B, num_classes]` (pooled features if 0)."""

    def __init__(
        self,
        img_size=224,
        patch_size=4,
        in_chans=3,
        num_classes=1000,
        embed_dim=384,
        depth=12,
        mlp_ratio=4.0,
        drop_rate=0.0,
        drop_path_rate=0.0,
        dropcls=0.0,
        num_blocks=1,
        sparsity_threshold=0.01,
        hard_thresholding_fraction=1.0,
        hidden_size_factor=1,
        double_skip=False,
    ):
        super().__init__()
        self.patch_embed = TorchPatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = [r.item() for r in torch.linspace(0, drop_path_rate, depth)]
        filter_kw = dict(
            num_blocks=num_blocks,
            sparsity_threshold=sparsity_threshold,
            hard_thresholding_fraction=hard_thresholding_fraction,
            hidden_size_factor=hidden_size_factor,
            double_skip=double_skip,
        )
        self.blocks = nn.ModuleList(
            TorchBlock(embed_dim, mlp_ratio, drop_rate, rates[i], **filter_kw) for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.final_dropout = nn.Dropout(dropcls)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos_drop(self.patch_embed(x) + self.pos_embed)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x).mean(1)
        return self.head(self.final_dropout(x))


def afno_peer(name: str, model: Any) -> nn.Module:
    """`TorchAFNONet` with the configuration of our `zoo.afno.AFNONet` instance `model` (registered as `name`).

    The registered numerics already match PyTorch's (exact GELU, LayerNorm epsilon 1e-6, double_skip off), so no
    override is needed; `approximate_gelu=True` has no PyTorch counterpart here and is refused.
    """
    size = model.img_size if isinstance(model.img_size, int) else tuple(model.img_size)
    if not isinstance(size, int):
        if size[0] != size[1]:
            raise ValueError(f"{name}: the official AFNONet needs square images, got {size}")
        size = size[0]
    if model.approximate_gelu:
        raise ValueError(f"{name}: the PyTorch peer uses exact GELU; create the model with approximate_gelu=False")
    if model.norm_eps != 1e-6:
        raise ValueError(f"{name}: the PyTorch peer uses LayerNorm epsilon 1e-6, got {model.norm_eps}")
    return TorchAFNONet(
        img_size=size,
        patch_size=model.patch_size,
        in_chans=model.in_chans,
        num_classes=model.num_classes,
        embed_dim=model.embed_dim,
        depth=model.depth,
        mlp_ratio=model.mlp_ratio,
        drop_rate=model.drop_rate,
        drop_path_rate=model.drop_path_rate,
        dropcls=model.head_drop_rate,
        num_blocks=model.num_blocks,
        sparsity_threshold=model.sparsity_threshold,
        hard_thresholding_fraction=model.hard_thresholding_fraction,
        hidden_size_factor=model.hidden_size_factor,
        double_skip=model.double_skip,
    )
