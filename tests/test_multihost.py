"""Several processes as users run them: 2 processes x 4 CPU devices on 127.0.0.1 with the default config
(parallelism=pmap) and with parallelism=jit, long enough for 3 checkpoints, 2 evals and 6 log steps,
against 1 process x 8 devices. Every wait has a timeout; a hang fails the test with both processes' logs.

Measured (40 steps, dropout on, lr 1e-3): 2 x 4 equals 1 x 8 to ~1e-7 relative in each mode (float
summation order only); pmap and jit differ by up to 5e-4 relative in the train loss at step 40.
"""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from bert_jax.training import loop
from tests.test_finetune_resume import tiny_task  # noqa: F401 (a fixture)
from tests.test_pretrain_loop import REPO, SMALL_MODEL, _free_port, scalars

STEPS = dict(num_train_steps=30, checkpoint_every_steps=10, log_every_steps=5, eval_every_steps=15,
             eval_batches=2, global_batch_size=16, warmup_steps=5, learning_rate=1e-3, shuffle_buffer=100)
LOGGED = [5, 10, 15, 20, 25, 30]
EVALS = [15, 30]
TRAIN_TAGS = ("train/loss", "train/mlm_loss", "train/nsp_loss")
EVAL_TAGS = ("eval/mlm_loss", "eval/nsp_loss", "eval/mlm_accuracy", "eval/nsp_accuracy")


@pytest.fixture(scope="module")
def data(pretrain_data_64):
    return pretrain_data_64


def config(data, mode):
    from bert_jax.configs import pretrain as pretrain_config
    c = pretrain_config.get_config("size=tiny,seq_len=64")
    c.model.update(SMALL_MODEL)
    c.model.max_position_embeddings = 64
    c.update(dict(tokenizer=data["vocab"], train_files=data["train"], eval_files=data["eval"], max_predictions=10,
                  parallelism=mode, **STEPS))
    return c


def command(data, workdir, mode, port, process_id, num_processes=2, extra=()):
    args = [f"--config.{k}={v}" for k, v in STEPS.items()]
    args += [f"--config.model.{k}={v}" for k, v in SMALL_MODEL.items()]
    if mode != "pmap":  # pmap is the default: leave it to the default, as users do
        args.append(f"--config.parallelism={mode}")
    return [sys.executable, os.path.join(REPO, "scripts", "pretrain.py"),
            "--config=" + os.path.join(REPO, "bert_jax", "configs", "pretrain.py") + ":size=tiny,seq_len=64",
            f"--workdir={workdir}", f"--config.tokenizer={data['vocab']}", f"--config.train_files={data['train']}",
            f"--config.eval_files={data['eval']}", "--config.max_predictions=10", "--config.model.max_position_embeddings=64",
            *args, f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num_processes}",
            f"--process_id={process_id}", "--initialization_timeout=120", "--heartbeat_timeout=60",
            "--config.progress_timeout_s=240", *extra]


def run_processes(cmds, logs_dir, timeout_s=480, devices=4):
    """Starts every command at once; waits for all with one deadline; kills the rest on timeout.
    Returns [(returncode, output)]."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", PYTHONUNBUFFERED="1",
               TF_CPP_MIN_LOG_LEVEL="2")
    os.makedirs(logs_dir, exist_ok=True)
    procs, files = [], []
    for i, cmd in enumerate(cmds):
        f = open(os.path.join(logs_dir, f"process{i}.log"), "w+")
        files.append(f)
        procs.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, text=True, env=env))
    deadline = time.time() + timeout_s
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=60)
    out = []
    for p, f in zip(procs, files):
        f.seek(0)
        out.append((p.returncode, f.read()))
        f.close()
    return out


def _check(results, what):
    text = "\n=====\n".join(o[-4000:] for _, o in results)
    assert all(rc == 0 for rc, _ in results), f"{what}: exit codes {[rc for rc, _ in results]}\n{text}"
    assert not any("Traceback" in o for _, o in results), text


@pytest.fixture(scope="module")
def one_process(data, tmp_path_factory):
    """1 process x 8 devices (the test process), both modes."""
    out = {}
    for mode in ("pmap", "jit"):
        workdir = str(tmp_path_factory.mktemp(f"one_{mode}"))
        loop.train_and_evaluate(config(data, mode), workdir)
        out[mode] = scalars(workdir)
    return out


@pytest.mark.parametrize("mode", ["pmap", "jit"])
def test_two_processes_match_one(data, one_process, tmp_path, mode):
    workdir = str(tmp_path / "run")
    port = _free_port()
    results = run_processes([command(data, workdir, mode, port, i) for i in range(2)], str(tmp_path / "logs"))
    _check(results, f"2 processes, parallelism={mode}")
    out0 = results[0][1]
    assert "8 devices / 2 processes, parallelism=" + mode in out0
    assert sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()) == [10, 20, 30]
    assert os.path.isfile(os.path.join(workdir, "results.json"))
    two, one = scalars(workdir), one_process[mode]
    for tag in TRAIN_TAGS:
        assert sorted(two[tag]) == LOGGED, (tag, sorted(two[tag]))
        np.testing.assert_allclose([two[tag][s] for s in LOGGED], [one[tag][s] for s in LOGGED], rtol=1e-5,
                                   err_msg=tag)
    for tag in EVAL_TAGS:
        assert sorted(two[tag]) == EVALS, (tag, sorted(two[tag]))
        np.testing.assert_allclose([two[tag][s] for s in EVALS], [one[tag][s] for s in EVALS], rtol=1e-5,
                                   err_msg=tag)


def test_pmap_and_jit_agree_over_30_steps(one_process):
    """Dropout on, lr 1e-3: the two modes' train losses stay within 2e-3 relative (5e-4 measured at 40)."""
    for tag in TRAIN_TAGS + ("eval/mlm_loss", "eval/nsp_loss"):
        steps = LOGGED if tag.startswith("train") else EVALS
        np.testing.assert_allclose([one_process["jit"][tag][s] for s in steps],
                                   [one_process["pmap"][tag][s] for s in steps], rtol=2e-3, err_msg=tag)


def test_a_process_that_never_comes_says_so(data, tmp_path):
    """Only process 0 of 2 is started: it stops after --initialization_timeout with one line, status 4."""
    cmd = command(data, str(tmp_path / "run"), "pmap", _free_port(), 0)
    cmd = [a for a in cmd if not a.startswith("--initialization_timeout")] + ["--initialization_timeout=5"]
    t0 = time.time()
    [(rc, out)] = run_processes([cmd], str(tmp_path / "logs"), timeout_s=120)
    assert rc == 4, out[-3000:]
    assert "process 0 of 2: the other 1 process(es) did not all connect at 127.0.0.1:" in out
    assert "within --initialization_timeout=5 s" in out and "Traceback" not in out
    assert time.time() - t0 < 110


_STALL = """
import sys, time
sys.path.insert(0, {repo!r})
from bert_jax.training import parallel
w = parallel.ProgressWatchdog(1.0, enabled=True)
w.beat(7, "saving checkpoint 7")
time.sleep(60)
"""


def test_watchdog_ends_a_stalled_process():
    """No beat for progress_timeout_s -> one line naming the step and activity, exit status 3."""
    t0 = time.time()
    r = subprocess.run([sys.executable, "-c", _STALL.format(repo=REPO)], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert r.returncode == 3, r.stderr[-2000:]
    assert "process 0: no progress for" in r.stderr and "while saving checkpoint 7 at step 7" in r.stderr
    assert time.time() - t0 < 50


# ------------------------------------------------------------------ fine-tuning: experiments/classification
def _numbers_close(got, want, where="results"):
    """Equal structure and strings; numbers equal to 1e-5 relative (float summation order only)."""
    if isinstance(want, dict):
        assert sorted(got) == sorted(want), where
        for k in want:
            _numbers_close(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            _numbers_close(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7, err_msg=where)
    else:
        assert got == want, where


def test_finetuning_on_two_processes_resumes_and_matches_one(tiny_task, tmp_path):
    """experiments/classification as users run it on 2 processes x 4 devices: stopped by
    max_steps_this_run mid-epoch (every process saves, exit 0), resumed by the same command, checkpoints
    every 5 steps on the way; results.json equals 1 process x 8 devices'."""
    from tests.test_finetune_resume import _command as finetune_command, _results

    extra = ("--config.seeds=0", "--config.num_epochs=2")   # 12 steps per epoch, 24 in all

    def on_two(workdir, *more):
        port = _free_port()
        return [finetune_command(tiny_task, workdir, *extra, *more, f"--coordinator_address=127.0.0.1:{port}",
                                 "--num_processes=2", f"--process_id={i}", "--initialization_timeout=120",
                                 "--heartbeat_timeout=60") for i in range(2)]

    one, two, cache = str(tmp_path / "one"), str(tmp_path / "two"), str(tmp_path / "jax_cache")
    extra += (f"--compilation_cache={cache}",)   # a main's compiled programs are kept on disk (cli)
    results = run_processes([finetune_command(tiny_task, one, *extra)], str(tmp_path / "logs1"), 240, devices=8)
    assert any(name.endswith("-cache") for name in os.listdir(cache)), os.listdir(cache)
    _check(results, "1 process x 8 devices")
    results = run_processes(on_two(two, "--config.max_steps_this_run=17"), str(tmp_path / "logs2"), 240)
    _check(results, "2 processes, stopped")
    assert "classification: process 0 of 2, 8 devices (4 local)" in results[0][1], results[0][1][-3000:]
    assert "seed=0] max_steps_this_run reached: saved step 17" in results[0][1], results[0][1][-3000:]
    assert not os.path.exists(os.path.join(two, "results.json"))
    results = run_processes(on_two(two), str(tmp_path / "logs3"), 240)
    _check(results, "2 processes, resumed")
    assert "seed=0] resuming from step 17 (epoch 2" in results[0][1], results[0][1][-3000:]
    got, want = _results(two), _results(one)
    assert len(got["runs"][0]["history"]) == 2 and got["runs"][0]["steps"] == 24
    _numbers_close(got, want)
