"""Two-layer perceptron (the MLP of Mixer blocks, transformer feed-forwards and STAR)."""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def gelu(approximate: bool) -> Callable[[jax.Array], jax.Array]:
    """GELU; `approximate=True` is the tanh form (Flax default, official JAX Mixer), False the exact erf form
    (PyTorch `nn.GELU()`)."""
    return jax.nn.gelu if approximate else (lambda x: jax.nn.gelu(x, approximate=False))


class MlpBlock(nn.Module):
    """Dense -> activation -> dropout -> Dense -> dropout on the last axis.

    `[..., in_dim] -> [..., out_dim]` (`out_dim` defaults to `in_dim`). Parameters are `Dense_0` and `Dense_1`,
    the names of the official MLP-Mixer release.
    """

    hidden_dim: int
    out_dim: int | None = None
    approximate_gelu: bool = True
    dropout_rate: float = 0.0
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        dense = lambda features, name: nn.Dense(
            features,
            kernel_init=self.kernel_init,
            bias_init=self.bias_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )
        out_dim = self.out_dim or x.shape[-1]
        x = dense(self.hidden_dim, "Dense_0")(x)
        x = gelu(self.approximate_gelu)(x)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        x = dense(out_dim, "Dense_1")(x)
        return nn.Dropout(self.dropout_rate)(x, deterministic=not train)
