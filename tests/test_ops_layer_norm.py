"""bert_jax.ops.layer_norm against flax's nn.LayerNorm and autodiff."""

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.ops.layer_norm import LayerNormalization, layer_norm


def test_layer_norm_matches_flax_and_autodiff():
    """LayerNormalization (hand-written backward) against flax's nn.LayerNorm: same fields and parameter tree,
    outputs and gradients (input, scale, bias) in fp32; bf16 output dtype with fp32 statistics."""
    import flax.linen as nn
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 48)) * 3 + 1.5
    ours, ref = LayerNormalization(epsilon=1e-12), nn.LayerNorm(epsilon=1e-12, use_fast_variance=False)
    params = ours.init(jax.random.PRNGKey(1), x)
    assert jax.tree_util.tree_map(np.shape, params) == jax.tree_util.tree_map(np.shape, ref.init(jax.random.PRNGKey(1), x))
    names = dict(scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
                 bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)))
    assert nn.get_partition_spec(LayerNormalization(**names).init(jax.random.PRNGKey(1), x)) == \
        nn.get_partition_spec(nn.LayerNorm(**names).init(jax.random.PRNGKey(1), x))   # the same fields as flax's
    params = {"params": {"scale": 1 + 0.1 * jax.random.normal(jax.random.PRNGKey(2), (48,)),
                         "bias": 0.1 * jax.random.normal(jax.random.PRNGKey(3), (48,))}}
    w = jax.random.normal(jax.random.PRNGKey(4), x.shape)   # a random cotangent
    def loss(module):
        return lambda p, x: jnp.sum(module.apply(p, x) * w)
    np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), rtol=1e-5, atol=1e-5)
    g_ours = jax.grad(loss(ours), argnums=(0, 1))(params, x)
    g_ref = jax.grad(loss(ref), argnums=(0, 1))(params, x)
    for a, b in zip(jax.tree_util.tree_leaves(g_ours), jax.tree_util.tree_leaves(g_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    bf = LayerNormalization(epsilon=1e-12, dtype="bfloat16").apply(params, x)
    assert bf.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(bf, np.float32), ref.apply(params, x), rtol=2e-2, atol=2e-2)
    scale, bias = params["params"]["scale"], params["params"]["bias"]
    dx_bf = jax.grad(lambda x: jnp.sum(layer_norm(x, scale, bias, 1e-12) * w))(x.astype(jnp.bfloat16))
    assert dx_bf.dtype == jnp.bfloat16
