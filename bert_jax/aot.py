"""Ahead-of-time compilation of the real train steps for a Cloud TPU topology, on a machine without one.

With ``libtpu`` installed (``pip install "jax[tpu]"``), ``jax.experimental.topologies.get_topology_desc``
describes a TPU slice by name (``v5e:2x2``, ``v4:2x2x1``, ``v5p:2x2x2``, ...) as compile-only devices; the
pre-training `Trainer` (`bert_jax.training.trainer`) and the fine-tuning `Finetuner`
(`bert_jax.training.finetune`) are built over a mesh of those devices exactly as ``scripts/pretrain.py`` and
the experiments build them, their steps are lowered with abstract arguments (``ShapeDtypeStruct`` with the
state's and the batch's shardings) and compiled by the TPU compiler. Nothing runs. The executable tells:

* memory per device (``memory_analysis``): arguments (parameters + optimizer state + batch), temporaries,
  the compiler's peak, against the chip's HBM -- or the compiler refuses it (out of HBM), which is the
  answer "does not fit", with the bytes it wanted;
* FLOPs and bytes per device per step (``cost_analysis``), hence a roofline: the step takes at least
  ``max(FLOPs / peak FLOP/s, bytes / HBM bandwidth)`` (chip table in `bert_jax.flops`).

MaxText's ``train_compile.py`` does the same to catch sharding errors and out-of-memory before a job starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import math
import os
import re
import time
from typing import Dict, List, Optional
from unittest import mock

KNOWN_GENERATIONS = ("v2", "v3", "v4", "v5e", "v5p", "v6e")
EXAMPLE_TOPOLOGIES = ("v2:2x2", "v3:2x2", "v4:2x2x1", "v4:2x2x2", "v4:4x4x4", "v5e:2x2", "v5e:2x4", "v5e:4x4",
                      "v5e:16x16", "v5p:2x2x1", "v5p:2x2x2", "v5p:4x4x4", "v6e:2x2", "v6e:4x4")
TASKS = ("pretrain", "classification")
GiB = 2 ** 30


class AotError(ValueError):
    """Bad input (topology, config) found before compiling: one line for the user."""


def tpu_attached() -> bool:
    return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def prepare_environment() -> None:
    """Off a TPU VM: the CPU backend for anything that runs, and libtpu told it is alone on one host, so that
    it describes topologies quietly (without these it warns about missing TPU_* variables) and does not take
    the process-wide /tmp/libtpu_lockfile another JAX process may hold. Call before JAX initialises."""
    if tpu_attached():
        return
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-4")   # any valid name: only silences a warning
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# ----------------------------------------------------------------------------------------------
# Topology
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Topology:
    name: str
    devices: list
    device_kind: str
    chip: str                 # bert_jax.flops table key
    devices_per_chip: int     # 2 on v2/v3 (jax lists cores), else 1
    num_hosts: int

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @property
    def num_chips(self) -> int:
        return self.num_devices // self.devices_per_chip

    def per_device(self, table: Dict[str, float]) -> float:
        return table[self.chip] / self.devices_per_chip


def _bad_topology(name: str, why: str = "") -> AotError:
    return AotError(f"unknown TPU topology {name!r}{': ' + why if why else ''}; valid names are GEN:AxB or "
                    f"GEN:AxBxC with GEN one of {', '.join(KNOWN_GENERATIONS)} and dimensions that are "
                    f"multiples of a host's chips, e.g. {' '.join(EXAMPLE_TOPOLOGIES)}")


def get_topology(name: str) -> Topology:
    """Compile-only devices of a named TPU slice; an AotError listing valid names for a bad one."""
    from bert_jax import flops
    gen, _, dims = name.partition(":")
    if gen not in KNOWN_GENERATIONS or not re.fullmatch(r"\d+(x\d+){1,2}", dims):
        raise _bad_topology(name)
    try:
        from jax.experimental import topologies
    except ImportError as e:  # pragma: no cover - jax without the experimental module
        raise AotError(f"jax.experimental.topologies is unavailable ({e})") from None
    # v4/v5p chips are "megacore": a TPU VM shows one device per chip. libtpu's default chip config for v4
    # lists the two cores separately; v2/v3 have no megacore mode (jax lists their cores).
    kwargs = {"chip_config_name": "megacore"} if gen == "v4" else {}
    try:
        devices = topologies.get_topology_desc(platform="tpu", topology_name=name, **kwargs).devices
    except Exception as e:  # noqa: BLE001 -- JaxRuntimeError, or libtpu missing
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "libtpu" in msg.lower() and "lockfile" not in msg.lower() or "No module" in msg or "not found" in msg:
            raise AotError(f"cannot describe TPU topology {name!r}: {msg}. Install the TPU compiler: "
                           'pip install "jax[tpu]==<your jax version>" (requirements-test.txt pins it)') from None
        raise _bad_topology(name, msg) from None
    kind = devices[0].device_kind
    chip = flops.chip_for_device_kind(kind)
    if chip is None or chip not in flops.HBM_BYTES:
        raise AotError(f"topology {name!r} has {kind!r} devices, which bert_jax.flops has no figures for")
    per_chip = len({getattr(d, "core_on_chip", 0) for d in devices})
    return Topology(name, list(devices), kind, chip, per_chip, len({d.process_index for d in devices}))


# ----------------------------------------------------------------------------------------------
# Building the real steps over the topology's devices
# ----------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _mesh_on(devices):
    """`parallel.make_mesh` builds over ``devices`` instead of ``jax.devices()`` while the Trainer /
    Finetuner constructors run (they take the mesh shape from the config, the devices from JAX)."""
    from bert_jax.training import parallel
    real = parallel.make_mesh
    with mock.patch.object(parallel, "make_mesh", lambda shape, devices_=None: real(shape, devices)):
        yield


@dataclasses.dataclass
class Step:
    """One step to compile: a jitted function, abstract arguments, and what a step processes."""
    name: str
    fn: object
    args: tuple
    mesh: object
    state_bytes: int          # parameters + optimizer state per device
    global_batch: int
    seq_len: int
    max_predictions: Optional[int]
    model_flops: int          # bert_jax.flops, whole step, all devices
    splash: bool


def _bytes_per_device(tree) -> int:
    import jax
    import numpy as np
    total = 0
    for leaf in jax.tree_util.tree_leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if getattr(leaf, "sharding", None) is not None else leaf.shape
        total += int(np.prod(shape, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
    return total


def _rng_struct(mesh):
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P
    key = jax.eval_shape(lambda: jax.random.PRNGKey(0))
    return jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=NamedSharding(mesh, P()))


def _batch_structs(mesh, spec: Dict[str, tuple]):
    import jax
    from bert_jax.training import parallel
    sharding = parallel.batch_sharding(mesh)
    return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding) for k, (shape, dtype) in spec.items()}


def set_rng_impl(config) -> None:
    """The PRNG implementation `train_and_evaluate` sets (the key's shape depends on it)."""
    import jax
    impl = config.get("rng_impl", "threefry")
    if impl not in ("threefry", "rbg", "unsafe_rbg"):
        raise AotError(f"rng_impl={impl!r}: choose threefry, rbg or unsafe_rbg")
    jax.config.update("jax_default_prng_impl", impl + ("2x32" if impl == "threefry" else ""))


def pretrain_steps(config, topo: Topology, vocab_size: int, phase: Optional[int] = None) -> List[Step]:
    """The pre-training step of every phase of ``config`` (or only ``phase``) over ``topo``."""
    import jax.numpy as jnp
    from bert_jax import flops
    from bert_jax.training import parallel, phases as phases_lib, trainer as trainer_lib

    set_rng_impl(config)
    bert_config = trainer_lib.model_config(config, vocab_size)
    total = phases_lib.train_steps(config)
    phases = phases_lib.make_phases(config, total)
    if phase is not None:
        if not 0 <= phase < len(phases):
            raise AotError(f"--phase={phase}: the config has {len(phases)} phase(s) "
                           f"({', '.join(f'{i}: seq {p.seq_len}' for i, p in enumerate(phases))})")
        phases = [phases[phase]]
    if str(config.parallelism) != "jit":
        raise AotError(f"parallelism={config.parallelism!r}: the AOT compile builds the jit + Mesh step "
                       "(--config.parallelism=jit); pmap cannot be lowered for devices that are not attached")
    with _mesh_on(topo.devices):
        trainer = trainer_lib.Trainer(config, bert_config, total)
    state = trainer.abstract_state()
    state_bytes = _bytes_per_device((state.params, state.opt_state))
    k = int(config.grad_accum_steps)
    steps = []
    for ph in phases:
        try:
            parallel.check_batch_layout(ph.global_batch_size, k, topo.num_devices, topo.num_hosts)
        except ValueError as e:
            raise AotError(f"phase {ph.index}: {e}") from None
        if ph.seq_len > bert_config.max_position_embeddings:
            raise AotError(f"phase {ph.index}: seq_len={ph.seq_len} exceeds max_position_embeddings="
                           f"{bert_config.max_position_embeddings}")
        B, L, Pn = ph.global_batch_size, ph.seq_len, ph.max_predictions
        batch = _batch_structs(trainer.mesh, {
            "input_ids": ((B, L), jnp.int32), "attention_mask": ((B, L), jnp.int32),
            "token_type_ids": ((B, L), jnp.int32),
            "masked_lm_positions": ((B, Pn), jnp.int32), "masked_lm_ids": ((B, Pn), jnp.int32),
            "masked_lm_weights": ((B, Pn), jnp.float32), "next_sentence_labels": ((B, 1), jnp.int32)})
        steps.append(Step(f"pretrain phase {ph.index}", trainer.train_step, (state, batch, _rng_struct(trainer.mesh)),
                          trainer.mesh, state_bytes, B, L, Pn, flops.pretrain_step_flops(bert_config, B, L, Pn),
                          bert_config.attention_impl == "splash"))
    return steps


def classification_step(config, topo: Topology, vocab_size: int, num_labels: int = 2) -> Step:
    """The fine-tuning (sequence classification) step as `finetune.finetune` builds it: a `Finetuner` over
    the config's mesh shape, parameters replicated, the batch over the data axes; size, dtype, remat, batch
    and sequence length from ``config``."""
    import jax
    import jax.numpy as jnp
    import ml_collections
    from bert_jax import flops, modeling
    from bert_jax.training import finetune, parallel, step as step_lib, trainer as trainer_lib

    set_rng_impl(config)
    bert_config = trainer_lib.model_config(config, vocab_size)
    B, L = int(config.global_batch_size), int(config.seq_len)
    try:
        parallel.check_batch_layout(B, 1, topo.num_devices, topo.num_hosts)
    except ValueError as e:
        raise AotError(str(e)) from None
    model = modeling.BertForSequenceClassification(bert_config, num_labels=num_labels)
    opt_cfg = ml_collections.ConfigDict(dict(
        learning_rate=float(config.learning_rate), num_train_steps=1000, warmup_steps=100,
        weight_decay=float(config.weight_decay), optimizer="adamw", adam_b1=0.9, adam_b2=0.999, adam_eps=1e-6,
        grad_clip_norm=float(config.grad_clip_norm)))
    cache = getattr(finetune, "_COMPILED", {})     # Finetuners share jitted functions per mesh *shape*:
    before = set(cache)                              # forget the ones built here over the TPU devices
    with _mesh_on(topo.devices):
        ft = finetune.Finetuner(model, "classification", opt_cfg, tuple(config.mesh_shape))
    for key in set(cache) - before:
        cache.pop(key)
    params = jax.eval_shape(lambda r: modeling.init_params(model, r), jax.random.PRNGKey(0))
    state = jax.tree_util.tree_map(   # step, params, opt_state, lr_schedule: replicated, as Finetuner places them
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=ft.replicated),
        jax.eval_shape(lambda p: step_lib.TrainState(
            step=jnp.zeros((), jnp.int32), params=p, opt_state=ft.tx.init(p), tx=ft.tx,
            lr_schedule=jnp.zeros(jnp.shape(ft.lr_schedule), jnp.float32)), params))
    batch = _batch_structs(ft.mesh, {
        "input_ids": ((B, L), jnp.int32), "token_type_ids": ((B, L), jnp.int32),
        "attention_mask": ((B, L), jnp.int32), "labels": ((B,), jnp.int32), "weights": ((B,), jnp.float32)})
    model_flops = B * flops.train_flops(flops.encoder_flops_per_sequence(bert_config, L)
                                        + 2 * bert_config.hidden_size ** 2 + 2 * bert_config.hidden_size * num_labels)
    return Step("classification", ft.train_step, (state, batch, _rng_struct(ft.mesh)), ft.mesh,
                _bytes_per_device((state.params, state.opt_state)), B, L, None, model_flops,
                bert_config.attention_impl == "splash")


# ----------------------------------------------------------------------------------------------
# Compile and analyse
# ----------------------------------------------------------------------------------------------

_SIZE = r"([0-9.]+)\s*([KMGT]?)i?B?"
_UNITS = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


def _parse_oom(message: str):
    """(needed, available) bytes from the TPU compiler's out-of-HBM message, or None."""
    for pattern in (r"required for HLO temporaries \(" + _SIZE + r"\) exceeds available HBM \(" + _SIZE + r"\)",
                    r"Used " + _SIZE + r" of " + _SIZE + r" hbm"):
        m = re.search(pattern, message)
        if m:
            need = float(m.group(1)) * _UNITS[m.group(2)]
            have = float(m.group(3)) * _UNITS[m.group(4)]
            return need, have
    return None


def roofline_seconds(flops_per_device: float, bytes_per_device: float, topo: Topology):
    """(step seconds, compute seconds, memory seconds): the step cannot be faster than either."""
    from bert_jax import flops
    compute = flops_per_device / topo.per_device(flops.PEAK_BF16_FLOPS)
    memory = bytes_per_device / topo.per_device(flops.HBM_BANDWIDTH)
    return max(compute, memory), compute, memory


def compile_step(step: Step, topo: Topology) -> Dict[str, object]:
    """Lowers and compiles ``step`` for the topology; the report dict (``fits`` False when the compiler runs
    out of HBM, with the bytes it needed)."""
    import jax
    from bert_jax import flops
    t0 = time.time()
    ctx = jax.set_mesh(step.mesh) if step.splash else contextlib.nullcontext()
    hbm = topo.per_device(flops.HBM_BYTES)
    out = {"step": step.name, "global_batch": step.global_batch, "per_device_batch": step.global_batch // topo.num_devices,
           "seq_len": step.seq_len, "max_predictions": step.max_predictions,
           "state_bytes_per_device": step.state_bytes, "chip_hbm_bytes": hbm,
           "model_flops_per_step": step.model_flops}
    try:
        with ctx:
            compiled = step.fn.lower(*step.args).compile()
    except Exception as e:  # noqa: BLE001 -- the TPU compiler's RESOURCE_EXHAUSTED
        oom = _parse_oom(str(e))
        if oom is None:
            raise
        need, have = oom
        out.update(fits=False, peak_bytes_per_device=int(need), hbm_bytes_per_device=int(have),
                   compile_seconds=time.time() - t0, compiler_message=str(e).splitlines()[0])
        return out
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    peak = getattr(mem, "peak_memory_in_bytes", 0) or (
        mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + mem.temp_size_in_bytes)
    peak += mem.generated_code_size_in_bytes
    flops_dev, bytes_dev = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
    # XLA does not see inside a Pallas kernel (splash attention): never count fewer than the model's matmuls.
    seconds, compute_s, memory_s = roofline_seconds(max(flops_dev, step.model_flops / topo.num_devices),
                                                    bytes_dev, topo)
    tokens = step.global_batch * step.seq_len
    peak_all = topo.per_device(flops.PEAK_BF16_FLOPS) * topo.num_devices
    out.update(
        fits=bool(peak <= hbm), peak_bytes_per_device=int(peak), hbm_bytes_per_device=int(hbm),
        argument_bytes_per_device=int(mem.argument_size_in_bytes), output_bytes_per_device=int(mem.output_size_in_bytes),
        alias_bytes_per_device=int(mem.alias_size_in_bytes), temp_bytes_per_device=int(mem.temp_size_in_bytes),
        flops_per_device=flops_dev, flops_per_step=flops_dev * topo.num_devices, bytes_per_device=bytes_dev,
        compute_seconds=compute_s, memory_seconds=memory_s, estimated_step_seconds=seconds,
        bound="compute" if compute_s >= memory_s else "memory", tokens_per_second=tokens / seconds,
        mfu_at_roofline=step.model_flops / seconds / peak_all, compile_seconds=time.time() - t0)
    return out


def advice(report: Dict[str, object], config, topo: Topology) -> str:
    """The one line for a step that does not fit: by how much, and what to try, most specific first."""
    need, have = report["peak_bytes_per_device"], report["hbm_bytes_per_device"]
    factor = need / have
    per_device = report["per_device_batch"]
    k = int(config.get("grad_accum_steps", 1))
    tries = []
    kk = 2 ** math.ceil(math.log2(max(factor, 1.0) * 1.25))
    if report["step"].startswith("pretrain") and per_device // k >= kk and per_device % (k * kk) == 0:
        tries.append(f"--config.grad_accum_steps={k * kk} (micro-batch {per_device // (k * kk)} per device)")
    if per_device > 1:
        smaller = max(1, int(per_device / (factor * 1.25)))
        tries.append(f"a smaller batch (~{smaller} per device: --config.global_batch_size={smaller * topo.num_devices})")
    if not config.get("remat", False):
        tries.append("--config.remat=True")
    mesh = tuple(config.mesh_shape)
    if len(mesh) == 3 and mesh[1] in (1,) and report["state_bytes_per_device"] > 0.1 * have:
        tries.append(f"an fsdp axis (--config.mesh_shape='(1,{topo.num_devices},1)')")
    if str(config.get("dtype", "float32")) == "float32":
        tries.append("--config.dtype=bfloat16")
    return (f"{report['step']} (seq {report['seq_len']}, batch {report['global_batch']} = {per_device} per device) "
            f"does not fit {topo.name}: needs {need / GiB:.1f} GiB per device of {have / GiB:.2f} GiB HBM "
            f"({factor:.1f}x, {(need - have) / GiB:.1f} GiB over); try " + ", ".join(tries))
