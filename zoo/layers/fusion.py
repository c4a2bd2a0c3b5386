"""Fusion boundaries for XLA's CPU backend that leave the numbers unchanged.

`materialize(x)` is `x / (1 + 0 * x)`: the value x bit for bit, computed once into a buffer that every consumer
reads. `materialize_cotangent(x)` is the identity in the forward pass; in the backward pass it hands on the incoming
cotangent divided by a tensor of ones (`1 + 0 * x`), which is the cotangent again bit for bit (g / 1 == g in IEEE
arithmetic; where x is not finite the ones are NaN, and so is that cotangent, as it would be anyway).

The division exists for XLA's fusion heuristics: XLA:CPU duplicates cheap elementwise producers into every consumer
fusion, and a floating-point division by a full tensor is the cheapest operation it treats as expensive, so the
cotangent is computed once, into a buffer, at this point.

Why a residual network needs it: the gradient of a residual stream is a chain of elementwise additions (the
residual path plus each block's LayerNorm backward). Without a boundary XLA:CPU (jaxlib 0.10) fuses the whole
chain, from the head down, into each consumer of each block's cotangent (the transposes feeding the weight-gradient
matrix products, the bias-gradient reductions, ...), so the backward pass recomputes it O(depth^2) times. With
this and the GELU/LayerNorm derivative rules, MLP-Mixer-S/16 trains about twice as fast on a 2-core CPU
(docs/benchmarks.md, before and after).
On GPU and TPU the extra division is one more fused elementwise operation. The cost everywhere: the tensor of
ones (or x) is kept for the backward pass, one activation per boundary.
"""

import jax


def materialize(x: jax.Array) -> jax.Array:
    """`x`, bit for bit, computed once into its own buffer by XLA:CPU instead of being recomputed in every consumer
    fusion (see the module doc; for an expensive intermediate with several consumers, e.g. GELU's erfc)."""
    return x / (1.0 + 0.0 * x)


@jax.custom_jvp
def materialize_cotangent(x: jax.Array) -> jax.Array:
    """Identity whose backward pass computes the cotangent of `x` once, into its own buffer (see module doc)."""
    return x


@materialize_cotangent.defjvp
def _materialize_cotangent_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    # A tensor of ones that XLA cannot fold away (0 * x is not simplified for floats): t / ones is linear in t, so
    # the reverse pass (its transpose) divides the cotangent by the same ones. Forward-mode JVPs work too.
    ones = 1.0 + 0.0 * jax.lax.stop_gradient(x)
    return x, t / ones
