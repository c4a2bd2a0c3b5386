"""STAR, the STar Aggregate-Redistribute module of SOFTS (Han et al., NeurIPS 2024, arXiv 2404.14197).

A channel mixer of linear cost in the number of channels: every channel's representation goes through an MLP to a
core representation, the cores of all channels are pooled into one global core, and the global core is handed back
to every channel and fused with its own representation by a second MLP. Usable on its own in place of attention
over channels (the paper also plugs it into other forecasters in place of their channel attention).

Parameter names are the official module's (`gen1`..`gen4`); the layers are initialised like `torch.nn.Linear`.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.layers.init import torch_dense
from zoo.layers.mlp import gelu


def softmax_pool(core: jax.Array) -> jax.Array:
    """Softmax-weighted average over channels, per core dimension (evaluation-mode pooling).

    `[batch, channels, d_core] -> [batch, 1, d_core]`: o_j = sum_c softmax_c(A_{:,j}) A_{c,j}.
    """
    values = core.astype(jnp.float32)
    weights = jax.nn.softmax(values, axis=1)
    return jnp.sum(weights * values, axis=1, keepdims=True).astype(core.dtype)


def stochastic_pool(core: jax.Array, key: jax.Array) -> jax.Array:
    """Stochastic pooling over channels (training-mode pooling).

    `[batch, channels, d_core] -> [batch, 1, d_core]`: for every batch element and core dimension j, one channel c
    is drawn with probability softmax_c(A_{:,j}) and o_j = A_{c,j}. The gradient flows through the drawn value, not
    through the draw.
    """
    logits = jax.lax.stop_gradient(core.astype(jnp.float32))
    index = jax.random.categorical(key, logits, axis=1)  # [batch, d_core]
    return jnp.take_along_axis(core, index[:, None, :], axis=1)


class STAR(nn.Module):
    """STAR channel mixer, `[batch, channels, d_model] -> [batch, channels, d_model]` (the paper's STAR):

    A = gen2(GELU(gen1(S)))                       core of every channel, [batch, channels, d_core]
    o = pool_c(A)                                 stochastic in training, softmax-weighted in evaluation
    out = gen4(GELU(gen3([S, repeat_c(o)])))      fusion of each channel with the global core

    There is no residual inside the module (the surrounding encoder layer adds it). GELU is the exact erf form of
    the PyTorch reference. `train=True` draws the pooling from the `dropout` PRNG stream. `d_model` defaults to the
    input's last axis.
    """

    d_core: int
    d_model: int | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        d_model = self.d_model or x.shape[-1]
        if x.ndim != 3 or x.shape[-1] != d_model:
            raise ValueError(f"STAR expects [batch, channels, {d_model}] (d_model={d_model}), got {tuple(x.shape)}")
        dense = lambda features, fan_in, name: torch_dense(
            features, fan_in, dtype=self.dtype, param_dtype=self.param_dtype, name=name
        )
        act = gelu(approximate=False)
        core = dense(self.d_core, d_model, "gen2")(act(dense(d_model, d_model, "gen1")(x)))
        pooled = stochastic_pool(core, self.make_rng("dropout")) if train else softmax_pool(core)
        pooled = jnp.broadcast_to(pooled, (*core.shape[:2], self.d_core))
        fused = jnp.concatenate([x.astype(core.dtype), pooled], axis=-1)  # [batch, channels, d_model + d_core]
        fused = act(dense(d_model, d_model + self.d_core, "gen3")(fused))
        return dense(d_model, d_model, "gen4")(fused)
