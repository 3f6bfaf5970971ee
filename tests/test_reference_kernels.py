"""``BertConfig(kernels="reference")`` -- flax's own ``DenseGeneral``, ``LayerNorm`` and ``Dropout`` and the
attention formula written out -- against the default kernels of bert_jax/ops (``"fast"``): the same parameter
tree (names, shapes, dtypes, logical axes, initial values), so a checkpoint of either loads into the other;
the same outputs and pre-training gradients on the same parameters (fp32, a padded batch); both train with
dropout on.

Tolerance. The two differ only in the order of fp32 sums: one 2-D matmul over the flattened tokens against
DenseGeneral's 3-D one, the fused attention op against the formula, LayerNorm's products in another order.
Measured on CPU (jax 0.10.2, this batch): every output and gradient within 4.5 float32 eps (eps = 2^-23) of
the largest magnitude in its array -- MLM logits 2.1e-6 apart at a largest |logit| of 4.0, gradients at most
8.3e-7 apart at 1.25. `assert_same` allows 2e-6 of that largest magnitude (17 eps: ~4x headroom) plus
rtol 1e-5. A plain atol of 1e-6 does not hold: a logit near 0 is a sum of terms of size ~1, and its error is
in ulps of those terms, not of itself. A real difference (a wrong epsilon, a missing bias, a mask or a
scale applied differently) is orders of magnitude larger: the config's layer_norm_eps is deliberately not
a default, so a layer that ignored it would show.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import modeling
from bert_jax.ops.dense import Dense
from bert_jax.ops.dropout import Dropout
from bert_jax.ops.layer_norm import LayerNormalization

FAST = modeling.BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=32, layer_norm_eps=1e-3)
REFERENCE = FAST.replace(kernels="reference")
B, L = 3, 12
HEADS = [modeling.BertForPreTraining, lambda c: modeling.BertForSequenceClassification(c, num_labels=3),
         lambda c: modeling.BertForTokenClassification(c, num_labels=5), modeling.BertForQuestionAnswering]


def assert_same(fast, reference, what):
    fast, reference = np.asarray(fast, np.float32), np.asarray(reference, np.float32)
    scale = float(np.abs(reference).max())
    np.testing.assert_allclose(fast, reference, rtol=1e-5, atol=2e-6 * scale, err_msg=what)


def _batch():
    """Rows of 12, 7 and 3 tokens (padding), two token types, three MLM predictions (one padded)."""
    rng = np.random.default_rng(0)
    lengths = np.array([12, 7, 3])
    mask = (np.arange(L)[None] < lengths[:, None]).astype(np.int32)
    return dict(input_ids=(rng.integers(5, FAST.vocab_size, (B, L)) * mask).astype(np.int32), attention_mask=mask,
                token_type_ids=((np.arange(L)[None] >= lengths[:, None] // 2) * mask).astype(np.int32),
                masked_positions=np.array([[1, 3, 5], [2, 4, 0], [1, 2, 0]], np.int32),
                labels=rng.integers(0, FAST.vocab_size, (B, 3)).astype(np.int32),
                weights=np.array([[1, 1, 1], [1, 1, 0], [1, 1, 1]], np.float32), nsp=np.array([0, 1, 1], np.int32))


def _perturbed_params():
    """Parameters away from their init (LayerNorm scales not 1, biases not 0), the same for either kernels."""
    leaves, tree = jax.tree_util.tree_flatten(
        modeling.init_params(modeling.BertForPreTraining(FAST), jax.random.PRNGKey(0)))
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    return tree.unflatten([x + 0.2 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


@functools.lru_cache(maxsize=None)
def _loss_and_grad(config, deterministic=True):
    """Jitted ``(params, batch, rng) -> ((loss, outputs), grads)``: the MLM (weighted mean over the
    predictions) + NSP cross-entropy of `BertForPreTraining`; one compilation per config for all tests."""
    model = modeling.BertForPreTraining(config)

    def loss(params, batch, rng):
        out = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                          masked_positions=batch["masked_positions"], deterministic=deterministic,
                          rngs={"dropout": rng})
        logp = jax.nn.log_softmax(out.mlm_logits.astype(jnp.float32))
        nll = -jnp.take_along_axis(logp, batch["labels"][..., None], axis=-1)[..., 0]
        nsp = -jnp.take_along_axis(jax.nn.log_softmax(out.nsp_logits), batch["nsp"][:, None], axis=-1)
        return jnp.sum(nll * batch["weights"]) / jnp.sum(batch["weights"]) + jnp.mean(nsp), out
    return jax.jit(jax.value_and_grad(loss, has_aux=True))


def test_the_field_is_validated_and_kept_out_of_the_exported_json():
    with pytest.raises(ValueError, match=r"kernels='pallas' must be one of 'fast', 'reference'"):
        FAST.replace(kernels="pallas")
    with pytest.raises(ValueError, match=r"kernels='reference' .* attention_impl='splash' .* attention_impl='xla'"):
        REFERENCE.replace(attention_impl="splash")
    # How to compute, not architecture (as dtype): not in config.json, so a checkpoint is the same either way.
    assert "kernels" not in REFERENCE.to_hf_dict() and REFERENCE.to_hf_dict() == FAST.to_hf_dict()
    assert modeling.BertConfig.from_dict(REFERENCE.to_hf_dict()) == FAST
    assert modeling.BertConfig.from_dict({**FAST.to_hf_dict(), "kernels": "reference"}) == REFERENCE


@pytest.mark.parametrize("head", range(len(HEADS)))
def test_parameter_trees_are_identical(head):
    """Names, shapes, dtypes and logical axis names of every parameter, for the encoder and each head."""
    def boxed(config):
        model = HEADS[head](config)
        return jax.eval_shape(lambda r: model.init(r, jnp.zeros((1, 8), jnp.int32)), jax.random.PRNGKey(0))
    fast, reference = boxed(FAST), boxed(REFERENCE)
    describe = lambda tree: jax.tree_util.tree_map(lambda s: (s.shape, s.dtype), nn.meta.unbox(tree))  # noqa: E731
    assert describe(fast) == describe(reference)
    assert nn.get_partition_spec(fast) == nn.get_partition_spec(reference)


def test_initial_values_are_identical_and_checkpoints_load_either_way(tmp_path):
    """Same init for the same key (DenseGeneral draws its kernel as the fast Dense does); a checkpoint
    written from one model loads into the other."""
    import bert_jax

    fast = modeling.init_params(modeling.BertForPreTraining(FAST), jax.random.PRNGKey(0))
    reference = modeling.init_params(modeling.BertForPreTraining(REFERENCE), jax.random.PRNGKey(0))
    jax.tree_util.tree_map(np.testing.assert_array_equal, fast, reference)
    bert_jax.save_pretrained(str(tmp_path), REFERENCE, reference)
    config, loaded = bert_jax.load_pretrained(str(tmp_path))
    assert config == FAST and config.replace(kernels="reference") == REFERENCE
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(fast)
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, fast)


def test_each_config_builds_its_own_layers(monkeypatch):
    """The comparison below compares two implementations: flax's classes in one, bert_jax.ops' in the
    other, and the fused attention op only in the fast model."""
    batch = _batch()
    fused_calls = []
    fused = jax.nn.dot_product_attention
    monkeypatch.setattr(jax.nn, "dot_product_attention", lambda *a, **k: fused_calls.append(1) or fused(*a, **k))

    def used(config, deterministic):
        seen = set()

        def record(next_fun, args, kwargs, context):
            seen.add(type(context.module))
            return next_fun(*args, **kwargs)
        model = modeling.BertForPreTraining(config)
        params = jax.eval_shape(lambda r: modeling.init_params(model, r), jax.random.PRNGKey(0))
        rngs = {"dropout": jax.random.PRNGKey(0)}
        with nn.intercept_methods(record):
            jax.eval_shape(lambda p: model.apply({"params": p}, batch["input_ids"], batch["attention_mask"],
                                                 deterministic=deterministic, rngs=rngs), params)
        return seen
    flax_own, ours = {nn.DenseGeneral, nn.LayerNorm, nn.Dropout}, {Dense, LayerNormalization, Dropout}
    fast = used(FAST, deterministic=False)
    assert ours <= fast and not flax_own & fast
    del fused_calls[:]
    assert Dense in used(FAST, deterministic=True) and len(fused_calls) == FAST.num_hidden_layers
    del fused_calls[:]
    reference = used(REFERENCE, deterministic=False) | used(REFERENCE, deterministic=True)
    assert flax_own <= reference and not ours & reference
    assert not fused_calls


def test_same_outputs_and_pretraining_gradients_on_the_same_parameters():
    batch, params = _batch(), _perturbed_params()
    (loss_fast, fast), grads_fast = _loss_and_grad(FAST)(params, batch, jax.random.PRNGKey(0))
    (loss_ref, reference), grads_ref = _loss_and_grad(REFERENCE)(params, batch, jax.random.PRNGKey(0))
    for name in ("mlm_logits", "nsp_logits", "sequence_output", "pooled_output"):
        a, b = getattr(fast, name), getattr(reference, name)
        assert a.dtype == b.dtype == jnp.float32, name
        assert_same(a, b, name)
    assert np.abs(np.asarray(fast.mlm_logits)).max() > 1   # not vanishing outputs
    assert_same(loss_fast, loss_ref, "loss")
    assert jax.tree_util.tree_structure(grads_fast) == jax.tree_util.tree_structure(grads_ref)
    for (path, g_fast), g_ref in zip(jax.tree_util.tree_flatten_with_path(grads_fast)[0],
                                     jax.tree_util.tree_leaves(grads_ref)):
        assert g_fast.dtype == g_ref.dtype == jnp.float32
        assert_same(g_fast, g_ref, jax.tree_util.keystr(path))
    assert all(np.abs(np.asarray(g)).max() > 0 for g in jax.tree_util.tree_leaves(grads_ref))


@pytest.mark.parametrize("config", [FAST, REFERENCE], ids=["fast", "reference"])
def test_both_train_with_dropout(config):
    """Dropout 0.1 on the hidden states and the attention probabilities: a finite loss that differs from
    the deterministic one and with the key; a few SGD steps lower the deterministic loss."""
    assert config.hidden_dropout_prob == config.attention_probs_dropout_prob == 0.1
    batch, params = _batch(), _perturbed_params()
    (before, _), _ = _loss_and_grad(config)(params, batch, jax.random.PRNGKey(0))
    losses = []
    for i in range(4):
        (loss, _), grads = _loss_and_grad(config, deterministic=False)(params, batch, jax.random.PRNGKey(i))
        assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads))
        params = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)
        losses.append(float(loss))
    assert np.isfinite(losses).all() and abs(losses[0] - float(before)) > 1e-3
    assert len(set(losses)) == len(losses)
    (after, _), _ = _loss_and_grad(config)(params, batch, jax.random.PRNGKey(0))
    assert float(after) < float(before)


def test_bf16_compute_in_both():
    """dtype=bfloat16: bf16 activations, fp32 parameters and gradients, in both; the two agree as closely as
    either agrees with fp32. (flax's DenseGeneral rounds its matmul to bf16 before adding the bias and
    computes the kernel gradient in bf16; the fast Dense keeps both in fp32.)"""
    batch, params = _batch(), _perturbed_params()
    (_, fast), g_fast = _loss_and_grad(FAST.replace(dtype="bfloat16"))(params, batch, jax.random.PRNGKey(0))
    (_, reference), g_ref = _loss_and_grad(REFERENCE.replace(dtype="bfloat16"))(params, batch, jax.random.PRNGKey(0))
    assert fast.sequence_output.dtype == reference.sequence_output.dtype == jnp.bfloat16
    assert {g.dtype for g in jax.tree_util.tree_leaves((g_fast, g_ref))} == {np.dtype(np.float32)}

    def within(a, b, fraction):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        return np.abs(a - b).max() <= fraction * np.abs(b).max()
    assert within(fast.mlm_logits, reference.mlm_logits, 0.05)     # measured: 1.9% of the largest logit
    for a, b in zip(jax.tree_util.tree_leaves(g_fast), jax.tree_util.tree_leaves(g_ref)):
        assert within(a, b, 0.1)                                    # measured: at most 2.2% of the largest


@pytest.mark.parametrize("kernels", ["fast", "reference"])
def test_bf16_padding_rows_stay_finite(kernels):
    """A batch's padding rows (attention_mask all 0, weight 0) give finite outputs in bfloat16: float32's
    most negative mask bias would be -inf in bfloat16 and make such a row NaN -- and the weighted loss
    with it (0 x NaN)."""
    cfg = modeling.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=16, dtype="bfloat16", kernels=kernels)
    model = modeling.BertForSequenceClassification(cfg, num_labels=2)
    params = modeling.init_params(model, jax.random.PRNGKey(0))
    ids = np.ones((2, 8), np.int32)
    mask = np.ones((2, 8), np.int32)
    mask[0, 5:], mask[1] = 0, 0
    out = model.apply({"params": params}, ids, attention_mask=mask, token_type_ids=np.zeros_like(ids),
                      deterministic=True)
    assert np.isfinite(np.asarray(out, np.float32)).all(), out
