"""scripts/aot_compile.py / bert_jax.aot: the real train steps compiled for Cloud TPU slices by libtpu's
compiler on this CPU machine (nothing runs): BERT-base fits a v5e:2x2, BERT-large fp32 at batch 8192 seq
512 does not (one line, exit 1), the roofline is the hand calculation, fine-tuning / seq-512 / splash
steps compile, and bad topologies get the list of valid names."""

import os
import subprocess
import sys

import pytest

from bert_jax import aot

aot.prepare_environment()

pytest.importorskip("libtpu", reason="the TPU compiler (requirements-test.txt: libtpu) is not installed")

from bert_jax import flops  # noqa: E402
from bert_jax.configs import pretrain  # noqa: E402
from bert_jax.training import loop  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "aot_compile.py")


def _config(arg, **fields):
    c = pretrain.get_config(arg)
    c.parallelism = "jit"
    c.phases = []
    for k, v in fields.items():
        if k.startswith("model."):
            c.model[k[6:]] = v
        else:
            c[k] = v
    return c


def _run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=1800)


@pytest.fixture(scope="module")
def v5e():
    return aot.get_topology("v5e:2x2")


def test_topology_names():
    topo = aot.get_topology("v5e:2x2")
    assert (topo.num_devices, topo.num_chips, topo.num_hosts, topo.chip) == (4, 4, 1, "tpu-v5e")
    v4 = aot.get_topology("v4:2x2x2")    # megacore: one device per chip, 2 hosts of 4 chips
    assert (v4.num_devices, v4.num_chips, v4.num_hosts, v4.chip) == (8, 8, 2, "tpu-v4")
    v3 = aot.get_topology("v3:2x2")      # v2/v3: jax lists the two cores of each chip
    assert (v3.num_devices, v3.num_chips, v3.devices_per_chip) == (8, 4, 2)
    assert v3.per_device(flops.HBM_BYTES) == 16 * 2 ** 30
    for bad in ("v9:2x2", "v5e", "v5e:3x3"):
        with pytest.raises(aot.AotError, match=r"unknown TPU topology .* e\.g\. v2:2x2 .*v5e:2x2"):
            aot.get_topology(bad)


def test_bad_topology_is_one_line():
    r = _run("--config=bert_jax/configs/pretrain.py:size=tiny", "--topology=v5e:3x3")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("aot_compile: unknown TPU topology 'v5e:3x3'")
    assert "v4:2x2x1" in r.stderr and "Traceback" not in r.stderr


def test_base_bf16_fits_v5e_and_roofline_is_the_hand_calculation(v5e):
    config = _config("size=base,seq_len=128", dtype="bfloat16", global_batch_size=256)
    (step,) = aot.pretrain_steps(config, v5e, 30522)
    r = aot.compile_step(step, v5e)
    assert r["fits"] and r["per_device_batch"] == 64
    assert 0 < r["peak_bytes_per_device"] < r["hbm_bytes_per_device"] == 16 * 2 ** 30
    # params + 2 Adam moments in fp32, replicated over the 4 data-parallel devices:
    bert_config = loop.model_config(config, 30522)
    n = flops.num_parameters(bert_config)
    assert abs(r["state_bytes_per_device"] - 3 * 4 * n) < 0.01 * 3 * 4 * n
    assert r["peak_bytes_per_device"] > r["state_bytes_per_device"] + r["temp_bytes_per_device"] * 0.9
    # XLA's FLOPs are the model's matmuls (flops.py) plus a few per cent of element-wise work.
    model = flops.pretrain_step_flops(bert_config, 256, 128, 20)
    assert r["model_flops_per_step"] == model
    assert 1.0 <= r["flops_per_step"] / model < 1.05
    # Roofline by hand: v5e peaks at 197 TFLOP/s bf16 and 819 GB/s HBM per chip, one device per chip.
    compute = r["flops_per_device"] / 197e12
    memory = r["bytes_per_device"] / 819e9
    assert r["compute_seconds"] == pytest.approx(compute, rel=1e-12)
    assert r["estimated_step_seconds"] == pytest.approx(max(compute, memory), rel=1e-12)
    assert r["tokens_per_second"] == pytest.approx(256 * 128 / max(compute, memory), rel=1e-12)
    # And from flops.py alone: at least the model's FLOPs at the chips' peak.
    assert r["estimated_step_seconds"] >= model / (4 * 197e12)


def test_large_fp32_batch_8192_seq_512_does_not_fit_v5e(tmp_path):
    out = tmp_path / "large.json"
    r = _run("--config=bert_jax/configs/pretrain.py:size=large,seq_len=512", "--topology=v5e:2x2",
             "--config.parallelism=jit", "--config.global_batch_size=8192", f"--json={out}")
    assert r.returncode == 1, r.stdout + r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("aot_compile: pretrain phase 0 (seq 512, batch 8192 = 2048 per device) does not fit "
                           "v5e:2x2: needs "), last
    for hint in ("GiB over", "--config.grad_accum_steps=", "--config.global_batch_size=", "--config.remat=True",
                 "--config.dtype=bfloat16"):
        assert hint in last, last
    import json
    report = json.loads(out.read_text())
    assert report["fits"] is False and report["peak_bytes_per_device"] > report["hbm_bytes_per_device"]


def test_classification_seq512_and_splash_compile(v5e):
    # One sequence per device: the TPU compiler's time grows with the per-device batch (~3x from 1 to 8 here),
    # and what these steps must show -- they compile, fit, carry the kernel -- does not depend on it.
    # The fine-tuning step (replicated parameters, as finetune.Finetuner runs it).
    config = _config("size=tiny,seq_len=128", global_batch_size=4)
    r = aot.compile_step(aot.classification_step(config, v5e, 1000), v5e)
    assert r["fits"] and r["step"] == "classification" and r["flops_per_step"] > 0
    # A seq-512 phase of the paper recipe's two-phase config.
    config = _config("size=tiny,seq_len=128", global_batch_size=4)
    config.phases = pretrain.get_config("size=base,seq_len=128").phases
    config.model.max_position_embeddings = 512
    steps = aot.pretrain_steps(config, v5e, 1000, phase=1)
    assert [(s.seq_len, s.max_predictions) for s in steps] == [(512, 80)]
    assert aot.compile_step(steps[0], v5e)["fits"]
    # Splash attention: the Mosaic kernel is in the TPU program (shard_map over the data axis).
    config = _config("size=tiny,seq_len=256", global_batch_size=4, **{"model.attention_impl": "splash",
                     "model.attention_probs_dropout_prob": 0.0})
    (step,) = aot.pretrain_steps(config, v5e, 1000)
    import jax
    with jax.set_mesh(step.mesh):
        text = step.fn.lower(*step.args).as_text()
    assert "tpu_custom_call" in text
    r = aot.compile_step(step, v5e)
    assert r["fits"] and r["flops_per_step"] > 0
