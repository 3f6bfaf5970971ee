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

import json
import os
import socket
import sys
import threading
import time
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


def initialize_distributed(coordinator_address=None, num_processes=None, process_id=None,
                           initialization_timeout: int = 300, heartbeat_timeout: int = 100,
                           shutdown_timeout: int = 60):
    """``jax.distributed.initialize`` when launched as several processes; a no-op for one process.
    On a Cloud TPU VM pod slice every argument is found automatically: pass none.

    Every wait is bounded. All processes must connect within ``initialization_timeout`` seconds, else
    this process prints one line (what is missing and what to check) and exits with status 4 -- jax
    itself would abort from a C++ thread with a stack trace a few seconds later. A process that sends no
    heartbeat for ``heartbeat_timeout`` seconds (killed, hung host) makes the coordination service stop
    every process (jax's ``Terminating process because the JAX distributed service detected fatal
    errors``, non-zero exit); at exit a process waits at most ``shutdown_timeout`` s for the others."""
    if not (coordinator_address or (num_processes and num_processes > 1)):
        return
    timeout = max(1, int(initialization_timeout))
    done = threading.Event()

    def give_up():
        if done.wait(timeout):
            return
        who = (f"the other {num_processes - 1} process(es) did not all connect"
               if process_id == 0 else "could not register with the coordinator (process 0)")
        print(f"process {process_id} of {num_processes}: {who} at {coordinator_address} within "
              f"--initialization_timeout={timeout} s. Is every process started with the same "
              "--coordinator_address and --num_processes and its own --process_id, and is process 0 running "
              "and reachable? Exiting with status 4.", file=sys.stderr, flush=True)
        os._exit(4)

    threading.Thread(target=give_up, name="bert_jax-init-timeout", daemon=True).start()
    try:
        # jax's own deadline a little later than ours, so that the line above is what the user sees.
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=timeout + 30,
                                   heartbeat_timeout_seconds=int(heartbeat_timeout),
                                   shutdown_timeout_seconds=int(shutdown_timeout))
    finally:
        done.set()


def publish_progress(step: int, where: str, since: float) -> None:
    """Records this process's progress (step, activity, when it began) and that it is alive (now) in the
    coordination service's key-value store (multi-process runs only), so that a `ProgressWatchdog` on
    any process can say which process is missing."""
    client = distributed_client()
    if client is None:
        return
    try:
        client.key_value_set(f"{_PROGRESS_KEY}/{jax.process_index()}",
                             json.dumps({"step": int(step), "where": where, "since": since, "time": time.time(),
                                         "host": socket.gethostname(), "pid": os.getpid()}),
                             allow_overwrite=True)
    except Exception:  # the coordinator is gone; the watchdog / heartbeat will say so
        pass


_PROGRESS_KEY = "bert_jax/progress"


def distributed_client():
    """jax's coordination-service client in a multi-process run (its key-value store), else None."""
    if jax.process_count() == 1:
        return None
    try:
        from jax._src import distributed
        return distributed.global_state.client
    except Exception:
        return None


def progress_report(silent_after_s: float = 15.0, timeout_s: float = 10.0) -> str:
    """One entry per process: its step and activity, for how long, and when it was last heard from (its
    watchdog thread re-publishes every few seconds, so a process not heard from for ``silent_after_s``
    is stopped, hung or gone)."""
    client = distributed_client()
    if client is None:
        return ""
    out = {}

    def fetch():
        try:
            out["items"] = client.key_value_dir_get(_PROGRESS_KEY + "/")
        except Exception as e:
            out["error"] = e
    t = threading.Thread(target=fetch, daemon=True)
    t.start()
    t.join(timeout_s)
    if "items" not in out:
        return (f"the coordinator (process 0) does not answer ({str(out.get('error', 'timed out'))[:200]}); "
                "process 0 is probably gone")
    seen = {}
    for key, value in out["items"]:
        try:
            seen[int(key.rsplit("/", 1)[1])] = json.loads(value)
        except (ValueError, IndexError):
            continue
    now, lines = time.time(), []
    newest = max((v["step"] for v in seen.values()), default=0)
    for i in range(jax.process_count()):
        v = seen.get(i)
        if v is None:
            lines.append(f"process {i}: never reported <- MISSING")
            continue
        flag = ""
        if now - v["time"] > silent_after_s:
            flag = " <- NOT RESPONDING (stopped, hung or dead)"
        elif v["step"] < newest:
            flag = " <- behind"
        lines.append(f"process {i} ({v['host']} pid {v['pid']}): step {v['step']}, {v['where']} for "
                     f"{now - v['since']:.0f} s, last heard {now - v['time']:.0f} s ago{flag}")
    return "; ".join(lines)


class ProgressWatchdog:
    """Bounds every wait of a multi-process run. ``beat(step, where)`` at each step boundary and before
    each save / eval; a thread re-publishes the current activity every few seconds (so silence means
    the whole process is stuck or gone). When no beat comes for ``timeout_s`` seconds (a collective or
    barrier that some process never joins), it prints which process is missing (`progress_report`) and
    ends this process with exit status 3 -- ``os._exit``, since the main thread is stuck inside a
    computation. Does nothing in a one-process run (``timeout_s <= 0`` disables it)."""

    def __init__(self, timeout_s: float, enabled: bool = None):
        self.timeout_s = float(timeout_s)
        self.enabled = (jax.process_count() > 1 if enabled is None else enabled) and self.timeout_s > 0
        self.period = min(5.0, max(0.5, self.timeout_s / 10))
        self._last = time.monotonic()
        self._where = ("starting", 0, time.time())
        self._stop = threading.Event()
        self._thread = None
        if self.enabled:
            self._thread = threading.Thread(target=self._watch, name="bert_jax-watchdog", daemon=True)
            self._thread.start()

    def beat(self, step: int, where: str) -> None:
        self._last = time.monotonic()
        self._where = (where, step, time.time())
        if self.enabled:
            publish_progress(step, where, self._where[2])

    def _watch(self):
        while not self._stop.wait(self.period):
            where, step, since = self._where
            publish_progress(step, where, since)  # "alive", even while the main thread waits
            idle = time.monotonic() - self._last
            if idle > self.timeout_s:
                report = progress_report(silent_after_s=2 * self.period + 5)
                sys.stdout.flush()
                print(f"process {jax.process_index()}: no progress for {idle:.0f} s (> progress_timeout_s="
                      f"{self.timeout_s:.0f}) while {where} at step {step}; the processes last reported: "
                      f"{report or 'nothing'}. Exiting with status 3.", file=sys.stderr, flush=True)
                os._exit(3)

    def close(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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
    """This host's slice of the batch (numpy, [per_host, ...]) -> global arrays sharded on batch, assembled
    from every host's slice with ``jax.make_array_from_process_local_data``."""
    sharding = batch_sharding(mesh)

    def put(path, x):
        x = np.asarray(x)
        try:
            return jax.make_array_from_process_local_data(sharding, x)
        except (ValueError, TypeError) as e:
            raise ValueError(f"cannot place {jax.tree_util.keystr(path)} (host shape {x.shape}) with {sharding}: "
                             f"{e}. The per-host batch must divide over this host's devices along the batch "
                             "axis") from e
    return jax.tree_util.tree_map_with_path(put, batch)


def global_batch_from_whole(batch, mesh: Mesh):
    """The whole global batch, which every host holds (numpy, [global, ...]: fine-tuning's in-memory data,
    where each process reads the same arrays in the same order) -> global arrays sharded on batch; each
    host places only its own devices' rows."""
    sharding = batch_sharding(mesh)

    def put(path, x):
        x = np.asarray(x)
        try:
            return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
        except (ValueError, TypeError) as e:
            raise ValueError(f"cannot place {jax.tree_util.keystr(path)} (shape {x.shape}) with {sharding}: {e}. "
                             "The batch must divide over the devices along the batch axis") from e
    return jax.tree_util.tree_map_with_path(put, batch)


def fetch(x) -> np.ndarray:
    """A global array -> the whole of it as numpy, on every host (an all-gather when other hosts hold
    parts of it)."""
    if getattr(x, "is_fully_addressable", True) or x.is_fully_replicated:
        return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def shard_for_pmap(batch, num_devices: int = None):
    """[per_host, ...] -> [num_devices, per_host / num_devices, ...] (default: this host's devices)."""
    n = jax.local_device_count() if num_devices is None else int(num_devices)

    def split(path, x):
        x = np.asarray(x)
        if x.shape[0] % n:
            raise ValueError(f"per-host batch {x.shape[0]} ({jax.tree_util.keystr(path)}) does not divide over "
                             f"{n} local devices; use a per-host batch that is a multiple of {n}")
        return x.reshape(n, x.shape[0] // n, *x.shape[1:])
    return jax.tree_util.tree_map_with_path(split, batch)


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
    """Host (numpy) copy of a pmap-replicated tree: this process's first device's copy, read with
    ``addressable_data(0)`` -- no computation runs. (``x[0]`` on a device array compiles a gather with
    collectives among the local devices; in a multi-process run those rendezvous through the
    coordination service and hung against Orbax's barriers in the other process.)"""
    def first(x):
        if isinstance(x, jax.Array):
            return np.asarray(x.addressable_data(0)).reshape(x.shape[1:])
        return np.asarray(x)[0]
    return jax.tree_util.tree_map(first, tree)


def any_process(flag: bool) -> bool:
    """True on every process when ``flag`` is true on any (e.g. a SIGTERM: all must stop at the same
    step). A collective in a multi-process run: every process must call it at the same step."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils
    return bool(np.max(multihost_utils.process_allgather(np.array([int(flag)]))))


def read_replicated(tree):
    """Host (numpy) copy of replicated global arrays (jit), read with ``addressable_data(0)``: no
    computation runs (see `unreplicate`)."""
    return jax.tree_util.tree_map(lambda x: np.asarray(x.addressable_data(0)), tree)


def replicate_on_mesh(tree, mesh: Mesh):
    """numpy -> global arrays replicated over ``mesh`` (the layout of psum-ed metrics under jit)."""
    replicated = NamedSharding(mesh, P())
    return jax.tree_util.tree_map(lambda x: jax.device_put(np.asarray(x), replicated), tree)


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
