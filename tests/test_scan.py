"""The selective scan (zoo.layers.scan): values against a plain NumPy loop of the recurrence, gradients against
autodiff of an independent `jax.lax.scan` written here, every method, forward and reverse, lengths 1 to 1000; a
float32 state under bfloat16 inputs; shape errors; Mamba's initialisers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.layers.scan import METHODS, a_log_init, dt_bias_init, dt_kernel_init, selective_scan


def random_case(batch, length, d, n, seed=0):
    rng = np.random.default_rng(seed)
    normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    return dict(
        u=normal(batch, length, d),
        delta=np.log1p(np.exp(normal(batch, length, d) - 1.0)).astype(np.float32),  # softplus: positive
        A=-np.exp(normal(d, n)).astype(np.float32),
        B=normal(batch, length, n),
        C=normal(batch, length, n),
        D=normal(d),
    )


def numpy_scan(u, delta, A, B, C, D, reverse=False):
    """h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t, y_t = C_t . h_t + D u_t, step by step in float64."""
    u, delta, A, B, C, D = (np.asarray(a, np.float64) for a in (u, delta, A, B, C, D))
    batch, length, d = u.shape
    h = np.zeros((batch, d, A.shape[1]))
    y = np.zeros((batch, length, d))
    for t in reversed(range(length)) if reverse else range(length):
        h = np.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        y[:, t] = np.einsum("bdn,bn->bd", h, C[:, t]) + D * u[:, t]
    return y


def lax_scan_reference(u, delta, A, B, C, D, reverse=False):
    """The recurrence as one jax.lax.scan over time (autodiff gives the reference gradients)."""

    def step(h, xs):
        u_t, delta_t, B_t, C_t = xs
        h = jnp.exp(delta_t[:, :, None] * A) * h + (delta_t * u_t)[:, :, None] * B_t[:, None, :]
        return h, jnp.einsum("bdn,bn->bd", h, C_t) + D * u_t

    h0 = jnp.zeros((u.shape[0], u.shape[2], A.shape[1]))
    xs = tuple(jnp.moveaxis(a, 1, 0) for a in (u, delta, B, C))
    _, y = jax.lax.scan(step, h0, xs, reverse=reverse)
    return jnp.moveaxis(y, 0, 1)


CASES = [(1, False), (7, False), (7, True), (1000, False), (1000, True)]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("length, reverse", CASES)
def test_values_match_a_numpy_loop(method, length, reverse):
    case = random_case(2, length, 3, 4, seed=length)
    y = selective_scan(**{k: jnp.asarray(v) for k, v in case.items()}, reverse=reverse, method=method, chunk_size=4)
    assert y.shape == (2, length, 3) and y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), numpy_scan(**case, reverse=reverse), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("length, reverse", [(1, False), (9, True), (1000, False)])
def test_gradients_match_lax_scan_autodiff(method, length, reverse):
    case = {k: jnp.asarray(v) for k, v in random_case(1, length, 3, 2, seed=length + 1).items()}
    weights = jnp.asarray(np.random.default_rng(5).standard_normal((1, length, 3)), jnp.float32)
    ours = lambda a: jnp.sum(selective_scan(**a, reverse=reverse, method=method, chunk_size=4) * weights)
    ref = lambda a: jnp.sum(lax_scan_reference(**a, reverse=reverse) * weights)
    got, want = jax.jit(jax.grad(ours))(case), jax.jit(jax.grad(ref))(case)
    for name in case:
        scale = float(np.abs(np.asarray(want[name])).max())
        np.testing.assert_allclose(
            np.asarray(got[name]), np.asarray(want[name]), rtol=1e-4, atol=1e-5 * max(scale, 1.0), err_msg=name
        )


def test_chunk_sizes_agree_including_ragged_last_chunk():
    case = {k: jnp.asarray(v) for k, v in random_case(1, 50, 2, 3).items()}
    ys = [selective_scan(**case, method="chunked", chunk_size=c) for c in (1, 7, 50, 64)]
    for y in ys[1:]:
        np.testing.assert_allclose(np.asarray(y), np.asarray(ys[0]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("d", [40, 150])
def test_batches_and_widths_that_do_not_fill_the_scan_blocks(method, d):
    """n = 16: the sequential scan runs blocks of 128 state columns, so width 40 goes 3 rows at a time (a batch of 5
    padded to 6 inside) and width 150 in two channel groups of 128 (the second padded); values and every gradient
    must still be those of the plain recurrence (A's gradient summed over the batch blocks, B's and C's over the
    channel groups), the padding contributing nothing."""
    case = {k: jnp.asarray(v) for k, v in random_case(5, 13, d, 16, seed=3).items()}
    y = selective_scan(**case, method=method, chunk_size=4)
    np.testing.assert_allclose(np.asarray(y), numpy_scan(**case), rtol=1e-5, atol=1e-5)
    weights = jnp.asarray(np.random.default_rng(6).standard_normal((5, 13, d)), jnp.float32)
    ours = lambda a: jnp.sum(selective_scan(**a, method=method, chunk_size=4) * weights)
    ref = lambda a: jnp.sum(lax_scan_reference(**a) * weights)
    got, want = jax.jit(jax.grad(ours))(case), jax.jit(jax.grad(ref))(case)
    for name in case:
        scale = float(np.abs(np.asarray(want[name])).max())
        np.testing.assert_allclose(
            np.asarray(got[name]), np.asarray(want[name]), rtol=1e-4, atol=1e-5 * max(scale, 1.0), err_msg=name
        )


@pytest.mark.parametrize("method", METHODS)
def test_bfloat16_inputs_keep_a_float32_state(method):
    """1024 steps of h += 2^-10 (decay 1): a float32 state reaches 1.0; a bfloat16 one would stall near 0.25,
    where 2^-10 is below half a unit in the last place."""
    length = 1024
    ones = jnp.ones((1, length, 1), jnp.bfloat16)
    y = selective_scan(
        ones,
        jnp.full((1, length, 1), 2.0**-10, jnp.bfloat16),
        jnp.zeros((1, 1), jnp.bfloat16),
        jnp.ones((1, length, 1), jnp.bfloat16),
        jnp.ones((1, length, 1), jnp.bfloat16),
        None,
        method=method,
    )
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(float(y[0, -1, 0]), 1.0, rtol=1e-2)
    np.testing.assert_allclose(float(y[0, length // 2 - 1, 0]), 0.5, rtol=1e-2)


def test_bad_shapes_and_options_are_clear_errors():
    case = {k: jnp.asarray(v) for k, v in random_case(2, 5, 3, 4).items()}
    bad = [
        (dict(u=case["u"][0]), "u must be"),
        (dict(delta=case["delta"][:, :4]), "delta must"),
        (dict(A=case["A"][:2]), "A must be"),
        (dict(B=case["B"][..., :3]), "B must be"),
        (dict(C=case["C"][:1]), "C must be"),
        (dict(D=case["D"][:2]), "D must be"),
    ]
    for overrides, message in bad:
        with pytest.raises(ValueError, match=message):
            selective_scan(**{**case, **overrides})
    with pytest.raises(ValueError, match="method must be one of"):
        selective_scan(**case, method="fft")
    with pytest.raises(ValueError, match="chunk_size"):
        selective_scan(**case, method="chunked", chunk_size=0)


def test_mamba_initialisers():
    a_log = a_log_init(jax.random.key(0), (3, 4))
    np.testing.assert_allclose(np.asarray(a_log), np.log(np.tile(np.arange(1.0, 5.0), (3, 1))), rtol=1e-6)
    bias = dt_bias_init()(jax.random.key(1), (4096,))
    dt = np.asarray(jax.nn.softplus(bias))
    assert dt.min() >= 1e-3 * (1 - 1e-4) and dt.max() <= 0.1 * (1 + 1e-4)
    # log-uniform: the median of log(dt) sits in the middle of [log 1e-3, log 0.1] = log 1e-2.
    assert abs(np.median(np.log(dt)) - np.log(1e-2)) < 0.1
    kernel = np.asarray(dt_kernel_init(4)(jax.random.key(2), (4, 512)))
    assert np.abs(kernel).max() <= 0.5 and np.abs(kernel).max() > 0.45  # U(+-4^-1/2)
    with pytest.raises(ValueError, match="dt_min"):
        dt_bias_init(dt_min=0.2, dt_max=0.1)
