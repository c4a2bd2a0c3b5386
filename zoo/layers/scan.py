"""The selective scan of Mamba's S6 layer (Gu and Dao, arXiv 2312.00752, Algorithm 2) and its initialisers.

    h_t = exp(delta_t A) * h_{t-1} + delta_t B_t u_t        (zero-order hold for A, Euler step for B, as the
    y_t = C_t . h_t + D u_t                                  reference `selective_scan_ref` of state-spaces/mamba)

with `u, delta [batch, length, d]`, `A [d, n]`, `B, C [batch, length, n]`, `D [d]`: every channel of `u` has its
own `n` states, which all channels read and write through the shared, input-dependent `B_t` and `C_t`. The state
and all arithmetic are float32 whatever the input dtype; `y` comes back in `u`'s dtype.

The recurrence is linear in h, so steps compose associatively: (a1, b1) then (a2, b2) is (a1 a2, a2 b1 + b2) for
h -> a h + b. Three ways to evaluate it (`method=`), identical up to float rounding:
- "parallel": `jax.lax.associative_scan` over the whole sequence (log-depth; keeps `[batch, length, d, n]` decays
  and states, and about as much again for the backward pass);
- "chunked": `jax.lax.scan` over chunks of `chunk_size` steps carrying the state `[batch, d, n]`, an associative
  scan inside each chunk; the chunk body is wrapped in `jax.checkpoint`, so the backward pass keeps only the chunk
  inputs and one state per chunk, and recomputes the rest chunk by chunk (memory bounded by the chunk size);
- "sequential": `jax.lax.scan` over single steps (the reference recurrence), with a written-out derivative: the
  forward keeps the state before each step, `[length, batch, d, n]`, and the backward is one reverse loop of the
  adjoint recurrence that recomputes each step's state and reads every gradient off it. Against autodiff of the
  same loop (`python -m benchmarks.scan --methods sequential,autodiff --no-torch`, 2 cores; ms forward + backward,
  XLA temporaries): batch 2, width 64, n 16, length 256: 5.4 vs 5.5 ms, 2 vs 7 MB; length 1024: 18.9 vs 38.9 ms,
  9 vs 27 MB; TSM2's time mixer (`--batch 448 --width 32 --lengths 63`): 209 vs 292 ms, 74 vs 190 MB; ViM2-T's
  first stage (`--batch 8 --width 192 --lengths 3136`): 872 vs 1407 ms, 335 vs 962 MB.

Default, by measurement (`python -m benchmarks.scan --torch-max-length 4096`, 2 CPU cores shared with a training
job, batch 2, width 64, n 16; ms forward / forward + backward, XLA temporaries of the backward in MB):

    length   sequential             chunked (64)            parallel               torch reference loop
    256      0.7 / 2.7 (2)          4.5 / 15.3 (10)         3.2 / 16.9 (29)        9.5 / 161
    1024     2.6 / 11.4 (9)         18.4 / 63.7 (11)        33.7 / 80.0 (117)      54.0 / 2102
    4096     10.6 / 63.7 (37)       80.0 / 279 (17)         123 / 351 (475)        259 / 98256
    16384    41.2 / 243 (148)       300 / 1055 (38)         544 / 1502 (1905)      -

"sequential" is the fastest on XLA:CPU by 4-7x (a step is a few fused multiply-adds; the associative scans pay
for log-depth slicing and padding), so it is the default (`DEFAULT_METHOD`). Its backward memory grows linearly
(one state per step), like "parallel"'s (13x smaller); "chunked" stays nearly flat in the length, so pass
`method="chunked"` for long sequences under a memory limit. On GPU/TPU the associative forms are expected to win
(parallel depth); not measured here, so the models expose `scan_method` to choose.
"""

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

METHODS = ("sequential", "chunked", "parallel")
DEFAULT_METHOD = "sequential"
DEFAULT_CHUNK_SIZE = 64


def _combine(left, right):
    """Composition of two affine steps h -> a h + b (left first, then right)."""
    a_left, b_left = left
    a_right, b_right = right
    return a_left * a_right, a_right * b_left + b_right


def _steps(u, delta, A, B):
    """Per-step decay exp(delta A) and input delta B u, both `[batch, length, d, n]`."""
    decay = jnp.exp(delta[..., None] * A)
    drive = (delta * u)[..., None] * B[:, :, None, :]
    return decay, drive


def _readout(h, C):
    """y_t = C_t . h_t: `[batch, length, d, n]`, `[batch, length, n]` -> `[batch, length, d]`."""
    return jnp.sum(h * C[:, :, None, :], axis=-1)


def _parallel(u, delta, A, B, C):
    decay, drive = _steps(u, delta, A, B)
    _, h = jax.lax.associative_scan(_combine, (decay, drive), axis=1)
    return _readout(h, C)


@jax.custom_vjp
def _sequential_time_major(u, delta, A, B, C):
    """`u, delta [length, batch, d]`, `A [d, n]`, `B, C [length, batch, n]` -> `y [length, batch, d]`."""
    return _sequential_fwd(u, delta, A, B, C)[0]


def _sequential_fwd(u, delta, A, B, C):
    def step(h, inputs):
        u_t, delta_t, B_t, C_t = inputs  # [batch, d], [batch, d], [batch, n], [batch, n]
        h_new = jnp.exp(delta_t[..., None] * A) * h + (delta_t * u_t)[..., None] * B_t[:, None, :]
        return h_new, (jnp.sum(h_new * C_t[:, None, :], axis=-1), h)

    h0 = jnp.zeros((u.shape[1], u.shape[2], A.shape[-1]), jnp.float32)
    _, (y, h_prev) = jax.lax.scan(step, h0, (u, delta, B, C))
    return y, (u, delta, A, B, C, h_prev)


def _sequential_bwd(residuals, grad_y):
    # One reverse loop: the adjoint g_t = dL/dh_t = grad_y_t C_t + exp(delta_{t+1} A) g_{t+1}, with h_t recomputed
    # from the stored h_{t-1}, and each step's gradients read off g_t (h_{t-1} g_t is the decay's, g_t the drive's).
    u, delta, A, B, C, h_prev = residuals

    def step(carry, inputs):
        g_next, grad_A = carry  # exp(delta_{t+1} A) g_{t+1}, and the sum so far of A's gradient
        u_t, delta_t, B_t, C_t, gy_t, h_prev_t = inputs
        decay = jnp.exp(delta_t[..., None] * A)
        drive_scale = delta_t * u_t
        h_t = decay * h_prev_t + drive_scale[..., None] * B_t[:, None, :]
        g = gy_t[..., None] * C_t[:, None, :] + g_next
        grad_log_decay = g * h_prev_t * decay  # dL/d(delta_t A)
        g_dot_B = jnp.sum(g * B_t[:, None, :], axis=-1)
        grads_t = (
            delta_t * g_dot_B,
            jnp.sum(grad_log_decay * A, axis=-1) + u_t * g_dot_B,
            jnp.sum(g * drive_scale[..., None], axis=1),
            jnp.sum(h_t * gy_t[..., None], axis=1),
        )
        return (decay * g, grad_A + jnp.sum(grad_log_decay * delta_t[..., None], axis=0)), grads_t

    carry = (jnp.zeros_like(h_prev[0]), jnp.zeros_like(A))
    (_, grad_A), (grad_u, grad_delta, grad_B, grad_C) = jax.lax.scan(
        step, carry, (u, delta, B, C, grad_y, h_prev), reverse=True
    )
    return grad_u, grad_delta, grad_A, grad_B, grad_C


_sequential_time_major.defvjp(_sequential_fwd, _sequential_bwd)


def _sequential(u, delta, A, B, C):
    # Time-major inside, so that the `[length, batch, d, n]` states need no transpose; the derivative is written
    # out (`_sequential_bwd`) so that the backward loop, like the forward, is one multiply-add per step.
    time_major = [jnp.swapaxes(a, 0, 1) for a in (u, delta, B, C)]
    return jnp.swapaxes(_sequential_time_major(*time_major[:2], A, *time_major[2:]), 0, 1)


def _chunked(u, delta, A, B, C, chunk_size):
    batch, length, d = u.shape
    chunk = max(1, min(chunk_size, length))
    num_chunks = -(-length // chunk)
    pad = num_chunks * chunk - length
    if pad:
        # Padding steps have delta = 0: decay 1 and input 0, so they leave the state unchanged.
        widths = ((0, 0), (0, pad), (0, 0))
        u, delta, B, C = (jnp.pad(a, widths) for a in (u, delta, B, C))

    def chunks(a):  # [batch, length, k] -> [num_chunks, batch, chunk, k]
        return jnp.swapaxes(a.reshape(batch, num_chunks, chunk, a.shape[-1]), 0, 1)

    @jax.checkpoint
    def body(h0, inputs):
        u_c, delta_c, B_c, C_c = inputs
        decay, drive = _steps(u_c, delta_c, A, B_c)
        cumulative, h_local = jax.lax.associative_scan(_combine, (decay, drive), axis=1)
        h = cumulative * h0[:, None] + h_local  # the chunk's states, given the state h0 before it
        return h[:, -1], _readout(h, C_c)

    h0 = jnp.zeros((batch, d, A.shape[-1]), jnp.float32)
    _, y = jax.lax.scan(body, h0, tuple(chunks(a) for a in (u, delta, B, C)))
    y = jnp.swapaxes(y, 0, 1).reshape(batch, num_chunks * chunk, d)
    return y[:, :length]


def _check(u, delta, A, B, C, D, method, chunk_size) -> None:
    shape = lambda a: tuple(getattr(a, "shape", ()))
    if getattr(u, "ndim", 0) != 3:
        raise ValueError(f"selective_scan: u must be [batch, length, d], got shape {shape(u)}")
    batch, length, d = u.shape
    if shape(delta) != shape(u):
        raise ValueError(f"selective_scan: delta must have u's shape {shape(u)}, got {shape(delta)}")
    if getattr(A, "ndim", 0) != 2 or A.shape[0] != d:
        raise ValueError(f"selective_scan: A must be [d, n] with d = {d}, got shape {shape(A)}")
    n = A.shape[1]
    for name, a in (("B", B), ("C", C)):
        if shape(a) != (batch, length, n):
            raise ValueError(
                f"selective_scan: {name} must be [batch, length, n] = {(batch, length, n)}, got {shape(a)}"
            )
    if D is not None and shape(D) != (d,):
        raise ValueError(f"selective_scan: D must be [d] = ({d},), got {shape(D)}")
    if method not in METHODS:
        raise ValueError(f"selective_scan: method must be one of {METHODS}, got {method!r}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"selective_scan: chunk_size must be a positive int, got {chunk_size!r}")


def selective_scan(
    u: jax.Array,
    delta: jax.Array,
    A: jax.Array,
    B: jax.Array,
    C: jax.Array,
    D: jax.Array | None = None,
    reverse: bool = False,
    *,
    method: str = DEFAULT_METHOD,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> jax.Array:
    """S6 scan: `u, delta [batch, length, d]`, `A [d, n]`, `B, C [batch, length, n]`, `D [d]` or None ->
    `y [batch, length, d]` in `u`'s dtype (float32 state and arithmetic).

    `delta` must already be positive (softplus applied) and `A` is used as given (Mamba passes -exp(A_log)).
    `reverse=True` runs the recurrence from the last step to the first (h_t depends on steps t..length-1).
    """
    _check(u, delta, A, B, C, D, method, chunk_size)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    out_dtype = u.dtype
    u, delta, A, B, C = map(f32, (u, delta, A, B, C))
    if reverse:
        u, delta, B, C = (jnp.flip(a, axis=1) for a in (u, delta, B, C))
    if method == "parallel":
        y = _parallel(u, delta, A, B, C)
    elif method == "sequential":
        y = _sequential(u, delta, A, B, C)
    else:
        y = _chunked(u, delta, A, B, C, chunk_size)
    if D is not None:
        y = y + u * f32(D)
    if reverse:
        y = jnp.flip(y, axis=1)
    return y.astype(out_dtype)


# ---------------------------------------------------------------------------------------------------------------
# Initialisers of Mamba's S6 parameters (state-spaces/mamba `mamba_simple.py`), as flax initialisers.


def a_log_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """A_log `[..., d, n]` = log(1, 2, ..., n) in every channel (S4D-real; A = -exp(A_log) = -(1..n)). No randomness."""
    del key
    return jnp.broadcast_to(jnp.log(jnp.arange(1, shape[-1] + 1, dtype=jnp.float32)), shape).astype(dtype)


def dt_bias_init(dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4) -> Callable:
    """The dt projection's bias: softplus^-1(dt) with dt log-uniform in [dt_min, dt_max], floored at dt_init_floor,
    so that softplus(bias) starts at dt."""
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"dt_bias_init: need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        log_min, log_max = math.log(dt_min), math.log(dt_max)
        dt = jnp.exp(jax.random.uniform(key, shape, jnp.float32) * (log_max - log_min) + log_min)
        dt = jnp.maximum(dt, dt_init_floor)
        return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)  # inverse of softplus

    return init


def dt_kernel_init(dt_rank: int, dt_scale: float = 1.0) -> Callable:
    """The dt projection's kernel `[dt_rank, d]`: U(-s, s) with s = dt_scale / sqrt(dt_rank) (Mamba's "random")."""
    bound = dt_scale * dt_rank**-0.5

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, jnp.float32, -bound, bound).astype(dtype)

    return init
