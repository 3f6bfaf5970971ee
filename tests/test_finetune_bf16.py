"""Fine-tuning in bfloat16 (``dtype="bfloat16"``: bf16 matmul operands, fp32 parameters, optimizer state,
accumulation and statistics) trains like fp32: batches with padding rows (the last batch of a bucket)
stay finite, and the train losses of a few epochs stay close to the fp32 run's."""

import jax
import numpy as np

from bert_jax.training import finetune
from tests.test_finetune import CONFIG, cfg_for, make_arrays


def _run(dtype, train, dev):
    config = CONFIG.replace(dtype=dtype)
    model = finetune.build_model(config, "classification", 3)
    params = finetune.init_params(model, jax.random.PRNGKey(0))
    return finetune.finetune(model, "classification", params, train, dev,
                             lambda out: {"score": float(np.mean(out.argmax(-1) == dev["labels"]))}, "score",
                             cfg_for(num_epochs=4.0, learning_rate=3e-3), seed=0)


def test_bf16_finetuning_is_finite_and_close_to_fp32():
    train, dev = make_arrays(61, seed=1), make_arrays(20, seed=2)   # 61 rows: the last batches have padding rows
    fp32, bf16 = _run("float32", train, dev), _run("bfloat16", train, dev)
    a = np.array([h["train_loss"] for h in fp32.history])
    b = np.array([h["train_loss"] for h in bf16.history])
    assert np.isfinite(b).all(), b
    assert a[-1] < a[0] and b[-1] < b[0], (a, b)          # both learn
    np.testing.assert_allclose(b, a, rtol=0.03)            # bf16 rounding only
    assert not np.array_equal(a, b)                         # and bf16 really ran in bf16
