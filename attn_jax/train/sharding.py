"""Device mesh and shardings, no pmap: a `data` x `model` mesh over every device of every
process (`config.mesh.model` devices on the model axis, the rest on data).

The batch is sharded on the `data` axis. Parameters and optimizer state (`config.sharding`):
- "replicated": a full copy on every device (plain data parallelism);
- "fsdp": each large leaf is split over the `data` axis along its largest dimension that the axis
  size divides (ZeRO-3 / FSDP: XLA gathers a weight where it is used and reduce-scatters its
  gradient), so a device holds about 1/data of the train state;
- "fsdp_tp": tensor parallelism over the `model` axis along the dimensions that the model names
  through Flax's logical axes (`TP_RULES`: attention heads and MLP hidden units, the Megatron
  column/row split), then FSDP over the mesh axes a leaf has left (`data`; `data` x `model` for
  the leaves tensor parallelism does not split), about 1/(data x model) of the state per device.
Each process feeds its own slice of the global batch and `jax.make_array_from_process_local_data`
assembles the global array, so the same code runs on one CPU, N forced host devices or many hosts.
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


SHARDINGS = ("replicated", "fsdp", "fsdp_tp")
# Leaves smaller than this stay replicated under fsdp: gathering a bias costs more than it saves.
FSDP_MIN_SIZE = 2**12
# Flax logical axis names of the transformer blocks -> mesh axes, for fsdp_tp.
TP_RULES = (("heads", "model"), ("mlp", "model"))


def make_mesh(model: int = 1) -> Mesh:
    """A `data` x `model` mesh over all devices of all processes (`model` on the second axis)."""
    devices = np.asarray(jax.devices())
    if model < 1 or devices.size % model:
        raise ConfigError(
            f"config.mesh.model={model} does not divide the {devices.size} devices; use a "
            "divisor of the device count"
        )
    return Mesh(devices.reshape(-1, model), ("data", "model"))


def mesh_from_config(config: Mapping) -> Mesh:
    mode = config.get("sharding", "replicated")
    if mode not in SHARDINGS:
        raise ConfigError(f"config.sharding must be one of {', '.join(SHARDINGS)}; got {mode!r}")
    model = int((config.get("mesh") or {}).get("model", 1))
    if model > 1 and mode != "fsdp_tp":
        raise ConfigError(
            f"config.mesh.model={model} needs config.sharding=fsdp_tp (the model axis carries "
            "tensor parallelism)"
        )
    return make_mesh(model)


def _fsdp_dim(shape: tuple[int, ...], size: int, taken: list) -> int | None:
    """The largest free dimension of `shape` that `size` divides (ties: the later one)."""
    best = None
    for d, n in enumerate(shape):
        if taken[d] is None and n % size == 0 and (best is None or n >= shape[best]):
            best = d
    return best


def leaf_spec(
    shape: tuple[int, ...], mesh: Mesh, mode: str, tp: tuple | None = None
) -> PartitionSpec:
    """The PartitionSpec of one parameter-shaped leaf under `mode`.

    `tp` is the leaf's mesh-axis spec from its logical axes (None entries where not split). Under
    fsdp_tp, the mesh axes that tensor parallelism leaves unused (all of them for a leaf it does
    not split: embeddings, classifier heads) shard the leaf FSDP-style too, so that every device
    holds about 1/(data x model) of each large leaf, split or not.
    """
    spec: list = [None] * len(shape)
    if mode == "fsdp_tp" and tp is not None:
        for d, axis in enumerate(tp[: len(shape)]):
            if axis is not None and shape[d] % mesh.shape[axis] == 0:
                spec[d] = axis
    if mode not in ("fsdp", "fsdp_tp") or int(np.prod(shape)) < FSDP_MIN_SIZE:
        return PartitionSpec(*spec)
    free = [a for a in ("data", "model") if a not in spec and mesh.shape[a] > 1]
    if not free:
        return PartitionSpec(*spec)
    # All free axes on one dimension when it divides; else each axis on its own dimension.
    d = _fsdp_dim(shape, int(np.prod([mesh.shape[a] for a in free])), spec)
    if d is not None:
        spec[d] = free[0] if len(free) == 1 else tuple(free)
        return PartitionSpec(*spec)
    for axis in free:
        d = _fsdp_dim(shape, mesh.shape[axis], spec)
        if d is not None:
            spec[d] = axis
    return PartitionSpec(*spec)


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
