"""The spectral filters of zoo.layers.fourier (AFNO and AFF) against NumPy transcriptions of the papers' equations
(float64, complex arithmetic, an explicit loop over the diagonal blocks), the official PyTorch AFNO2D, a gradient
check, and their argument errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.test_util import check_grads

from benchmarks.torch_afno import TorchAFNO2D
from zoo.layers.fourier import SpectralFilter1D, SpectralFilter2D, softshrink

# ---------------------------------------------------------------------------------------------------------------
# NumPy references (AFNO paper Eq. 4-5; AFF paper Eq. 3-4: Y = M * X with the mask M from the same MLP).

ACT = {"relu": lambda v: np.maximum(v, 0.0), "silu": lambda v: v / (1.0 + np.exp(-v))}


def np_softshrink(v, lambd):
    return np.where(v > lambd, v - lambd, np.where(v < -lambd, v + lambd, 0.0))


def np_new_spectrum(spectrum, params, kept, lambd, adaptive, activation):
    """The filtered spectrum `[..., bins, C]`: block MLP on the first `kept` bins of axis -2, zero elsewhere."""
    complex_ = lambda name: params[name][0].astype(np.float64) + 1j * params[name][1].astype(np.float64)
    w1, b1, w2, b2 = (complex_(n) for n in ("w1", "b1", "w2", "b2"))
    act, size = ACT[activation], w1.shape[1]
    out = np.zeros_like(spectrum)
    for block in range(w1.shape[0]):
        channels = slice(block * size, (block + 1) * size)
        x = spectrum[..., :kept, channels]
        hidden = x @ w1[block] + b1[block]
        hidden = act(hidden.real) + 1j * act(hidden.imag)
        mask = hidden @ w2[block] + b2[block]
        mask = np_softshrink(mask.real, lambd) + 1j * np_softshrink(mask.imag, lambd)
        out[..., :kept, channels] = mask * x if adaptive else mask
    return out


def np_filter_2d(x, params, fraction=1.0, lambd=0.01, adaptive=False, activation="relu"):
    """x `[B, H, W, C]` -> x + irfft2(new spectrum); kept bins of the official classification code."""
    _, h, w, _ = x.shape
    x = x.astype(np.float64)
    spectrum = np.fft.rfft2(x, axes=(1, 2), norm="ortho")
    kept = int((h * w // 2 + 1) * fraction)  # official: total_modes = N // 2 + 1 with N = H * W tokens
    kept = min(kept, w // 2 + 1)
    new = np_new_spectrum(spectrum, params, kept, lambd, adaptive, activation)
    return x + np.fft.irfft2(new, s=(h, w), axes=(1, 2), norm="ortho")


def np_filter_1d(x, params, fraction=1.0, lambd=0.01, adaptive=False, activation="relu"):
    length = x.shape[1]
    x = x.astype(np.float64)
    spectrum = np.fft.rfft(x, axis=1, norm="ortho")
    new = np_new_spectrum(spectrum, params, int((length // 2 + 1) * fraction), lambd, adaptive, activation)
    return x + np.fft.irfft(new, n=length, axis=1, norm="ortho")


def random_params(channels, num_blocks, factor=1, scale=0.5, seed=1):
    """Random weights and biases (not the 0.02 init: large enough that ReLU and softshrink both bite)."""
    rng = np.random.default_rng(seed)
    b = channels // num_blocks
    shapes = dict(w1=(2, num_blocks, b, b * factor), b1=(2, num_blocks, b * factor), w2=(2, num_blocks, b * factor, b))
    shapes["b2"] = (2, num_blocks, b)
    return {k: (scale * rng.standard_normal(s)).astype(np.float32) for k, s in shapes.items()}


def random_input(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------


def test_softshrink_is_torchs():
    x = np.linspace(-0.05, 0.05, 101).astype(np.float32)
    expected = torch.nn.functional.softshrink(torch.from_numpy(x), lambd=0.01).numpy()
    np.testing.assert_array_equal(np.asarray(softshrink(jnp.asarray(x), 0.01)), expected)
    np.testing.assert_allclose(np.asarray(softshrink(jnp.asarray(x), 0.01)), np_softshrink(x, 0.01), atol=1e-7)


@pytest.mark.parametrize("grid", [(5, 7), (6, 9), (7, 7), (4, 6)])
@pytest.mark.parametrize("adaptive", [False, True], ids=["afno", "aff"])
def test_filter_2d_matches_numpy(grid, adaptive):
    channels, blocks = 12, 3
    x = random_input((2, *grid, channels))
    params = random_params(channels, blocks)
    layer = SpectralFilter2D(num_blocks=blocks, adaptive_mask=adaptive, sparsity_threshold=0.05)
    out = layer.apply({"params": params}, jnp.asarray(x))
    assert out.shape == x.shape and out.dtype == jnp.float32
    expected = np_filter_2d(x, params, lambd=0.05, adaptive=adaptive)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)
    # The filter does something beyond the residual.
    assert np.abs(expected - x).max() > 0.1


@pytest.mark.parametrize("activation", ["relu", "silu"])
def test_filter_2d_hidden_factor_and_activation(activation):
    channels, blocks, factor = 8, 2, 3
    x = random_input((3, 6, 5, channels), seed=3)
    params = random_params(channels, blocks, factor=factor, scale=0.4)
    layer = SpectralFilter2D(num_blocks=blocks, hidden_size_factor=factor, adaptive_mask=True, activation=activation)
    out = layer.apply({"params": params}, jnp.asarray(x))
    expected = np_filter_2d(x, params, adaptive=True, activation=activation)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("adaptive", [False, True], ids=["afno", "aff"])
@pytest.mark.parametrize(("grid", "fraction", "kept"), [((6, 9), 0.1, 2), ((7, 7), 0.05, 1), ((8, 10), 0.09, 3)])
def test_filter_2d_mode_truncation(adaptive, grid, fraction, kept):
    channels, blocks = 8, 2
    x = random_input((2, *grid, channels), seed=5)
    params = random_params(channels, blocks)
    layer = SpectralFilter2D(num_blocks=blocks, hard_thresholding_fraction=fraction, adaptive_mask=adaptive)
    assert layer.kept_modes(*grid) == kept < grid[1] // 2 + 1
    out = np.asarray(layer.apply({"params": params}, jnp.asarray(x)))
    np.testing.assert_allclose(out, np_filter_2d(x, params, fraction, adaptive=adaptive), rtol=1e-5, atol=1e-5)
    # Bins past `kept` carry nothing but the residual: the filter's contribution has no energy there.
    contribution = np.fft.rfft2(out.astype(np.float64) - x, axes=(1, 2), norm="ortho")
    assert np.abs(contribution[:, :, kept:]).max() < 1e-5
    assert np.abs(contribution[:, :, :kept]).max() > 0.1


@pytest.mark.parametrize("length", [9, 12])
@pytest.mark.parametrize(("adaptive", "fraction"), [(False, 1.0), (True, 1.0), (False, 0.5), (True, 0.6)])
def test_filter_1d_matches_numpy(length, adaptive, fraction):
    channels, blocks = 8, 4
    x = random_input((2, length, channels), seed=7)
    params = random_params(channels, blocks)
    layer = SpectralFilter1D(num_blocks=blocks, hard_thresholding_fraction=fraction, adaptive_mask=adaptive)
    out = layer.apply({"params": params}, jnp.asarray(x))
    assert out.shape == x.shape
    expected = np_filter_1d(x, params, fraction, adaptive=adaptive)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fraction", [1.0, 0.1])
def test_filter_2d_matches_the_official_pytorch_module(fraction):
    """Our filter on a non-square grid against TorchAFNO2D (official afno2d.py), which flattens tokens."""
    channels, blocks, grid = 16, 4, (6, 9)
    x = random_input((2, *grid, channels), seed=11)
    params = random_params(channels, blocks, factor=2, scale=0.3)
    torch_layer = TorchAFNO2D(channels, blocks, 0.01, fraction, hidden_size_factor=2)
    with torch.no_grad():
        for name, value in params.items():
            getattr(torch_layer, name).copy_(torch.from_numpy(value))
        expected = torch_layer(torch.from_numpy(x).reshape(2, -1, channels), spatial_size=grid).reshape(x.shape)
    layer = SpectralFilter2D(num_blocks=blocks, hidden_size_factor=2, hard_thresholding_fraction=fraction)
    out = layer.apply({"params": params}, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(out), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_init_shapes_and_scale():
    layer = SpectralFilter2D(num_blocks=4, hidden_size_factor=2)
    params = layer.init(jax.random.key(0), jnp.zeros((1, 8, 8, 64)))["params"]
    assert {k: v.shape for k, v in params.items()} == {
        "w1": (2, 4, 16, 32),
        "b1": (2, 4, 32),
        "w2": (2, 4, 32, 16),
        "b2": (2, 4, 16),
    }
    assert all(v.dtype == jnp.float32 for v in params.values())
    std = np.std(np.concatenate([np.ravel(v) for v in params.values()]))
    assert 0.018 < std < 0.022  # 0.02 N(0, 1)


def test_bfloat16_input_is_filtered_in_float32_and_returned_in_bfloat16():
    x = random_input((2, 5, 6, 8), seed=2)
    params = random_params(8, 2)
    layer = SpectralFilter2D(num_blocks=2)
    out = layer.apply({"params": params}, jnp.asarray(x, jnp.bfloat16))
    assert out.dtype == jnp.bfloat16
    x_bf16 = np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32))
    np.testing.assert_allclose(np.asarray(out, np.float32), np_filter_2d(x_bf16, params), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("adaptive", [False, True], ids=["afno", "aff"])
def test_gradients_match_finite_differences(adaptive):
    with jax.enable_x64(True):
        x = jnp.asarray(random_input((1, 3, 5, 4), seed=4), jnp.float64)
        params = {k: jnp.asarray(v, jnp.float64) for k, v in random_params(4, 2, scale=0.6).items()}
        layer = SpectralFilter2D(num_blocks=2, adaptive_mask=adaptive, activation="silu", sparsity_threshold=0.001)
        fn = jax.jit(lambda x, params: jnp.sum(jnp.sin(layer.apply({"params": params}, x))))
        assert fn(x, params).dtype == jnp.float64
        check_grads(fn, (x, params), order=1, modes=("rev",), eps=1e-6, atol=1e-5, rtol=1e-5)
        layer_1d = SpectralFilter1D(num_blocks=2, adaptive_mask=adaptive, activation="silu", sparsity_threshold=0.001)
        fn_1d = jax.jit(lambda x, params: jnp.sum(jnp.sin(layer_1d.apply({"params": params}, x))))
        check_grads(fn_1d, (x[:, 0], params), order=1, modes=("rev",), eps=1e-6, atol=1e-5, rtol=1e-5)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match=r"channels \(10\) must be divisible by num_blocks \(4\)"):
        SpectralFilter2D(num_blocks=4).init(jax.random.key(0), jnp.zeros((1, 4, 4, 10)))
    with pytest.raises(ValueError, match=r"channels \(6\) must be divisible by num_blocks \(4\)"):
        SpectralFilter1D(num_blocks=4).init(jax.random.key(0), jnp.zeros((1, 8, 6)))
    with pytest.raises(ValueError, match="num_blocks must be >= 1"):
        SpectralFilter2D(num_blocks=0)
    with pytest.raises(ValueError, match="hard_thresholding_fraction must be in"):
        SpectralFilter2D(hard_thresholding_fraction=0.0)
    with pytest.raises(ValueError, match="hard_thresholding_fraction must be in"):
        SpectralFilter1D(hard_thresholding_fraction=1.5)
    with pytest.raises(ValueError, match="activation must be one of"):
        SpectralFilter2D(activation="gelu")
    with pytest.raises(ValueError, match="sparsity_threshold must be >= 0"):
        SpectralFilter2D(sparsity_threshold=-0.1)
    with pytest.raises(ValueError, match=r"expects \[batch, height, width, channels\]"):
        SpectralFilter2D(num_blocks=1).init(jax.random.key(0), jnp.zeros((4, 4, 8)))
