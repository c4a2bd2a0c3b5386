"""Normalisation layers with the conventions of each reference spelled out."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import canonicalize_dtype


def _centred_and_rstd(x: jax.Array, epsilon: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Two-pass statistics over the last axis: (x - mean, 1 / sqrt(population variance + epsilon))."""
    centred = x - jnp.mean(x, axis=-1, keepdims=True)
    return centred, jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + epsilon)


@jax.custom_jvp
def _layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: jax.Array) -> jax.Array:
    # Flax's nn.LayerNorm(use_fast_variance=False) operation for operation: (x - mean) * (rsqrt(var + eps) * scale)
    # + bias.
    centred, rstd = _centred_and_rstd(x, epsilon)
    return centred * (rstd * scale) + bias


@_layer_norm.defjvp
def _layer_norm_jvp(primals, tangents):
    x, scale, bias, epsilon = primals
    dx, dscale, dbias, _ = tangents
    centred, rstd = _centred_and_rstd(x, epsilon)
    y = centred * (rstd * scale) + bias
    normed = centred * rstd
    # d(normed) = rstd * (dx - mean(dx) - normed * mean(dx * normed)); linear in the tangents, so reverse mode is
    # its transpose: dx = rstd * (g' - mean(g') - normed * mean(g' * normed)) with g' = g * scale.
    dnormed = rstd * (
        dx - jnp.mean(dx, axis=-1, keepdims=True) - normed * jnp.mean(dx * normed, axis=-1, keepdims=True)
    )
    return y, dnormed * scale + normed * dscale + dbias


class LayerNorm(nn.Module):
    """LayerNorm over the last axis: statistics and arithmetic in float32, the two-pass variance of PyTorch/NumPy.

    The forward pass is `flax.linen.LayerNorm(use_fast_variance=False)`'s, operation for operation, with the same
    parameters (`scale`, `bias`) and result dtype (`dtype`, or the promotion of the input and parameter dtypes).
    The derivative is written out (a JVP rule, so forward and reverse mode both work): the normalised activation
    and the per-row 1/std are kept, and reverse mode gives rstd * (g' - mean(g') - x_hat * mean(g' * x_hat)) with
    g' = g * scale. Autodiff of the two-pass forward gives the same values through more passes over the
    activations.
    """

    epsilon: float = 1e-6
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
        dtype = canonicalize_dtype(x, scale, bias, dtype=self.dtype)
        f32 = lambda a: jnp.asarray(a, jnp.promote_types(a.dtype, jnp.float32))
        return jnp.asarray(_layer_norm(f32(x), f32(scale), f32(bias), jnp.float32(self.epsilon)), dtype)


def layer_norm(epsilon: float, *, dtype: Any = None, param_dtype: Any = jnp.float32, name: str | None = None):
    """LayerNorm over the last axis with statistics in float32 and the two-pass variance of PyTorch/NumPy.

    `epsilon`: 1e-6 for the official JAX Mixer, MS-MLP and AFNO; 1e-5 (PyTorch default) for SOFTS, NiNformer, AFF.
    """
    return LayerNorm(epsilon=epsilon, dtype=dtype, param_dtype=param_dtype, name=name)


class BatchNorm(nn.Module):
    """BatchNorm over all but the last axis (`[batch, height, width, channels]`), with PyTorch's semantics: the one
    BatchNorm of the zoo, so every BatchNorm model converts from PyTorch with identical running statistics.

    Training: normalise with the batch mean and biased variance (two-pass, float32) and update the running
    statistics as `momentum * running + (1 - momentum) * batch`, the variance with the unbiased batch variance
    (n / (n - 1), as torch). Evaluation: normalise with the running statistics. Parameters `scale`, `bias`; state
    `batch_stats/mean`, `batch_stats/var` (float32). The batch mean is a plain mean, so under jit with a batch
    sharded over devices it is the global batch's.
    """

    momentum: float = 0.9
    epsilon: float = 1e-5
    unbiased_running_var: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        running_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        x32 = x.astype(jnp.float32)
        if train:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x32, axis=axes)
            var = jnp.mean(jnp.square(x32 - mean), axis=axes)
            if not self.is_initializing():
                n = x.size // features
                batch_var = var * (n / max(n - 1, 1)) if self.unbiased_running_var else var
                m = self.momentum
                running_mean.value = m * running_mean.value + (1.0 - m) * mean
                running_var.value = m * running_var.value + (1.0 - m) * batch_var
        else:
            mean, var = running_mean.value, running_var.value
        y = (x32 - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale.astype(jnp.float32)) + bias.astype(jnp.float32)
        return y.astype(self.dtype or x.dtype)
