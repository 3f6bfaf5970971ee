"""`bert_jax.convert.merge.merge_pretrained`: the one rule set for pretrained weights into a fresh tree
(continued pre-training, fine-tuning, `modeling.add_missing_heads`), one test per rule."""

import numpy as np
import pytest

from bert_jax.convert.merge import MergeError, merge_pretrained


def _fresh():
    return {"bert": {"embeddings": {"embedding": np.zeros((5, 4), np.float32)},
                     "pooler": {"kernel": np.zeros((4, 4), np.float32)}},
            "classifier": {"kernel": np.zeros((4, 2), np.float32), "bias": np.zeros((2,), np.float32)}}


def _checkpoint():
    return {"bert": {"embeddings": {"embedding": np.ones((5, 4), np.float64)},
                     "pooler": {"kernel": np.full((4, 4), 2.0)}},
            "cls": {"predictions": {"bias": np.ones((5,), np.float32)}}}


def test_taken_kept_fresh_and_dropped():
    fresh = _fresh()
    out = merge_pretrained(fresh, _checkpoint())
    # taken, cast to the model's dtype
    assert out["bert"]["embeddings"]["embedding"].dtype == np.float32
    np.testing.assert_array_equal(out["bert"]["embeddings"]["embedding"], np.ones((5, 4)))
    np.testing.assert_array_equal(out["bert"]["pooler"]["kernel"], np.full((4, 4), 2.0))
    # kept fresh: the head the checkpoint lacks; dropped: the heads the model lacks (cls)
    np.testing.assert_array_equal(out["classifier"]["kernel"], fresh["classifier"]["kernel"])
    assert set(out) == {"bert", "classifier"}
    # neither argument changes
    assert not fresh["bert"]["embeddings"]["embedding"].any()


def test_drop_keeps_the_fresh_values_whatever_the_checkpoint_holds():
    out = merge_pretrained(_fresh(), _checkpoint(), drop=("bert/pooler",))
    assert not np.asarray(out["bert"]["pooler"]["kernel"]).any()
    np.testing.assert_array_equal(out["bert"]["embeddings"]["embedding"], np.ones((5, 4)))
    # a dropped subtree may even have another shape
    bad = _checkpoint()
    bad["bert"]["pooler"]["kernel"] = np.zeros((3, 3))
    merge_pretrained(_fresh(), bad, drop=("bert/pooler",))


def test_every_shape_mismatch_in_one_error():
    bad = _checkpoint()
    bad["bert"]["pooler"]["kernel"] = np.zeros((3, 3))
    bad["classifier"] = {"kernel": np.zeros((4, 3)), "bias": np.zeros((3,))}   # another task's label count
    with pytest.raises(MergeError, match=r"the parameters of ckpt/ do not fit the model \(3 shape mismatch") as e:
        merge_pretrained(_fresh(), bad, source="ckpt/")
    msg = str(e.value)
    for line in ("bert/pooler/kernel: checkpoint (3, 3) vs model (4, 4)",
                 "classifier/kernel: checkpoint (4, 3) vs model (4, 2)", "classifier/bias: checkpoint (3,) vs model (2,)"):
        assert line in msg


def test_another_tasks_head_stays_fresh_under_fresh_on_mismatch():
    # fine-tuning RTE (2 labels) from an MNLI model (3): the encoder is taken, the classifier starts fresh
    mnli = _checkpoint()
    mnli["classifier"] = {"kernel": np.ones((4, 3)), "bias": np.ones((3,))}
    fresh = _fresh()
    out = merge_pretrained(fresh, mnli, drop=("cls",), fresh_on_mismatch=("classifier",))
    np.testing.assert_array_equal(out["classifier"]["kernel"], fresh["classifier"]["kernel"])
    np.testing.assert_array_equal(out["bert"]["embeddings"]["embedding"], np.ones((5, 4)))
    # a head of the model's shape is still taken (re-evaluating a fine-tuned checkpoint)
    same = _checkpoint()
    same["classifier"] = {"kernel": np.ones((4, 2)), "bias": np.ones((2,))}
    out = merge_pretrained(fresh, same, fresh_on_mismatch=("classifier",))
    np.testing.assert_array_equal(out["classifier"]["kernel"], np.ones((4, 2)))
    # the encoder is never refreshed: its mismatch is still an error
    mnli["bert"]["pooler"]["kernel"] = np.zeros((3, 3))
    with pytest.raises(MergeError, match="bert/pooler/kernel"):
        merge_pretrained(fresh, mnli, fresh_on_mismatch=("classifier",))


def test_a_checkpoint_without_the_encoder_is_an_error():
    with pytest.raises(MergeError, match=r"hold no encoder at params\['bert'\] \(they hold \['cls'\]\)"):
        merge_pretrained(_fresh(), {"cls": _checkpoint()["cls"]})


@pytest.mark.parametrize("mode", ["pmap", "jit"])
def test_the_pretraining_trainer_starts_from_an_encoder_only_checkpoint(mode):
    """`init_checkpoint` in pre-training: the encoder is the checkpoint's, the MLM/NSP heads fresh; a
    checkpoint of another size is one TrainingError listing the mismatches."""
    import jax

    from bert_jax import modeling
    from bert_jax.configs import pretrain as pretrain_config
    from bert_jax.training import TrainingError, trainer as trainer_lib

    c = pretrain_config.get_config("size=tiny,seq_len=16")
    c.model.update(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                   max_position_embeddings=16)
    c.parallelism, c.global_batch_size, c.warmup_steps = mode, 8, 1
    bert_config = trainer_lib.model_config(c, vocab_size=50)
    trainer = trainer_lib.Trainer(c, bert_config, total_steps=10)
    encoder = jax.device_get(modeling.init_params(modeling.BertModel(bert_config), jax.random.PRNGKey(9)))
    fresh = trainer.savable(trainer.init_state(jax.random.PRNGKey(1)))
    state = trainer.savable(trainer.init_state(jax.random.PRNGKey(1), {"bert": encoder}, "enc/"))
    got = jax.tree_util.tree_map(np.asarray, state.params)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got["bert"]), jax.tree_util.tree_leaves(encoder)):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    for a, b in zip(jax.tree_util.tree_leaves(got["cls"]), jax.tree_util.tree_leaves(fresh.params["cls"])):
        np.testing.assert_array_equal(a, np.asarray(b))
    other = modeling.BertConfig.named("tiny", vocab_size=50, hidden_size=48, num_attention_heads=2,
                                      num_hidden_layers=1, intermediate_size=64, max_position_embeddings=16)
    wrong = jax.device_get(modeling.init_params(modeling.BertModel(other), jax.random.PRNGKey(0)))
    with pytest.raises(TrainingError, match=r"the parameters of init_checkpoint w/ do not fit the model \(\d+ shape"):
        trainer.init_state(jax.random.PRNGKey(1), {"bert": wrong}, "w/")
