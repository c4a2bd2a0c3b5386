"""Normalisation layers with the conventions of each reference spelled out."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


def layer_norm(epsilon: float, *, dtype: Any = None, param_dtype: Any = jnp.float32, name: str | None = None):
    """LayerNorm over the last axis with statistics in float32 and the two-pass variance of PyTorch/NumPy.

    `epsilon`: 1e-6 for the official JAX Mixer, MS-MLP and AFNO; 1e-5 (PyTorch default) for SOFTS, NiNformer, AFF.
    """
    return nn.LayerNorm(
        epsilon=epsilon, dtype=dtype, param_dtype=param_dtype, use_fast_variance=False, name=name
    )
