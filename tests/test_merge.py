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


def test_a_checkpoint_without_the_encoder_is_an_error():
    with pytest.raises(MergeError, match=r"hold no encoder at params\['bert'\] \(they hold \['cls'\]\)"):
        merge_pretrained(_fresh(), {"cls": _checkpoint()["cls"]})
