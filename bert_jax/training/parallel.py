"""Devices and hosts: the only module that knows about them.

Two ways to run the same pure train step:

* ``pmap``: state replicated on every local device (leading device axis), the host batch reshaped to
  ``[local_devices, per_device, ...]``, gradients summed over the named axis ``"batch"``.
* ``jit``: one ``Mesh`` with axes ``("data", "fsdp", "tensor")``; parameters carry logical axis names
  (see `bert_jax.modeling`) and the config's ``logical_axis_rules`` map them to mesh axes; the state
  is created already sharded (``jax.eval_shape`` -> shardings -> ``jax.jit(init, out_shardings=...)``);
  each host's batch slice becomes one global array with ``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Tuple

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

PMAP_AXIS = "batch"
MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Default logical-axis rules: batch over data+fsdp; weights' "embed" dim over fsdp (ZeRO-3 style);
# heads / mlp / vocab over tensor (Megatron style).
DEFAULT_RULES = (
    ("batch", BATCH_AXES),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("embed_out", None),
    ("heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
)


def initialize_distributed(coordinator_address=None, num_processes=None, process_id=None):
    """``jax.distributed.initialize`` when launched as several processes; a no-op for one process.
    On a Cloud TPU VM pod slice every argument is found automatically: pass none."""
    if coordinator_address or (num_processes and num_processes > 1):
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id)


def make_mesh(mesh_shape: Sequence[int] = (-1, 1, 1), devices=None) -> Mesh:
    """A ``("data", "fsdp", "tensor")`` mesh; one -1 entry takes the remaining devices."""
    devices = list(jax.devices() if devices is None else devices)
    shape = list(mesh_shape)
    if len(shape) != 3:
        raise ValueError(f"mesh_shape={tuple(shape)} must have 3 entries (data, fsdp, tensor)")
    known = int(np.prod([s for s in shape if s != -1]))
    if shape.count(-1) > 1 or known <= 0 or len(devices) % known:
        raise ValueError(f"mesh_shape={tuple(mesh_shape)} does not fit {len(devices)} devices")
    shape = [len(devices) // known if s == -1 else s for s in shape]
    if int(np.prod(shape)) != len(devices):
        raise ValueError(f"mesh_shape={tuple(shape)} uses {int(np.prod(shape))} of {len(devices)} devices")
    from jax.experimental import mesh_utils
    try:
        arr = mesh_utils.create_device_mesh(shape, devices)
    except (ValueError, AssertionError, NotImplementedError):
        arr = np.asarray(devices).reshape(shape)
    return Mesh(arr, MESH_AXES)


def rules_from_config(rules) -> Tuple:
    return tuple((name, tuple(axes) if isinstance(axes, (list, tuple)) else axes) for name, axes in rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES))


def shardings_of(init_fn: Callable[[jax.Array], Any], rng, mesh: Mesh, rules) -> Any:
    """Shardings of ``init_fn(rng)``'s (unboxed) output, from its logical axis names; allocates nothing."""
    abstract = jax.eval_shape(init_fn, rng)
    specs = nn.get_partition_spec(abstract)
    return nn.logical_to_mesh_sharding(specs, mesh, rules_from_config(rules))


def create_sharded(init_fn: Callable[[jax.Array], Any], rng, mesh: Mesh, rules) -> Tuple[Any, Any]:
    """Runs ``init_fn(rng)`` (which may return boxed, logically-partitioned params inside any pytree)
    already sharded over ``mesh``; returns ``(unboxed tree, its shardings)``."""
    shardings = shardings_of(init_fn, rng, mesh, rules)
    tree = jax.jit(lambda r: nn.meta.unbox(init_fn(r)), out_shardings=shardings)(rng)
    return tree, shardings


def global_batch_from_host(batch, mesh: Mesh):
    """This host's slice of the batch (numpy, [per_host, ...]) -> global arrays sharded on batch."""
    sharding = batch_sharding(mesh)
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def shard_for_pmap(batch):
    """[per_host, ...] -> [local_devices, per_device, ...]."""
    n = jax.local_device_count()

    def split(x):
        x = np.asarray(x)
        if x.shape[0] % n:
            raise ValueError(f"host batch of {x.shape[0]} is not divisible by {n} local devices")
        return x.reshape(n, x.shape[0] // n, *x.shape[1:])
    return jax.tree_util.tree_map(split, batch)


def _local_device_sharding() -> NamedSharding:
    """Leading axis split over this host's devices: the layout pmap consumes and produces."""
    return NamedSharding(Mesh(np.asarray(jax.local_devices()), (PMAP_AXIS,)), P(PMAP_AXIS))


def replicate(tree):
    """A copy of ``tree`` on every local device, stacked on a leading device axis (for pmap)."""
    n, sharding = jax.local_device_count(), _local_device_sharding()
    return jax.tree_util.tree_map(
        lambda x: jax.device_put(np.broadcast_to(np.asarray(jax.device_get(x)), (n,) + np.shape(x)), sharding),
        tree)


def put_pmap_batch(batch):
    """Host batch [per_host, ...] -> device arrays [local_devices, per_device, ...] for pmap."""
    sharding = _local_device_sharding()
    return jax.tree_util.tree_map(lambda x: jax.device_put(x, sharding), shard_for_pmap(batch))


def unreplicate(tree):
    return jax.tree_util.tree_map(lambda x: x[0], tree)


def check_batch_layout(global_batch_size: int, grad_accum_steps: int, num_devices: int = None,
                       num_processes: int = None) -> Tuple[int, int]:
    """Validates the global-batch arithmetic; returns (per_host, per_device) example counts per step.
    Each micro-batch of ``global_batch_size / grad_accum_steps`` examples must split evenly over the devices."""
    num_devices = num_devices or jax.device_count()
    num_processes = num_processes or jax.process_count()
    k = int(grad_accum_steps)
    if global_batch_size <= 0 or k <= 0 or global_batch_size % (num_devices * k):
        raise ValueError(
            f"global_batch_size={global_batch_size} must be divisible by devices x grad_accum_steps = "
            f"{num_devices} x {k} = {num_devices * k}; e.g. use {max(1, global_batch_size // (num_devices * k)) * num_devices * k}")
    return global_batch_size // num_processes, global_batch_size // num_devices
