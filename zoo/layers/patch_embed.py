"""Non-overlapping patch embedding (a convolution with kernel = stride = patch size)."""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class PatchEmbed(nn.Module):
    """`[batch, height, width, in_chans] -> [batch, height / p, width / p, embed_dim]`.

    Parameters `kernel` `[p, p, in_chans, embed_dim]` (HWIO, like `nn.Conv`) and `bias`, so a parent naming this
    module `stem` reproduces the official Mixer layout. Computed as a reshape to patches and one contraction,
    which equals the strided convolution exactly.
    """

    patch_size: int
    embed_dim: int
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        b, h, w, c = images.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not divisible by the patch size {p}")
        kernel = self.param("kernel", self.kernel_init, (p, p, c, self.embed_dim), self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.embed_dim,), self.param_dtype)
        dtype = self.dtype or jnp.result_type(images.dtype, self.param_dtype)
        patches = images.astype(dtype).reshape(b, h // p, p, w // p, p, c)
        out = jnp.einsum("bhpwqc,pqco->bhwo", patches, kernel.astype(dtype))
        return out + bias.astype(dtype)
