"""Fine-tuning resumes like pre-training: a run stopped mid-epoch -- by ``max_steps_this_run`` or by
SIGTERM (saved at the next step boundary, exit status 0) -- and started again with the same command
ends bit-identical to an uninterrupted run (every epoch's train loss, the dev metrics, the best
parameters); the lr x seed protocol skips finished runs and reads their saved results.

In-process tests (`finetune.finetune`, `protocol.run_protocol`) and one end-to-end test of
experiments/classification/main.py in subprocesses on a tiny CSV task (a tiny bert_jax checkpoint, a
38-token vocabulary), each wait bounded.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest

from bert_jax.training import finetune, protocol, resume
from tests.helpers import CollectedProcess
from tests.test_finetune import CONFIG, make_arrays

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One layer and two length buckets (32, 64): what is resumed -- the bucketed batch order, dropout, the optimizer
# state -- is all there, at half the compilations of test_finetune's model.
CONFIG_DROPOUT = CONFIG.replace(num_hidden_layers=1, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
BUCKETS = "32"


def _evaluate(outputs):
    """A dev 'metric' that changes with every parameter: the sum of the logits."""
    return {"score": float(np.sum(outputs, dtype=np.float64))}


def _options(**kw):
    base = dict(learning_rate=1e-3, num_epochs=3.0, global_batch_size=8, eval_batch_size=16,
                warmup_proportion=0.2, checkpoint_every_steps=4, length_buckets=BUCKETS)
    base.update(kw)
    return finetune.FinetuneOptions(**base)


def _run(train, dev, run_dir=None, max_steps=None, evaluate=_evaluate, seed=3, **kw):
    model = finetune.build_model(CONFIG_DROPOUT, "classification", 3)
    params = finetune.init_params(model, jax.random.PRNGKey(seed))
    return finetune.finetune(model, "classification", params, train, dev, evaluate, "score", _options(**kw),
                             seed=seed, run_dir=run_dir, max_steps=max_steps)


def _same(a, b):
    assert a.history == b.history
    assert (a.best_metrics, a.best_epoch, a.steps) == (b.best_metrics, b.best_epoch, b.steps)
    for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def data():
    return make_arrays(60, seed=11), make_arrays(20, seed=12)   # 8 steps per epoch, the last batch short


@pytest.fixture(scope="module")
def reference(data):
    """The uninterrupted run the interrupted ones are compared with (made once for the module)."""
    ref = _run(*data)
    assert ref.steps == 24 and len(ref.history) == 3
    return ref


def test_resume_mid_epoch_and_across_epochs_is_bit_identical(data, reference, tmp_path):
    train, dev = data
    ref = reference
    run_dir = str(tmp_path / "run")
    with pytest.raises(resume.Preempted) as stopped:
        _run(train, dev, run_dir, max_steps=5)          # mid-epoch 1, after the checkpoint at step 4
    assert stopped.value.code == 0
    with pytest.raises(resume.Preempted):
        _run(train, dev, run_dir, max_steps=6)          # through the end of epoch 1 to step 11
    res = _run(train, dev, run_dir)
    assert res.steps_run == 24 - 11
    _same(res, ref)


def test_sigterm_saves_at_the_next_step_and_resumes(data, reference, tmp_path):
    """SIGTERM arrives while the dev set of epoch 1 is evaluated: the run stops after the first step of
    epoch 2 (no checkpoint is due there) and the next call finishes it."""
    train, dev = data
    ref = reference
    calls = []

    def evaluate_then_sigterm(outputs):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return _evaluate(outputs)
    run_dir = str(tmp_path / "run")
    with pytest.raises(resume.Preempted):
        _run(train, dev, run_dir, evaluate=evaluate_then_sigterm, checkpoint_every_steps=0)
    assert os.path.isdir(os.path.join(run_dir, "checkpoints", "9"))
    res = _run(train, dev, run_dir, checkpoint_every_steps=0)
    assert res.steps_run == 24 - 9
    _same(res, ref)


def test_a_checkpoint_of_other_settings_is_refused(data, tmp_path):
    train, dev = data
    model = finetune.build_model(CONFIG_DROPOUT, "classification", 3)
    opts = _options()
    fp = resume.run_fingerprint(opts, "classification", 3, CONFIG_DROPOUT, train, dev)
    run_dir = str(tmp_path / "run")
    params = finetune.init_params(model, jax.random.PRNGKey(0))
    with pytest.raises(resume.Preempted):
        finetune.finetune(model, "classification", params, train, dev, _evaluate, "score", opts, run_dir=run_dir,
                          max_steps=2, fingerprint=fp)
    other = resume.run_fingerprint(_options(adam_b2=0.98), "classification", 3, CONFIG_DROPOUT, train, dev)
    with pytest.raises(ValueError, match=r"holds a run made with other settings \(options.adam_b2 differ\)"):
        finetune.finetune(model, "classification", params, train, dev, _evaluate, "score", opts, run_dir=run_dir,
                          fingerprint=other)


def _protocol(workdir, train, dev, **kw):
    config = ml_collections.ConfigDict(dict(learning_rates="1e-3,3e-3", seeds="0,1", num_epochs=2.0,
                                            global_batch_size=8, eval_batch_size=16, warmup_proportion=0.1,
                                            save_best_model=False, checkpoint_every_steps=8, length_buckets=BUCKETS,
                                            max_steps_this_run=0))
    config.update(kw)
    return protocol.run_protocol(config, str(workdir), CONFIG_DROPOUT, None, "classification", 3, train, dev,
                                 _evaluate, "score", task="t")


def _without_seconds(summary):
    out = json.loads(json.dumps(summary))
    for r in out["runs"]:
        r.pop("seconds")
    out["config"].pop("max_steps_this_run")
    return out


def test_protocol_resumes_and_skips_finished_runs(data, tmp_path, capsys):
    train, dev = data
    ref = _protocol(tmp_path / "ref", train, dev)
    workdir = tmp_path / "interrupted"
    for budget in (20, 30):   # 16 steps per run: stops at step 4 of run 2, then (runs 2, 3 done) at step 2 of run 4
        with pytest.raises(resume.Preempted):
            _protocol(workdir, train, dev, max_steps_this_run=budget)
    capsys.readouterr()
    res = _protocol(workdir, train, dev)
    out = capsys.readouterr().out
    assert out.count("finished earlier") == 3 and "seed=1] resuming from step 2 (" in out
    assert _without_seconds(res.summary) == _without_seconds(ref.summary)
    assert (res.best_seed, res.best_learning_rate) == (ref.best_seed, ref.best_learning_rate)
    for x, y in zip(jax.tree_util.tree_leaves(res.best_params), jax.tree_util.tree_leaves(ref.best_params)):
        np.testing.assert_array_equal(x, y)
    # Finished runs keep result.json; only the best seed of each lr keeps its parameters; no checkpoints.
    runs = sorted(os.listdir(workdir / "runs"))
    assert runs == ["lr0.001_seed0", "lr0.001_seed1", "lr0.003_seed0", "lr0.003_seed1"]
    assert all(os.path.isfile(workdir / "runs" / r / "result.json") for r in runs)
    assert not any(os.path.exists(workdir / "runs" / r / "checkpoints") for r in runs)
    assert sum(os.path.isdir(workdir / "runs" / r / "best_params") for r in runs) == 2
    # Again: nothing is trained, the same summary and model come back (read from the run dirs).
    again = _protocol(workdir, train, dev)
    assert capsys.readouterr().out.count("finished earlier") == 4
    assert _without_seconds(again.summary) == _without_seconds(res.summary)
    for x, y in zip(jax.tree_util.tree_leaves(again.best_params), jax.tree_util.tree_leaves(ref.best_params)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(again.best_finetuner.predict(again.best_params, dev, 16),
                                  ref.best_finetuner.predict(ref.best_params, dev, 16))
    with pytest.raises(ValueError, match="holds a run made with other settings"):
        _protocol(workdir, train, dev, weight_decay=0.1)


# ------------------------------------------------------------------------------ end to end, subprocesses
WORDS = ("good great fine nice happy love best superb bad awful poor sad hate worst dull boring the a movie "
         "film plot acting was is very really not so story cast music scene end").split()
POSITIVE, NEGATIVE = set(WORDS[:8]), set(WORDS[8:16])


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    """A 38-token WordPiece vocab, a tiny bert_jax checkpoint of it and a sentiment-like CSV task."""
    from bert_jax import checkpoint, modeling

    root = tmp_path_factory.mktemp("tiny_task")
    vocab = str(root / "vocab.txt")
    with open(vocab, "w", encoding="utf-8") as f:
        f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    cfg = modeling.BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=64)
    params = modeling.init_params(modeling.BertForPreTraining(cfg), jax.random.PRNGKey(5))
    ckpt = checkpoint.save_params(str(root / "ckpt"), cfg, jax.device_get(params))
    rng = np.random.default_rng(0)
    files = {}
    for split, n in (("train", 96), ("dev", 40), ("test", 40)):
        files[split] = str(root / f"{split}.csv")
        with open(files[split], "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            for _ in range(n):
                label = int(rng.integers(0, 2))
                words = list(rng.choice(WORDS[16:], int(rng.integers(3, 12))))
                words.insert(int(rng.integers(0, len(words))), rng.choice(sorted(POSITIVE if label else NEGATIVE)))
                w.writerow([" ".join(words), label])
    return {"vocab": vocab, "ckpt": ckpt, **files}


def _command(task, workdir, *extra):
    return [sys.executable, os.path.join(REPO, "experiments", "classification", "main.py"),
            f"--config={os.path.join(REPO, 'experiments', 'classification', 'config.py')}:task=csv",
            f"--workdir={workdir}", f"--config.init_checkpoint={task['ckpt']}", f"--config.tokenizer={task['vocab']}",
            f"--config.train_file={task['train']}", f"--config.eval_file={task['dev']}",
            f"--config.test_file={task['test']}", "--config.max_seq_length=32", "--config.num_epochs=4",
            "--config.global_batch_size=8", "--config.eval_batch_size=16", "--config.learning_rate=1e-3",
            "--config.seeds=0,1", "--config.checkpoint_every_steps=10", *extra]


def _env(cache):
    # One CPU device; the compiled steps are cached on disk, so the later processes start quickly.
    return {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": cache,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


class _Process(CollectedProcess):
    """A fine-tuning process run from the repository root; every wait bounded."""

    def __init__(self, cmd, env):
        super().__init__(cmd, env, cwd=REPO)

    def wait_for(self, text, timeout):
        deadline = time.time() + timeout
        while not any(text in line for line in list(self.lines)):
            if self.proc.poll() is not None or time.time() > deadline:
                self.proc.kill()
                pytest.fail(f"no {text!r} in the output:\n" + "".join(self.lines[-30:]))
            time.sleep(0.01)

    def finish(self, timeout):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail("timed out:\n" + "".join(self.lines[-30:]))
        self.reader.join(timeout=10)
        return self.proc.returncode, "".join(self.lines)


def _results(workdir):
    with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
        r = json.load(f)
    for run in r["runs"]:
        run.pop("seconds")
    r.pop("best_model")
    return r


def test_classification_main_sigterm_and_rerun_equal_an_uninterrupted_run(tiny_task, tmp_path):
    """12 steps per epoch, 48 per run, 2 seeds. The same command three times: stopped by
    max_steps_this_run in seed 0's second epoch; then (seed 0 resumed and finished) SIGTERM-ed once seed
    1 has finished an epoch; then to the end: results.json equals an uninterrupted run's."""
    env = _env(str(tmp_path / "jax_cache"))
    ref_dir, work = str(tmp_path / "ref"), str(tmp_path / "interrupted")
    code, out = _Process(_command(tiny_task, ref_dir), env).finish(120)
    assert code == 0, out[-3000:]

    code, out = _Process(_command(tiny_task, work, "--config.max_steps_this_run=17"), env).finish(120)
    assert code == 0 and "seed=0] max_steps_this_run reached: saved step 17" in out, out[-3000:]
    assert not os.path.exists(os.path.join(work, "results.json"))

    run = _Process(_command(tiny_task, work), env)
    run.wait_for("seed=1] epoch 1/4", 120)
    run.proc.send_signal(signal.SIGTERM)
    code, out = run.finish(120)
    assert code == 0 and "seed=1] SIGTERM: saved step" in out, out[-3000:]
    assert "seed=0] resuming from step 17 (" in out
    assert not os.path.exists(os.path.join(work, "results.json"))

    code, out = _Process(_command(tiny_task, work), env).finish(120)
    assert code == 0, out[-3000:]
    assert "seed=0] finished earlier" in out and "seed=1] resuming from step" in out
    got, want = _results(work), _results(ref_dir)
    assert got["runs"][0]["history"] == want["runs"][0]["history"]
    assert got == want
