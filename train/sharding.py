"""Devices, processes and shardings, all through `jax.sharding` and `jax.distributed`.

One `Mesh` over every device (of every process) with a single `data` axis: batches are split along it,
parameters are replicated, or (FSDP-style, for large models) split along it on their largest divisible axis.
"""

import logging
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

_log = logging.getLogger(__name__)


def initialize_distributed(cfg) -> None:
    """Calls `jax.distributed.initialize` when several processes are configured, else does nothing.

    The coordinator address, process count and process id come from `cfg` (`coordinator_address`,
    `num_processes`, `process_id`), falling back to `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and
    `JAX_PROCESS_ID`. Must run before anything touches a device.
    """
    address = cfg.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    num_processes = cfg.num_processes or int(os.environ.get("JAX_NUM_PROCESSES", "0"))
    process_id = cfg.process_id if cfg.process_id >= 0 else int(os.environ.get("JAX_PROCESS_ID", "-1"))
    if not address and num_processes <= 1:
        return
    if not address or num_processes < 1 or process_id < 0:
        raise ValueError(
            "multi-process training needs a coordinator address, the number of processes and this process's id "
            f"(got address={address!r}, num_processes={num_processes}, process_id={process_id}); set "
            "config.distributed.* or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID"
        )
    if jax.distributed.is_initialized():
        return
    jax.distributed.initialize(
        coordinator_address=address,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=int(cfg.timeout_s),
    )
    _log.info("process %d of %d, %d global devices", jax.process_index(), jax.process_count(), jax.device_count())


def make_mesh() -> Mesh:
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def state_shardings(abstract_state, mesh: Mesh, *, fsdp: bool = False, fsdp_min_size: int = 2**18):
    """Replicated shardings, or with `fsdp` each leaf of at least `fsdp_min_size` elements split over `data`
    along its largest axis divisible by the number of devices."""
    n = mesh.shape["data"]

    def choose(leaf):
        if not fsdp or n == 1 or np.prod(leaf.shape, dtype=np.int64) < fsdp_min_size:
            return replicated(mesh)
        axes = sorted(range(len(leaf.shape)), key=lambda a: -leaf.shape[a])
        for axis in axes:
            if leaf.shape[axis] % n == 0:
                spec = [None] * len(leaf.shape)
                spec[axis] = "data"
                return NamedSharding(mesh, P(*spec))
        return replicated(mesh)

    return jax.tree.map(choose, abstract_state)


def to_global(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """This process's rows of a global batch -> global arrays split over the `data` axis."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}
