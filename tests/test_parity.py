"""Numerical parity against the independent reference: HF transformers' PyTorch BERT.

Every weight of a non-standard config is perturbed (so an identity LayerNorm or a zero bias cannot hide a
wrong mapping); batches are padded and use both token types.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bert_jax
from bert_jax import modeling
from tests import helpers

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

RTOL = 2e-4


def assert_close(ours, ref, rtol=RTOL, what=""):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
    scale = np.abs(ref).max()
    err = np.abs(ours - ref).max()
    assert err <= rtol * scale, f"{what}: max abs err {err:.3g} > {rtol} * {scale:.3g}"


@pytest.fixture(scope="module")
def hf_pretraining():
    model = helpers.perturbed_hf_model(transformers.BertForPreTraining)
    return model


@pytest.fixture(scope="module")
def batch():
    return helpers.padded_batch(vocab_size=helpers.HF_CONFIG["vocab_size"])


def hf_pretraining_logits(model, batch):
    ids, tt, mask = (torch.tensor(np.asarray(batch[k]), dtype=torch.long) for k in ("ids", "tt", "mask"))
    with torch.no_grad():
        out = model(input_ids=ids, token_type_ids=tt, attention_mask=mask)
    return out.prediction_logits.numpy(), out.seq_relationship_logits.numpy()


def our_pretraining_logits(config, params, batch, **kw):
    out = bert_jax.BertForPreTraining(config).apply(
        {"params": params}, batch["ids"], token_type_ids=batch["tt"], attention_mask=batch["mask"],
        deterministic=True, **kw)
    return out


def test_hf_safetensors_parity(hf_pretraining, batch, tmp_path):
    hf_pretraining.save_pretrained(tmp_path, safe_serialization=True)
    config, params = bert_jax.load_pretrained(str(tmp_path))
    assert config.hidden_act == "gelu" and config.layer_norm_eps == helpers.HF_CONFIG["layer_norm_eps"]
    ref_mlm, ref_nsp = hf_pretraining_logits(hf_pretraining, batch)
    out = our_pretraining_logits(config, params, batch)
    # Only real (unpadded) positions are meaningful, but HF computes all of them the same way.
    assert_close(out.mlm_logits, ref_mlm, what="mlm")
    assert_close(out.nsp_logits, ref_nsp, what="nsp")

    # masked_positions gives exactly the gathered rows of the full logits.
    pos = jnp.array([[1, 3, 0], [2, 2, 5], [0, 1, 2]])
    sparse = our_pretraining_logits(config, params, batch, masked_positions=pos).mlm_logits
    assert sparse.shape == (3, 3, config.vocab_size)
    np.testing.assert_allclose(sparse, np.take_along_axis(np.asarray(out.mlm_logits), np.asarray(pos)[..., None], 1),
                               rtol=1e-5, atol=1e-5)
    assert_close(sparse[1, 2], ref_mlm[1, 5], what="sparse vs HF")


def test_hf_pytorch_bin_parity(hf_pretraining, batch, tmp_path):
    hf_pretraining.save_pretrained(tmp_path, safe_serialization=False)
    assert os.path.exists(tmp_path / "pytorch_model.bin")
    config, params = bert_jax.load_pretrained(str(tmp_path))
    ref_mlm, ref_nsp = hf_pretraining_logits(hf_pretraining, batch)
    out = our_pretraining_logits(config, params, batch)
    assert_close(out.mlm_logits, ref_mlm, what="mlm")
    assert_close(out.nsp_logits, ref_nsp, what="nsp")


def test_google_tf1_checkpoint_parity(hf_pretraining, batch, tmp_path):
    """A TF-1 checkpoint written here with the original variable names (mapping written independently
    of bert_jax.convert), read by load_pretrained without PyTorch."""
    helpers.write_google_checkpoint_from_hf(hf_pretraining, tmp_path)
    assert (tmp_path / "bert_model.ckpt.index").exists()
    config, params = bert_jax.load_pretrained(str(tmp_path))
    ref_mlm, ref_nsp = hf_pretraining_logits(hf_pretraining, batch)
    out = our_pretraining_logits(config, params, batch)
    assert_close(out.mlm_logits, ref_mlm, what="mlm")
    assert_close(out.nsp_logits, ref_nsp, what="nsp")
    # ... and the checkpoint prefix itself is accepted too.
    _, params2 = bert_jax.load_pretrained(str(tmp_path / "bert_model.ckpt"))
    np.testing.assert_array_equal(params2["cls"]["seq_relationship"]["kernel"],
                                  params["cls"]["seq_relationship"]["kernel"])


def test_hf_export_round_trip(hf_pretraining, batch, tmp_path):
    hf_pretraining.save_pretrained(tmp_path / "src")
    config, params = bert_jax.load_pretrained(str(tmp_path / "src"))
    bert_jax.save_pretrained(str(tmp_path / "out"), config, params)
    reloaded, info = transformers.BertForPreTraining.from_pretrained(
        str(tmp_path / "out"), output_loading_info=True)
    reloaded.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    ref_mlm, ref_nsp = hf_pretraining_logits(hf_pretraining, batch)
    mlm, nsp = hf_pretraining_logits(reloaded, batch)
    assert_close(mlm, ref_mlm, rtol=1e-6, what="export mlm")
    assert_close(nsp, ref_nsp, rtol=1e-6, what="export nsp")


def test_google_export_round_trip(hf_pretraining, batch, tmp_path):
    config, params = bert_jax.load_pretrained(_saved(hf_pretraining, tmp_path / "src"))
    bert_jax.save_pretrained(str(tmp_path / "g"), config, params, format="google")
    config2, params2 = bert_jax.load_pretrained(str(tmp_path / "g"))
    assert config2.replace(layer_norm_eps=config.layer_norm_eps) == config
    for (k, a), (k2, b) in zip(sorted(helpers.flat(params).items()), sorted(helpers.flat(params2).items())):
        assert k == k2
        np.testing.assert_array_equal(a, b)


def _saved(model, path):
    model.save_pretrained(path)
    return str(path)


def test_encoder_only_checkpoint_and_bert_model(batch, tmp_path):
    hf = helpers.perturbed_hf_model(transformers.BertModel)
    hf.save_pretrained(tmp_path)  # keys without the "bert." prefix, no heads
    config, params = bert_jax.load_pretrained(str(tmp_path))
    assert set(params) == {"bert"}
    ids, tt, mask = (torch.tensor(np.asarray(batch[k]), dtype=torch.long) for k in ("ids", "tt", "mask"))
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=tt, attention_mask=mask)
    enc = bert_jax.BertModel(config).apply({"params": params["bert"]}, batch["ids"],
                                           attention_mask=batch["mask"], token_type_ids=batch["tt"],
                                           deterministic=True)
    assert_close(enc.sequence_output, ref.last_hidden_state.numpy(), what="sequence")
    assert_close(enc.pooled_output, ref.pooler_output.numpy(), what="pooled")


@pytest.mark.parametrize("hf_cls,num_labels", [("BertForSequenceClassification", 3),
                                               ("BertForSequenceClassification", 1),
                                               ("BertForTokenClassification", 5),
                                               ("BertForQuestionAnswering", 2)])
def test_fine_tuning_heads_parity(hf_cls, num_labels, batch, tmp_path):
    hf = helpers.perturbed_hf_model(getattr(transformers, hf_cls), num_labels=num_labels)
    hf.save_pretrained(tmp_path)
    config, params = bert_jax.load_pretrained(str(tmp_path))
    ids, tt, mask = (torch.tensor(np.asarray(batch[k]), dtype=torch.long) for k in ("ids", "tt", "mask"))
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=tt, attention_mask=mask)
    kw = dict(token_type_ids=batch["tt"], attention_mask=batch["mask"], deterministic=True)
    if hf_cls == "BertForQuestionAnswering":
        out = bert_jax.BertForQuestionAnswering(config).apply({"params": params}, batch["ids"], **kw)
        assert_close(out.start_logits, ref.start_logits.numpy(), what="start")
        assert_close(out.end_logits, ref.end_logits.numpy(), what="end")
        return
    cls = getattr(bert_jax, hf_cls)
    logits = cls(config, num_labels=num_labels).apply({"params": params}, batch["ids"], **kw)
    assert_close(logits, ref.logits.numpy(), what=hf_cls)


def test_real_minilm_weights_match_pytorch():
    model_dir = helpers.minilm_dir()
    config, params = bert_jax.load_pretrained(model_dir)
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (6, 384, 30522)
    tok = transformers.BertTokenizerFast(os.path.join(model_dir, "vocab.txt"), do_lower_case=True)
    texts = ["The movie was a delightful surprise, full of warmth.",
             "A tedious, overlong mess.",
             "Naïve café owners in Zürich sell crème brûlée — 日本語 too! 🙂"]
    enc = tok(texts, padding=True, return_tensors="np")
    hf = transformers.BertModel.from_pretrained(model_dir)
    hf.eval()
    with torch.no_grad():
        ref = hf(**{k: torch.tensor(v) for k, v in enc.items()})
    out = bert_jax.BertModel(config).apply(
        {"params": params["bert"]}, enc["input_ids"], attention_mask=enc["attention_mask"],
        token_type_ids=enc["token_type_ids"], deterministic=True)
    assert_close(out.sequence_output, ref.last_hidden_state.numpy(), what="minilm sequence")
    assert_close(out.pooled_output, ref.pooler_output.numpy(), what="minilm pooled")


def test_pretraining_gradients_match_pytorch(hf_pretraining, batch, tmp_path):
    """The backward pass (bert_jax writes its own for the dense layers, `modeling.dense_matmul`): the
    gradient of the MLM + NSP pre-training loss with respect to every parameter equals PyTorch autograd's
    on HF's model, mapped through the same conversion table as the weights."""
    from bert_jax.convert import mapping
    from bert_jax.training import step as step_lib

    config, params = bert_jax.load_pretrained(_saved(hf_pretraining, tmp_path))
    model = bert_jax.BertForPreTraining(config)
    positions = np.array([[1, 3, 0], [2, 4, 5], [0, 1, 2]], np.int32)
    rng = np.random.default_rng(3)
    labels = rng.integers(0, config.vocab_size, positions.shape).astype(np.int32)
    weights = np.array([[1, 1, 1], [1, 1, 0], [1, 1, 1]], np.float32)   # one padded prediction
    nsp = np.array([0, 1, 1], np.int32)
    jbatch = {"input_ids": batch["ids"], "attention_mask": batch["mask"], "token_type_ids": batch["tt"],
              "masked_lm_positions": positions, "masked_lm_ids": labels, "masked_lm_weights": weights,
              "next_sentence_labels": nsp}

    def loss(p):
        sums = step_lib.pretrain_sums(model, p, jbatch)
        return sums["mlm_nll"] / weights.sum() + sums["nsp_nll"] / len(nsp)

    grads = mapping.from_bert_jax(jax.grad(loss)(params), config, mapping.HF)

    ids, tt, mask = (torch.tensor(np.asarray(batch[k]), dtype=torch.long) for k in ("ids", "tt", "mask"))
    hf_pretraining.zero_grad()
    out = hf_pretraining(input_ids=ids, token_type_ids=tt, attention_mask=mask)
    logp = torch.log_softmax(out.prediction_logits, -1)
    picked = logp[torch.arange(3)[:, None], torch.tensor(positions, dtype=torch.long),
                  torch.tensor(labels, dtype=torch.long)]
    ref_loss = (-(picked * torch.tensor(weights)).sum() / float(weights.sum())
                + torch.nn.functional.cross_entropy(out.seq_relationship_logits,
                                                    torch.tensor(nsp, dtype=torch.long)))
    ref_loss.backward()
    np.testing.assert_allclose(float(loss(params)), float(ref_loss.detach()), rtol=1e-5)
    named = dict(hf_pretraining.named_parameters())   # tied decoder weight appears once
    top = max(float(np.abs(p.grad.numpy()).max()) for p in named.values())
    checked = 0
    for name, p in named.items():
        assert name in grads, name
        ref = p.grad.numpy()
        if name.endswith("attention.self.key.bias"):
            # softmax is blind to a bias on the keys: its true gradient is 0, both sides give rounding noise
            assert np.abs(grads[name]).max() < 1e-5 * top and np.abs(ref).max() < 1e-5 * top, name
        else:
            assert_close(grads[name], ref, rtol=1e-4, what=f"grad {name}")
        checked += 1
    assert checked == len(named) and checked > 50


def test_dropout_and_bf16(hf_pretraining, batch, tmp_path):
    config, params = bert_jax.load_pretrained(_saved(hf_pretraining, tmp_path))
    model = bert_jax.BertForPreTraining(config)
    det = model.apply({"params": params}, batch["ids"], attention_mask=batch["mask"], deterministic=True)
    drop = [model.apply({"params": params}, batch["ids"], attention_mask=batch["mask"], deterministic=False,
                        rngs={"dropout": jax.random.PRNGKey(s)}).nsp_logits for s in (0, 1)]
    assert not np.allclose(drop[0], drop[1]) and not np.allclose(drop[0], det.nsp_logits)
    no_drop = bert_jax.BertForPreTraining(config.replace(hidden_dropout_prob=0.0,
                                                         attention_probs_dropout_prob=0.0))
    out = no_drop.apply({"params": params}, batch["ids"], attention_mask=batch["mask"], deterministic=False,
                        rngs={"dropout": jax.random.PRNGKey(0)})
    np.testing.assert_allclose(out.mlm_logits, det.mlm_logits, rtol=1e-6, atol=1e-6)

    bf16 = bert_jax.BertForPreTraining(config.replace(dtype="bfloat16")).apply(
        {"params": params}, batch["ids"], attention_mask=batch["mask"], deterministic=True)
    assert bf16.mlm_logits.dtype == jnp.float32  # logits come back in fp32 for the loss
    assert jax.tree_util.tree_leaves(params)[0].dtype == np.float32
    assert_close(bf16.mlm_logits, det.mlm_logits, rtol=5e-2, what="bf16")
