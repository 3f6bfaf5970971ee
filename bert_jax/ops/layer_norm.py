"""LayerNorm with fp32 statistics and a hand-written backward pass.

`LayerNormalization` is a drop-in for ``flax.linen.LayerNorm``; `layer_norm` computes the mean, then the
variance about it (as PyTorch does), in fp32 whatever the input dtype. The backward,
``dx = rstd * (g - mean(g) - xhat * mean(g * xhat))`` for ``g = dy * scale``, is written out because
autodiff of the same maths makes XLA:CPU keep ``rstd * scale`` broadcast to the whole activation as a
residual. Reference test: tests/test_ops_layer_norm.py (flax's module and autodiff).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def layer_norm(x, scale, bias, eps, dtype=None):
    """LayerNorm over the last axis, statistics and arithmetic in fp32, output in ``dtype`` (default
    ``x.dtype``); gradients in the dtypes of ``x``, ``scale`` and ``bias``."""
    return _layer_norm_fwd(x, scale, bias, eps, dtype)[0]


def _layer_norm_fwd(x, scale, bias, eps, dtype=None):
    x_f32 = x.astype(jnp.float32)
    mean = jnp.mean(x_f32, axis=-1, keepdims=True)
    rstd = jax.lax.rsqrt(jnp.mean(jnp.square(x_f32 - mean), axis=-1, keepdims=True) + eps)
    y = (x_f32 - mean) * rstd * scale.astype(jnp.float32) + bias.astype(jnp.float32)
    return y.astype(dtype or x.dtype), (x, mean, rstd, scale)


def _layer_norm_bwd(eps, dtype, residuals, dy):
    x, mean, rstd, scale = residuals
    xhat = (x.astype(jnp.float32) - mean) * rstd
    dy_f32 = dy.astype(jnp.float32)
    g = dy_f32 * scale.astype(jnp.float32)
    dx = rstd * (g - jnp.mean(g, axis=-1, keepdims=True) - xhat * jnp.mean(g * xhat, axis=-1, keepdims=True))
    lead = tuple(range(x.ndim - 1))
    dscale = jnp.sum(dy_f32 * xhat, axis=lead)
    dbias = jnp.sum(dy_f32, axis=lead)
    return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(scale.dtype)


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNormalization(nn.Module):
    """A drop-in for ``flax.linen.LayerNorm`` over the last axis (its fields and parameters: ``scale``,
    ``bias`` [features] in ``param_dtype``) computed by `layer_norm`: statistics in fp32 whatever the input,
    the variance about the mean (flax's ``use_fast_variance=False``), output in ``dtype`` (default: promoted
    from the input and the parameters, as flax's)."""
    epsilon: float = 1e-6
    dtype: Any = None
    param_dtype: Any = jnp.float32
    scale_init: Any = nn.initializers.ones_init()
    bias_init: Any = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x):
        features = x.shape[-1]
        scale = self.param("scale", self.scale_init, (features,), self.param_dtype)
        bias = self.param("bias", self.bias_init, (features,), self.param_dtype)
        dtype = jnp.dtype(self.dtype) if self.dtype is not None else jnp.result_type(x, scale)
        return layer_norm(x, scale, bias, self.epsilon, dtype)
