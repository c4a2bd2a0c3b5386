"""PyTorch's default initialisers, for ports whose training dynamics should match the PyTorch reference.

`torch.nn.Linear` and `torch.nn.Conv1d` draw the weight from kaiming_uniform(a=sqrt(5)), which is
U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the bias from the same interval; `torch.nn.LayerNorm` starts at
scale 1, bias 0 (Flax's default too). Flax's Dense uses lecun_normal kernels and zero biases instead.
"""

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# kaiming_uniform(a=sqrt(5)): gain^2 = 2 / (1 + 5) = 1/3 and bound = gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in).
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int) -> Callable:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for a bias whose layer has `fan_in` inputs."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def torch_dense(
    features: int, fan_in: int, *, dtype: Any = None, param_dtype: Any = jnp.float32, name: str | None = None
) -> nn.Dense:
    """`nn.Dense` initialised like `torch.nn.Linear(fan_in, features)` (kernel `[fan_in, features]`)."""
    return nn.Dense(
        features,
        kernel_init=torch_kernel_init,
        bias_init=torch_bias_init(fan_in),
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
    )
