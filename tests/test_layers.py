"""Shared layers whose derivatives are written out for speed (docs/benchmarks.md): the same numbers as the plain
JAX/Flax forms they replace, in values, first and second derivatives and forward-mode JVPs."""

import re

import jax
import jax.numpy as jnp
import numpy as np

import zoo


def test_gelu_values_are_jax_nn_gelu_and_derivatives_match_autodiff():
    from zoo.layers.mlp import gelu

    x = jnp.linspace(-9.0, 9.0, 4001)
    for approximate in (False, True):
        ours, ref = gelu(approximate), lambda v, a=approximate: jax.nn.gelu(v, approximate=a)
        np.testing.assert_array_equal(np.asarray(ours(x)), np.asarray(ref(x)))
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
