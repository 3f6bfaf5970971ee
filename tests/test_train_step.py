"""The pure train step: pmap == jit, gradient accumulation == one big batch, optimizers, schedules."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from bert_jax import modeling
from bert_jax.training import optim, parallel, step as step_lib


def random_batch(n, seq_len=16, preds=4, vocab=64, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(seq_len // 2, seq_len + 1, n)
    ids = rng.integers(5, vocab, (n, seq_len))
    mask = (np.arange(seq_len)[None] < lengths[:, None]).astype(np.int32)
    seg = ((np.arange(seq_len)[None] >= lengths[:, None] // 2) & (mask == 1)).astype(np.int32)
    pos = np.stack([rng.choice(np.arange(1, l), preds, replace=False) for l in lengths])
    w = (rng.random((n, preds)) < 0.8).astype(np.float32)
    w[:, 0] = 1.0
    return {"input_ids": (ids * mask).astype(np.int32), "attention_mask": mask, "token_type_ids": seg,
            "masked_lm_positions": pos.astype(np.int32),
            "masked_lm_ids": rng.integers(5, vocab, (n, preds)).astype(np.int32),
            "masked_lm_weights": w, "next_sentence_labels": rng.integers(0, 2, (n, 1)).astype(np.int32)}


def opt_config(**kw):
    c = dict(learning_rate=1e-3, warmup_steps=2, num_train_steps=10, weight_decay=0.01,
             optimizer="adamw", adam_b1=0.9, adam_b2=0.999, adam_eps=1e-6, grad_clip_norm=1.0)
    c.update(kw)
    return ml_collections.ConfigDict(c)


@pytest.fixture(scope="module")
def tiny():
    cfg = modeling.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=64, max_position_embeddings=32,
                              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = modeling.BertForPreTraining(cfg)
    params = modeling.init_params(model, jax.random.PRNGKey(0))
    return cfg, model, params


def run_jit(model, params, batches, k=1, mesh=None):
    tx = optim.make_optimizer(opt_config())
    state = step_lib.create_train_state(model, params, tx)
    fn = jax.jit(step_lib.make_pretrain_step(model, None, k))
    losses = []
    for b in batches:
        if mesh is not None:
            b = parallel.global_batch_from_host(b, mesh)
        state, m = fn(state, b, jax.random.PRNGKey(1))
        losses.append(float(m["loss"]))
    return state, losses


def test_pmap_equals_jit_on_8_devices(tiny):
    assert jax.device_count() == 8, "tests run with 8 simulated CPU devices (tests/conftest.py)"
    cfg, model, params = tiny
    batches = [random_batch(16, seed=s) for s in range(3)]
    mesh = parallel.make_mesh((-1, 1, 1))
    _, jit_losses = run_jit(model, params, batches, mesh=mesh)

    tx = optim.make_optimizer(opt_config())
    state = parallel.replicate(step_lib.create_train_state(model, params, tx))
    fn = jax.pmap(step_lib.make_pretrain_step(model, parallel.PMAP_AXIS), axis_name=parallel.PMAP_AXIS,
                  in_axes=(0, 0, None))
    pmap_losses = []
    for b in batches:
        state, m = fn(state, parallel.shard_for_pmap(b), jax.random.PRNGKey(1))
        pmap_losses.append(float(m["loss"][0]))
    np.testing.assert_allclose(pmap_losses, jit_losses, rtol=2e-6)
    assert pmap_losses[2] < pmap_losses[0]  # it learns (same batches cycle is not needed: lr is high)


def test_tensor_and_fsdp_sharded_step_equals_one_device(tiny):
    """jit over a (data 2, fsdp 2, tensor 2) mesh, weights sharded by their logical axes (heads, mlp, vocab
    over "tensor"; embed over "fsdp"): the same losses and weights as the unsharded step."""
    cfg, model, params = tiny
    batches = [random_batch(8, seed=s) for s in range(2)]
    ref_state, ref_losses = run_jit(model, params, batches)

    mesh = parallel.make_mesh((2, 2, 2))
    shardings = parallel.shardings_of(lambda r: model.init(r, jnp.zeros((1, 8), jnp.int32))["params"],
                                      jax.random.PRNGKey(0), mesh, parallel.DEFAULT_RULES)
    assert any("tensor" in str(s.spec) for s in jax.tree_util.tree_leaves(shardings))
    sharded = jax.device_put(params, shardings)
    state, losses = run_jit(model, sharded, batches, mesh=mesh)
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-6)
    qkv = state.params["bert"]["encoder"]["layer_0"]["attention"]["qkv"]["kernel"]
    assert "tensor" in str(qkv.sharding.spec)      # still sharded after the update
    for a, b in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(ref_state.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_grad_accumulation_equals_big_batch(tiny):
    _, model, params = tiny
    big = random_batch(16, seed=3)
    s1, l1 = run_jit(model, params, [big], k=1)
    s4, l4 = run_jit(model, params, [big], k=4)
    np.testing.assert_allclose(l4, l1, rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(s1.params), jax.tree_util.tree_leaves(s4.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="not divisible by grad_accum_steps=3"):
        run_jit(model, params, [big], k=3)


def test_loss_is_weighted_masked_mean(tiny):
    """MLM loss = sum(w * nll) / sum(w) over masked positions, computed independently here."""
    _, model, params = tiny
    b = random_batch(4, seed=5)
    sums = step_lib.pretrain_sums(model, params, b)
    out = model.apply({"params": params}, b["input_ids"], attention_mask=b["attention_mask"],
                      token_type_ids=b["token_type_ids"], deterministic=True)
    logits = np.asarray(out.mlm_logits, np.float64)
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    nll, w = [], []
    for i in range(4):
        for j in range(b["masked_lm_positions"].shape[1]):
            p = b["masked_lm_positions"][i, j]
            nll.append(lse[i, p] - logits[i, p, b["masked_lm_ids"][i, j]])
            w.append(b["masked_lm_weights"][i, j])
    expected = np.dot(nll, w) / np.sum(w)
    got = float(step_lib.summarize(sums)["mlm_loss"])
    assert abs(got - expected) < 1e-5 * abs(expected)


def test_softmax_cross_entropy_matches_autodiff():
    """The hand-written loss gradient equals autodiff of log_softmax + take_along_axis; the hit count
    equals argmax == label."""
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(3, 5, 97)) * 4, jnp.float32)
    ids = jnp.asarray(rng.integers(0, 97, (3, 5)), jnp.int32)
    ids = ids.at[0, 0].set(int(jnp.argmax(logits[0, 0])))       # at least one hit
    w = jnp.asarray(rng.uniform(size=(3, 5)), jnp.float32)

    def ref(x):
        return -jnp.take_along_axis(jax.nn.log_softmax(x, -1), ids[..., None], -1)[..., 0]

    nll, correct = step_lib.softmax_cross_entropy(logits, ids)
    np.testing.assert_allclose(nll, ref(logits), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(correct, (jnp.argmax(logits, -1) == ids).astype(np.float32))
    assert float(correct.sum()) >= 1
    ours = jax.grad(lambda x: jnp.sum(step_lib.softmax_cross_entropy(x, ids)[0] * w))(logits)
    theirs = jax.grad(lambda x: jnp.sum(ref(x) * w))(logits)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)


def test_adamw_first_step_by_hand():
    """Step 1 of AdamW with bias correction: update = -lr * (g / (|g| + eps) + wd * p), no decay on
    biases and LayerNorm."""
    params = {"dense": {"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.array([0.5, 0.5])},
              "LayerNorm": {"scale": jnp.array([1.0, 1.0]), "bias": jnp.array([0.0, 0.0])}}
    grads = {"dense": {"kernel": jnp.array([[0.1, 0.2]]), "bias": jnp.array([-0.3, 0.1])},
             "LayerNorm": {"scale": jnp.array([0.2, -0.2]), "bias": jnp.array([0.1, 0.1])}}
    cfg = opt_config(warmup_steps=0, num_train_steps=100, grad_clip_norm=0.0, weight_decay=0.1)
    tx = optim.make_optimizer(cfg)
    updates, _ = tx.update(grads, tx.init(params), params)
    lr, eps, wd = 1e-3, 1e-6, 0.1
    for path in (("dense", "kernel"), ("dense", "bias"), ("LayerNorm", "scale"), ("LayerNorm", "bias")):
        g, p, u = (np.asarray(t[path[0]][path[1]]) for t in (grads, params, updates))
        decay = wd if path == ("dense", "kernel") else 0.0
        np.testing.assert_allclose(u, -lr * (g / (np.abs(g) + eps) + decay * p), rtol=1e-5)
    mask = optim.weight_decay_mask(params)
    assert mask == {"dense": {"kernel": True, "bias": False}, "LayerNorm": {"scale": False, "bias": False}}


@pytest.mark.parametrize("name,ref", [("adamw", optax.adamw), ("lamb", optax.lamb)])
def test_optimizers_match_optax_reference(name, ref):
    """Several steps on a toy least-squares problem: identical to optax's own optimizer."""
    rng = np.random.default_rng(0)
    x, y = jnp.array(rng.normal(size=(32, 4))), jnp.array(rng.normal(size=(32,)))
    params = {"w": {"kernel": jnp.ones((4,))}, "b": {"bias": jnp.zeros(())}}
    loss = lambda p: jnp.mean((x @ p["w"]["kernel"] + p["b"]["bias"] - y) ** 2)  # noqa: E731
    cfg = opt_config(optimizer=name, warmup_steps=3, num_train_steps=20, grad_clip_norm=0.0)
    ours = optim.make_optimizer(cfg)
    theirs = ref(optim.make_schedule(cfg), b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01,
                 mask={"w": {"kernel": True}, "b": {"bias": False}})
    p1, p2, s1, s2 = params, params, ours.init(params), theirs.init(params)
    for _ in range(8):
        u1, s1 = ours.update(jax.grad(loss)(p1), s1, p1)
        u2, s2 = theirs.update(jax.grad(loss)(p2), s2, p2)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p2)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert float(loss(p1)) < float(loss(params))


@pytest.mark.parametrize("max_norm", [0.5, 100.0])  # clips / leaves alone (global norm is ~3.9)
def test_clip_by_global_norm_matches_optax(max_norm):
    grads = {"a": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": {"bias": jnp.array([0.25, -0.125])}}
    ours, theirs = optim.clip_by_global_norm(max_norm), optax.clip_by_global_norm(max_norm)
    s1, s2 = ours.init(grads), theirs.init(grads)
    assert jax.tree_util.tree_structure(s1) == jax.tree_util.tree_structure(s2)  # checkpoints interchange
    u1, _ = ours.update(grads, s1)
    u2, _ = theirs.update(grads, s2)
    for a, b, g in zip(jax.tree_util.tree_leaves(u1), jax.tree_util.tree_leaves(u2),
                       jax.tree_util.tree_leaves(grads)):
        np.testing.assert_allclose(a, b, rtol=3e-7)
        if max_norm > 10:
            np.testing.assert_array_equal(a, g)   # below the threshold: the gradient itself
    norm = float(optax.global_norm(u1))
    assert norm == pytest.approx(min(max_norm, float(optax.global_norm(grads))), rel=1e-6)


def test_schedule_warmup_then_linear_decay():
    s = optim.make_schedule(opt_config(learning_rate=1.0, warmup_steps=10, num_train_steps=110))
    np.testing.assert_allclose([float(s(i)) for i in (0, 5, 10, 60, 110)], [0.0, 0.5, 1.0, 0.5, 0.0],
                               atol=1e-6)
    with pytest.raises(ValueError, match="warmup_steps=200"):
        optim.make_schedule(opt_config(warmup_steps=200, num_train_steps=100))


def test_batch_layout_errors():
    assert parallel.check_batch_layout(64, 2, num_devices=8, num_processes=2) == (32, 8)
    with pytest.raises(ValueError, match="global_batch_size=60 must be divisible by devices x grad_accum_steps"):
        parallel.check_batch_layout(60, 2, num_devices=8, num_processes=1)


def test_bf16_training_follows_fp32():
    """bf16 compute (fp32 parameters, optimizer state, accumulation, LayerNorm and softmax statistics):
    300 pre-training steps at BERT-tiny shape (dropout on) end within 2% of the fp32 run's loss, with fp32
    parameters throughout."""
    cfg = modeling.BertConfig(vocab_size=64, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=512, max_position_embeddings=32)
    batches = [random_batch(16, seed=s) for s in range(32)]  # cycled: the loss falls well below its start
    tx = optim.make_optimizer(opt_config(num_train_steps=300, warmup_steps=30, learning_rate=1e-3))
    params = modeling.init_params(modeling.BertForPreTraining(cfg), jax.random.PRNGKey(0))
    curves = {}
    for dtype in ("float32", "bfloat16"):
        model = modeling.BertForPreTraining(cfg.replace(dtype=dtype))
        state = step_lib.create_train_state(model, params, tx)
        fn = jax.jit(step_lib.make_pretrain_step(model, None, 1))
        losses = []
        for i in range(300):
            state, m = fn(state, batches[i % len(batches)], jax.random.PRNGKey(1))
            losses.append(m["loss"])
        assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(state.params))
        curves[dtype] = np.asarray(jax.device_get(losses))
    fp32, bf16 = (curves[d][-32:].mean() for d in ("float32", "bfloat16"))   # one pass over the batches
    print(f"loss after 300 steps: fp32 {fp32:.4f}, bf16 {bf16:.4f} (first 32 steps: {curves['float32'][:32].mean():.4f})")
    assert curves["float32"][:32].mean() > 1.2 * fp32          # it learned something
    assert abs(bf16 - fp32) / fp32 < 0.02, (fp32, bf16)
