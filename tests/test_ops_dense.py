"""bert_jax.ops.dense against flax's DenseGeneral and autodiff of a plain matmul, in fp32 and bf16."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.ops.dense import Dense, dense_matmul


def _data(shape_in=(6, 5, 16), features=(3, 4)):
    ks = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(ks[0], shape_in)
    kernel = jax.random.normal(ks[1], shape_in[-1:] + features) * 0.3
    w = jax.random.normal(ks[2], shape_in[:-1] + features)   # a random cotangent
    return x, kernel, w


def test_dense_matches_dense_general():
    """A drop-in for nn.DenseGeneral: same fields, parameter tree, logical names and init values; same
    outputs and gradients in fp32."""
    x, _, w = _data()
    init = nn.with_logical_partitioning(nn.initializers.truncated_normal(0.02), ("embed", "heads", "kv"))
    ours, ref = Dense(features=(3, 4), kernel_init=init), nn.DenseGeneral(features=(3, 4), kernel_init=init)
    boxed, ref_boxed = ours.init(jax.random.PRNGKey(1), x), ref.init(jax.random.PRNGKey(1), x)
    assert nn.get_partition_spec(boxed) == nn.get_partition_spec(ref_boxed)   # logical names, kernel and bias
    params, ref_params = nn.meta.unbox(boxed), nn.meta.unbox(ref_boxed)
    assert jax.tree_util.tree_map(np.shape, params) == jax.tree_util.tree_map(np.shape, ref_params)
    np.testing.assert_array_equal(params["params"]["kernel"], ref_params["params"]["kernel"])
    params = {"params": {"kernel": params["params"]["kernel"] * 10, "bias": jnp.arange(12.0).reshape(3, 4)}}

    def loss(module):
        return lambda p, x: jnp.sum(module.apply(p, x) * w)
    np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(jax.grad(loss(ours), argnums=(0, 1))(params, x)),
                    jax.tree_util.tree_leaves(jax.grad(loss(ref), argnums=(0, 1))(params, x))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dense_matmul_backward(dtype):
    """The hand-written backward equals autodiff of the same bf16/fp32 product with an fp32 result; the kernel
    gradient keeps the fp32 parameter's dtype (no bf16 rounding), the input gradient the input's dtype."""
    x, kernel, w = _data((7, 16), (3, 5))
    x = x.astype(dtype)

    def ref(x, k):   # bf16 operands, fp32 products and sums
        return jnp.einsum("ti,iod->tod", x.astype(dtype).astype(jnp.float32), k.astype(dtype).astype(jnp.float32))
    y = dense_matmul(x, kernel, dtype)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(y, ref(x, kernel), rtol=1e-6, atol=1e-6)
    dx, dk = jax.grad(lambda x, k: jnp.sum(dense_matmul(x, k, dtype) * w), argnums=(0, 1))(x, kernel)
    assert dx.dtype == dtype and dk.dtype == jnp.float32
    # the reference in fp32 from the same (rounded) operands: what an fp32 accumulation gives
    x32, k32 = x.astype(jnp.float32), kernel.astype(dtype).astype(jnp.float32)
    w_c = w.astype(dtype).astype(jnp.float32)
    want_dx = jnp.einsum("tod,iod->ti", w_c, k32)
    want_dk = jnp.einsum("ti,tod->iod", x32, w_c)
    tol = 1e-5 if dtype == jnp.float32 else 1e-2
    np.testing.assert_allclose(np.asarray(dx, np.float32), want_dx, rtol=tol, atol=tol)
    np.testing.assert_allclose(dk, want_dk, rtol=1e-5, atol=1e-5)   # fp32 accumulation of bf16 products: exact-ish


def test_bf16_dense_outputs_bf16_from_fp32_params():
    x, _, _ = _data()
    layer = Dense(features=(3, 4), dtype="bfloat16")
    params = layer.init(jax.random.PRNGKey(1), x)
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(nn.meta.unbox(params)))
    y = layer.apply(params, x)
    assert y.dtype == jnp.bfloat16
    y32 = Dense(features=(3, 4)).apply(params, x)
    np.testing.assert_allclose(np.asarray(y, np.float32), y32, rtol=3e-2, atol=3e-2)
