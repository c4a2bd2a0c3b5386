"""Spectral token mixers: the AFNO filter (Guibas et al., ICLR 2022, arXiv 2111.13587) and the AFF filter (Huang et
al., ICCV 2023, arXiv 2307.14008), which share one block-diagonal complex MLP applied at every frequency.

For channels-last tokens `x` on a grid (or a sequence), with the channels split into `num_blocks` blocks:

    X = rfft2(float32(x), norm="ortho")                      # [batch, H, W // 2 + 1, channels], complex
    O1 = act(X W1 + b1)      act on real and imaginary parts separately (AFNO paper Eq. 4; ReLU, or SiLU in AFF)
    O2 = O1 W2 + b2          W1, W2 block-diagonal complex matrices, shared by every frequency
    M = softshrink(O2, lambda) on real and imaginary parts separately (the paper's sparsity step)
    AFNO: Y = M              (the MLP output is the new spectrum)
    AFF:  Y = M * X          (an adaptive, per-frequency complex mask on the input spectrum)
    out = x + irfft2(Y, s=(H, W), norm="ortho")              # cast back to the input dtype

Parameters (the official layout, leading axis 2 = real, imaginary part): `w1 [2, k, b, b f]`, `b1 [2, k, b f]`,
`w2 [2, k, b f, b]`, `b2 [2, k, b]` with k = num_blocks, b = channels / k, f = hidden_size_factor; init 0.02 N(0, 1).

Mode truncation (`hard_thresholding_fraction < 1`) follows the official classification code (NVlabs/AFNO-transformer
`afno/afno2d.py` as used by `classification/afnonet.py` at 941e924): the MLP sees only the first
`kept = int((N // 2 + 1) * fraction)` bins of the rfft axis, N = H * W tokens (so at most all W // 2 + 1 of them), every
row of the other axis; the output spectrum is zero at the other bins, where only the residual passes. We keep this
rule, rather than FourCastNet's window centred at H / 2, so that the official PyTorch module and ours agree at every
fraction (tests/test_fourier.py and tests/test_afno.py check it). Another revision of `afno2d.py` in the official
repository counts `total_modes = W // 2 + 1` instead of N // 2 + 1. The 1-D filter keeps the first
`int((L // 2 + 1) * fraction)` bins (official `afno1d.py`).

Non-Hermitian spectra: the MLP output is not the spectrum of a real signal; `irfft2` then discards the imaginary part
of the W-axis DC (and, for even W, Nyquist) bins, exactly as numpy and PyTorch (CPU) do.

Speed: the complex products are computed as real matrix products on the stacked real and imaginary parts,
`[xr, xi] @ [[Wr, Wi], [-Wi, Wr]] = [xr Wr - xi Wi, xr Wi + xi Wr]`, one matrix product per layer. On XLA:CPU (a 56x56
grid of 256 channels, batch 8, forward and backward) this was as fast as or faster than four real products (the
official form) and than one complex einsum; the two FFTs take about half of the filter's time.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = {"relu": jax.nn.relu, "silu": jax.nn.silu}


def softshrink(x: jax.Array, lambd: float) -> jax.Array:
    """PyTorch's `F.softshrink`: x - lambd above lambd, x + lambd below -lambd, else 0; sign(x) max(|x| - lambd, 0)."""
    return x - jnp.clip(x, -lambd, lambd)


def _compute_dtype(x: jax.Array) -> Any:
    """float32 for float32 and lower-precision inputs (as the official `x.float()`); float64 stays float64."""
    return jnp.promote_types(x.dtype, jnp.float32)


def _stacked_weight(w: jax.Array) -> jax.Array:
    """`[2, k, n, m]` (real, imaginary) -> the real form of the complex matrices, `[k, 2 n, 2 m]`:
    [[Wr, Wi], [-Wi, Wr]], so that [xr, xi] @ it = [Re(x W), Im(x W)]."""
    wr, wi = w[0], w[1]
    return jnp.concatenate([jnp.concatenate([wr, wi], -1), jnp.concatenate([-wi, wr], -1)], -2)


def _block_mlp(
    spectrum: jax.Array, params: dict[str, jax.Array], num_blocks: int, activation: str, lambd: float
) -> jax.Array:
    """The complex two-layer block MLP and softshrink at every frequency: `[..., channels]` complex -> same."""
    *lead, channels = spectrum.shape
    size = channels // num_blocks
    blocks = spectrum.reshape(*lead, num_blocks, size)
    x = jnp.concatenate([jnp.real(blocks), jnp.imag(blocks)], -1)  # [..., k, 2 b]
    bias = lambda b: jnp.concatenate([b[0], b[1]], -1)  # [k, 2 n]
    x = jnp.einsum("...ki,kio->...ko", x, _stacked_weight(params["w1"])) + bias(params["b1"])
    x = ACTIVATIONS[activation](x)  # on real and imaginary parts separately
    x = jnp.einsum("...ki,kio->...ko", x, _stacked_weight(params["w2"])) + bias(params["b2"])
    x = softshrink(x, lambd)
    return jax.lax.complex(x[..., :size], x[..., size:]).reshape(*lead, channels)


class _SpectralFilter(nn.Module):
    """Fields and parameters shared by the 1-D and 2-D filters."""

    num_blocks: int = 8
    hidden_size_factor: int = 1
    sparsity_threshold: float = 0.01
    hard_thresholding_fraction: float = 1.0
    adaptive_mask: bool = False
    activation: str = "relu"
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        name = type(self).__name__
        if self.num_blocks < 1:
            raise ValueError(f"{name}: num_blocks must be >= 1, got {self.num_blocks}")
        if self.hidden_size_factor < 1:
            raise ValueError(f"{name}: hidden_size_factor must be >= 1, got {self.hidden_size_factor}")
        if self.sparsity_threshold < 0:
            raise ValueError(f"{name}: sparsity_threshold must be >= 0, got {self.sparsity_threshold}")
        if not 0.0 < self.hard_thresholding_fraction <= 1.0:
            raise ValueError(
                f"{name}: hard_thresholding_fraction must be in (0, 1], got {self.hard_thresholding_fraction}"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"{name}: activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        super().__post_init__()

    def _params(self, channels: int) -> dict[str, jax.Array]:
        if channels % self.num_blocks:
            raise ValueError(
                f"{type(self).__name__}: channels ({channels}) must be divisible by num_blocks ({self.num_blocks})"
            )
        k, b = self.num_blocks, channels // self.num_blocks
        h = b * self.hidden_size_factor
        init = nn.initializers.normal(0.02)
        return {
            "w1": self.param("w1", init, (2, k, b, h), self.param_dtype),
            "b1": self.param("b1", init, (2, k, h), self.param_dtype),
            "w2": self.param("w2", init, (2, k, h, b), self.param_dtype),
            "b2": self.param("b2", init, (2, k, b), self.param_dtype),
        }

    def _filter(self, spectrum: jax.Array, kept: int, params: dict[str, jax.Array]) -> jax.Array:
        """The new spectrum: the MLP (AFNO) or mask * spectrum (AFF) on the first `kept` bins of axis -2, else 0."""
        total = spectrum.shape[-2]
        if kept == 0:
            return jnp.zeros_like(spectrum)
        x = spectrum[..., :kept, :] if kept < total else spectrum
        params = {k: v.astype(jnp.real(spectrum).dtype) for k, v in params.items()}
        y = _block_mlp(x, params, self.num_blocks, self.activation, self.sparsity_threshold)
        if self.adaptive_mask:
            y = y * x
        if kept < total:
            pad = [(0, 0)] * y.ndim
            pad[-2] = (0, total - kept)
            y = jnp.pad(y, pad)
        return y


class SpectralFilter2D(_SpectralFilter):
    """AFNO2D / AFF filter over a grid: `[batch, height, width, channels] -> [batch, height, width, channels]`.

    Includes the `+ input` residual of the official AFNO2D. Computed in float32 for float32, bfloat16 and float16
    inputs (as the official code; float64 stays float64), returned in the input dtype. Any grid size (odd, non-square).
    """

    def kept_modes(self, height: int, width: int) -> int:
        """Bins kept along the rfft (width) axis: int((H W // 2 + 1) * fraction), at most W // 2 + 1 (module doc)."""
        return min(int((height * width // 2 + 1) * self.hard_thresholding_fraction), width // 2 + 1)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"SpectralFilter2D expects [batch, height, width, channels], got shape {x.shape}")
        _, height, width, channels = x.shape
        params = self._params(channels)
        spectrum = jnp.fft.rfft2(x.astype(_compute_dtype(x)), axes=(1, 2), norm="ortho")
        spectrum = self._filter(spectrum, self.kept_modes(height, width), params)
        y = jnp.fft.irfft2(spectrum, s=(height, width), axes=(1, 2), norm="ortho")
        return y.astype(x.dtype) + x


class SpectralFilter1D(_SpectralFilter):
    """AFNO1D filter over a sequence: `[batch, length, channels] -> [batch, length, channels]` (with `+ input`)."""

    def kept_modes(self, length: int) -> int:
        """Bins kept along the rfft axis: int((L // 2 + 1) * fraction) (official afno1d.py)."""
        return int((length // 2 + 1) * self.hard_thresholding_fraction)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 3:
            raise ValueError(f"SpectralFilter1D expects [batch, length, channels], got shape {x.shape}")
        _, length, channels = x.shape
        params = self._params(channels)
        spectrum = jnp.fft.rfft(x.astype(_compute_dtype(x)), axis=1, norm="ortho")
        spectrum = self._filter(spectrum, self.kept_modes(length), params)
        y = jnp.fft.irfft(spectrum, n=length, axis=1, norm="ortho")
        return y.astype(x.dtype) + x
