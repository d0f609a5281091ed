"""Device mesh and shardings: data parallel over every device of every process, no pmap.

The batch is sharded on the `data` axis; parameters and optimizer state are replicated. Each process
feeds its own slice of the global batch and `jax.make_array_from_process_local_data` assembles the
global array, so the same code runs on one CPU, N forced host devices or many hosts.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from attn_jax.config import ConfigError


def initialize_distributed(dist_cfg: Mapping) -> None:
    """Joins the multi-process job when the config asks for more than one process.

    `auto`: the process count, this process's id and the coordinator come from the cluster's
    environment, as JAX detects them (SLURM, Cloud TPU pods, Kubernetes with the `kubernetes`
    package, Open MPI), so one command line serves every process of the job.
    """
    if jax.distributed.is_initialized():
        return
    # CPU devices of different processes talk over gloo (the default, none, cannot run
    # cross-process collectives); GPUs and TPUs ignore the setting. Probing for an accelerator
    # here would initialize the backends, which must not happen before `initialize`.
    if dist_cfg.get("auto", False):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        try:
            jax.distributed.initialize()
        except (ValueError, RuntimeError) as e:
            raise ConfigError(
                "config.distributed.auto found no cluster to join "
                f"({str(e).splitlines()[0][:120]}); run under srun, on a TPU pod or in a "
                "Kubernetes job, or give num_processes, process_id and coordinator_address"
            ) from None
        return
    num = int(dist_cfg.get("num_processes", 1))
    if num <= 1:
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=dist_cfg["coordinator_address"],
        num_processes=num,
        process_id=int(dist_cfg["process_id"]),
    )


def make_mesh() -> Mesh:
    """A 1-D mesh named `data` over all devices of all processes."""
    return Mesh(np.asarray(jax.devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec("data"))


def check_batch_size(
    global_batch: int, mesh: Mesh, *, microbatches: int = 1, key: str = "batch_size"
) -> None:
    """The global batch must split evenly over devices, processes and micro-batches; `key` names
    the config key in the error ("batch_size" or "eval_batch_size")."""
    devices, processes = mesh.devices.size, jax.process_count()
    if microbatches < 1:
        raise ConfigError(f"microbatches must be >= 1, got {microbatches}")
    unit = devices * microbatches
    if global_batch % unit or global_batch % processes:
        raise ConfigError(
            f"{key} {global_batch} does not split into {microbatches} micro-batch(es) over "
            f"{devices} device(s) in {processes} process(es); set --config.{key} to a "
            f"multiple of {unit}"
        )


def to_global(batch: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """This process's slice of the global batch -> globally sharded jax Arrays."""
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
