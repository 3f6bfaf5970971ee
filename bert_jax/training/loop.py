"""The pre-training loop: `train_and_evaluate(config, workdir)`.

* Resumes by itself from ``workdir/checkpoints`` (params, optimizer state, step, rng, data position,
  phase), so a resumed run's losses are bit-identical to an uninterrupted one. ``init_checkpoint``
  (pretrained weights) is a separate, explicit path used only when the workdir has no checkpoint.
* SIGTERM (a TPU VM preemption) -> save at the next step boundary and return normally.
* Metrics stay on device between log steps; a NaN/inf loss stops the run naming the step and the
  last good checkpoint. Only process 0 writes summaries (TensorBoard + one stdout line per log step).
* kill -9 at any moment: a save cut short is a ``*.orbax-checkpoint-tmp*`` directory that is never
  restored and is deleted by the next run; the running sums of the train metrics since the last log
  step are in the checkpoint's meta, so a resumed run logs what an uninterrupted one would.
* One run per workdir (`workdir_lock`). Several processes: every process runs the same computations
  in the same order -- what process 0 does alone touches host data only, and device arrays are read
  with ``addressable_data`` (no computation) -- and every wait is bounded (`parallel.ProgressWatchdog`,
  ``config.progress_timeout_s``).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import shutil
import signal
import time
from typing import Any, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import linen as nn

from bert_jax import checkpoint as ckpt_lib
from bert_jax import modeling
from bert_jax.training import optim, parallel, step as step_lib, workdir_lock


class TrainingError(ValueError):
    """A problem with the run's configuration or data, found before (or instead of) training."""


# ----------------------------------------------------------------------------------------------
# Natural units -> steps
# ----------------------------------------------------------------------------------------------

def expand_files(spec: str, what: str) -> List[str]:
    files = []
    for pattern in filter(None, (p.strip() for p in (spec or "").split(","))):
        if ckpt_lib.is_remote(pattern):  # gs://... on Cloud TPU VMs
            import tensorflow as tf
            files.extend(sorted(tf.io.gfile.glob(pattern)))
        else:
            files.extend(sorted(glob.glob(pattern)))
    if not files:
        raise TrainingError(f"{what}={spec!r} matches no files; pass comma-separated globs of TFRecords "
                            "made by scripts/create_pretraining_data.py")
    return files


def _summary_examples(files: List[str]) -> int:
    """Instance count from the summary.json(s) create_pretraining_data writes beside the shards."""
    seen, total = set(), 0
    for f in files:
        d = os.path.dirname(f)
        for cand in (os.path.join(d, "summary.json"), f + ".summary.json"):
            if os.path.isfile(cand) and cand not in seen:
                seen.add(cand)
                with open(cand, encoding="utf-8") as fh:
                    s = json.load(fh)
                total += int(s.get("num_instances", s.get("instances", 0)))
    return total


def train_steps(config, train_files: Optional[List[str]] = None) -> int:
    """The one function that turns num_train_steps / num_train_examples / num_train_epochs into steps."""
    given = [n for n in ("num_train_steps", "num_train_examples", "num_train_epochs") if config.get(n)]
    if len(given) != 1:
        raise TrainingError(f"give exactly one of num_train_steps, num_train_examples, num_train_epochs "
                            f"(got {', '.join(given) or 'none'})")
    if config.num_train_steps:
        return int(config.num_train_steps)
    if config.num_train_examples:
        return max(1, int(config.num_train_examples) // int(config.global_batch_size))
    examples = _summary_examples(train_files or [])
    if not examples:
        raise TrainingError("num_train_epochs needs summary.json (from create_pretraining_data.py) beside "
                            "the train files to know the epoch size; give num_train_steps instead")
    return max(1, int(round(float(config.num_train_epochs) * examples / int(config.global_batch_size))))


@dataclasses.dataclass
class Phase:
    index: int
    start_step: int
    end_step: int
    seq_len: int
    max_predictions: int
    global_batch_size: int
    train_files: str


def make_phases(config, total_steps: int) -> List[Phase]:
    if not config.phases:
        return [Phase(0, 0, total_steps, config.seq_len, config.max_predictions,
                      config.global_batch_size, config.train_files)]
    fractions = [float(p.fraction) for p in config.phases]
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise TrainingError(f"phase fractions {fractions} must sum to 1")
    phases, start = [], 0
    for i, p in enumerate(config.phases):
        end = total_steps if i == len(config.phases) - 1 else start + int(round(p.fraction * total_steps))
        files = p.get("train_files") or (config.train_files_512 if p.seq_len == 512 and config.get("train_files_512")
                                         else config.train_files)
        phases.append(Phase(i, start, end, int(p.seq_len), int(p.max_predictions),
                            int(p.get("global_batch_size") or config.global_batch_size), files))
        start = end
    return [p for p in phases if p.end_step > p.start_step]


# ----------------------------------------------------------------------------------------------
# Model, state
# ----------------------------------------------------------------------------------------------

def model_config(config, vocab_size: int) -> modeling.BertConfig:
    overrides = {k: v for k, v in (config.model.to_dict() if config.get("model") else {}).items()
                 if v is not None}
    max_len = max([config.seq_len] + [int(p.seq_len) for p in config.phases])
    overrides.setdefault("max_position_embeddings", max(512, max_len))
    return modeling.BertConfig.named(config.size, vocab_size=vocab_size, dtype=config.dtype,
                                     remat=bool(config.get("remat", False)), **overrides)


def _merge_pretrained(params, pretrained, source):
    """Copies every pretrained array into the fresh tree (shapes must match); heads the checkpoint
    lacks keep their random init."""
    from bert_jax.convert.mapping import flatten

    fresh = flatten(params)
    problems = []
    for path, value in flatten(pretrained).items():
        if path not in fresh:
            problems.append(f"{'/'.join(path)} is not a parameter of this model")
        elif tuple(fresh[path].shape) != tuple(value.shape):
            problems.append(f"{'/'.join(path)}: checkpoint {tuple(value.shape)} vs model {tuple(fresh[path].shape)}")
    if problems:
        raise TrainingError(f"init_checkpoint {source} does not fit the model:\n  " + "\n  ".join(problems))
    flat_pre = flatten(pretrained)

    def pick(path, x):
        key = tuple(getattr(k, "key", str(k)) for k in path)
        return jnp.asarray(flat_pre[key], x.dtype) if key in flat_pre else x
    return jax.tree_util.tree_map_with_path(pick, params)


class Trainer:
    """Holds the compiled steps and the state layout for one parallelism mode."""

    def __init__(self, config, bert_config: modeling.BertConfig, total_steps: int):
        self.config = config
        self.bert_config = bert_config
        self.model = modeling.BertForPreTraining(bert_config)
        opt_cfg = dict(config)
        opt_cfg["num_train_steps"] = total_steps
        import ml_collections
        self.opt_cfg = ml_collections.ConfigDict(opt_cfg)
        self.schedule = optim.make_schedule(self.opt_cfg)
        self.tx = optim.make_optimizer(self.opt_cfg)
        self.mode = config.parallelism
        if self.mode not in ("pmap", "jit"):
            raise TrainingError(f"parallelism={self.mode!r}: choose 'pmap' or 'jit'")
        k = int(config.grad_accum_steps)
        if self.mode == "pmap":
            fn = step_lib.make_pretrain_step(self.model, parallel.PMAP_AXIS, k, self.schedule)
            self.train_step = jax.pmap(fn, axis_name=parallel.PMAP_AXIS, donate_argnums=(0,),
                                       in_axes=(0, 0, None))
            self.eval_step = jax.pmap(step_lib.make_eval_step(self.model, parallel.PMAP_AXIS),
                                      axis_name=parallel.PMAP_AXIS)
            self.mesh = None
        else:
            self.mesh = parallel.make_mesh(tuple(config.mesh_shape))
            self.state_shardings = parallel.shardings_of(
                self._init_boxed, jax.random.PRNGKey(0), self.mesh, config.logical_axis_rules)
            self.train_step = jax.jit(step_lib.make_pretrain_step(self.model, None, k, self.schedule),
                                      donate_argnums=(0,))
            self.eval_step = jax.jit(step_lib.make_eval_step(self.model, None))

    def _init_boxed(self, rng):
        ids = jnp.zeros((1, 8), jnp.int32)
        params = self.model.init(rng, ids, deterministic=True)["params"]
        return step_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                   opt_state=self.tx.init(params), tx=self.tx)

    def init_state(self, rng, pretrained=None, source=""):
        """Fresh state (optionally with pretrained params), laid out for the mode."""
        if self.mode == "jit":
            state, _ = parallel.create_sharded(self._init_boxed, rng, self.mesh,
                                               self.config.logical_axis_rules)
            if pretrained is not None:
                params = _merge_pretrained(state.params, pretrained, source)
                params = jax.device_put(params, self.state_shardings.params)
                state = state.replace(params=params, opt_state=jax.jit(
                    self.tx.init, out_shardings=self.state_shardings.opt_state)(params))
            return state
        state = jax.jit(lambda r: nn.meta.unbox(self._init_boxed(r)))(rng)
        if pretrained is not None:
            params = _merge_pretrained(state.params, pretrained, source)
            state = state.replace(params=params, opt_state=self.tx.init(params))
        return parallel.replicate(state)

    def abstract_state(self):
        """ShapeDtypeStructs (with shardings in jit mode) of the *saved* (unreplicated) state."""
        shapes = jax.eval_shape(lambda r: nn.meta.unbox(self._init_boxed(r)), jax.random.PRNGKey(0))
        if self.mode == "jit":
            return jax.tree_util.tree_map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                                          shapes, self.state_shardings)
        return shapes

    # -- host <-> device layout of batches and state --------------------------------------------
    def put_batch(self, host_batch):
        if self.mode == "pmap":
            return parallel.put_pmap_batch(host_batch)
        return parallel.global_batch_from_host(host_batch, self.mesh)

    # Nothing here runs a computation: in a multi-process run every process must run the same
    # computations in the same order, and these are called around Orbax's cross-process barriers.
    def savable(self, state):
        """What `Checkpoints.save` takes: pmap -> this process's host copy (numpy; Orbax writes numpy
        from process 0 and syncs the others); jit -> the global sharded arrays."""
        if self.mode == "pmap":
            return parallel.unreplicate(state)
        return state

    def from_saved(self, state):
        return parallel.replicate(state) if self.mode == "pmap" else state

    def host_values(self, tree):
        """Device metrics (psum-ed / replicated, so equal on every process) -> numpy, read locally."""
        if self.mode == "pmap":
            return parallel.unreplicate(tree)
        return jax.tree_util.tree_map(lambda x: np.asarray(x.addressable_data(0)), tree)

    def host_metrics(self, metrics):
        return {k: float(v) for k, v in self.host_values(metrics).items()}

    def device_values(self, tree):
        """numpy -> the layout the train step's metrics have (to continue a running sum after a restart)."""
        if self.mode == "pmap":
            return parallel.replicate(tree)
        replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        return jax.tree_util.tree_map(lambda x: jax.device_put(np.asarray(x), replicated), tree)


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------

class Checkpoints:
    """Orbax CheckpointManager at workdir/checkpoints: items params, opt_state (+step) and meta
    (rng, data position, phase) -- `bert_jax.load_pretrained(workdir)` reads ``params``."""

    def __init__(self, workdir: str, keep: int, async_save: bool = True):
        import orbax.checkpoint as ocp
        self.ocp = ocp
        self.dir = os.path.join(ckpt_lib.abspath(workdir), "checkpoints")
        self.manager = ocp.CheckpointManager(
            self.dir, item_names=("params", "train", "meta"),
            # cleanup_tmp_directories: a save cut short (kill -9) leaves a *.orbax-checkpoint-tmp*
            # directory; it is never a restore candidate and is deleted when the next run starts.
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True,
                                                 enable_async_checkpointing=async_save))

    def latest_step(self):
        return self.manager.latest_step()

    def save(self, step: int, state, meta: dict, wait: bool = False):
        ocp = self.ocp
        self.manager.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(state.params),
            train=ocp.args.StandardSave({"opt_state": state.opt_state, "step": state.step}),
            meta=ocp.args.JsonSave(meta)), force=True)
        if wait:
            self.manager.wait_until_finished()

    def restore(self, step: int, abstract):
        ocp = self.ocp
        out = self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract.params),
            train=ocp.args.StandardRestore({"opt_state": abstract.opt_state, "step": abstract.step}),
            meta=ocp.args.JsonRestore()))
        return out.params, out.train["opt_state"], out.train["step"], out.meta

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()


# ----------------------------------------------------------------------------------------------
# Preemption
# ----------------------------------------------------------------------------------------------

class PreemptionFlag:
    """SIGTERM sets a flag; the loop saves at the next step boundary and returns."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no signal handling
            self._previous = None
        return self

    def _handle(self, signum, frame):
        del signum, frame
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _any_process(flag: bool) -> bool:
    """True on every process when any process got the signal (all must stop at the same step)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils
    return bool(np.max(multihost_utils.process_allgather(np.array([int(flag)]))))


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------

def _iterator(config, files, phase: Phase, tokenizer, per_host_batch: int, seed: int, shuffle: bool,
              state=None):
    from bert_jax.data import pipeline
    return pipeline.make_iterator(
        files, batch_size=per_host_batch, max_seq_length=phase.seq_len,
        max_predictions_per_seq=phase.max_predictions, seed=seed, shuffle=shuffle,
        shuffle_buffer=int(config.shuffle_buffer), shuffle_files=shuffle,
        dynamic_masking=bool(config.dynamic_masking), masked_lm_prob=float(config.masked_lm_prob),
        whole_word_mask=bool(config.whole_word_mask), tokenizer=tokenizer, state=state)


def make_train_iterator(config, phase: Phase, tokenizer, per_host_batch: int, data_state=None):
    files = expand_files(phase.train_files, "train_files")
    return _iterator(config, files, phase, tokenizer, per_host_batch, int(config.seed) + 1000 * phase.index,
                     True, data_state)


def make_eval_iterator(config, phase: Phase, tokenizer, per_host_batch: int):
    files = expand_files(config.eval_files, "eval_files")
    return _iterator(config, files, phase, tokenizer, per_host_batch, int(config.seed), False)


def check_data_matches_tokenizer(files: List[str], tokenizer, what: str):
    """summary.json beside the records (create_pretraining_data.py) names the tokenizer that made them."""
    for f in files[:1]:
        for cand in (os.path.join(os.path.dirname(f), "summary.json"), f + ".summary.json"):
            if not os.path.isfile(cand):
                continue
            with open(cand, encoding="utf-8") as fh:
                summary = json.load(fh)
            vocab = summary.get("vocab_size")
            if vocab is not None and int(vocab) != tokenizer.vocab_size:
                raise TrainingError(
                    f"{what} {f} was made with a vocabulary of {vocab} tokens ({cand}) but config.tokenizer "
                    f"has {tokenizer.vocab_size}: pass the tokenizer that made the data")
            tok = summary.get("tokenizer")
            fp = tok.get("fingerprint") if isinstance(tok, dict) else summary.get("tokenizer_fingerprint")
            if fp and fp != tokenizer.fingerprint():
                raise TrainingError(f"{what} {f} was made with a different tokenizer (fingerprint in {cand}) "
                                    f"than config.tokenizer: pass the tokenizer that made the data")
            return


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------

def _check_workdir_model(workdir: str, bert_config: modeling.BertConfig):
    if not ckpt_lib.is_bert_jax_dir(workdir):
        return
    saved, _ = ckpt_lib.read_marker(workdir)
    # How to compute (dtype, remat, attention kernel) may change between runs; the architecture may not.
    ours = bert_config.replace(dtype=saved.dtype, remat=saved.remat, attention_impl=saved.attention_impl)
    if saved != ours:
        diffs = [f"{f.name}: workdir {getattr(saved, f.name)!r} vs config {getattr(ours, f.name)!r}"
                 for f in dataclasses.fields(saved) if getattr(saved, f.name) != getattr(ours, f.name)]
        raise TrainingError(f"workdir {workdir} holds a checkpoint of a different model ({'; '.join(diffs)}). "
                            "Use a new --workdir, or the same size/tokenizer to resume.")


def _writer(workdir: str):
    from clu import metric_writers
    return metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0,
                                                asynchronous=True)


def _flops_per_step(bert_config, batch, seq_len, max_predictions):
    try:
        from bert_jax import flops
        return flops.pretrain_step_flops(bert_config, batch, seq_len, max_predictions)
    except Exception:  # FLOP accounting is informative only
        return None


def _peak_flops(config):
    if config.get("peak_flops"):
        return float(config.peak_flops) * jax.device_count()
    try:
        from bert_jax import flops
        peak = flops.detect_peak_flops()
        return peak * jax.device_count() if peak else None
    except Exception:
        return None


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    h, rem = divmod(int(seconds), 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def train_and_evaluate(config, workdir: str) -> Dict[str, Any]:
    """Pre-trains (or resumes) in ``workdir``; returns the last logged train and eval metrics."""
    from bert_jax.tokenization import load_tokenizer

    workdir = ckpt_lib.abspath(workdir)
    rng_impl = config.get("rng_impl", "threefry")
    if rng_impl not in ("threefry", "rbg", "unsafe_rbg"):
        raise TrainingError(f"rng_impl={rng_impl!r}: choose threefry, rbg or unsafe_rbg")
    jax.config.update("jax_default_prng_impl", rng_impl + ("2x32" if rng_impl == "threefry" else ""))
    if not config.tokenizer:
        raise TrainingError("config.tokenizer is empty: pass the vocab.txt / SentencePiece model that made "
                            "the data (--config.tokenizer=PATH)")
    tokenizer = load_tokenizer(config.tokenizer)
    bert_config = model_config(config, tokenizer.vocab_size)
    first_files = expand_files(config.train_files or (config.phases[0].train_files if config.phases else ""),
                               "train_files")
    total_steps = train_steps(config, first_files)
    phases = make_phases(config, total_steps)
    for ph in phases:
        expand_files(ph.train_files, f"phase {ph.index} train_files")
        parallel.check_batch_layout(ph.global_batch_size, config.grad_accum_steps)
        if ph.seq_len > bert_config.max_position_embeddings:
            raise TrainingError(f"phase {ph.index} seq_len={ph.seq_len} exceeds max_position_embeddings="
                                f"{bert_config.max_position_embeddings}")
    if config.eval_files:
        expand_files(config.eval_files, "eval_files")
    _check_workdir_model(workdir, bert_config)
    for ph in phases:  # records must match the phase and the tokenizer before anything compiles
        per_host, _ = parallel.check_batch_layout(ph.global_batch_size, config.grad_accum_steps)
        files = expand_files(ph.train_files, "train_files")
        check_data_matches_tokenizer(files, tokenizer, "train_files")
        make_train_iterator(config, ph, tokenizer, per_host)  # validates every file's records
        if config.eval_files:
            check_data_matches_tokenizer(expand_files(config.eval_files, "eval_files"), tokenizer, "eval_files")
            make_eval_iterator(config, ph, tokenizer, per_host)

    if not ckpt_lib.is_remote(workdir):
        os.makedirs(workdir, exist_ok=True)
    timeout_s = float(config.get("progress_timeout_s", 1800))
    lock = workdir_lock.acquire(workdir, is_remote=ckpt_lib.is_remote(workdir),
                                process_index=jax.process_index(), process_count=jax.process_count(),
                                kv_client=parallel.distributed_client(), timeout_s=timeout_s)
    watchdog = parallel.ProgressWatchdog(timeout_s)
    try:
        return _train(config, workdir, tokenizer, bert_config, total_steps, phases, watchdog)
    finally:
        watchdog.close()
        lock.release()


def _sums_to_meta(trainer: Trainer, acc, acc_n: int) -> dict:
    """The running sums of the train metrics since the last log step, for the checkpoint's meta, so a
    resumed run logs the same averages as an uninterrupted one (float32 -> JSON double is exact)."""
    if acc is None or not acc_n:
        return {"n": 0, "sums": {}}
    return {"n": int(acc_n), "sums": {k: [float(v), str(v.dtype)] for k, v in trainer.host_values(acc).items()}}


def _sums_from_meta(trainer: Trainer, saved):
    if not saved or not saved.get("n"):
        return None, 0
    host = {k: np.asarray(v, dtype=dt) for k, (v, dt) in saved["sums"].items()}
    return trainer.device_values(host), int(saved["n"])


def _train(config, workdir, tokenizer, bert_config, total_steps, phases, watchdog):
    watchdog.beat(0, "writing the workdir's marker files")
    if jax.process_index() == 0:
        ckpt_lib.write_marker(workdir, bert_config, tokenizer=ckpt_lib.abspath(config.tokenizer))
        ckpt_lib.write_json_atomic(os.path.join(workdir, "train_config.json"), config.to_dict())
        tokenizer_dir = os.path.join(workdir, "tokenizer")
        if not ckpt_lib.is_remote(workdir) and not os.path.isdir(tokenizer_dir):
            partial = tokenizer_dir + ".partial"  # a kill -9 mid-write leaves no half tokenizer/
            shutil.rmtree(partial, ignore_errors=True)
            tokenizer.save(partial)
            os.replace(partial, tokenizer_dir)

    watchdog.beat(0, "opening checkpoints")
    trainer = Trainer(config, bert_config, total_steps)
    checkpoints = Checkpoints(workdir, int(config.keep_checkpoints))
    writer = _writer(workdir)
    rng = jax.random.PRNGKey(int(config.seed))
    init_rng, train_rng = jax.random.split(rng)

    latest = checkpoints.latest_step()
    data_state, start_step, saved_sums, meta = None, 0, None, {}
    if latest is not None:
        watchdog.beat(0, f"restoring checkpoint {latest}")
        params, opt_state, step_arr, meta = checkpoints.restore(latest, trainer.abstract_state())
        state = step_lib.TrainState(step=step_arr, params=params, opt_state=opt_state, tx=trainer.tx)
        state = trainer.from_saved(state)
        start_step = int(meta["step"])
        data_state = meta.get("data_state")
        saved_sums = meta.get("train_sums")
        train_rng = jnp.asarray(np.asarray(meta["rng"], np.uint32))
        logging.info("Resumed from %s at step %d", checkpoints.dir, start_step)
        if jax.process_index() == 0:
            print(f"Resuming from step {start_step} ({checkpoints.dir})", flush=True)
    else:
        pretrained, source = None, ""
        if config.init_checkpoint:
            from bert_jax.convert import load_pretrained
            init_cfg, pretrained = load_pretrained(config.init_checkpoint)
            source = config.init_checkpoint
            if init_cfg.vocab_size != bert_config.vocab_size:
                raise TrainingError(f"init_checkpoint {source} has vocab_size={init_cfg.vocab_size} but the "
                                    f"tokenizer {config.tokenizer} has {bert_config.vocab_size}")
        watchdog.beat(0, "initialising the model")
        state = trainer.init_state(init_rng, pretrained, source)

    n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(trainer.abstract_state().params))
    if jax.process_index() == 0:
        print(f"bert_jax pretraining: {config.size} ({n_params / 1e6:.1f}M params, vocab "
              f"{bert_config.vocab_size}), {total_steps} steps in {len(phases)} phase(s), "
              f"{jax.device_count()} devices / {jax.process_count()} processes, parallelism={trainer.mode}",
              flush=True)

    # The last logged train / eval metrics travel in the checkpoint too: rerunning a finished (or
    # killed-after-its-last-save) run's command rewrites the same results.json instead of an empty one.
    last_train: Dict[str, float] = dict(meta.get("last_train") or {})
    last_eval: Dict[str, float] = dict(meta.get("last_eval") or {})
    if start_step >= total_steps and jax.process_index() == 0:
        print(f"The run is complete ({total_steps} steps, checkpoint {checkpoints.dir}/{start_step}); "
              "nothing to train", flush=True)
    last_saved = latest
    step = start_step
    peak = _peak_flops(config)
    run_limit = start_step + int(config.max_steps_this_run) if config.get("max_steps_this_run") else None
    with PreemptionFlag() as preempt:
        for ph in phases:
            if step >= ph.end_step:
                continue
            per_host, _ = parallel.check_batch_layout(ph.global_batch_size, config.grad_accum_steps)
            phase_state = data_state if (data_state and data_state.get("phase") == ph.index) else None
            it = make_train_iterator(config, ph, tokenizer, per_host,
                                     phase_state["iterator"] if phase_state else None)
            step_flops = _flops_per_step(bert_config, ph.global_batch_size, ph.seq_len, ph.max_predictions)
            acc, acc_n = _sums_from_meta(trainer, saved_sums) if phase_state else (None, 0)
            saved_sums = None
            t0, t_step0 = time.time(), step
            next_batch = trainer.put_batch(next(it))
            while step < ph.end_step:
                watchdog.beat(step, f"running step {step + 1}" + (" (compiling)" if step == start_step else ""))
                batch = next_batch
                state, metrics = trainer.train_step(state, batch, train_rng)
                step += 1
                data_position = it.get_state()  # before prefetching the next batch
                if step < ph.end_step:
                    next_batch = trainer.put_batch(next(it))  # overlaps with the running step
                acc = metrics if acc is None else jax.tree_util.tree_map(jnp.add, acc, metrics)
                acc_n += 1
                stop = _any_process(preempt.requested) if step % 10 == 0 or step == ph.end_step else False
                paused = run_limit is not None and step >= run_limit and step < total_steps
                stop = stop or paused
                if step % int(config.log_every_steps) == 0 or step == ph.end_step or stop:
                    m = trainer.host_metrics(acc)
                    m = {k: v / acc_n for k, v in m.items()}
                    m["learning_rate"] = float(trainer.schedule(step - 1))
                    if not all(math.isfinite(m[k]) for k in ("loss", "mlm_loss", "nsp_loss")):
                        watchdog.beat(step, "finishing checkpoint writes before stopping on a NaN loss")
                        checkpoints.manager.wait_until_finished()
                        raise FloatingPointError(
                            f"loss is {m['loss']} at step {step} (phase {ph.index}); last good checkpoint: "
                            f"{os.path.join(checkpoints.dir, str(last_saved)) if last_saved is not None else 'none'}. "
                            "Lower the learning rate / raise warmup, or check the data.")
                    dt = max(time.time() - t0, 1e-9)
                    steps_per_s = (step - t_step0) / dt
                    tokens_per_s = steps_per_s * ph.global_batch_size * ph.seq_len
                    m["steps_per_sec"] = steps_per_s
                    m["tokens_per_sec"] = tokens_per_s
                    mfu = None
                    if step_flops and peak:
                        mfu = steps_per_s * step_flops / peak
                        m["mfu"] = mfu
                    writer.write_scalars(step, {f"train/{k}": v for k, v in m.items()})
                    if jax.process_index() == 0:
                        eta = (total_steps - step) / steps_per_s if steps_per_s > 0 else float("inf")
                        print(f"step {step}/{total_steps} loss {m['loss']:.4f} mlm {m['mlm_loss']:.4f} "
                              f"nsp {m['nsp_loss']:.4f} mlm_acc {m['mlm_accuracy']:.3f} "
                              f"nsp_acc {m['nsp_accuracy']:.3f} lr {m['learning_rate']:.2e} "
                              f"{tokens_per_s:,.0f} tok/s" + (f" MFU {mfu:.1%}" if mfu is not None else "")
                              + f" ETA {_fmt_eta(eta)}", flush=True)
                    last_train = m
                    acc, acc_n, t0, t_step0 = None, 0, time.time(), step
                if config.eval_files and (step % int(config.eval_every_steps) == 0 or step == total_steps):
                    watchdog.beat(step, "evaluating")
                    last_eval = evaluate(trainer, state, config, ph, tokenizer, per_host)
                    writer.write_scalars(step, {f"eval/{k}": v for k, v in last_eval.items()})
                    if jax.process_index() == 0:
                        print(f"eval step {step}: " + " ".join(f"{k} {v:.4f}" for k, v in last_eval.items()),
                              flush=True)
                if step % int(config.checkpoint_every_steps) == 0 or step == total_steps or stop:
                    watchdog.beat(step, f"saving checkpoint {step}")
                    meta = {"step": step, "rng": np.asarray(jax.random.key_data(train_rng)
                                                            if jnp.issubdtype(train_rng.dtype, jax.dtypes.prng_key)
                                                            else train_rng).tolist(),
                            "data_state": {"phase": ph.index, "iterator": data_position},
                            "train_sums": _sums_to_meta(trainer, acc, acc_n),
                            "last_train": last_train, "last_eval": last_eval}
                    checkpoints.save(step, trainer.savable(state), meta, wait=stop)
                    last_saved = step
                if stop:
                    if jax.process_index() == 0:
                        why = "max_steps_this_run reached" if paused else "SIGTERM"
                        print(f"{why}: saved step {step} to {checkpoints.dir}; exiting", flush=True)
                    watchdog.beat(step, "finishing checkpoint writes")
                    checkpoints.close()
                    writer.flush()
                    return {"train": last_train, "eval": last_eval, "step": step, "preempted": True}
            data_state = None
    watchdog.beat(step, "finishing checkpoint writes")
    checkpoints.close()
    writer.flush()
    result = {"train": last_train, "eval": last_eval, "step": step, "preempted": False}
    if jax.process_index() == 0:
        ckpt_lib.write_json_atomic(os.path.join(workdir, "results.json"), result)
    return result


def evaluate(trainer: Trainer, state, config, phase: Phase, tokenizer, per_host: int) -> Dict[str, float]:
    it = make_eval_iterator(config, phase, tokenizer, per_host)
    total = None
    params = state.params
    for _ in range(int(config.eval_batches)):
        sums = trainer.eval_step(params, trainer.put_batch(next(it)))
        total = sums if total is None else jax.tree_util.tree_map(jnp.add, total, sums)
    total = trainer.host_metrics(total)
    m = step_lib.summarize({k: jnp.asarray(v) for k, v in total.items()})
    return {"mlm_accuracy": float(m["mlm_accuracy"]), "nsp_accuracy": float(m["nsp_accuracy"]),
            "mlm_loss": float(m["mlm_loss"]), "nsp_loss": float(m["nsp_loss"])}
