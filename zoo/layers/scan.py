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
- "sequential": `jax.lax.scan` over single steps (the reference recurrence), run block by block over the batch and
  channels (`jax.lax.map`; blocks of 2,048 state numbers, 128 columns at n = 16, the state `[n, block, channels]`
  in the L1 cache for the whole sequence), with a written-out derivative: the forward keeps only its inputs, and
  the backward recomputes each block's states, then runs one reverse loop of the adjoint recurrence that reads
  every gradient off them.
  Against the whole-batch loop it replaced (which kept `[length, batch, d, n]` states; `python -m benchmarks.scan
  --methods sequential --no-torch --repeats 3 --batch B --width W --lengths L`, 2 cores, ms forward + backward,
  XLA MB, before -> after): TSM2's variate mixer (B 8064, W 32, L 7) 490 -> 115 ms, 291 -> 29 MB; its time mixer
  (448, 32, 63) 105 -> 49 ms, 74 -> 12 MB; ViM2-T's stages (8, 192, 3136) 632 -> 391 ms, 335 -> 136 MB, (8, 384,
  784) 371 -> 131 ms, 168 -> 34 MB, (8, 768, 49) 45 -> 14 ms, 25 -> 5 MB. Under `jax.vmap` JAX batches the block
  loop and it runs ~6x slower (4 x [8, 784, 192]: 2876 ms against 473 for the same work unbatched): call the scan
  once per slice, as `zoo.mambamixer.S6` does per scan direction.

Default, by measurement (`python -m benchmarks.scan --torch-max-length 4096`, 1 CPU core, batch 2, width 64, n 16;
ms forward / forward + backward, XLA temporaries of the backward in MB):

    length   sequential             chunked (64)            parallel               torch reference loop
    256      0.5 / 1.6 (2)          3.9 / 14.6 (10)         3.4 / 9.0 (29)         10.3 / 170
    1024     1.4 / 6.7 (9)          15.5 / 57.9 (11)        26.5 / 83.2 (117)      60.1 / 2158
    4096     5.4 / 44.2 (37)        62.4 / 227 (17)         134 / 390 (475)        278 / 121956
    16384    21.5 / 176 (148)       229 / 920 (38)          580 / 1580 (1905)      -

"sequential" is the fastest on XLA:CPU by 5-12x (a step is a few fused multiply-adds; the associative scans pay
for log-depth slicing and padding), so it is the default (`DEFAULT_METHOD`). Its backward memory grows linearly
(one state per step of a block), like "parallel"'s (13x smaller); "chunked" stays nearly flat in the length, so
pass `method="chunked"` for long sequences under a memory limit. On GPU/TPU the associative forms are expected to win
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


# The sequential scan runs block by block: `block` rows of the batch times `group` channels, with the state of a
# block laid out `[n, block, group]` (channels minor) and about `_STEP_ELEMENTS` numbers in all. A block's state then
# stays in the core's L1 cache for the whole sequence, and each step is a few vector multiply-adds too small for
# XLA:CPU to split over threads (which costs more than it gains at this size), where a whole-batch step streams
# `[batch, d, n]` through memory several times. Chosen by measurement (`benchmarks.scan --methods sequential@E,...`,
# d = 32 to 384, n = 16; figures in docs/benchmarks.md): 2,048 numbers per step, faster than 1,024 and 4,096+.
_STEP_ELEMENTS = 2048


def _layout(batch: int, d: int, n: int) -> tuple[int, int]:
    """(block, group): rows of the batch and channels per block."""
    columns = max(8, _STEP_ELEMENTS // n)
    group = min(d, columns)
    return max(1, min(batch, columns // group)), group


def _to_blocks(a, block, group, num_groups, minor=False):
    """`[batch, length, k]` -> `[num_groups * num_blocks, length, block, k']`, (`minor`: `[..., k', block]`).

    With `group`, `a` is per channel (k = d): its channels are cut into `num_groups` groups of `group` (zero-padded).
    Without, `a` is shared by the channels (B, C: k = n) and repeated for each group. The batch is zero-padded to a
    multiple of `block` (padded rows and channels have delta = 0: decay 1, no input, a zero state)."""
    batch, length, k = a.shape
    if group:
        a = jnp.pad(a, ((0, 0), (0, 0), (0, num_groups * group - k))).reshape(batch, length, num_groups, group)
        a = a.transpose(2, 0, 1, 3)
    else:
        a = jnp.broadcast_to(a, (num_groups, batch, length, k))
    num_blocks = -(-batch // block)
    a = jnp.pad(a, ((0, 0), (0, num_blocks * block - batch), (0, 0), (0, 0)))
    a = a.reshape(num_groups, num_blocks, block, length, a.shape[-1])
    a = a.transpose(0, 1, 3, 4, 2) if minor else a.transpose(0, 1, 3, 2, 4)
    return a.reshape(num_groups * num_blocks, *a.shape[2:])


def _from_blocks(a, batch, num_groups, d=None, minor=False):
    """The inverse of `_to_blocks` -> `[batch, length, k]`: with `d` the channel groups joined (the padding cut),
    without the groups' parts summed (the gradient of an input shared by the channels)."""
    a = a.reshape(num_groups, -1, *a.shape[1:])
    a = a.transpose(0, 1, 4, 2, 3) if minor else a.transpose(0, 1, 3, 2, 4)  # [groups, blocks, block, length, k]
    a = a.reshape(num_groups, -1, *a.shape[3:])[:, :batch]
    if d is None:
        return jnp.sum(a, axis=0)
    return a.transpose(1, 2, 0, 3).reshape(batch, a.shape[2], -1)[..., :d]


def _block_forward(u, delta, A_t, B, C, keep_states=False):
    """One block of `block` rows and `group` channels, time-major: `u, delta [length, block, group]`, `A_t [n, group]`,
    `B, C [length, n, block]` -> `y [length, block, group]` (with `keep_states` also the state before each step,
    `[length, n, block, group]`)."""

    def step(h, inputs):
        u_t, delta_t, B_t, C_t = inputs
        h_new = jnp.exp(delta_t * A_t[:, None, :]) * h + (delta_t * u_t) * B_t[:, :, None]
        y_t = jnp.sum(h_new * C_t[:, :, None], axis=0)
        return h_new, ((y_t, h) if keep_states else y_t)

    h0 = jnp.zeros((A_t.shape[0], *u.shape[1:]), jnp.float32)
    return jax.lax.scan(step, h0, (u, delta, B, C))[1]


def _block_backward(u, delta, A_t, B, C, grad_y):
    """Gradients of one block (shapes as `_block_forward`, `grad_y` like `y`): the forward again, keeping the
    states, then one reverse loop of the adjoint recurrence g_t = dL/dh_t = grad_y_t C_t + exp(delta_{t+1} A)
    g_{t+1}, each step's gradients read off g_t (h_{t-1} g_t is the decay's, g_t the drive's)."""
    _, h_prev = _block_forward(u, delta, A_t, B, C, keep_states=True)

    def step(carry, inputs):
        g_next, grad_A = carry  # exp(delta_{t+1} A) g_{t+1}, and the sum so far of A's gradient (`[n, group]`)
        u_t, delta_t, B_t, C_t, gy_t, h_prev_t = inputs
        decay = jnp.exp(delta_t * A_t[:, None, :])
        drive_scale = delta_t * u_t
        h_t = decay * h_prev_t + drive_scale * B_t[:, :, None]
        g = gy_t * C_t[:, :, None] + g_next
        grad_log_decay = g * h_prev_t * decay  # dL/d(delta_t A)
        g_dot_B = jnp.sum(g * B_t[:, :, None], axis=0)
        grads_t = (
            delta_t * g_dot_B,
            jnp.sum(grad_log_decay * A_t[:, None, :], axis=0) + u_t * g_dot_B,
            jnp.sum(g * drive_scale, axis=-1),
            jnp.sum(h_t * gy_t, axis=-1),
        )
        return (decay * g, grad_A + jnp.sum(grad_log_decay * delta_t, axis=1)), grads_t

    carry = (jnp.zeros_like(h_prev[0]), jnp.zeros_like(A_t))
    (_, grad_A), grads = jax.lax.scan(step, carry, (u, delta, B, C, grad_y, h_prev), reverse=True)
    return grads, grad_A


def _blocked(u, delta, A, B, C, *more):
    """The blocks of `_sequential`'s inputs (and of `more`, per-channel arrays like `u`), for `jax.lax.map`."""
    (batch, _, d), n = u.shape, A.shape[1]
    block, group = _layout(batch, d, n)
    num_groups = -(-d // group)
    channels = lambda a: _to_blocks(a, block, group, num_groups)
    shared = lambda a: _to_blocks(a, block, None, num_groups, minor=True)
    A_t = jnp.pad(A, ((0, num_groups * group - d), (0, 0))).reshape(num_groups, group, n).transpose(0, 2, 1)
    A_t = jnp.repeat(A_t, -(-batch // block), axis=0)  # [blocks, n, group]
    return (channels(u), channels(delta), A_t, shared(B), shared(C), *map(channels, more)), num_groups


@jax.custom_vjp
def _sequential(u, delta, A, B, C):
    """`u, delta [batch, length, d]`, `A [d, n]`, `B, C [batch, length, n]` -> `y [batch, length, d]`."""
    return _sequential_fwd(u, delta, A, B, C)[0]


def _sequential_fwd(u, delta, A, B, C):
    blocks, num_groups = _blocked(u, delta, A, B, C)
    y = jax.lax.map(lambda x: _block_forward(*x), blocks)
    # Only the inputs are kept: the backward recomputes each block's states (memory independent of n).
    return _from_blocks(y, u.shape[0], num_groups, u.shape[2]), (u, delta, A, B, C)


def _sequential_bwd(residuals, grad_y):
    u, delta, A, B, C = residuals
    (batch, _, d), n = u.shape, A.shape[1]
    blocks, num_groups = _blocked(u, delta, A, B, C, grad_y)
    (grad_u, grad_delta, grad_B, grad_C), grad_A = jax.lax.map(lambda x: _block_backward(*x), blocks)
    grad_A = jnp.sum(grad_A.reshape(num_groups, -1, n, grad_A.shape[-1]), axis=1)  # [groups, n, group]
    return (
        _from_blocks(grad_u, batch, num_groups, d),
        _from_blocks(grad_delta, batch, num_groups, d),
        grad_A.transpose(0, 2, 1).reshape(-1, n)[:d],
        _from_blocks(grad_B, batch, num_groups, minor=True),
        _from_blocks(grad_C, batch, num_groups, minor=True),
    )


_sequential.defvjp(_sequential_fwd, _sequential_bwd)


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
