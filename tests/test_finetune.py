"""Fine-tuning: length buckets, one compilation per shape across runs, the optimizer fields."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from bert_jax import modeling
from bert_jax.data import batching
from bert_jax.training import finetune, optim, protocol, step as step_lib

L = 64
CONFIG = modeling.BertConfig(vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=37, max_position_embeddings=L, hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0)


def make_arrays(n, seed=0, kind="classification", num_labels=3):
    rng = np.random.default_rng(seed)
    lengths = rng.choice([3, 9, 17, 20, 31, 40, 64], size=n)
    ids = rng.integers(5, CONFIG.vocab_size, size=(n, L)).astype(np.int32)
    mask = (np.arange(L)[None] < lengths[:, None]).astype(np.int32)
    arrays = {"input_ids": ids * mask, "token_type_ids": ((np.arange(L)[None] >= lengths[:, None] // 2) * mask)
              .astype(np.int32), "attention_mask": mask, "idx": np.arange(n)}
    if kind == "classification":
        arrays["labels"] = rng.integers(0, num_labels, size=n).astype(np.int32)
    elif kind == "token":
        tags = rng.integers(0, num_labels, size=(n, L)).astype(np.int32)
        arrays["labels"] = np.where(mask == 1, tags, finetune.IGNORE_INDEX).astype(np.int32)
        arrays["labels"][:, 0] = finetune.IGNORE_INDEX
    elif kind == "qa":
        arrays["start_positions"] = (rng.integers(0, 1000, size=n) % lengths).astype(np.int32)
        arrays["end_positions"] = np.minimum(arrays["start_positions"] + 1, lengths - 1).astype(np.int32)
    return arrays


def cfg_for(**overrides):
    c = ml_collections.ConfigDict(dict(learning_rate=1e-3, num_epochs=1.0, global_batch_size=8,
                                       warmup_proportion=0.1, weight_decay=0.01, eval_batch_size=16))
    c.update(overrides)
    return c


def test_bucket_lengths():
    assert batching.bucket_lengths(128) == (16, 32, 48, 64, 96, 128)
    assert batching.bucket_lengths(100, "32,64") == (32, 64, 100)
    assert batching.bucket_lengths(128, "none") == (128,)
    assert batching.bucket_lengths(128, ()) == (128,)


@pytest.mark.parametrize("n", [1, 8, 61, 200])
def test_buckets_cover_every_example_once(n):
    arrays = make_arrays(n, seed=n)
    buckets = batching.bucket_lengths(L)
    lengths = batching.sequence_lengths(arrays)
    np.testing.assert_array_equal(lengths, arrays["attention_mask"].sum(1))
    seen, sizes = [], []
    for batch, k, idx in batching.iterate_batches(arrays, 8, np.random.default_rng(0), buckets=buckets,
                                                  with_index=True):
        width = batch["input_ids"].shape[1]
        assert width in buckets and batch["input_ids"].shape[0] == 8
        assert all(v.shape[1] == width for v in batch.values() if v.ndim == 2)
        assert (lengths[idx] <= width).all()
        np.testing.assert_array_equal(batch["input_ids"][:k], arrays["input_ids"][idx, :width])
        np.testing.assert_array_equal(batch["weights"], np.arange(8) < k)
        seen += list(idx)
        sizes.append(k)
    assert sorted(seen) == list(range(n))                   # each example exactly once
    assert len(sizes) == -(-n // 8) and sorted(sizes)[1:] == [8] * (len(sizes) - 1)   # as many steps as unbucketed

    def batches(seed):
        return [idx.tolist() for _, _, idx in batching.iterate_batches(
            arrays, 8, np.random.default_rng(seed), buckets=buckets, with_index=True)]
    assert batches(3) == batches(3)
    if n > 16:
        assert batches(3) != batches(4)


def test_sequence_lengths_keep_labels_and_answers():
    arrays = make_arrays(20, kind="token")
    arrays["labels"][0, :] = finetune.IGNORE_INDEX
    arrays["labels"][0, 50] = 1                       # a tag past the attention mask is still kept
    lengths = batching.sequence_lengths(arrays)
    assert lengths[0] == max(51, arrays["attention_mask"][0].sum())
    qa = make_arrays(20, kind="qa")
    assert (batching.sequence_lengths(qa) > qa["end_positions"]).all()


def _finetuner(kind, num_labels=3, buckets=None):
    model = finetune.build_model(CONFIG, kind, num_labels)
    params = finetune.init_params(model, jax.random.PRNGKey(1))
    opt_cfg = ml_collections.ConfigDict(dict(learning_rate=1e-3, num_train_steps=10, warmup_steps=1))
    return finetune.Finetuner(model, kind, opt_cfg, buckets=buckets), params


@pytest.mark.parametrize("kind", ["classification", "token", "qa"])
def test_bucketed_predict_equals_unbucketed(kind):
    arrays = make_arrays(37, kind=kind)
    ft, params = _finetuner(kind)
    full = finetune.Finetuner(ft.model, kind, ml_collections.ConfigDict(dict(
        learning_rate=1e-3, num_train_steps=10, warmup_steps=1)), buckets=())
    got, want = ft.predict(params, arrays, 16), full.predict(params, arrays, 16)
    assert got.shape == want.shape
    if finetune.kind_is_positional(kind):
        real = arrays["attention_mask"] == 1
        np.testing.assert_allclose(got[real], want[real], rtol=1e-5, atol=1e-5)
        assert (got == batching.PAD_LOGIT).any()          # positions past a bucket's length
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["classification", "token"])
def test_train_step_on_a_cut_batch_equals_the_full_batch(kind):
    """(QA is not cut in training: its loss is a softmax over the padding positions too.)"""
    arrays = make_arrays(8, kind=kind)
    arrays["attention_mask"][:, 20:] = 0                  # every row fits the 32 bucket
    arrays["input_ids"] *= arrays["attention_mask"]
    if kind == "token":
        arrays["labels"][:, 20:] = finetune.IGNORE_INDEX
    ft, params = _finetuner(kind)
    (cut, _), = batching.iterate_batches(arrays, 8, buckets=batching.bucket_lengths(L))
    (whole, _), = batching.iterate_batches(arrays, 8)
    assert cut["input_ids"].shape[1] == 32 and whole["input_ids"].shape[1] == L
    outs = []
    for batch in (cut, whole):
        state, metrics = ft.train_step(ft.init_state(params), ft.put(batch), jax.random.PRNGKey(0))
        outs.append((jax.device_get(state.params), float(metrics["loss"])))
    assert outs[0][1] == pytest.approx(outs[1][1], rel=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(outs[0][0]), jax.tree_util.tree_leaves(outs[1][0])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_runs_of_a_protocol_compile_once_per_shape():
    """A second run with another learning rate and seed reuses every compiled step."""
    train, dev = make_arrays(64, seed=1), make_arrays(24, seed=2)
    model = finetune.build_model(CONFIG, "classification", 3)

    def run(lr, seed):
        params = finetune.init_params(model, jax.random.PRNGKey(seed))
        return finetune.finetune(model, "classification", params, train, dev, lambda out: {"acc": 0.0}, "acc",
                                 cfg_for(learning_rate=lr, num_epochs=2.0), seed=seed)
    first = run(1e-3, 0)
    ft = first.finetuner
    sizes = (ft.train_step._cache_size(), ft._predict._cache_size(), ft._init._cache_size())
    widths = {b["input_ids"].shape[1] for b, _ in batching.iterate_batches(
        train, 8, np.random.default_rng(0), buckets=batching.bucket_lengths(L))}
    assert sizes[0] == len(widths) > 1
    second = run(3e-4, 1)
    assert second.finetuner.train_step is ft.train_step
    assert (ft.train_step._cache_size(), ft._predict._cache_size(), ft._init._cache_size()) == sizes
    leaves = zip(jax.tree_util.tree_leaves(first.params), jax.tree_util.tree_leaves(second.params))
    assert any(not np.allclose(a, b) for a, b in leaves)


# The optimizer-field tests: a one-layer model and one batch width (no length buckets), so that each optimizer
# structure (its fields are compile-time constants of the step) costs one train and one predict compilation;
# the runs with the default fields share theirs.
OPT_CONFIG = CONFIG.replace(num_hidden_layers=1)
OPT_BUCKETS = "none"


def test_adam_fields_are_honoured():
    """Two steps of finetune() with unusual adam_b1/b2/eps equal optax's AdamW with those values."""
    train = make_arrays(16, seed=5)
    model = finetune.build_model(OPT_CONFIG, "classification", 3)
    params = finetune.init_params(model, jax.random.PRNGKey(0))
    hyper = dict(adam_b1=0.5, adam_b2=0.7, adam_eps=1e-2)
    cfg = cfg_for(learning_rate=1e-2, warmup_proportion=0.0, weight_decay=0.1, length_buckets=OPT_BUCKETS, **hyper)
    res = finetune.finetune(model, "classification", params, train, train, lambda out: {"acc": 0.0}, "acc",
                            cfg, seed=7)
    assert res.steps == 2

    schedule = optim.make_schedule(ml_collections.ConfigDict(dict(learning_rate=1e-2, warmup_steps=0,
                                                                  num_train_steps=2)))
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(
        schedule, b1=0.5, b2=0.7, eps=1e-2, weight_decay=0.1, mask=optim.weight_decay_mask))

    @jax.jit
    def reference_step(p, state, batch):
        def loss_fn(q):
            out = step_lib.finetune_forward(model, q, batch, True)
            total, count = step_lib.finetune_loss_sums("classification", out, batch)
            return total / count
        updates, state = tx.update(jax.grad(loss_fn)(p), state, p)
        return optax.apply_updates(p, updates), state

    p, state = params, tx.init(params)
    for batch, _ in batching.iterate_batches(train, 8, np.random.default_rng(7),
                                             buckets=batching.bucket_lengths(L, OPT_BUCKETS)):
        p, state = reference_step(p, state, batch)
    for a, b in zip(jax.tree_util.tree_leaves(res.params), jax.tree_util.tree_leaves(p)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6)
    # The defaults give another result: the fields are not ignored.
    other = finetune.finetune(model, "classification", params, train, train, lambda out: {"acc": 0.0}, "acc",
                              cfg_for(learning_rate=1e-2, warmup_proportion=0.0, weight_decay=0.1,
                                      length_buckets=OPT_BUCKETS), seed=7)
    assert any(not np.allclose(a, b, atol=1e-5) for a, b in
               zip(jax.tree_util.tree_leaves(other.params), jax.tree_util.tree_leaves(p)))


def test_each_optimizer_field_of_an_experiment_config_changes_the_result(tmp_path):
    """optimizer / adam_b1 / adam_b2 / adam_eps / weight_decay / grad_clip_norm set in an experiment's config reach the
    optimizer through `run_protocol` (the path every experiment takes): each changes the trained
    parameters, and `FinetuneOptions.from_config` reads each."""
    train, dev = make_arrays(16, seed=5), make_arrays(8, seed=6)
    base = ml_collections.ConfigDict(dict(learning_rate=1e-2, learning_rates="", seeds="0", num_epochs=1.0,
                                          global_batch_size=8, eval_batch_size=16, warmup_proportion=0.0,
                                          weight_decay=0.1, length_buckets=OPT_BUCKETS,
                                          task="unused_by_the_protocol"))

    def trained(workdir, **overrides):
        config = ml_collections.ConfigDict(base.to_dict())
        config.update(overrides)
        assert all(getattr(finetune.FinetuneOptions.from_config(config), k) == v for k, v in overrides.items())
        res = protocol.run_protocol(config, str(workdir), OPT_CONFIG, None, "classification", 3, train, dev,
                                    lambda out: {"acc": 0.0}, "acc", task="t")
        return jax.tree_util.tree_leaves(res.best_params)
    default = trained(tmp_path / "default")
    for field, value in dict(adam_b1=0.5, adam_b2=0.7, adam_eps=1e-2, weight_decay=0.5, grad_clip_norm=1e-3,
                             optimizer="lamb").items():
        changed = trained(tmp_path / field, **{field: value})
        assert any(not np.array_equal(a, b) for a, b in zip(default, changed)), field
