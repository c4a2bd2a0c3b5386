"""SOFTS in plain PyTorch: the official architecture (Secilia-Cxy/SOFTS `models/SOFTS.py`) written out, torch only.

Module names follow the official code, so a state dict converts to ours with `checkpoints.convert`. Kept apart from
`benchmarks/peers.py` (which imports JAX and the zoo) so that a PyTorch-only process, `benchmarks/torch_softs_train.py`,
builds it without loading JAX. `benchmarks.peers` re-exports every class.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class TorchSeriesEmbedding(nn.Module):
    """Inverted embedding: each series' lookback (and each time-feature series) becomes one d_model token."""

    def __init__(self, seq_len: int, d_model: int, dropout: float):
        super().__init__()
        self.value_embedding = nn.Linear(seq_len, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None) -> torch.Tensor:
        tokens = x.transpose(1, 2)  # [B, C, L]
        if x_mark is not None:
            tokens = torch.cat([tokens, x_mark.transpose(1, 2)], dim=1)
        return self.dropout(self.value_embedding(tokens))


class TorchSTAR(nn.Module):
    """STAR: per-channel core, pooled over channels (sampled in training, softmax-weighted in evaluation), fused."""

    def __init__(self, d_model: int, d_core: int):
        super().__init__()
        self.gen1 = nn.Linear(d_model, d_model)
        self.gen2 = nn.Linear(d_model, d_core)
        self.gen3 = nn.Linear(d_model + d_core, d_model)
        self.gen4 = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, _ = x.shape
        core = self.gen2(F.gelu(self.gen1(x)))  # [B, C, d_core]
        if self.training:
            probs = F.softmax(core, dim=1).permute(0, 2, 1).reshape(-1, channels)  # [B * d_core, C]
            index = torch.multinomial(probs, 1).view(batch, 1, -1)  # [B, 1, d_core]
            pooled = torch.gather(core, 1, index)
        else:
            pooled = torch.sum(core * F.softmax(core, dim=1), dim=1, keepdim=True)
        fused = torch.cat([x, pooled.expand(-1, channels, -1)], dim=-1)
        return self.gen4(F.gelu(self.gen3(fused)))


class TorchEncoderLayer(nn.Module):
    """Post-norm layer: x = norm1(x + STAR(x)); out = norm2(x + conv2(gelu(conv1(x)))) with kernel-1 Conv1d."""

    def __init__(self, d_model: int, d_core: int, d_ff: int, dropout: float):
        super().__init__()
        self.attention = TorchSTAR(d_model, d_core)
        self.conv1 = nn.Conv1d(d_model, d_ff, kernel_size=1)
        self.conv2 = nn.Conv1d(d_ff, d_model, kernel_size=1)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.attention(x)))
        y = self.dropout(F.gelu(self.conv1(x.transpose(1, 2))))
        y = self.dropout(self.conv2(y).transpose(1, 2))
        return self.norm2(x + y)


class TorchEncoder(nn.Module):
    def __init__(self, layers: Sequence[nn.Module]):
        super().__init__()
        self.attn_layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.attn_layers:
            x = layer(x)
        return x


class TorchSOFTS(nn.Module):
    """SOFTS in plain PyTorch: x `[B, seq_len, enc_in]` (+ x_mark `[B, seq_len, F]`) -> `[B, pred_len, enc_in]`."""

    def __init__(self, seq_len, pred_len, d_model, d_core, d_ff, e_layers, dropout=0.0, use_norm=True, **_):
        super().__init__()
        self.use_norm = use_norm
        self.enc_embedding = TorchSeriesEmbedding(seq_len, d_model, dropout)
        self.encoder = TorchEncoder([TorchEncoderLayer(d_model, d_core, d_ff, dropout) for _ in range(e_layers)])
        self.projection = nn.Linear(d_model, pred_len)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None = None) -> torch.Tensor:
        channels = x.shape[2]
        if self.use_norm:
            mean = x.mean(1, keepdim=True).detach()
            x = x - mean
            std = torch.sqrt(torch.var(x, dim=1, keepdim=True, unbiased=False) + 1e-5)
            x = x / std
        tokens = self.encoder(self.enc_embedding(x, x_mark))
        y = self.projection(tokens).transpose(1, 2)[:, :, :channels]
        if self.use_norm:
            y = y * std + mean
        return y
