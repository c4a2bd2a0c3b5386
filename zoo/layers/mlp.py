"""Two-layer perceptron (the MLP of Mixer blocks, transformer feed-forwards and STAR)."""

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.layers.fusion import materialize

_SQRT_HALF = math.sqrt(0.5)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _normal_cdf(x: jax.Array) -> jax.Array:
    # PyTorch's form, 0.5 (1 + erf(x / sqrt 2)); XLA's erf is one rational polynomial, its erfc (jax.nn.gelu's
    # form) a costlier two-branch expansion with exp and a division.
    return 0.5 * (1.0 + jax.lax.erf(x * jnp.asarray(_SQRT_HALF, x.dtype)))


@jax.custom_jvp
def gelu_exact(x: jax.Array) -> jax.Array:
    """x * Phi(x), computed as PyTorch's `nn.GELU()`: x * 0.5 * (1 + erf(x / sqrt 2))."""
    return x * _normal_cdf(x)


@gelu_exact.defjvp
def _gelu_exact_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    cdf = materialize(_normal_cdf(x))  # read twice, computed once
    pdf = jnp.exp(-0.5 * x * x) * jnp.asarray(_INV_SQRT_2PI, x.dtype)
    return x * cdf, (cdf + x * pdf) * t


@jax.custom_jvp
def gelu_tanh(x: jax.Array) -> jax.Array:
    """The tanh approximation, computed as `jax.nn.gelu(x, approximate=True)`."""
    return x * (0.5 * (1.0 + jnp.tanh(jnp.asarray(_SQRT_2_OVER_PI, x.dtype) * (x + 0.044715 * x**3))))


@gelu_tanh.defjvp
def _gelu_tanh_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    c = jnp.asarray(_SQRT_2_OVER_PI, x.dtype)
    th = materialize(jnp.tanh(c * (x + 0.044715 * x**3)))  # read twice, computed once
    cdf = 0.5 * (1.0 + th)
    slope = cdf + x * (0.5 * (1.0 - th * th) * c * (1.0 + 3 * 0.044715 * x * x))
    return x * cdf, slope * t


def gelu(approximate: bool) -> Callable[[jax.Array], jax.Array]:
    """GELU; `approximate=True` is the tanh form (Flax default, official JAX Mixer), False the exact erf form
    (PyTorch `nn.GELU()`).

    The tanh form is `jax.nn.gelu(x, approximate=True)` operation for operation; the exact form is PyTorch's
    formula, x * 0.5 * (1 + erf(x / sqrt 2)), which agrees with `jax.nn.gelu(x, approximate=False)` (erfc) to
    about 1e-6 and is cheaper on XLA:CPU (docs/benchmarks.md). The derivative is written out (one JVP rule that
    computes the activation and its slope together), so the backward pass keeps the slope instead of re-deriving
    erf/tanh through autodiff: the same derivative, one pass less over the MLP's hidden activations.
    """
    return gelu_tanh if approximate else gelu_exact


class MlpBlock(nn.Module):
    """Dense -> activation -> dropout -> Dense -> dropout on the last axis.

    `[..., in_dim] -> [..., out_dim]` (`out_dim` defaults to `in_dim`). Parameters are `Dense_0` and `Dense_1`,
    the names of the official MLP-Mixer release, or the two `layer_names` given (e.g. timm's `("fc1", "fc2")`).
    """

    hidden_dim: int
    out_dim: int | None = None
    approximate_gelu: bool = True
    dropout_rate: float = 0.0
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros
    layer_names: tuple[str, str] = ("Dense_0", "Dense_1")
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
        x = dense(self.hidden_dim, self.layer_names[0])(x)
        x = gelu(self.approximate_gelu)(x)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        x = dense(out_dim, self.layer_names[1])(x)
        return nn.Dropout(self.dropout_rate)(x, deterministic=not train)
