"""Inverted dropout from 16-bit random numbers, four decisions per threefry2x32 block.

``flax.linen.Dropout`` draws a 32-bit uniform per element, and ``jax.random.bits`` makes each 32-bit word
from a whole threefry2x32 block (two words XOR-ed); here each block gives four decisions
``bits16 < round((1 - rate) * 2**16)``, kept values are scaled by ``2**16 / threshold`` so the expectation
is exact, and the rate is ``rate`` to within 2**-17. `threefry2x32` is JAX's hash written out round by
round (XLA:CPU lowers JAX's primitive as a while loop that stores both words between rounds); on TPU and
GPU JAX unrolls it too. Reference test: tests/test_ops_dropout.py (JAX's primitive, Random123's known
answer, the statistics of the masks).
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp


class Dropout(nn.Module):
    """``flax.linen.Dropout``'s semantics (``rate``; ``deterministic`` at the call; the ``"dropout"`` RNG
    stream) with `keep_mask`'s 16-bit decisions: other random bits than flax's. With non-threefry keys
    (``jax_default_prng_impl``), two decisions per ``jax.random.bits`` word."""
    rate: float

    @nn.compact
    def __call__(self, x, deterministic: bool):
        if deterministic or self.rate == 0.0:
            return x
        threshold = int(round((1.0 - self.rate) * 65536))
        if threshold <= 0:
            return jnp.zeros_like(x)
        if threshold >= 65536:
            return x
        shape = x.shape if x.ndim else (1,)
        keep = keep_mask(self.make_rng("dropout"), shape, threshold).reshape(x.shape)
        return jnp.where(keep, x * jnp.asarray(65536.0 / threshold, x.dtype), jnp.zeros((), x.dtype))


def _rotate_left(x, bits):
    return (x << jnp.uint32(bits)) | (x >> jnp.uint32(32 - bits))


def threefry2x32(key1, key2, x1, x2):
    """Threefry-2x32 with 20 rounds (Salmon et al. 2011, Random123), bit-identical to
    ``jax.extend.random.threefry2x32_p``. ``key1``/``key2``: uint32 scalars; ``x1``/``x2``: uint32 arrays."""
    rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
    ks = (key1, key2, key1 ^ key2 ^ jnp.uint32(0x1BD11BDA))
    x1, x2 = x1 + ks[0], x2 + ks[1]
    for i in range(5):
        for r in rotations[i % 2]:
            x1 = x1 + x2
            x2 = _rotate_left(x2, r) ^ x1
        x1 = x1 + ks[(i + 1) % 3]
        x2 = x2 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
    return x1, x2


def keep_mask(key, shape, threshold):
    """Boolean [*shape]: 16-bit random numbers < threshold, four from each threefry2x32 block."""
    n = shape[-1]
    data = jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    if data.shape != (2,) or math.prod(shape) >= 2 ** 34:   # not a threefry key (or > 2^32 blocks)
        bits = jax.random.bits(key, shape[:-1] + ((n + 1) // 2,), jnp.uint32)
        return jnp.concatenate([bits & 0xFFFF, bits >> 16], axis=-1)[..., :n] < jnp.uint32(threshold)
    # One block per 4 decisions, counted by position along [..., ceil(n / 4)] (element-wise, so sharded
    # activations get sharded masks).
    block_shape = shape[:-1] + (-(-n // 4),)
    index = jnp.zeros(block_shape, jnp.uint32)
    stride = 1
    for d in reversed(range(len(block_shape))):
        index = index + jax.lax.broadcasted_iota(jnp.uint32, block_shape, d) * jnp.uint32(stride)
        stride *= block_shape[d]
    w1, w2 = threefry2x32(data[0], data[1], jnp.zeros(block_shape, jnp.uint32), index)
    # The four decisions as four bits of one word per block, then spread out: stacking the four
    # comparisons instead makes XLA evaluate the whole hash once per output element.
    t = jnp.uint32(threshold)
    code = functools.reduce(jnp.bitwise_or, [
        (quarter < t).astype(jnp.uint32) << j
        for j, quarter in enumerate((w1 & 0xFFFF, w1 >> 16, w2 & 0xFFFF, w2 >> 16))])
    bit = jax.lax.broadcasted_iota(jnp.uint32, block_shape + (4,), len(block_shape))
    keep = ((code[..., None] >> bit) & 1) == 1
    return keep.reshape(shape[:-1] + (-1,))[..., :n]
