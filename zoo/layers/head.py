"""Classification head: mean over tokens, dropout, linear map to classes."""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class ClassifierHead(nn.Module):
    """`[batch, tokens, channels] -> [batch, num_classes]` float32 logits.

    `num_classes=0` returns the pooled features `[batch, channels]` and creates no parameters. Parameters
    `kernel` `[channels, num_classes]` and `bias` sit directly in this module, so a parent naming it `head` gives
    the official `head/kernel` layout. The kernel is zero-initialised (as in the official Mixer).
    """

    num_classes: int
    dropout_rate: float = 0.0
    kernel_init: Callable = nn.initializers.zeros
    bias_init: Callable = nn.initializers.zeros
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array, *, train: bool = False) -> jax.Array:
        x = jnp.mean(tokens, axis=1)
        if self.num_classes == 0:
            return x.astype(jnp.float32)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.num_classes), self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.num_classes,), self.param_dtype)
        dtype = self.dtype or x.dtype
        logits = jnp.dot(x.astype(dtype), kernel.astype(dtype)) + bias.astype(dtype)
        return logits.astype(jnp.float32)
