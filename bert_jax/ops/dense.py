"""Dense layers as one 2-D matmul over the flattened tokens, with a hand-written backward pass.

`Dense` is a drop-in for ``flax.linen.DenseGeneral`` (its fields and parameters); `dense_matmul` computes
``x @ kernel`` in the compute dtype with fp32 accumulation and an fp32 result (``preferred_element_type``),
in the forward and in both backward products (`dot_f32`), so bf16 runs use the hardware's bf16 x bf16 ->
fp32 matmuls (TPU MXU, GPU tensor cores) and the kernel gradient reaches the fp32 parameter
without a bf16 rounding. ``BertConfig(kernels="reference")`` uses ``DenseGeneral`` itself instead; the
measured speed of each form is in benchmarks/README.md.
Reference test: tests/test_ops_dense.py (and the PyTorch gradient parity in tests/test_parity.py).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def dot_f32(a, b, dimension_numbers):
    """``dot_general`` of two same-dtype operands, accumulated and returned in fp32.

    TPU/GPU: the native bf16 x bf16 -> fp32 product (``preferred_element_type``). CPU: the operands
    widened to fp32 first -- the same numbers (a product of two bf16 values is exact in fp32), but XLA:CPU
    only has a bf16 x bf16 -> fp32 kernel for the shapes its YNNPACK fusion takes (others fail with
    "Unsupported element type for DotThunk"), and without AMX that kernel is slower than fp32's."""
    def native(a, b):
        return jax.lax.dot_general(a, b, dimension_numbers, preferred_element_type=jnp.float32)
    if a.dtype == jnp.float32 and b.dtype == jnp.float32:
        return native(a, b)

    def widened(a, b):
        return native(a.astype(jnp.float32), b.astype(jnp.float32))
    return jax.lax.platform_dependent(a, b, cpu=widened, default=native)


def _contract(x_TxI, kernel_IxO):
    """[T, *in] x [*in, *out] -> [T, *out], accumulated and returned in fp32."""
    n_in = x_TxI.ndim - 1
    return dot_f32(x_TxI, kernel_IxO, ((tuple(range(1, n_in + 1)), tuple(range(n_in))), ((), ())))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def dense_matmul(x_TxI, kernel_IxO, dtype=None):
    """``x @ kernel`` (fp32 result) over one flattened token dimension T, both operands cast to ``dtype``
    (default: ``x``'s). Backward: ``dx = dy . kernel^T`` and ``dkernel = x^T . dy``, each one 2-D
    dot_general in ``dtype`` with an fp32 result; ``dkernel`` comes back in the kernel's own dtype (fp32
    parameters get an fp32 gradient), ``dx`` in ``x``'s."""
    return _dense_matmul_fwd(x_TxI, kernel_IxO, dtype)[0]


def _dense_matmul_fwd(x_TxI, kernel_IxO, dtype=None):
    dtype = jnp.dtype(dtype or x_TxI.dtype)
    return _contract(x_TxI.astype(dtype), kernel_IxO.astype(dtype)), (x_TxI, kernel_IxO)


def _dense_matmul_bwd(dtype, residuals, dy_TxO):
    x_TxI, kernel_IxO = residuals
    dtype = jnp.dtype(dtype or x_TxI.dtype)
    x_c, k_c, dy = x_TxI.astype(dtype), kernel_IxO.astype(dtype), dy_TxO.astype(dtype)
    # dx as a 2-D product: contracting the kernel's trailing feature dims in place (e.g. qkv's [3, N, D])
    # makes XLA:CPU copy a transposed kernel per layer; the [T, O] x [K, O]^T form needs none.
    t, k = dy.shape[0], math.prod(x_c.shape[1:])
    dx = dot_f32(dy.reshape(t, -1), k_c.reshape(k, -1), (((1,), (1,)), ((), ()))).reshape(x_c.shape)
    dkernel = dot_f32(x_c, dy, (((0,), (0,)), ((), ())))
    return dx.astype(x_TxI.dtype), dkernel.astype(kernel_IxO.dtype)


dense_matmul.defvjp(_dense_matmul_fwd, _dense_matmul_bwd)


def _reshaped(value, shape):
    """``value`` reshaped to ``shape``, inside its metadata box (logical axis names) when it has one."""
    if isinstance(value, nn.meta.AxisMetadata):
        return nn.meta.replace_boxed(value, value.unbox().reshape(shape))
    return value.reshape(shape)


class Dense(nn.Module):
    """A drop-in for ``flax.linen.DenseGeneral`` over trailing input axes: its fields, parameter names,
    shapes and initialisation (``kernel`` [*in, *features] drawn as a [prod(in), prod(features)] matrix,
    ``bias`` [*features], both in ``param_dtype``). Inputs and kernel in ``dtype`` (default: promoted from the
    input and the parameters, as flax's) with an fp32 matmul result (`dense_matmul`), the bias added in fp32,
    the output in ``dtype``."""
    features: Any
    axis: Any = -1
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x):
        features = tuple(self.features) if isinstance(self.features, (tuple, list)) else (self.features,)
        axis = tuple(self.axis) if isinstance(self.axis, (tuple, list)) else (self.axis,)
        axis = tuple(sorted(a % x.ndim for a in axis))
        if axis != tuple(range(x.ndim - len(axis), x.ndim)):
            raise ValueError(f"Dense contracts trailing input axes only, got axis={self.axis} for shape {x.shape}")
        in_shape = x.shape[axis[0]:]
        n_in, n_out = math.prod(in_shape), math.prod(features)
        kernel = self.param("kernel", lambda rng, shape, dtype: _reshaped(
            self.kernel_init(rng, (n_in, n_out), dtype), shape), in_shape + features, self.param_dtype)
        bias = self.param("bias", lambda rng, shape, dtype: _reshaped(
            self.bias_init(rng, (n_out,), dtype), shape), features, self.param_dtype)
        dtype = jnp.dtype(self.dtype) if self.dtype is not None else jnp.result_type(x, kernel)
        lead = x.shape[:axis[0]]
        y = dense_matmul(x.astype(dtype).reshape((-1,) + in_shape), kernel, dtype) + bias.astype(jnp.float32)
        return y.astype(dtype).reshape(lead + features)
