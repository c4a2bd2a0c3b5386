"""Channel-group shifts (MS-MLP's "shifting"): split the channels into groups and roll each group along one spatial
axis by its own distance, circularly, exactly as `torch.roll` on each `torch.chunk` of the channels.

Measured on XLA:CPU (2 shared cores, jaxlib 0.10) at MS-MLP-T stage-1 shapes, `[8, 56, 56, 96]`, groups
20,20,20,20,16, shifts -2..2, both axes, best of 20 (forward / forward + backward of a scalar loss):
per-group `jnp.roll` (static slices + concatenate) then one channel concatenate: 9.0 / 43 ms; the same written as
explicit slices: 11.9 / 114 ms (same ops, measurement noise under load); one fused gather
(`take_along_axis` with a per-channel index): 10.5 / 292 ms; a sum over the distinct shifts of whole-tensor rolls
masked per channel: 13.2 / 298 ms; one circular pad by the largest shift then per-group slices: 96 / 204 ms.
All are exact (bit-equal); the per-group roll is kept.
"""

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp


def channel_groups(channels: int, groups: int) -> tuple[int, ...]:
    """Group sizes of `torch.chunk(channels, groups)`: ceil(channels / groups) each, a shorter last one
    (96, 5 -> (20, 20, 20, 20, 16); `jnp.array_split` would give (20, 19, 19, 19, 19)).

    torch.chunk may return fewer than `groups` chunks (6, 4 -> (2, 2, 2)); that is refused with a ValueError, since
    every group needs its own shift."""
    if channels < 1 or groups < 1:
        raise ValueError(f"channel_groups needs channels >= 1 and groups >= 1, got {channels}, {groups}")
    size = -(-channels // groups)
    sizes = [size] * (channels // size) + ([channels % size] if channels % size else [])
    if len(sizes) != groups:
        raise ValueError(
            f"{channels} channels do not split into {groups} groups the way torch.chunk does (chunks of {size} give "
            f"{len(sizes)} groups: {tuple(sizes)}); choose a width with at least {groups} chunks"
        )
    return tuple(sizes)


def split_groups(x: jax.Array, group_sizes: Sequence[int]) -> list[jax.Array]:
    """`[..., channels]` -> the list of contiguous channel groups `[..., group_sizes[g]]`."""
    if sum(group_sizes) != x.shape[-1]:
        raise ValueError(f"group sizes {tuple(group_sizes)} do not add up to the {x.shape[-1]} channels")
    bounds = [0]
    for size in group_sizes:
        bounds.append(bounds[-1] + size)
    return [x[..., a:b] for a, b in itertools.pairwise(bounds)]


def roll_groups(x: jax.Array, group_sizes: Sequence[int], shifts: Sequence[int], axis: int) -> list[jax.Array]:
    """The channel groups of `x`, group g rolled by `shifts[g]` along `axis` (element i moves to i + shift, with
    wrap-around, as `torch.roll`)."""
    if len(shifts) != len(group_sizes):
        raise ValueError(f"{len(shifts)} shifts for {len(group_sizes)} channel groups")
    return [jnp.roll(g, int(s), axis) for g, s in zip(split_groups(x, group_sizes), shifts)]


def shift_groups(x: jax.Array, group_sizes: Sequence[int], shifts: Sequence[int], axis: int) -> jax.Array:
    """`x` (e.g. `[batch, height, width, channels]`) with channel group g rolled by `shifts[g]` along `axis`:
    `torch.cat([torch.roll(c, s, axis) for c, s in zip(torch.chunk(x, G, channel_axis), shifts)])`."""
    return jnp.concatenate(roll_groups(x, group_sizes, shifts, axis), axis=-1)
