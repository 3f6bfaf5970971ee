"""Splash attention (JAX's Pallas TPU kernel) for BERT's bidirectional self-attention.

``attention(q, k, v, segment_ids)`` is ``softmax(q kᵀ / sqrt(D)) v`` per head where only tokens with the
same segment id see each other. BERT passes ``segment_ids = input_mask`` (1 = token, 0 = padding): the
tokens attend exactly the keys the XLA path's additive mask lets through, and the padding positions form a
segment of their own, so no row of the mask is empty (the kernel would divide by zero) -- their outputs,
which nothing reads, differ from the XLA path's (which lets padding queries see the tokens).

The kernel (``jax.experimental.pallas.ops.tpu.splash_attention``) runs a full mask
(``FullMask``) with the segment ids, in 128-wide blocks, never materialising the [L, L] scores. It has no
dropout on the attention probabilities. Under a ``Mesh`` context (``jax.set_mesh``) it runs in a
``shard_map`` over the batch axes and, when the heads divide, the ``tensor`` axis: a Mosaic kernel cannot
be partitioned by XLA's SPMD pass. Off TPU (``interpret=None``) the same function computes the reference
(:func:`reference_attention`), so a model configured for splash still runs on CPU/GPU; ``interpret=True``
runs the kernel itself in Pallas' interpreter (the CPU test of its numerics).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

BLOCK = 128            # the kernel's block size along both sequences: L must be a multiple of it
BATCH_MESH_AXES = ("data", "fsdp")
HEAD_MESH_AXIS = "tensor"


def reference_attention(q_BxLxNxD, k_BxLxNxD, v_BxLxNxD, segment_ids_BxL):
    """The same function in plain XLA: fp32 scores, softmax over the keys of the query's segment."""
    d = q_BxLxNxD.shape[-1]
    scores = jnp.einsum("bqnd,bknd->bnqk", q_BxLxNxD, k_BxLxNxD, preferred_element_type=jnp.float32)
    scores = scores / np.sqrt(d).astype(np.float32)
    same = segment_ids_BxL[:, None, :, None] == segment_ids_BxL[:, None, None, :]
    probs = jax.nn.softmax(jnp.where(same, scores, -jnp.inf), axis=-1)
    return jnp.einsum("bnqk,bknd->bqnd", probs.astype(v_BxLxNxD.dtype), v_BxLxNxD)


@functools.lru_cache(maxsize=None)
def _kernel(seq_len: int, num_heads: int, interpret: bool):
    from jax.experimental.pallas.ops.tpu import splash_attention as sa
    block = BLOCK
    sizes = sa.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                          block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
    mask = sa.MultiHeadMask([sa.FullMask((seq_len, seq_len)) for _ in range(num_heads)])
    return sa.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)


def _splash_local(q, k, v, segment_ids, interpret: bool):
    """The kernel on this shard: [b, L, n, D] -> [b, L, n, D], one kernel call per example (vmap)."""
    from jax.experimental.pallas.ops.tpu.splash_attention import SegmentIds
    _, length, heads, d = q.shape
    kernel = _kernel(length, heads, interpret)
    q = q / jnp.sqrt(jnp.asarray(d, jnp.float32)).astype(q.dtype)   # the kernel does not scale
    to_heads = lambda x: jnp.swapaxes(x, 1, 2)                        # noqa: E731 [b, n, L, D]
    ids = segment_ids.astype(jnp.int32)

    def one(qi, ki, vi, si):
        return kernel(qi, ki, vi, segment_ids=SegmentIds(q=si, kv=si))
    out = jax.vmap(one)(to_heads(q), to_heads(k), to_heads(v), ids)
    return jnp.swapaxes(out, 1, 2).astype(v.dtype)


def _sharded(fn, q, k, v, segment_ids):
    """``fn`` under shard_map over the context mesh's batch (and head) axes; ``fn`` itself without one."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return fn(q, k, v, segment_ids)
    from jax.sharding import PartitionSpec as P
    batch = tuple(a for a in BATCH_MESH_AXES if a in mesh.axis_names and mesh.shape[a] > 1)
    n_batch = int(np.prod([mesh.shape[a] for a in batch])) if batch else 1
    if q.shape[0] % n_batch:
        batch, n_batch = (), 1
    heads = (HEAD_MESH_AXIS if HEAD_MESH_AXIS in mesh.axis_names and mesh.shape[HEAD_MESH_AXIS] > 1
             and q.shape[2] % mesh.shape[HEAD_MESH_AXIS] == 0 else None)
    b = batch or None
    qkv_spec, seg_spec = P(b, None, heads, None), P(b, None)
    return jax.shard_map(fn, mesh=mesh, in_specs=(qkv_spec, qkv_spec, qkv_spec, seg_spec),
                         out_specs=qkv_spec, check_vma=False)(q, k, v, segment_ids)


def attention(q_BxLxNxD, k_BxLxNxD, v_BxLxNxD, segment_ids_BxL, interpret=None):
    """Splash attention on TPU. ``interpret=None``: the kernel when compiled for TPU, the reference elsewhere;
    ``True``: the kernel in Pallas' interpreter (any platform, slow); ``False``: the kernel (TPU only). Lengths
    that are not a multiple of 128 always take the reference."""
    args = (q_BxLxNxD, k_BxLxNxD, v_BxLxNxD, segment_ids_BxL)
    if q_BxLxNxD.shape[1] % BLOCK:   # the kernel tiles 128 x 128 blocks (and models initialise on 8 tokens)
        return reference_attention(*args)
    if interpret is not None:
        return _sharded(functools.partial(_splash_local, interpret=bool(interpret)), *args)
    return jax.lax.platform_dependent(
        *args, tpu=lambda *a: _sharded(functools.partial(_splash_local, interpret=False), *a),
        default=reference_attention)
