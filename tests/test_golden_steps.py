"""Golden values of one train step (as nanodo pins its step): a fixed tiny BERT, parameters from a fixed
key, a fixed batch, one pre-training step (`step.make_pretrain_step`) and one fine-tuning step per head
(`step.make_finetune_step`, the optimizer and schedule `finetune.Finetuner` builds) -> the exact loss
and metrics, and checksums of the parameters after the step and of the update.

Any change to the step's maths -- model, dropout, loss, gradient, clipping, AdamW, schedule -- fails
here. If the change is intended, re-pin with the values ``pytest -s tests/test_golden_steps.py``
prints. Plain ``jax.jit`` on one device, so the values do not depend on a mesh.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bert_jax import modeling
from bert_jax.training import finetune, optim, step as step_lib

CONFIG = modeling.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=32)   # dropout 0.1 (the default)
B, L, P = 4, 16, 3
RTOL = 1e-6
OPT = dict(learning_rate=1e-3, warmup_steps=0, num_train_steps=10, weight_decay=0.01, optimizer="adamw",
           adam_b1=0.9, adam_b2=0.999, adam_eps=1e-6, grad_clip_norm=1.0)

# Printed by this file (pytest -s); see the module docstring.
GOLDEN = {
    'pretrain': {'grad_norm': 3.013381004333496, 'learning_rate': 0.0010000000474974513, 'loss': 4.844717025756836,
                 'mlm_accuracy': 0.0, 'mlm_loss': 4.151176452636719, 'nsp_accuracy': 0.5,
                 'nsp_loss': 0.6935403347015381, 'params_abs_sum': 507.2632047457079,
                 'params_sum': 194.65349964377162, 'update_norm': 0.13091214842466417},
    'classification': {'learning_rate': 0.0010000000474974513, 'loss': 1.0978394746780396,
                       'params_abs_sum': 460.5844245513989, 'params_sum': 161.91271279700965,
                       'update_norm': 0.1142216077165696},
    'token': {'learning_rate': 0.0010000000474974513, 'loss': 1.124367594718933, 'params_abs_sum': 446.23763647727395,
              'params_sum': 161.3156308517668, 'update_norm': 0.11814214668446323},
    'qa': {'learning_rate': 0.0010000000474974513, 'loss': 2.779500961303711, 'params_abs_sum': 445.89677668628275,
           'params_sum': 161.35528958067886, 'update_norm': 0.11545164534076127},
}


def _lengths(rng):
    return rng.integers(L // 2, L + 1, B)


def pretrain_batch():
    rng = np.random.default_rng(0)
    lengths = _lengths(rng)
    mask = (np.arange(L)[None] < lengths[:, None]).astype(np.int32)
    pos = np.stack([rng.choice(np.arange(1, n), P, replace=False) for n in lengths]).astype(np.int32)
    weights = np.ones((B, P), np.float32)
    weights[0, -1] = 0.0
    return {"input_ids": (rng.integers(5, CONFIG.vocab_size, (B, L)) * mask).astype(np.int32),
            "attention_mask": mask,
            "token_type_ids": ((np.arange(L)[None] >= lengths[:, None] // 2) * mask).astype(np.int32),
            "masked_lm_positions": pos, "masked_lm_ids": rng.integers(5, CONFIG.vocab_size, (B, P)).astype(np.int32),
            "masked_lm_weights": weights, "next_sentence_labels": np.array([[0], [1], [1], [0]], np.int32)}


def finetune_batch(kind):
    rng = np.random.default_rng(1)
    lengths = _lengths(rng)
    mask = (np.arange(L)[None] < lengths[:, None]).astype(np.int32)
    batch = {"input_ids": (rng.integers(5, CONFIG.vocab_size, (B, L)) * mask).astype(np.int32),
             "token_type_ids": ((np.arange(L)[None] >= lengths[:, None] // 2) * mask).astype(np.int32),
             "attention_mask": mask, "weights": np.array([1, 1, 1, 0], np.float32)}   # the last row is padding
    if kind == "classification":
        batch["labels"] = np.array([0, 2, 1, 0], np.int32)
    elif kind == "token":
        tags = rng.integers(0, 3, (B, L)).astype(np.int32)
        batch["labels"] = np.where(mask == 1, tags, finetune.IGNORE_INDEX).astype(np.int32)
    else:
        batch["start_positions"] = (lengths // 3).astype(np.int32)
        batch["end_positions"] = (lengths // 2).astype(np.int32)
    return batch


def checksums(before, after) -> dict:
    """Sum, sum of |x| of the parameters after the step, and the L2 norm of the update (float64, host)."""
    a = [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(jax.device_get(after))]
    b = [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(jax.device_get(before))]
    return {"params_sum": float(sum(x.sum() for x in a)), "params_abs_sum": float(sum(np.abs(x).sum() for x in a)),
            "update_norm": float(np.sqrt(sum(((x - y) ** 2).sum() for x, y in zip(a, b))))}


def check(name, values):
    print(f"\n    {name!r}: {{" + ", ".join(f"{k!r}: {v!r}" for k, v in sorted(values.items())) + "},")
    golden = GOLDEN[name]
    assert sorted(values) == sorted(golden), f"metrics {sorted(values)} vs golden {sorted(golden)}"
    for k, v in golden.items():
        assert values[k] == pytest.approx(v, rel=RTOL, abs=1e-9), f"{name} {k}: {values[k]!r} vs golden {v!r}"


def test_pretrain_step_golden():
    model = modeling.BertForPreTraining(CONFIG)
    params = modeling.init_params(model, jax.random.PRNGKey(0))
    opt = ml_collections.ConfigDict(OPT)
    state = step_lib.create_train_state(model, params, optim.make_optimizer(opt))
    fn = jax.jit(step_lib.make_pretrain_step(model, None, 1, optim.make_schedule(opt)))
    new, metrics = fn(state, pretrain_batch(), jax.random.PRNGKey(42))
    assert int(new.step) == 1
    check("pretrain", {**{k: float(v) for k, v in metrics.items()}, **checksums(params, new.params)})


@pytest.mark.parametrize("kind", ["classification", "token", "qa"])
def test_finetune_step_golden(kind):
    model = finetune.build_model(CONFIG, kind, 3)
    params = modeling.init_params(model, jax.random.PRNGKey(0))
    # The optimizer (unit learning rate) and the schedule as data, as `finetune.Finetuner` builds them.
    ft = finetune.Finetuner(model, kind, ml_collections.ConfigDict(OPT))
    state = step_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=ft.tx.init(params),
                                tx=ft.tx, lr_schedule=jnp.asarray(ft.lr_schedule))
    new, metrics = jax.jit(step_lib.make_finetune_step(model, kind))(state, finetune_batch(kind),
                                                                     jax.random.PRNGKey(42))
    assert int(new.step) == 1
    check(kind, {**{k: float(v) for k, v in metrics.items()}, **checksums(params, new.params)})
