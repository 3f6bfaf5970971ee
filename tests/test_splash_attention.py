"""Splash attention (bert_jax/ops/splash_attention.py): the Pallas TPU kernel, run in Pallas' interpreter on
CPU, against the reference attention -- forward and gradients -- and wired into the model in place of the
XLA path (equal outputs at every real token)."""

import functools
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import modeling
from bert_jax.ops import splash_attention as sa


def _qkv(b, length, heads, d, seed=0, dtype=jnp.float32):
    ks = jax.random.split(jax.random.PRNGKey(seed), 3)
    return tuple(jax.random.normal(k, (b, length, heads, d), jnp.float32).astype(dtype) for k in ks)


def _mask(b, length, lengths):
    m = np.zeros((b, length), np.int32)
    for i, n in enumerate(lengths):
        m[i, :n] = 1
    return m


def test_kernel_matches_reference_forward_and_gradients():
    # Two 128-blocks; example 0 ends inside the first block, example 1 inside the second, example 2 has
    # no padding: every block mixes segments differently.
    q, k, v = _qkv(3, 256, 2, 64)
    mask = _mask(3, 256, (100, 200, 256))
    out = sa.attention(q, k, v, mask, interpret=True)
    ref = sa.reference_attention(q, k, v, mask)
    np.testing.assert_allclose(out, ref, atol=2e-6, rtol=1e-5)

    def loss(fn, q, k, v):
        return jnp.sum(jnp.sin(fn(q, k, v, mask)))
    got = jax.grad(functools.partial(loss, functools.partial(sa.attention, interpret=True)), argnums=(0, 1, 2))(q, k, v)
    want = jax.grad(functools.partial(loss, sa.reference_attention), argnums=(0, 1, 2))(q, k, v)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=5e-6, rtol=1e-5)
    # The reference really separates the segments: a token's output ignores the padding's values.
    v2 = v.at[0, 150:].set(100.0)
    np.testing.assert_allclose(sa.attention(q, k, v2, mask, interpret=True)[0, :100], out[0, :100], atol=2e-6)


def test_reference_equals_the_models_masked_softmax_at_real_tokens():
    q, k, v = _qkv(2, 128, 2, 32, seed=1)
    mask = _mask(2, 128, (70, 128))
    bias = modeling.attention_bias(jnp.asarray(mask))
    xla = jax.nn.dot_product_attention(q, k, v, bias=bias)
    ref = sa.reference_attention(q, k, v, mask)
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(ref)[real], np.asarray(xla)[real], atol=1e-6)


def _tiny(**kw):
    return modeling.BertConfig(vocab_size=64, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=128, max_position_embeddings=128, **kw)


def test_model_with_splash_kernel_matches_xla_path():
    ids = jax.random.randint(jax.random.PRNGKey(2), (2, 128), 1, 64)
    mask = jnp.asarray(_mask(2, 128, (90, 128)))
    xla_model = modeling.BertModel(_tiny())
    params = modeling.init_params(xla_model, jax.random.PRNGKey(0), seq_len=128)
    want = xla_model.apply({"params": params}, ids, attention_mask=mask).sequence_output
    interpreted = functools.partial(sa.attention, interpret=True)
    with mock.patch.object(sa, "attention", interpreted):   # the kernel itself, not the off-TPU reference
        got = modeling.BertModel(_tiny(attention_impl="splash")).apply(
            {"params": params}, ids, attention_mask=mask).sequence_output
    real = np.asarray(mask).astype(bool)
    np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=2e-5)
    # Off TPU without the patch: the reference, the same numbers.
    ref = modeling.BertModel(_tiny(attention_impl="splash")).apply(
        {"params": params}, ids, attention_mask=mask).sequence_output
    np.testing.assert_allclose(np.asarray(ref)[real], np.asarray(want)[real], atol=2e-5)


def test_clear_errors():
    with pytest.raises(ValueError, match="attention_impl='flash' must be 'xla' or 'splash'"):
        _tiny(attention_impl="flash")
    ids = jnp.ones((1, 128), jnp.int32)
    model = modeling.BertModel(_tiny(attention_impl="splash"))
    params = modeling.init_params(modeling.BertModel(_tiny()), jax.random.PRNGKey(0), seq_len=128)
    with pytest.raises(ValueError, match="attention_probs_dropout_prob=0"):
        model.apply({"params": params}, ids, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)})
    # Lengths the kernel cannot tile (128 x 128 blocks) take the reference, even when asked for the kernel.
    with mock.patch.object(sa, "_splash_local", side_effect=AssertionError("kernel called")):
        q, k, v = _qkv(1, 96, 2, 32)
        np.testing.assert_array_equal(sa.attention(q, k, v, np.ones((1, 96), np.int32), interpret=True),
                                      sa.reference_attention(q, k, v, np.ones((1, 96), np.int32)))
