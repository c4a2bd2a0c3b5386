"""Shared layers computed differently for speed (docs/benchmarks.md): the same numbers as the plain JAX/Flax or
PyTorch forms they replace, in values, first and second derivatives and forward-mode JVPs."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo.layers import Conv


def test_gelu_values_and_derivatives():
    """tanh form: `jax.nn.gelu`'s values bit for bit; exact form: x Phi(x) to float32 rounding against float64 math
    (PyTorch's erf formula, which it computes). Both: derivatives equal autodiff of the plain expression."""
    import math

    from zoo.layers.mlp import gelu

    x = jnp.linspace(-9.0, 9.0, 4001)
    np.testing.assert_array_equal(np.asarray(gelu(True)(x)), np.asarray(jax.nn.gelu(x, approximate=True)))
    x64 = np.asarray(x, np.float64)
    exact64 = x64 * 0.5 * np.array([math.erfc(-v / math.sqrt(2.0)) for v in x64])
    np.testing.assert_allclose(np.asarray(gelu(False)(x), np.float64), exact64, rtol=1e-6, atol=2e-6)
    erf_form = lambda v: v * 0.5 * (1.0 + jax.lax.erf(v * np.float32(math.sqrt(0.5))))
    for ours, ref in ((gelu(False), erf_form), (gelu(True), lambda v: jax.nn.gelu(v, approximate=True))):
        np.testing.assert_allclose(
            np.asarray(jax.vmap(jax.grad(ours))(x)), np.asarray(jax.vmap(jax.grad(ref))(x)), rtol=1e-5, atol=1e-6
        )
        # Second derivatives still work (the JVP rule is itself differentiable).
        np.testing.assert_allclose(
            np.asarray(jax.vmap(jax.grad(jax.grad(ours)))(x)),
            np.asarray(jax.vmap(jax.grad(jax.grad(ref)))(x)),
            rtol=1e-4,
            atol=1e-5,
        )
    # The exact slope against float64 math, Phi(x) + x phi(x).
    slope64 = exact64 / np.where(x64 == 0, 1, x64) + x64 * np.exp(-0.5 * x64**2) / math.sqrt(2 * math.pi)
    slope64[x64 == 0] = 0.5
    np.testing.assert_allclose(np.asarray(jax.vmap(jax.grad(gelu(False)))(x)), slope64, rtol=1e-5, atol=2e-6)


def test_layer_norm_is_flax_two_pass_layer_norm_in_values_and_derivatives():
    import flax.linen as nn

    from zoo.layers.norms import layer_norm

    x = jax.random.normal(jax.random.key(0), (3, 7, 48)) * 4 + 2
    ref = nn.LayerNorm(epsilon=1e-6, use_fast_variance=False)
    ours = layer_norm(1e-6)
    variables = ref.init(jax.random.key(1), x)
    variables = jax.tree.map(lambda a: a + 0.2 * jax.random.normal(jax.random.key(2), a.shape), variables)
    assert jax.tree.structure(ours.init(jax.random.key(1), x)) == jax.tree.structure(variables)
    np.testing.assert_array_equal(np.asarray(ours.apply(variables, x)), np.asarray(ref.apply(variables, x)))
    weights = jax.random.normal(jax.random.key(3), x.shape)
    loss = lambda m: lambda v, xs: jnp.sum(jnp.sin(m.apply(v, xs)) * weights)
    got, want = jax.grad(loss(ours), argnums=(0, 1))(variables, x), jax.grad(loss(ref), argnums=(0, 1))(variables, x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    tangent = jax.random.normal(jax.random.key(4), x.shape)
    jvp = lambda m: jax.jvp(lambda xs: m.apply(variables, xs), (x,), (tangent,))[1]
    np.testing.assert_allclose(np.asarray(jvp(ours)), np.asarray(jvp(ref)), rtol=1e-4, atol=1e-5)
    # bf16 compute: the same dtype rule as Flax (result in `dtype`).
    bf16 = layer_norm(1e-6, dtype=jnp.bfloat16)
    assert bf16.apply(variables, x).dtype == nn.LayerNorm(1e-6, dtype=jnp.bfloat16).apply(variables, x).dtype


def test_materialize_is_the_identity_in_every_mode():
    from zoo.layers.fusion import materialize, materialize_cotangent

    x = jax.random.normal(jax.random.key(0), (4, 5)) * 1e3
    g = jax.random.normal(jax.random.key(1), (4, 5))
    for f in (materialize, materialize_cotangent):
        np.testing.assert_array_equal(np.asarray(jax.jit(f)(x)), np.asarray(x))
        _, vjp = jax.vjp(f, x)
        np.testing.assert_array_equal(np.asarray(jax.jit(vjp)(g)[0]), np.asarray(g))
        np.testing.assert_array_equal(np.asarray(jax.jvp(f, (x,), (g,))[1]), np.asarray(g))


def test_mixer_backward_has_no_deep_fused_recomputation():
    """XLA:CPU would otherwise fuse the residual stream's whole gradient chain into each block's consumers (an 8-block
    Mixer then has backward fusions with ~120 operands; with `materialize_cotangent` about 10)."""
    model = zoo.create_model("mixer_ti4_32")  # 8 blocks
    x = jnp.ones((2, 32, 32, 3))
    params = model.init(jax.random.key(0), x)["params"]
    grad = jax.jit(jax.grad(lambda p: jnp.sum(model.apply({"params": p}, x, train=True) ** 2)))
    hlo = grad.lower(params).compile().as_text()
    entry = hlo[hlo.index("\nENTRY") :]
    operands = [m.group(1).count("%") for m in re.finditer(r"= \S+ fusion\(([^\n]*?)\), kind=k(?:Loop|Input)", entry)]
    assert operands and max(operands) < 30, max(operands)


@pytest.mark.parametrize(
    "features, kernel_size, strides, groups, shape",
    [
        (12, 3, 1, 12, (2, 7, 9, 12)),  # depthwise, odd and non-square
        (12, 3, 2, 12, (2, 7, 8, 12)),  # depthwise, stride 2
        (6, 5, 2, 6, (1, 9, 9, 6)),  # depthwise 5x5
        (6, 5, 1, 6, (2, 9, 7, 6)),  # depthwise 5x5 stride 1: the written-out backward pass
        (4, 7, 1, 4, (2, 6, 11, 4)),  # depthwise 7x7 stride 1, a kernel larger than the height
        (16, 1, 1, 1, (2, 5, 6, 8)),  # 1x1: a matrix product
        (8, 3, 2, 1, (2, 8, 8, 3)),  # dense 3x3 stride 2 (a stem)
        (8, 3, 1, 2, (1, 6, 6, 4)),  # grouped
    ],
)
def test_conv_equals_pytorch_conv2d_with_its_gradients(features, kernel_size, strides, groups, shape):
    """zoo.layers.Conv (shifted slices for depthwise, a dot for 1x1) against torch.nn.functional.conv2d."""
    import torch

    conv = Conv(features, kernel_size, strides=strides, groups=groups)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    variables = conv.init(jax.random.key(0), jnp.asarray(x))
    kernel = np.asarray(variables["params"]["kernel"])
    bias = rng.standard_normal(features).astype(np.float32)
    variables = {"params": {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}}
    cotangent = rng.standard_normal(conv.apply(variables, jnp.asarray(x)).shape).astype(np.float32)

    def loss(v, inputs):
        return jnp.sum(conv.apply(v, inputs) * cotangent)

    ours = conv.apply(variables, jnp.asarray(x))
    grads, grad_x = jax.grad(loss, argnums=(0, 1))(variables, jnp.asarray(x))

    tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    tw = torch.tensor(kernel.transpose(3, 2, 0, 1), requires_grad=True)
    tb = torch.tensor(bias, requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride=strides, padding=kernel_size // 2, groups=groups)
    (ty * torch.from_numpy(cotangent.transpose(0, 3, 1, 2))).sum().backward()
    np.testing.assert_allclose(np.asarray(ours), ty.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(grad_x), tx.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        np.asarray(grads["params"]["kernel"]), tw.grad.numpy().transpose(2, 3, 1, 0), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(np.asarray(grads["params"]["bias"]), tb.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_conv_rejects_channels_not_divisible_into_groups():
    with pytest.raises(ValueError, match="not divisible into 4 groups"):
        Conv(8, 3, groups=4).init(jax.random.key(0), jnp.zeros((1, 4, 4, 6)))
