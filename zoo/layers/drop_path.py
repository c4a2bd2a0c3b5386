"""Stochastic depth: drop a whole residual branch per example."""

import flax.linen as nn
import jax
import jax.numpy as jnp


class DropPath(nn.Module):
    """Zeroes the branch `x` for a random `rate` fraction of the batch in training (PRNG stream `dropout`).

    `scale_by_keep=True` divides kept examples by `1 - rate` (timm); big_vision's Mixer does not rescale.
    """

    rate: float = 0.0
    scale_by_keep: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        if not train or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        x = jnp.where(mask, x, jnp.zeros_like(x))
        return x / jnp.asarray(keep, x.dtype) if self.scale_by_keep else x
