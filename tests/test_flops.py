"""FLOP accounting (`bert_jax.flops`) against hand arithmetic, the traced program's own matmuls,
XLA's cost analysis, and the cost estimator script on the BERT paper's run."""

import math
import os
import re
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import pytest
from jax.extend import core as jcore

from bert_jax import flops, modeling

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# 2 layers, hidden 8 (2 heads), intermediate 16, vocab 50.
TINY = modeling.BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=16, max_position_embeddings=16)


def test_breakdown_matches_hand_arithmetic():
    # L = 4 tokens, P = 2 predictions. Each matmul is 2 * rows * inner * cols, times 2 layers:
    got = flops.forward_flops_breakdown(TINY, 4, 2)
    assert got == {
        "embeddings": 0,
        "qkv": 2 * (2 * 4 * 8 * 24),             # 3072
        "attention_scores": 2 * (2 * 4 * 4 * 8),  # 512
        "attention_context": 2 * (2 * 4 * 4 * 8),
        "attention_output": 2 * (2 * 4 * 8 * 8),  # 1024
        "ffn": 2 * (2 * 4 * 8 * 16) * 2,          # 4096
        "pooler": 2 * 8 * 8,                      # 128, the [CLS] vector only
        "nsp": 2 * 8 * 2,                         # 32
        "mlm_transform": 2 * 2 * 8 * 8,           # 256, at the 2 masked positions
        "mlm_vocab": 2 * 2 * 8 * 50,              # 1600
    }
    assert flops.forward_flops_per_sequence(TINY, 4, 2) == 11232
    dense = flops.forward_flops_breakdown(TINY, 4, None)
    assert dense["mlm_transform"] == 2 * 4 * 8 * 8 and dense["mlm_vocab"] == 2 * 4 * 8 * 50
    assert flops.forward_flops_per_sequence(TINY, 4) == 13088
    assert flops.train_flops_per_sequence(TINY, 4, 2) == 3 * 11232
    assert flops.train_flops_per_token(TINY, 4, 2) == 3 * 11232 / 4
    assert flops.pretrain_step_flops(TINY, 3, 4, 2) == 3 * 3 * 11232
    assert flops.encoder_flops_per_sequence(TINY, 4) == 3072 + 512 + 512 + 1024 + 4096
    assert flops.hardware_train_flops_per_sequence(TINY, 4, 2) == 3 * 11232
    assert flops.hardware_train_flops_per_sequence(TINY.replace(remat=True), 4, 2) == 3 * 11232 + 9216


def test_bad_arguments():
    with pytest.raises(ValueError, match="seq_len"):
        flops.forward_flops_per_sequence(TINY, 0)
    with pytest.raises(ValueError, match="max_predictions=5 must be an integer in \\[1, seq_len=4\\]"):
        flops.forward_flops_per_sequence(TINY, 4, 5)
    with pytest.raises(ValueError, match="batch_size"):
        flops.pretrain_step_flops(TINY, 0, 4, 2)
    with pytest.raises(ValueError, match="Unknown chip 'tpu-v9'"):
        flops.chip_peak_flops("tpu-v9")
    with pytest.raises(ValueError, match="mfu"):
        flops.wall_seconds(1e18, 1e12, 1, 0.0)


@pytest.mark.parametrize("config", [TINY, modeling.BertConfig.named("tiny", vocab_size=300, type_vocab_size=3)])
def test_num_parameters_matches_the_model(config):
    for model, heads in ((modeling.BertForPreTraining(config), True), (modeling.BertModel(config), False)):
        shapes = modeling.param_shapes(model)
        n = sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes))
        assert flops.num_parameters(config, pretraining_heads=heads) == n


def test_named_sizes_parameters():
    # The published sizes: BERT-base 110M, BERT-large 336M (HF's count, tied decoder).
    assert flops.num_parameters(modeling.BertConfig.named("base")) == 110_106_428
    assert flops.num_parameters(modeling.BertConfig.named("large")) == 336_226_108


def test_encoder_matmuls_are_twice_the_encoder_weights_per_token():
    config = modeling.BertConfig.named("tiny", vocab_size=300)
    shapes = modeling.param_shapes(modeling.BertModel(config))
    kernels = [x for path, x in jax.tree_util.tree_leaves_with_path(shapes)
               if "encoder" in jax.tree_util.keystr(path) and jax.tree_util.keystr(path).endswith("['kernel']")]
    weights = sum(math.prod(x.shape) for x in kernels)
    b = flops.forward_flops_breakdown(config, 64, 10)
    assert b["qkv"] + b["attention_output"] + b["ffn"] == 2 * weights * 64


# ---------------------------------------------------------------------------------------------
# Against the traced program and XLA
# ---------------------------------------------------------------------------------------------

def jaxpr_dot_flops(jaxpr):
    """2 * batch * contracted * free_lhs * free_rhs summed over every dot_general, sub-jaxprs included."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
            a, b = (v.aval.shape for v in eqn.invars)
            contracted = math.prod(a[d] for d in lc)
            batch = math.prod(a[d] for d in lb)
            free_a = math.prod(s for d, s in enumerate(a) if d not in lc and d not in lb)
            free_b = math.prod(s for d, s in enumerate(b) if d not in rc and d not in rb)
            total += 2 * batch * contracted * free_a * free_b
        for param in eqn.params.values():
            for sub in (param if isinstance(param, (tuple, list)) else (param,)):
                if isinstance(sub, jcore.ClosedJaxpr):
                    total += jaxpr_dot_flops(sub.jaxpr)
                elif isinstance(sub, jcore.Jaxpr):
                    total += jaxpr_dot_flops(sub)
    return total


def _forward_and_loss(config, batch, seq_len, predictions):
    model = modeling.BertForPreTraining(config)
    params = modeling.param_shapes(model)
    ids = jax.ShapeDtypeStruct((batch, seq_len), jnp.int32)
    pos = jax.ShapeDtypeStruct((batch, predictions), jnp.int32) if predictions else None
    labels = jax.ShapeDtypeStruct((batch, predictions or seq_len), jnp.int32)

    def forward(p, ids, pos):
        out = model.apply({"params": p}, ids, masked_positions=pos)
        return out.mlm_logits, out.nsp_logits

    def loss(p, ids, pos, labels):  # a real loss: no gradient XLA could simplify away
        mlm, nsp = forward(p, ids, pos)
        nll = -jnp.take_along_axis(jax.nn.log_softmax(mlm), labels[..., None], -1)
        return jnp.sum(nll) - jnp.sum(jax.nn.log_softmax(nsp)[:, 0])

    return forward, loss, (params, ids, pos), (params, ids, pos, labels)


@pytest.mark.parametrize("size,seq_len,batch,predictions,remat", [
    ("tiny", 16, 2, 4, False), ("tiny", 32, 1, None, False), ("tiny", 16, 2, 3, True)])
def test_exactly_the_matmuls_of_the_traced_step(size, seq_len, batch, predictions, remat):
    config = modeling.BertConfig.named(size, vocab_size=300, remat=remat)
    forward, loss, fargs, largs = _forward_and_loss(config, batch, seq_len, predictions)
    ours = batch * flops.forward_flops_per_sequence(config, seq_len, predictions)
    assert jaxpr_dot_flops(jax.make_jaxpr(forward)(*fargs).jaxpr) == ours
    grad_dots = jaxpr_dot_flops(jax.make_jaxpr(jax.grad(loss))(*largs).jaxpr)
    if remat:  # the backward recomputes every layer's forward
        assert grad_dots == batch * flops.hardware_train_flops_per_sequence(config, seq_len, predictions)
        assert grad_dots > 3 * ours
    else:
        assert grad_dots == 3 * ours


def _dot_flops_list(jaxpr, out):
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            sub = jcore.Jaxpr([], [], [], [eqn])
            out.append(jaxpr_dot_flops(sub))
        for param in eqn.params.values():
            for sub in (param if isinstance(param, (tuple, list)) else (param,)):
                if isinstance(sub, jcore.ClosedJaxpr):
                    _dot_flops_list(sub.jaxpr, out)
                elif isinstance(sub, jcore.Jaxpr):
                    _dot_flops_list(sub, out)
    return out


@pytest.mark.parametrize("predictions", [3, None])
def test_step_matmul_list_is_the_traced_backward(predictions):
    """pretrain_step_matmuls: one entry per dot_general of the traced gradient, FLOPs for FLOPs."""
    config = modeling.BertConfig.named("tiny", vocab_size=300)
    _, loss, _, largs = _forward_and_loss(config, 2, 16, predictions)
    traced = sorted(_dot_flops_list(jax.make_jaxpr(jax.grad(loss))(*largs).jaxpr, []))
    mm = flops.pretrain_step_matmuls(config, 2, 16, predictions)
    ours = sorted(2 * bt * m * k * n for _, _, bt, m, k, n, c in mm for _ in range(c))
    assert flops.matmul_flops(mm) == flops.pretrain_step_flops(config, 2, 16, predictions) == sum(traced)
    assert ours == traced


def _xla_flops(fn, args):
    ca = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(ca, (list, tuple)):
        ca = ca[0]
    return float(ca["flops"])


def test_close_to_xla_cost_analysis_on_a_matmul_dominated_config():
    # BERT-Mini at seq 128 with a 2k vocab: matmuls are ~98% of XLA's count (XLA adds the
    # element-wise work: softmax, GELU, LayerNorm, biases), so ours must sit just below XLA's.
    config = modeling.BertConfig.named("mini", vocab_size=2000)
    forward, loss, fargs, largs = _forward_and_loss(config, 2, 128, 20)
    ours = 2 * flops.forward_flops_per_sequence(config, 128, 20)
    xla = _xla_flops(forward, fargs)
    assert 0.93 * xla <= ours <= xla, (ours, xla)
    xla_train = _xla_flops(jax.grad(loss), largs)
    assert 0.93 * xla_train <= 3 * ours <= 1.01 * xla_train, (3 * ours, xla_train)
    # The sparse head saves what we say it saves, by XLA's count too.
    forward_d, _, fargs_d, _ = _forward_and_loss(config, 2, 128, None)
    saved_ours = 2 * (flops.forward_flops_per_sequence(config, 128) - flops.forward_flops_per_sequence(config, 128, 20))
    saved_xla = _xla_flops(forward_d, fargs_d) - xla
    assert abs(saved_xla - saved_ours) <= 0.05 * saved_ours, (saved_ours, saved_xla)


# ---------------------------------------------------------------------------------------------
# MFU and peaks
# ---------------------------------------------------------------------------------------------

def test_mfu_helpers():
    config = modeling.BertConfig.named("base")
    per_token = flops.train_flops_per_token(config, 128, 20)
    # 1000 tokens/s on a 1 TFLOP/s chip.
    assert flops.mfu_from_tokens_per_second(1000.0, config, 128, 1e12, 20) == pytest.approx(per_token * 1000 / 1e12)
    assert flops.mfu(2e14, 1e14, num_chips=4) == pytest.approx(0.5)
    assert flops.wall_seconds(3.6e15, 1e12, 2, 0.5) == pytest.approx(3600.0)
    # BERT-base seq 128: ~0.55 GFLOP per token of training (6 x ~85M encoder weights + attention + heads).
    assert 0.50e9 < per_token < 0.60e9


@pytest.mark.parametrize("kind,peak", [
    ("TPU v4", 275e12), ("TPU v5 lite", 197e12), ("TPU v5e", 197e12), ("TPU v5p", 459e12), ("TPU v5", 459e12),
    ("TPU v6 lite", 918e12), ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12),
    ("NVIDIA H200", 989e12), ("NVIDIA A100-SXM4-40GB", 312e12), ("TPU v3", 123e12), ("cpu", None),
    ("NVIDIA GeForce RTX 3090", None)])
def test_peak_for_device_kind(kind, peak):
    assert flops.peak_flops_for_device_kind(kind) == peak


def test_detect_peak_flops_per_device():
    assert jax.devices()[0].platform == "cpu"
    assert flops.detect_peak_flops() is None
    # TPU v2/v3 expose one jax device per core (half a chip); v4+ one per chip.
    v3 = types.SimpleNamespace(platform="tpu", device_kind="TPU v3")
    v4 = types.SimpleNamespace(platform="tpu", device_kind="TPU v4")
    h100 = types.SimpleNamespace(platform="gpu", device_kind="NVIDIA H100 80GB HBM3")
    assert flops.detect_peak_flops(v3) == 123e12 / 2
    assert flops.detect_peak_flops(v4) == 275e12
    assert flops.detect_peak_flops(h100) == 989e12


# ---------------------------------------------------------------------------------------------
# The cost estimator on the BERT paper's BERT-large run
# ---------------------------------------------------------------------------------------------

def _paper_large_flops_by_formula():
    """Per-token training FLOPs in closed form: 6 x (encoder weights + attention L*H per layer
    + pooler/NSP spread over the sequence + the MLM head at P of L positions)."""
    N, H, I, V = 24, 1024, 4096, 30522
    total = 0
    for L, steps, P in ((128, 900_000, 20), (512, 100_000, 80)):
        per_token = 6 * (N * (4 * H * H + 2 * H * I) + N * 2 * L * H + (H * H + 2 * H) / L + P / L * (H * H + H * V))
        total += per_token * steps * 256 * L
    return total


def test_training_run_flops_bert_large():
    config = modeling.BertConfig.named("large")
    run = flops.training_run_flops(config, [(128, 900_000, 256, 20), (512, 100_000, 256, 80)])
    assert run["total_tokens"] == 256 * (900_000 * 128 + 100_000 * 512)
    assert run["total_flops"] == pytest.approx(_paper_large_flops_by_formula(), rel=1e-12)
    assert run["total_flops"] == pytest.approx(8.157e19, rel=1e-3)
    # 4 days on 64 TPU v2 chips.
    implied = flops.mfu(run["total_flops"] / (96 * 3600), flops.chip_peak_flops("tpu-v2"), 64)
    assert implied == pytest.approx(0.0820, abs=5e-4)


def test_numpy_integers_do_not_overflow():
    import numpy as np
    config = modeling.BertConfig.named("large")
    py = flops.training_run_flops(config, [(512, 10_000_000, 4096, 80)])
    np_ = flops.training_run_flops(config, [tuple(np.int64(x) for x in (512, 10_000_000, 4096, 80))])
    assert np_["total_flops"] == py["total_flops"] > 2 ** 63  # beyond int64, exact as a Python int
    assert flops.pretrain_step_flops(config, np.int32(8), np.int32(128), np.int32(20)) == \
        flops.pretrain_step_flops(config, 8, 128, 20)


def _run_script(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "estimate_cost.py"), *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_estimate_cost_script_paper_claim():
    proc = _run_script("--size=large", "--phases=128:900000:256:20,512:100000:256:80", "--chip=tpu-v2",
                       "--num_chips=64", "--wall_hours=96", "--mfu=0.4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "336,226,108 parameters" in out
    total = float(re.search(r"total: ([0-9.e+]+) FLOPs", out).group(1))
    assert total == pytest.approx(_paper_large_flops_by_formula(), rel=1e-3)
    # 8.157e19 / (64 * 45e12 * 0.4) s = 19.7 hours.
    assert "wall time at MFU 40%: 19.7 hours = 0.82 days" in out
    assert "implies MFU 8.2%" in out


def test_estimate_cost_script_reads_the_pretrain_config():
    if not os.path.exists(os.path.join(ROOT, "bert_jax", "configs", "pretrain.py")):
        pytest.skip("bert_jax/configs/pretrain.py is not there yet")
    proc = _run_script("--config=bert_jax/configs/pretrain.py:size=base", "--chip=tpu-v4", "--num_chips=16")
    assert proc.returncode == 0, proc.stderr[-2000:]
    # The config's BERT recipe: 900k steps at 128 (20 predictions) then 100k at 512 (80), batch 256.
    assert "phase 1: seq 128, 900,000 steps x batch 256 (20 predictions/seq)" in proc.stdout
    assert "phase 2: seq 512, 100,000 steps x batch 256 (80 predictions/seq)" in proc.stdout
    config = modeling.BertConfig.named("base")
    want = flops.training_run_flops(config, [(128, 900_000, 256, 20), (512, 100_000, 256, 80)])["total_flops"]
    total = float(re.search(r"total: ([0-9.e+]+) FLOPs", proc.stdout).group(1))
    assert total == pytest.approx(want, rel=1e-3)


def test_estimate_cost_script_bad_input():
    proc = _run_script("--phases=128:lots")
    assert proc.returncode != 0
    assert "--phases: '128:lots' is not SEQ_LEN:STEPS" in proc.stderr
    proc = _run_script("--chip=tpu-v9")
    assert proc.returncode != 0 and "Unknown chip 'tpu-v9'" in proc.stderr
