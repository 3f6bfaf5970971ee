"""bert_jax.ops.dropout against JAX's threefry primitive, Random123's known answer, and the statistics a
dropout mask must have."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.ops.dropout import Dropout, threefry2x32


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_dropout_16bit_masks(rate):
    """bert_jax's Dropout: drop rate within sampling error of `rate`, exact expectation, independent
    decisions from the four 16-bit quarters of a threefry block, fresh masks per key, identity when
    deterministic; the same for typed keys and for a non-threefry PRNG (two decisions per word)."""
    layer = Dropout(rate)
    x = jnp.ones((64, 33, 129), jnp.float32)   # odd last axis: the halves do not line up with the shape
    out = np.asarray(layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)}))
    dropped = out == 0
    n = dropped.size
    assert abs(dropped.mean() - rate) < 5 * np.sqrt(rate * (1 - rate) / n)
    threshold = round((1 - rate) * 65536)
    np.testing.assert_allclose(out[~dropped], 65536 / threshold, rtol=1e-6)
    assert abs(out.mean() - 1.0) < 5 * np.sqrt(rate / (1 - rate) / n)
    # elements 4j .. 4j+3 of a row come from the same threefry block: pairwise independent all the same
    for i, k in ((0, 1), (0, 2), (1, 3), (2, 3)):
        a, b = dropped[..., i::4][..., :32], dropped[..., k::4][..., :32]
        assert abs((a & b).mean() - rate * rate) < 5 * np.sqrt(rate * rate * (1 - rate * rate) / a.size)
    # neighbouring rows and batch entries differ; another key gives another mask
    assert not np.array_equal(dropped[0], dropped[1]) and not np.array_equal(dropped[0, 0], dropped[0, 1])
    other = np.asarray(layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)})) == 0
    assert abs((other != dropped).mean() - 2 * rate * (1 - rate)) < 0.01   # two independent masks
    assert layer.apply({}, x, deterministic=True) is x
    bf = layer.apply({}, x.astype(jnp.bfloat16), deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})
    assert bf.dtype == jnp.bfloat16
    typed = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
    np.testing.assert_array_equal(np.asarray(typed) == 0, dropped)        # typed threefry key: same mask
    rbg = np.asarray(layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0, impl="rbg")})) == 0
    assert abs(rbg.mean() - rate) < 5 * np.sqrt(rate * (1 - rate) / n)
    assert abs((rbg != dropped).mean() - 2 * rate * (1 - rate)) < 0.01


def test_threefry2x32_matches_jax():
    """threefry2x32 (written out round by round for XLA:CPU) is bit-identical to JAX's primitive,
    on known-answer inputs and on random keys and counters, under jit and not."""
    from jax.extend.random import threefry2x32_p
    rng = np.random.default_rng(0)
    for k1, k2 in ((0, 0), (0xFFFFFFFF, 0xFFFFFFFF), (0x13198A2E, 0x03707344)) + tuple(
            tuple(int(v) for v in rng.integers(0, 2 ** 32, 2, dtype=np.uint64)) for _ in range(3)):
        x1 = jnp.asarray(rng.integers(0, 2 ** 32, (5, 7), dtype=np.uint64).astype(np.uint32))
        x2 = jnp.asarray(rng.integers(0, 2 ** 32, (5, 7), dtype=np.uint64).astype(np.uint32))
        k1, k2 = jnp.uint32(k1), jnp.uint32(k2)
        want = threefry2x32_p.bind(k1, k2, x1, x2)
        for got in (threefry2x32(k1, k2, x1, x2), jax.jit(threefry2x32)(k1, k2, x1, x2)):
            np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
            np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))
    # Random123's known-answer test for threefry2x32_20 (key = counter = all ones)
    ones = jnp.full((1,), 0xFFFFFFFF, jnp.uint32)
    got = threefry2x32(jnp.uint32(0xFFFFFFFF), jnp.uint32(0xFFFFFFFF), ones, ones)
    assert (int(got[0][0]), int(got[1][0])) == (0x1CB996FC, 0xBB002BE7)
