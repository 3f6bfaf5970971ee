"""kill -9 at any moment, then the same command: the run resumes from the newest complete checkpoint
(a save cut short is ignored and its temporary directory removed) and ends bit-identical to an
uninterrupted run -- eval metrics, every logged train loss, the final parameters.

The run is the default config (pmap) on 2 CPU devices, 30 steps, a checkpoint every 5 steps and a log
every 4 (so a resume lands between log steps and needs the running sums kept in the checkpoint). It is
killed four times: inside an async save (an ``*.orbax-checkpoint-tmp*`` directory in
``workdir/checkpoints``), just after a checkpoint completed, in the middle of a step, and inside the
final save; each time the same command is started again. A persistent compilation cache keeps the
restarts short.
"""

import json
import os
import random
import signal
import sys
import time

import numpy as np
import pytest

import bert_jax
from tests.helpers import CollectedProcess
from tests.test_pretrain_loop import REPO, SMALL_MODEL, _events

TMP = ".orbax-checkpoint-tmp"
STEPS = 30
RUN = dict(num_train_steps=STEPS, checkpoint_every_steps=5, log_every_steps=4, eval_every_steps=STEPS,
           eval_batches=2, global_batch_size=16, warmup_steps=5, learning_rate=1e-3, shuffle_buffer=100,
           keep_checkpoints=3)


@pytest.fixture(scope="module")
def data(pretrain_data_64):
    return pretrain_data_64


def _command(data, workdir):
    return [sys.executable, os.path.join(REPO, "scripts", "pretrain.py"),
            "--config=" + os.path.join(REPO, "bert_jax", "configs", "pretrain.py") + ":size=tiny,seq_len=64",
            f"--workdir={workdir}", f"--config.tokenizer={data['vocab']}", f"--config.train_files={data['train']}",
            f"--config.eval_files={data['eval']}", "--config.max_predictions=10",
            "--config.model.max_position_embeddings=64",
            *[f"--config.model.{k}={v}" for k, v in SMALL_MODEL.items()],
            *[f"--config.{k}={v}" for k, v in RUN.items()]]


class Run(CollectedProcess):
    """One `scripts/pretrain.py` process; its output lines collected by a thread."""

    def logged_steps(self):
        return [int(ln.split()[1].split("/")[0]) for ln in list(self.lines) if ln.startswith("step ")]

    def kill9(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.wait(60)

    def wait(self, timeout):
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=60)
            self.reader.join(timeout=30)
        return self.proc.returncode


def _listing(ckpt_dir):
    try:
        return os.listdir(ckpt_dir)
    except FileNotFoundError:
        return []


def _complete_steps(ckpt_dir):
    return sorted(int(d) for d in _listing(ckpt_dir) if d.isdigit())


def _until(run, cond, deadline):
    """Polls ``cond()`` every millisecond until true (-> True) or the process ends / the deadline (-> False)."""
    while time.time() < deadline:
        if cond():
            return True
        if run.proc.poll() is not None:
            return False
        time.sleep(0.001)
    raise AssertionError("timed out:\n" + run.text()[-3000:])


def test_kill_9_at_any_moment_then_rerun_is_bit_identical(data, tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", PYTHONUNBUFFERED="1",
               TF_CPP_MIN_LOG_LEVEL="2", JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    ref_dir, dir_ = str(tmp_path / "uninterrupted"), str(tmp_path / "killed")
    ckpt = os.path.join(dir_, "checkpoints")

    ref = Run(_command(data, ref_dir), env)
    assert ref.wait(600) == 0, ref.text()[-3000:]

    rnd = random.Random(0)
    cmd = _command(data, dir_)
    seen = []  # (plan, what was on disk right after the kill)

    def during_save(run, deadline, step_prefix=None):
        """Kill while an async save is being written; `step_prefix`: only that step's save."""
        def saving():
            return any(TMP in d and (step_prefix is None or d.startswith(step_prefix)) for d in _listing(ckpt))
        return _until(run, saving, deadline)

    def after_new_checkpoint(run, deadline):
        before = _complete_steps(ckpt)[-1:] or [0]
        return _until(run, lambda: (_complete_steps(ckpt)[-1:] or [0])[0] > before[0], deadline)

    def mid_step(run, deadline):
        start = len(run.lines)
        ok = _until(run, lambda: any(ln.startswith("step ") for ln in run.lines[start:]), deadline)
        time.sleep(rnd.uniform(0.0, 0.3))
        return ok

    plans = [("inside an async save", during_save), ("just after a checkpoint completed", after_new_checkpoint),
             ("in the middle of a step", mid_step),
             ("inside the final save", lambda r, d: during_save(r, d, step_prefix=f"{STEPS}."))]
    outputs = []
    for name, plan in plans:
        run = Run(cmd, env)
        hit = plan(run, time.time() + 600)
        run.kill9()
        outputs.append(run.text())
        listing = sorted(_listing(ckpt))
        seen.append((name, hit, listing))
        if not hit:  # the run finished before the moment came (possible for the last plan only)
            assert run.proc.returncode == 0 and name == plans[-1][0], (name, run.text()[-3000:])
    final = Run(cmd, env)
    assert final.wait(600) == 0, final.text()[-3000:]
    outputs.append(final.text())

    # The kills landed where planned: at least one inside a save left an unfinished save behind.
    assert any(hit and any(TMP in d for d in listing) for _, hit, listing in seen), seen
    # Unfinished saves were never restored from and are gone now.
    assert not [d for d in _listing(ckpt) if TMP in d], _listing(ckpt)
    assert _complete_steps(ckpt)[-1] == STEPS
    resumed = [int(o.split("Resuming from step ")[1].split()[0]) for o in outputs if "Resuming from step " in o]
    assert resumed and all(s % RUN["checkpoint_every_steps"] == 0 for s in resumed), resumed
    # kill -9 leaves run.lock naming the dead run; the next run takes it over with a warning.
    assert any("taking over" in o and "run.lock" in o for o in outputs[1:])

    # Bit-identical: eval metrics, the final train log, every logged train loss, the parameters.
    with open(os.path.join(ref_dir, "results.json")) as f:
        want = json.load(f)
    with open(os.path.join(dir_, "results.json")) as f:
        got = json.load(f)
    assert got["eval"] == want["eval"], (got["eval"], want["eval"])
    for k in ("loss", "mlm_loss", "nsp_loss", "mlm_accuracy", "nsp_accuracy"):
        assert got["train"][k] == want["train"][k], k
    for tag in ("train/loss", "train/mlm_loss", "train/nsp_loss"):
        ref_vals, vals = _events(ref_dir, tag), _events(dir_, tag)
        for step, vs in vals.items():  # a step logged again after a resume: the same value every time
            assert all(v == ref_vals[step][0] for v in vs), (tag, step, vs, ref_vals[step])
        assert sorted(vals) == sorted(ref_vals), (tag, sorted(vals), sorted(ref_vals))
    _, p_ref = bert_jax.load_pretrained(ref_dir)
    _, p_got = bert_jax.load_pretrained(dir_)
    flat_ref = dict(jax_leaves(p_ref))
    for path, x in jax_leaves(p_got):
        assert np.array_equal(x, flat_ref[path]), path
    print("kills:", [(name, hit, [d for d in listing if TMP in d or d.isdigit()]) for name, hit, listing in seen],
          "resumed from:", resumed)


def jax_leaves(tree):
    import jax
    return [(jax.tree_util.keystr(p), np.asarray(x)) for p, x in jax.tree_util.tree_leaves_with_path(tree)]
