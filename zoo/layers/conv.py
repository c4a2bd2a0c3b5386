"""2-D convolution with PyTorch's zero padding, computed the way XLA:CPU runs fastest for each kind.

The parameters are `flax.linen.Conv`'s (`kernel` `[k, k, in / groups, out]` HWIO, optional `bias`), so converters
and checkpoints do not see how a convolution is computed:
- depthwise (groups == in == out): the sum of k*k shifted, strided slices times one weight per channel. XLA:CPU
  lowers grouped convolutions to a slow generic loop; the slices fuse into elementwise passes, forward and
  backward (3-3.5x faster forward + backward at MobileNet shapes, docs/benchmarks.md), and from 5x5 up the kernel
  gradient is written out as matrix products (`depthwise_conv2d`); with a channel multiplier
  (groups == in, out = m * in: FFNet's downsample) the same on the input repeated m times (20-40x faster
  forward + backward than the generic loop at FFNet's shapes);
- 1x1, stride 1, no groups: one matrix product over the channels (about 2x faster than the 1x1 convolution);
- anything else: `jax.lax.conv_general_dilated`.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def _shifted_sum(x: jax.Array, kernel: jax.Array, strides: int, pad: int) -> jax.Array:
    """The sum of k*k shifted, strided slices of the zero-padded input times one weight per channel."""
    kh, kw = kernel.shape[:2]
    batch, height, width, channels = x.shape
    out_h, out_w = (height + 2 * pad - kh) // strides + 1, (width + 2 * pad - kw) // strides + 1
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = None
    for i in range(kh):
        for j in range(kw):
            limit = (batch, i + strides * (out_h - 1) + 1, j + strides * (out_w - 1) + 1, channels)
            term = jax.lax.slice(padded, (0, i, j, 0), limit, (1, strides, strides, 1)) * kernel[i, j, 0]
            out = term if out is None else out + term
    return out


@jax.custom_vjp
def _depthwise_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride 1, zero padding k // 2, square odd kernel: `_shifted_sum` with a written-out backward pass."""
    return _shifted_sum(x, kernel, 1, kernel.shape[0] // 2)


def _depthwise_same_fwd(x, kernel):
    return _depthwise_same(x, kernel), (x, kernel)


def _depthwise_same_bwd(residuals, g):
    x, kernel = residuals
    k, height = kernel.shape[0], x.shape[1]
    pad = k // 2
    grad_x = _shifted_sum(g, kernel[::-1, ::-1], 1, pad)  # the transpose of a 'same' correlation: flipped kernel
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows = []
    for i in range(k):
        # dK[i, j, c] = sum_{b, h, w} padded[b, h + i, w + j, c] g[b, h, w, c]: one product over (b, h) for every
        # (input column v, output column w) pair, then the sums along the diagonals v = w + j.
        pairs = jnp.einsum("bhvc,bhwc->cvw", padded[:, i : i + height], g, preferred_element_type=jnp.float32)
        rows.append(jnp.stack([jnp.trace(pairs, offset=-j, axis1=1, axis2=2) for j in range(k)]))
    return grad_x, jnp.stack(rows)[:, :, None, :].astype(kernel.dtype)


_depthwise_same.defvjp(_depthwise_same_fwd, _depthwise_same_bwd)

# Kernels from this size up (stride 1, 'same' padding) take the written-out backward pass. Autodiff of the shifted
# sum keeps every shifted window for the kernel gradient and reduces each one separately (k*k passes over the
# activations); from 5x5 up XLA:CPU no longer fuses them. Forward + backward, ms, 2 shared cores
# (`python -m benchmarks.depthwise`): 7x7 at [16, 64, 64, 80] 3572 -> 2084, [16, 16, 16, 320] 712 -> 396,
# [8, 56, 56, 20] 380 -> 112; 5x5 at [16, 64, 64, 80] 1103 -> 723; but 3x3 at [16, 64, 64, 80] 354 -> 412, so 3x3
# stays with autodiff.
WRITTEN_OUT_BACKWARD_FROM = 5


def depthwise_conv2d(x: jax.Array, kernel: jax.Array, strides: int = 1, padding: int | None = None) -> jax.Array:
    """`[batch, height, width, channels]` * `[k, k, 1, channels]` with zero padding `padding` (default k // 2) on
    every side, as `torch.nn.Conv2d(C, C, k, strides, padding, groups=C)`: `[batch, H', W', channels]`.

    The sum of k*k shifted, strided slices times one weight per channel. Stride-1 'same' convolutions with kernels
    of 5x5 and up have a written-out derivative: the input gradient is the convolution of the output gradient with
    the flipped kernel, the kernel gradient k matrix products over (batch, rows) and diagonal sums."""
    kh, kw = kernel.shape[:2]
    pad = kh // 2 if padding is None else padding
    if strides == 1 and kh == kw and kh % 2 and pad == kh // 2 and kh >= WRITTEN_OUT_BACKWARD_FROM:
        return _depthwise_same(x, kernel)
    return _shifted_sum(x, kernel, strides, pad)


class Conv(nn.Module):
    """`[batch, height, width, in] -> [batch, H / strides, W / strides, features]`, padding k // 2 (PyTorch's
    `padding=k // 2`), parameters `kernel` (HWIO) and `bias` as `flax.linen.Conv`."""

    features: int
    kernel_size: int = 1
    strides: int = 1
    groups: int = 1
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels, k = x.shape[-1], self.kernel_size
        if channels % self.groups or self.features % self.groups:
            raise ValueError(
                f"Conv: {channels} inputs and {self.features} outputs are not divisible into {self.groups} groups"
            )
        kernel = self.param(
            "kernel", self.kernel_init, (k, k, channels // self.groups, self.features), self.param_dtype
        )
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        dtype = self.dtype or jnp.result_type(x.dtype, self.param_dtype)
        x, kernel = x.astype(dtype), kernel.astype(dtype)
        if self.groups == channels == self.features:
            y = depthwise_conv2d(x, kernel, self.strides)
        elif self.groups == channels and self.features % channels == 0:
            # Depthwise with a channel multiplier m: group g owns outputs [g*m, (g+1)*m) (PyTorch's and XLA's
            # contiguous convention), i.e. a depthwise convolution of each input channel repeated m times.
            y = depthwise_conv2d(jnp.repeat(x, self.features // channels, axis=-1), kernel, self.strides)
        elif k == 1 and self.strides == 1 and self.groups == 1:
            y = jnp.einsum("bhwi,io->bhwo", x, kernel[0, 0])
        else:
            pad = ((k // 2, k // 2), (k // 2, k // 2))
            y = jax.lax.conv_general_dilated(
                x,
                kernel,
                (self.strides, self.strides),
                pad,
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                feature_group_count=self.groups,
            )
        return y if bias is None else y + bias.astype(dtype)
