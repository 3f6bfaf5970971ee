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

Each concern has its own module (see `bert_jax.training`); this one only orchestrates them.
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict

import jax
import jax.numpy as jnp

from bert_jax import checkpoint as ckpt_lib
from bert_jax.training import TrainingError, checkpointing, parallel, preflight, reporting, workdir_lock
from bert_jax.training import phases as phases_lib
from bert_jax.training import step as step_lib
from bert_jax.training import trainer as trainer_lib
from bert_jax.training.checkpointing import Checkpoints
from bert_jax.training.phases import Phase, make_phases, train_steps
from bert_jax.training.preemption import PreemptionFlag
from bert_jax.training.trainer import Trainer, model_config

_any_process = parallel.any_process

__all__ = ["train_and_evaluate", "evaluate", "Trainer", "TrainingError", "PreemptionFlag", "Checkpoints",
           "Phase", "make_phases", "train_steps", "model_config"]


def train_and_evaluate(config, workdir: str) -> Dict[str, Any]:
    """Pre-trains (or resumes) in ``workdir``; returns the last logged train and eval metrics."""
    from bert_jax.tokenization import load_tokenizer

    workdir = ckpt_lib.abspath(workdir)
    preflight.set_rng_impl(config)
    preflight.check_tokenizer_given(config)
    tokenizer = load_tokenizer(config.tokenizer)
    bert_config = model_config(config, tokenizer.vocab_size)
    first_files = phases_lib.data_files(
        config.train_files or (config.phases[0].train_files if config.phases else ""), "train_files")
    total_steps = train_steps(config, first_files)
    phases = make_phases(config, total_steps)
    preflight.check_run(config, workdir, phases, bert_config, tokenizer)

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


def _start(config, trainer: Trainer, checkpoints: Checkpoints, watchdog) -> checkpointing.Start:
    """The workdir's newest checkpoint, else a fresh state (from ``init_checkpoint``'s weights if given)."""
    init_rng, train_rng = jax.random.split(jax.random.PRNGKey(int(config.seed)))
    latest = checkpoints.latest_step()
    if latest is not None:
        watchdog.beat(0, f"restoring checkpoint {latest}")
        start = checkpointing.restore(checkpoints, trainer, latest)
        reporting.print0(f"Resuming from step {start.step} ({checkpoints.dir})")
        return start
    pretrained, source = trainer_lib.init_checkpoint(config, trainer.bert_config)
    watchdog.beat(0, "initialising the model")
    return checkpointing.Start(state=trainer.init_state(init_rng, pretrained, source), step=0, rng=train_rng)


def _due(step: int, every) -> bool:
    return step % int(every) == 0


def _train(config, workdir, tokenizer, bert_config, total_steps, phases, watchdog):
    watchdog.beat(0, "writing the workdir's marker files")
    checkpointing.write_workdir_files(workdir, config, bert_config, tokenizer)

    watchdog.beat(0, "opening checkpoints")
    trainer = Trainer(config, bert_config, total_steps)
    checkpoints = Checkpoints(workdir, int(config.keep_checkpoints))
    writer = reporting.make_writer(workdir)
    start = _start(config, trainer, checkpoints, watchdog)
    reporting.print0(f"bert_jax pretraining: {config.size} ({trainer.num_params() / 1e6:.1f}M params, vocab "
                     f"{bert_config.vocab_size}), {total_steps} steps in {len(phases)} phase(s), "
                     f"{jax.device_count()} devices / {jax.process_count()} processes, parallelism={trainer.mode}")
    if start.step >= total_steps:
        reporting.print0(f"The run is complete ({total_steps} steps, checkpoint {checkpoints.dir}/{start.step}); "
                         "nothing to train")

    state, train_rng, step, last_saved = start.state, start.rng, start.step, start.checkpoint
    last_train, last_eval, data_state, saved_sums = start.last_train, start.last_eval, start.data_state, start.train_sums
    peak = reporting.peak_flops(config)
    run_limit = start.step + int(config.max_steps_this_run) if config.get("max_steps_this_run") else None
    with PreemptionFlag() as preempt:
        for ph in phases:
            if step >= ph.end_step:
                continue
            per_host, _ = parallel.check_batch_layout(ph.global_batch_size, config.grad_accum_steps)
            resumed = data_state if (data_state and data_state.get("phase") == ph.index) else None
            it = phases_lib.train_iterator(config, ph, tokenizer, per_host, resumed["iterator"] if resumed else None)
            step_flops = reporting.flops_per_step(bert_config, ph.global_batch_size, ph.seq_len, ph.max_predictions)
            acc, acc_n = checkpointing.sums_from_meta(trainer, saved_sums) if resumed else (None, 0)
            saved_sums = None
            meter = reporting.Throughput(step, ph.global_batch_size, ph.seq_len, step_flops, peak)
            next_batch = trainer.put_batch(next(it))
            while step < ph.end_step:
                watchdog.beat(step, f"running step {step + 1}" + (" (compiling)" if step == start.step else ""))
                batch = next_batch
                state, metrics = trainer.train_step(state, batch, train_rng)
                step += 1
                data_position = it.get_state()  # before prefetching the next batch
                if step < ph.end_step:
                    next_batch = trainer.put_batch(next(it))  # overlaps with the running step
                acc = metrics if acc is None else jax.tree_util.tree_map(jnp.add, acc, metrics)
                acc_n += 1
                paused = run_limit is not None and step >= run_limit and step < total_steps
                stop = preempt.stop_now(step, ph.end_step) or paused

                if _due(step, config.log_every_steps) or step == ph.end_step or stop:
                    last_train = _train_metrics(trainer, acc, acc_n, step, ph, checkpoints, last_saved, watchdog)
                    last_train.update(meter.measure(step))
                    reporting.log_train(writer, step, total_steps, last_train)
                    acc, acc_n = None, 0
                    meter.reset(step)
                if config.eval_files and (_due(step, config.eval_every_steps) or step == total_steps):
                    watchdog.beat(step, "evaluating")
                    last_eval = evaluate(trainer, state, config, ph, tokenizer, per_host)
                    reporting.log_eval(writer, step, last_eval)
                if _due(step, config.checkpoint_every_steps) or step == total_steps or stop:
                    watchdog.beat(step, f"saving checkpoint {step}")
                    meta = checkpointing.make_meta(step, train_rng, ph.index, data_position,
                                                   checkpointing.sums_to_meta(trainer, acc, acc_n),
                                                   last_train, last_eval)
                    checkpoints.save(step, trainer.savable(state), meta, wait=stop)
                    last_saved = step
                if stop:
                    why = "max_steps_this_run reached" if paused else "SIGTERM"
                    reporting.print0(f"{why}: saved step {step} to {checkpoints.dir}; exiting")
                    _close(checkpoints, writer, watchdog, step)
                    return {"train": last_train, "eval": last_eval, "step": step, "preempted": True}
            data_state = None
    _close(checkpoints, writer, watchdog, step)
    result = {"train": last_train, "eval": last_eval, "step": step, "preempted": False}
    reporting.write_results(workdir, result)
    return result


def _train_metrics(trainer, acc, acc_n, step, phase, checkpoints, last_saved, watchdog) -> Dict[str, float]:
    """The train metrics averaged since the last log step, and the learning rate; a NaN/inf loss stops
    the run (after the checkpoint writes in flight finish), naming the last good checkpoint."""
    m = {k: v / acc_n for k, v in trainer.host_metrics(acc).items()}
    m["learning_rate"] = float(trainer.schedule(step - 1))
    if not all(math.isfinite(m[k]) for k in ("loss", "mlm_loss", "nsp_loss")):
        watchdog.beat(step, "finishing checkpoint writes before stopping on a NaN loss")
        checkpoints.manager.wait_until_finished()
        raise FloatingPointError(
            f"loss is {m['loss']} at step {step} (phase {phase.index}); last good checkpoint: "
            f"{checkpoints.path(last_saved)}. Lower the learning rate / raise warmup, or check the data.")
    return m


def _close(checkpoints, writer, watchdog, step):
    watchdog.beat(step, "finishing checkpoint writes")
    checkpoints.close()
    writer.flush()


def evaluate(trainer: Trainer, state, config, phase: Phase, tokenizer, per_host: int) -> Dict[str, float]:
    it = phases_lib.eval_iterator(config, phase, tokenizer, per_host)
    total = None
    params = state.params
    for _ in range(int(config.eval_batches)):
        sums = trainer.eval_step(params, trainer.put_batch(next(it)))
        total = sums if total is None else jax.tree_util.tree_map(jnp.add, total, sums)
    total = trainer.host_metrics(total)
    m = step_lib.summarize({k: jnp.asarray(v) for k, v in total.items()})
    return {"mlm_accuracy": float(m["mlm_accuracy"]), "nsp_accuracy": float(m["nsp_accuracy"]),
            "mlm_loss": float(m["mlm_loss"]), "nsp_loss": float(m["nsp_loss"])}
