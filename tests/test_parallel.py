"""Device layout (`bert_jax.training.parallel`): host batches onto devices for pmap and for a Mesh."""

import jax
import numpy as np
import pytest

from bert_jax.training import parallel


def _host_batch(n=16, seq=16):
    rng = np.random.default_rng(0)
    return {"input_ids": rng.integers(0, 100, (n, seq), dtype=np.int32),
            "masked_lm_ids": rng.integers(0, 100, (n, 4), dtype=np.int32),
            "next_sentence_labels": rng.integers(0, 2, (n, 1), dtype=np.int32)}


def test_batches_for_pmap_and_for_a_global_mesh():
    batch = _host_batch()
    n = jax.local_device_count()
    pm = parallel.shard_for_pmap(batch, n)
    assert pm["input_ids"].shape == (n, 16 // n, 16) and pm["next_sentence_labels"].shape == (n, 16 // n, 1)
    np.testing.assert_array_equal(pm["input_ids"].reshape(16, 16), batch["input_ids"])
    assert parallel.shard_for_pmap(batch)["input_ids"].shape == pm["input_ids"].shape  # default: local devices
    with pytest.raises(ValueError, match=r"per-host batch 16 \(\['input_ids'\]\) .*multiple of 3"):
        parallel.shard_for_pmap(batch, 3)
    on_devices = parallel.put_pmap_batch(batch)
    np.testing.assert_array_equal(np.asarray(on_devices["masked_lm_ids"]).reshape(16, 4), batch["masked_lm_ids"])

    mesh = parallel.make_mesh((-1, 1, 1))
    arrays = parallel.global_batch_from_host(batch, mesh)
    assert arrays["input_ids"].shape == (16 * jax.process_count(), 16)
    np.testing.assert_array_equal(np.asarray(arrays["masked_lm_ids"]), batch["masked_lm_ids"])
    assert len(arrays["input_ids"].sharding.device_set) == len(jax.devices())
    with pytest.raises(ValueError, match=r"cannot place \['input_ids'\] \(host shape \(3, 16\)\)"):
        parallel.global_batch_from_host(_host_batch(3), mesh)


def test_any_process_is_the_flag_itself_in_one_process():
    assert parallel.any_process(True) is True and parallel.any_process(False) is False
