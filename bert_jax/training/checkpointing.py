"""Step checkpoints in ``workdir/checkpoints`` that resume by themselves, bit-identically.

Each checkpoint holds ``params``, ``train`` (optimizer state, step) and ``meta`` (JSON): the dropout
rng, the data position (phase + `bert_jax.data.pipeline` iterator state), the running sums of the
train metrics since the last log step, and the last logged train / eval metrics. A save cut short by
kill -9 is a ``*.orbax-checkpoint-tmp*`` directory that is never restored and is deleted by the next
run. `bert_jax.load_pretrained(workdir)` reads the newest ``params``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from bert_jax import checkpoint as ckpt_lib
from bert_jax.training import step as step_lib


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

    def path(self, step: Optional[int]) -> str:
        return os.path.join(self.dir, str(step)) if step is not None else "none"

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


@dataclasses.dataclass
class Start:
    """Where a run starts: step 0 of a fresh state, or a restored checkpoint's step and meta."""
    state: Any
    step: int
    rng: Any
    data_state: Optional[dict] = None          # {"phase": index, "iterator": pipeline state}
    train_sums: Optional[dict] = None          # see `sums_to_meta`
    last_train: Dict[str, float] = dataclasses.field(default_factory=dict)
    last_eval: Dict[str, float] = dataclasses.field(default_factory=dict)
    checkpoint: Optional[int] = None           # the step restored, None for a fresh start


def restore(checkpoints: Checkpoints, trainer, step: int) -> Start:
    """The state (laid out for the trainer's mode) and meta of checkpoint ``step``."""
    params, opt_state, step_arr, meta = checkpoints.restore(step, trainer.abstract_state())
    state = step_lib.TrainState(step=step_arr, params=params, opt_state=opt_state, tx=trainer.tx)
    logging.info("Resumed from %s at step %d", checkpoints.dir, int(meta["step"]))
    # The last logged train / eval metrics travel in the checkpoint too: rerunning a finished (or
    # killed-after-its-last-save) run's command rewrites the same results.json instead of an empty one.
    return Start(state=trainer.from_saved(state), step=int(meta["step"]),
                 rng=jnp.asarray(np.asarray(meta["rng"], np.uint32)), data_state=meta.get("data_state"),
                 train_sums=meta.get("train_sums"), last_train=dict(meta.get("last_train") or {}),
                 last_eval=dict(meta.get("last_eval") or {}), checkpoint=step)


def make_meta(step: int, rng, phase_index: int, data_position: dict, train_sums: dict,
              last_train: dict, last_eval: dict) -> dict:
    key_data = jax.random.key_data(rng) if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else rng
    return {"step": step, "rng": np.asarray(key_data).tolist(),
            "data_state": {"phase": phase_index, "iterator": data_position},
            "train_sums": train_sums, "last_train": last_train, "last_eval": last_eval}


def sums_to_meta(trainer, acc, acc_n: int) -> dict:
    """The running sums of the train metrics since the last log step, for the checkpoint's meta, so a
    resumed run logs the same averages as an uninterrupted one (float32 -> JSON double is exact)."""
    if acc is None or not acc_n:
        return {"n": 0, "sums": {}}
    return {"n": int(acc_n), "sums": {k: [float(v), str(v.dtype)] for k, v in trainer.host_values(acc).items()}}


def sums_from_meta(trainer, saved):
    if not saved or not saved.get("n"):
        return None, 0
    host = {k: np.asarray(v, dtype=dt) for k, (v, dt) in saved["sums"].items()}
    return trainer.device_values(host), int(saved["n"])


def write_workdir_files(workdir: str, config, bert_config, tokenizer) -> None:
    """Process 0: the marker that makes the workdir a loadable checkpoint, the config, and a copy of the
    tokenizer (written to ``tokenizer.partial`` and renamed, so kill -9 cannot leave half of it)."""
    if jax.process_index() != 0:
        return
    ckpt_lib.write_marker(workdir, bert_config, tokenizer=ckpt_lib.abspath(config.tokenizer))
    ckpt_lib.write_json_atomic(os.path.join(workdir, "train_config.json"), config.to_dict())
    tokenizer_dir = os.path.join(workdir, "tokenizer")
    if not ckpt_lib.is_remote(workdir) and not os.path.isdir(tokenizer_dir):
        partial = tokenizer_dir + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        tokenizer.save(partial)
        os.replace(partial, tokenizer_dir)
