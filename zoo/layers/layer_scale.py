"""Per-channel learnable scale of a residual branch (CaiT's LayerScale)."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class LayerScale(nn.Module):
    """`x * gamma` with `gamma` of shape `[channels]` initialised to `init_value`."""

    init_value: float = 1e-6
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        gamma = self.param("gamma", nn.initializers.constant(self.init_value), (x.shape[-1],), self.param_dtype)
        return x * gamma.astype(x.dtype)
