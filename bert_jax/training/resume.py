"""What makes a fine-tuning run resumable: its checkpoints, its fingerprint, and SIGTERM.

A run given a ``run_dir`` saves Orbax checkpoints there (`checkpointing.Checkpoints`, as pre-training)
every ``checkpoint_every_steps``, on SIGTERM and after ``max_steps_this_run`` steps. A checkpoint holds
the `step.TrainState`, the best parameters so far, and the run's `Progress` as JSON: the epoch, its
batches done, the numpy data-order rng state at the epoch's start, the epoch's losses so far, the history
and the best dev metrics -- everything a resumed run needs to go on bit-identically. SIGTERM saves at the
next step boundary and raises `Preempted` (exit status 0); the same command resumes.

The fingerprint (`run_fingerprint`) is what a run's result depends on besides its learning rate and seed;
a saved run (checkpoint or ``result.json``) made with other settings is refused with one line naming the
fields that differ.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import types
from typing import Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import modeling
from bert_jax.training import checkpointing, parallel, preemption

# Option fields that do not change a run's result (a finished or checkpointed run stays valid without them).
_NOT_IN_FINGERPRINT = ("learning_rate", "learning_rates", "seeds", "save_best_model", "checkpoint_every_steps",
                       "max_steps_this_run")


class Preempted(SystemExit):
    """Fine-tuning saved a checkpoint on SIGTERM (or at ``max_steps_this_run``) and stopped: the process
    ends with status 0 (a SystemExit with code 0); running the same command again resumes."""

    def __init__(self, message: str = ""):
        super().__init__(0)
        self.message = message


def plain_json(x):
    """``x`` as it reads back from JSON (numpy scalars -> Python numbers, tuples -> lists): what a
    checkpoint or result.json gives back, so a resumed run holds the same values as an uninterrupted one."""
    return json.loads(json.dumps(x, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))


def run_fingerprint(opts, kind: str, num_labels: int, model_config: modeling.BertConfig,
                    train: Mapping[str, np.ndarray], dev: Mapping[str, np.ndarray]) -> dict:
    """The options (a `finetune.FinetuneOptions`), the head, the model config and a digest of the train
    and dev arrays: what a run's result depends on besides its learning rate and seed."""
    digest = hashlib.sha256()
    for split, arrays in (("train", train), ("dev", dev)):
        for key in sorted(arrays):
            a = np.ascontiguousarray(np.asarray(arrays[key]))
            digest.update(f"{split}/{key}:{a.dtype.str}:{a.shape};".encode())
            digest.update(a.tobytes())
    options = {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts) if f.name not in _NOT_IN_FINGERPRINT}
    return plain_json({"kind": kind, "num_labels": int(num_labels), "model_config": model_config.to_hf_dict(),
                       "compute": {"dtype": model_config.dtype, "kernels": model_config.kernels},
                       "options": options, "data_sha256": digest.hexdigest()})


def check_fingerprint(saved, fingerprint, where: str):
    """One error naming the differing fields when a saved run's fingerprint is not ``fingerprint``."""
    if fingerprint is None or saved == fingerprint:
        return
    saved = saved or {}
    s_opts, f_opts = saved.get("options", {}), fingerprint.get("options", {})
    diffs = sorted({k for k in set(saved) | set(fingerprint) if k != "options" and saved.get(k) != fingerprint.get(k)}
                   | {f"options.{k}" for k in set(s_opts) | set(f_opts) if s_opts.get(k) != f_opts.get(k)})
    raise ValueError(f"{where} holds a run made with other settings ({', '.join(diffs) or 'unknown'} differ); "
                     "use a new --workdir, or delete it to start that run again")


def host_losses(losses) -> list:
    """Device float32 losses -> Python floats (exact), for a checkpoint's JSON."""
    return [float(x) for x in np.asarray(jax.device_get(jnp.stack(losses)))] if losses else []


@dataclasses.dataclass
class Progress:
    """Where a run is, besides its TrainState: what a checkpoint's meta holds."""
    epoch: int = 0                       # the epoch in progress (0-based)
    batch: int = 0                       # its batches done
    epoch_rng: Optional[dict] = None     # the numpy data-order rng state at its start
    epoch_losses: list = dataclasses.field(default_factory=list)   # its train losses so far (float32 values)
    history: list = dataclasses.field(default_factory=list)
    best: Optional[dict] = None
    best_epoch: int = -1
    seconds: float = 0.0


class RunCheckpoints:
    """The checkpoints of one run in ``run_dir`` (None: none, and `after_step` never stops the run).

    ``with RunCheckpoints(...) as ckpt``: ``ckpt.restore(state)`` resumes the newest
    checkpoint (or returns None); ``ckpt.after_step(...)`` after every step saves when one is due and
    raises `Preempted` on SIGTERM (``preempt``: a flag the caller holds over several runs; default: one
    for this run) or after ``max_steps`` steps in this process."""

    def __init__(self, run_dir: Optional[str], fingerprint: Optional[dict], every_steps: int,
                 max_steps: Optional[int] = None, preempt: Optional[preemption.PreemptionFlag] = None,
                 label: str = ""):
        self.fingerprint, self.every, self.max_steps, self.label = fingerprint, int(every_steps), max_steps, label
        self.checkpoints = checkpointing.Checkpoints(run_dir, keep=1) if run_dir else None
        self.preempt = preempt
        # Several processes decide together whether to stop (every 10 steps); one process at every step.
        self.check_every = 1 if jax.process_count() == 1 else preemption.CHECK_EVERY_STEPS
        self._stack = contextlib.ExitStack()

    def __enter__(self):
        if self.checkpoints is not None:
            self._stack.callback(self.checkpoints.close)
            if self.preempt is None:
                self.preempt = self._stack.enter_context(preemption.PreemptionFlag())
        return self

    def __exit__(self, *exc):
        self._stack.close()

    def restore(self, state):
        """(state, progress, best params or None, step) from the newest checkpoint, or None. ``state``: a
        fresh state of the run, whose shapes and placement the restored arrays take."""
        if self.checkpoints is None or self.checkpoints.latest_step() is None:
            return None
        abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
        bundle = types.SimpleNamespace(params=abstract.params, step=abstract.step,
                                       opt_state={"opt_state": abstract.opt_state, "best_params": abstract.params})
        params, opt_state, step_arr, meta = self.checkpoints.restore(self.checkpoints.latest_step(), bundle)
        check_fingerprint(meta.get("fingerprint"), self.fingerprint, self.checkpoints.dir)
        progress = Progress(**{f.name: meta[f.name] for f in dataclasses.fields(Progress)})
        best_params = jax.device_get(opt_state["best_params"]) if progress.best_epoch >= 0 else None
        if jax.process_index() == 0:
            print(f"{self.label} resuming from step {int(meta['step'])} (epoch {progress.epoch + 1}, "
                  f"{self.checkpoints.dir})", flush=True)
        state = state.replace(step=step_arr, params=params, opt_state=opt_state["opt_state"])
        return state, progress, best_params, int(meta["step"])

    def after_step(self, step: int, steps_run: int, total: int, state, best_params,
                   progress: Callable[[], Progress]):
        """Saves at ``step`` when due (``progress()`` gives the run's progress); raises `Preempted` after
        saving on SIGTERM or at ``max_steps``."""
        if self.checkpoints is None:
            return
        stop = parallel.any_process(self.preempt.requested) if step % self.check_every == 0 else False
        paused = self.max_steps is not None and steps_run >= self.max_steps and step < total
        if not (stop or paused or (self.every and step % self.every == 0)):
            return
        # The best parameters are the current ones until the first epoch ends: a placeholder, so every
        # checkpoint has the same items.
        saved = types.SimpleNamespace(   # `checkpointing.Checkpoints` writes .params, (.opt_state, .step), meta
            params=state.params, step=state.step,
            opt_state={"opt_state": state.opt_state,
                       "best_params": state.params if best_params is None else best_params})
        p = progress()
        meta = {"step": step, "fingerprint": self.fingerprint,
                **{f.name: getattr(p, f.name) for f in dataclasses.fields(Progress)}}
        self.checkpoints.save(step, saved, meta, wait=stop or paused)
        if stop or paused:
            why = "SIGTERM" if stop else "max_steps_this_run reached"
            message = (f"{self.label} {why}: saved step {step} to {self.checkpoints.dir}; exiting (the same "
                       "command resumes)")
            if jax.process_index() == 0:
                print(message, flush=True)
            raise Preempted(message)
