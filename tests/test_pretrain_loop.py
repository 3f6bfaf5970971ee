"""The pre-training loop end to end on real text: configs, resume, SIGTERM, bad input, one run per
workdir (several processes: tests/test_multihost.py; kill -9: tests/test_crash_safety.py)."""

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import bert_jax
from bert_jax.configs import pretrain as pretrain_config
from bert_jax.training import loop
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_MODEL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def make_data(out_dir, seq_len, max_preds, subdir="tutorial", extra=()):
    vocab = os.path.join(helpers.minilm_dir(), "vocab.txt")
    docs = os.path.join(os.path.dirname(helpers.python_docs_files()[0]), subdir)
    if not os.path.isdir(docs):
        docs = os.path.join("/usr/share/doc/python3.11/html/_sources", subdir)
    cmd = [sys.executable, os.path.join(REPO, "scripts", "create_pretraining_data.py"), f"--input_file={docs}",
           "--input_format=documents", f"--output_dir={out_dir}", "--num_output_shards=2", f"--vocab_file={vocab}",
           "--do_lower_case=True", f"--max_seq_length={seq_len}", f"--max_predictions_per_seq={max_preds}",
           "--dupe_factor=1", "--num_workers=1", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return os.path.join(out_dir, "*.tfrecord"), vocab


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    train, vocab = make_data(str(root / "train64"), 64, 10)
    evalf, _ = make_data(str(root / "eval64"), 64, 10, subdir="howto")
    train32, _ = make_data(str(root / "train32"), 32, 5)
    return {"train": train, "eval": evalf, "train32": train32, "vocab": vocab}


def tiny_config(data, **kw):
    c = pretrain_config.get_config("size=tiny,seq_len=64")
    c.model.update(SMALL_MODEL)
    c.model.max_position_embeddings = 64
    c.tokenizer = data["vocab"]
    c.train_files = data["train"]
    c.eval_files = data["eval"]
    c.max_predictions = 10
    c.global_batch_size = 16
    c.num_train_steps = 6
    c.warmup_steps = 2
    c.learning_rate = 1e-3
    c.log_every_steps = 1
    c.eval_every_steps = 3
    c.eval_batches = 2
    c.checkpoint_every_steps = 3
    c.shuffle_buffer = 100
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def scalars(workdir):
    """{tag: {step: value}} from every TensorBoard event file under workdir."""
    import tensorflow as tf
    out = {}
    for f in glob.glob(os.path.join(workdir, "**", "events.out.tfevents.*"), recursive=True):
        for e in tf.compat.v1.train.summary_iterator(f):
            for v in e.summary.value:
                val = float(tf.make_ndarray(v.tensor)) if v.HasField("tensor") else v.simple_value
                out.setdefault(v.tag, {})[e.step] = val
    return out


@pytest.mark.parametrize("mode", ["pmap", "jit"])
def test_tiny_config_runs_both_modes(data, tmp_path, mode):
    c = tiny_config(data, parallelism=mode, num_train_steps=3)
    result = loop.train_and_evaluate(c, str(tmp_path))
    assert result["step"] == 3 and np.isfinite(result["train"]["loss"])
    tags = scalars(str(tmp_path))
    for tag in ("train/loss", "train/mlm_loss", "train/nsp_loss", "train/learning_rate", "eval/mlm_accuracy",
                "eval/nsp_accuracy"):
        assert tag in tags, (tag, sorted(tags))
    assert sorted(tags["train/loss"]) == [1, 2, 3]
    # The workdir is a checkpoint load_pretrained reads.
    cfg, params = bert_jax.load_pretrained(str(tmp_path))
    assert cfg.hidden_size == 32 and set(params) == {"bert", "cls"}


def test_paper_recipe_phases_shrunk(data, tmp_path):
    """The base config's 90%/10% sequence-length phases, shrunk: 32 then 64 tokens, switching mid-run."""
    c = pretrain_config.get_config("size=base")
    assert [p.seq_len for p in c.phases] == [128, 512] and c.num_train_steps == 1_000_000
    assert (c.global_batch_size, c.learning_rate, c.warmup_steps) == (256, 1e-4, 10_000)
    c.model.update(SMALL_MODEL)
    c.model.max_position_embeddings = 64
    c.tokenizer = data["vocab"]
    c.phases[0].update(fraction=0.5, seq_len=32, max_predictions=5, train_files=data["train32"])
    c.phases[1].update(fraction=0.5, seq_len=64, max_predictions=10, train_files=data["train"])
    c.train_files = data["train32"]
    c.global_batch_size, c.num_train_steps, c.warmup_steps = 16, 4, 1
    c.log_every_steps, c.checkpoint_every_steps, c.shuffle_buffer = 1, 100, 50
    c.parallelism = "jit"
    result = loop.train_and_evaluate(c, str(tmp_path))
    assert result["step"] == 4
    assert sorted(scalars(str(tmp_path))["train/loss"]) == [1, 2, 3, 4]


def test_resume_is_bit_identical(data, tmp_path):
    full = loop.train_and_evaluate(tiny_config(data, parallelism="jit"), str(tmp_path / "a"))
    part = loop.train_and_evaluate(tiny_config(data, parallelism="jit", max_steps_this_run=4), str(tmp_path / "b"))
    assert part["preempted"] and part["step"] == 4
    rest = loop.train_and_evaluate(tiny_config(data, parallelism="jit"), str(tmp_path / "b"))
    assert rest["step"] == 6 and not rest["preempted"]
    a, b = scalars(str(tmp_path / "a")), scalars(str(tmp_path / "b"))
    for tag in ("train/loss", "train/mlm_loss", "train/nsp_loss"):
        assert [a[tag][s] for s in range(1, 7)] == [b[tag][s] for s in range(1, 7)], tag  # bit-identical
    assert full["train"]["loss"] == rest["train"]["loss"]
    # The same command once more on the finished workdir: nothing to train, the same results.json.
    with open(tmp_path / "b" / "results.json") as f:
        before = json.load(f)
    again = loop.train_and_evaluate(tiny_config(data, parallelism="jit"), str(tmp_path / "b"))
    with open(tmp_path / "b" / "results.json") as f:
        after = json.load(f)
    assert again["step"] == 6 and again["eval"] == rest["eval"] != {} and after["eval"] == before["eval"]
    assert after["train"]["loss"] == before["train"]["loss"] == rest["train"]["loss"]


def test_pmap_and_jit_give_the_same_losses(data, tmp_path):
    """Same seed, same data, dropout off: the two parallelism modes agree on 8 devices."""
    kw = dict(num_train_steps=3)
    runs = {}
    for mode in ("pmap", "jit"):
        c = tiny_config(data, parallelism=mode, **kw)
        c.model.hidden_dropout_prob = 0.0
        c.model.attention_probs_dropout_prob = 0.0
        loop.train_and_evaluate(c, str(tmp_path / mode))
        runs[mode] = scalars(str(tmp_path / mode))["train/loss"]
    np.testing.assert_allclose([runs["pmap"][s] for s in (1, 2, 3)], [runs["jit"][s] for s in (1, 2, 3)], rtol=1e-5)


def _pretrain_cmd(data, workdir, *extra):
    return [sys.executable, os.path.join(REPO, "scripts", "pretrain.py"),
            "--config=" + os.path.join(REPO, "bert_jax", "configs", "pretrain.py") + ":size=tiny,seq_len=64",
            f"--workdir={workdir}", f"--config.tokenizer={data['vocab']}", f"--config.train_files={data['train']}",
            "--config.max_predictions=10", "--config.global_batch_size=16", "--config.warmup_steps=2",
            "--config.shuffle_buffer=100", "--config.model.hidden_size=32", "--config.model.num_hidden_layers=2",
            "--config.model.num_attention_heads=2", "--config.model.intermediate_size=64", *extra]


def test_sigterm_saves_at_step_boundary_and_exits_0(data, tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(_pretrain_cmd(data, str(tmp_path), "--config.num_train_steps=100000",
                                          "--config.log_every_steps=1", "--config.checkpoint_every_steps=100000"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines, deadline = [], time.time() + 300
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("step 3/"):
                proc.send_signal(signal.SIGTERM)
                break
            assert time.time() < deadline, "".join(lines[-20:])
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines.append(out)
    assert proc.returncode == 0, "".join(lines)[-3000:]
    text = "".join(lines)
    assert "SIGTERM: saved step" in text
    saved = int(text.split("SIGTERM: saved step ")[1].split()[0])
    assert 3 <= saved <= 20
    assert os.path.isdir(os.path.join(tmp_path, "checkpoints", str(saved)))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bad_inputs_fail_before_compiling(data, tmp_path):
    def fails(match, **kw):
        with pytest.raises(ValueError, match=match):
            loop.train_and_evaluate(tiny_config(data, **kw), str(tmp_path / "bad"))

    fails(r"global_batch_size=12 must be divisible by devices x grad_accum_steps = 8 x 1", global_batch_size=12)
    fails(r"global_batch_size=16 must be divisible by devices x grad_accum_steps = 8 x 4", grad_accum_steps=4)
    fails(r"train_files='/nonexistent/\*.tfrecord' matches no files", train_files="/nonexistent/*.tfrecord")
    fails(r"has length 64 but the pipeline was asked for max_seq_length=32", seq_len=32,
          max_predictions=10)
    fails(r"has length 10 but the pipeline was asked for max_predictions_per_seq=20", max_predictions=20)
    other_vocab = tmp_path / "vocab.txt"
    other_vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(95)]))
    fails(r"made with a vocabulary of 30522 tokens .* config.tokenizer has 100", tokenizer=str(other_vocab))
    # A workdir holding another model size.
    loop.train_and_evaluate(tiny_config(data, num_train_steps=1, warmup_steps=0), str(tmp_path / "w"))
    c = tiny_config(data)
    c.model.hidden_size = 64
    with pytest.raises(ValueError, match=r"holds a checkpoint of a different model \(hidden_size: workdir 32 vs config 64"):
        loop.train_and_evaluate(c, str(tmp_path / "w"))


def test_nan_loss_stops_with_a_clear_message(data, tmp_path):
    c = tiny_config(data, learning_rate=1e30, warmup_steps=0, grad_clip_norm=0.0, num_train_steps=6,
                    eval_files="")
    with pytest.raises(FloatingPointError, match=r"loss is nan at step \d+ .*last good checkpoint"):
        loop.train_and_evaluate(c, str(tmp_path))


def _events(workdir, tag):
    """{step: [value, ...]} for ``tag`` over every event file under workdir (several runs log the same
    step after a resume; a file cut short by kill -9 is read up to its last whole record)."""
    import tensorflow as tf
    out = {}
    for f in sorted(glob.glob(os.path.join(workdir, "**", "events.out.tfevents.*"), recursive=True)):
        try:
            for e in tf.compat.v1.train.summary_iterator(f):
                for v in e.summary.value:
                    if v.tag == tag:
                        val = float(tf.make_ndarray(v.tensor)) if v.HasField("tensor") else v.simple_value
                        out.setdefault(e.step, []).append(val)
        except tf.errors.DataLossError:
            pass
    return out


def test_resume_between_log_steps_keeps_the_running_sums(data, tmp_path):
    """Checkpoint at 3, log every 4: a run resumed from 3 logs at 4 the mean of steps 1-4 (the sums of
    1-3 come from the checkpoint), bit-identical to an uninterrupted run -- not the mean of step 4 alone."""
    kw = dict(num_train_steps=6, log_every_steps=4, checkpoint_every_steps=3, eval_files="")
    loop.train_and_evaluate(tiny_config(data, **kw), str(tmp_path / "a"))
    loop.train_and_evaluate(tiny_config(data, **kw), str(tmp_path / "b"))
    import shutil
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "6")  # as if killed after saving step 3
    for f in glob.glob(str(tmp_path / "b" / "**" / "events.out.tfevents.*"), recursive=True):
        os.remove(f)
    out = loop.train_and_evaluate(tiny_config(data, **kw), str(tmp_path / "b"))
    assert out["step"] == 6
    a, b = scalars(str(tmp_path / "a")), scalars(str(tmp_path / "b"))
    for tag in ("train/loss", "train/mlm_loss", "train/nsp_loss", "train/mlm_accuracy"):
        assert sorted(b[tag]) == [4, 6], (tag, b[tag])
        assert [a[tag][4], a[tag][6]] == [b[tag][4], b[tag][6]], tag  # bit-identical


_HOLD_LOCK = """
import sys
sys.path.insert(0, {repo!r})
from bert_jax.training import workdir_lock
lock = workdir_lock.WorkdirLock({workdir!r}).acquire()
print("locked", flush=True)
sys.stdin.read()
"""


def test_one_run_per_workdir(data, tmp_path, capsys):
    """A live holder -> refused with one line naming host and pid; a dead holder's lock -> taken over."""
    workdir = str(tmp_path / "w")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK.format(repo=REPO, workdir=workdir)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        c = tiny_config(data, num_train_steps=1, warmup_steps=0, eval_files="")
        with pytest.raises(ValueError) as e:
            loop.train_and_evaluate(c, workdir)
        msg = str(e.value)
        assert "\n" not in msg and f"is in use by another run (host {socket.gethostname()}, pid {holder.pid}" in msg
        assert not os.path.exists(os.path.join(workdir, "checkpoints"))  # refused before touching the workdir
        holder.kill()  # kill -9: the kernel drops the flock, the file still names the dead holder
        holder.wait(timeout=60)
        capsys.readouterr()
        assert loop.train_and_evaluate(c, workdir)["step"] == 1
        err = capsys.readouterr().err
        assert f"taking over {os.path.join(workdir, 'run.lock')} from a run that is gone" in err
        assert f"pid {holder.pid}" in err
        # Released at the end: the same command runs again without a warning.
        loop.train_and_evaluate(c, workdir)
        assert "taking over" not in capsys.readouterr().err
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=60)
