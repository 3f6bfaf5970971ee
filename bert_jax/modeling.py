"""BERT in pure-functional Flax linen: config, encoder, and the task heads.

Post-LN Transformer encoder as in the original BERT (Devlin et al., 2018) and HF transformers'
`BertModel`, with:

* fp32 parameters and a separate compute ``dtype`` (``config.dtype = "bfloat16"``); LayerNorm
  statistics and softmax stay in fp32.
* a fused query/key/value projection (one ``[H, 3, heads, head_dim]`` kernel) -- the HF/Google
  layouts are mapped onto it by `bert_jax.convert`.
* logical axis names on every weight (``vocab``, ``embed``, ``heads``, ``kv``, ``mlp``, ...), so a
  mesh can shard them with the rules in `bert_jax.training.parallel`.
* ``masked_positions`` on the pre-training head: MLM logits only where they are needed (the original
  ``gather_indexes``).
* dense layers (:class:`Dense`: ``DenseGeneral``'s parameters) computed as one 2-D matmul over the
  flattened tokens with a hand-written backward pass (`dense_matmul`), exact GELU through ``erf``.
* LayerNorm (:class:`LayerNormalization`: ``nn.LayerNorm``'s parameters) with a hand-written backward
  pass (`layer_norm`).
* dropout masks from 16-bit random numbers, four per threefry block (:class:`Dropout`), and
  ``jax.nn.dot_product_attention`` (cuDNN flash attention on GPUs) wherever attention-probability
  dropout is off.

Parameter tree (``params``)::

    bert/embeddings/{word_embeddings,position_embeddings,token_type_embeddings}/embedding
    bert/embeddings/LayerNorm/{scale,bias}
    bert/encoder/layer_{i}/attention/{qkv,output}/{kernel,bias}, attention/LayerNorm/{scale,bias}
    bert/encoder/layer_{i}/{intermediate,output}/{kernel,bias}, output_LayerNorm/{scale,bias}
    bert/pooler/{kernel,bias}
    cls/predictions/transform/{kernel,bias}, cls/predictions/transform_LayerNorm/{scale,bias}
    cls/predictions/bias                      # the decoder is tied to word_embeddings
    cls/seq_relationship/{kernel,bias}
    classifier/{kernel,bias}  |  qa_outputs/{kernel,bias}   # fine-tuning heads
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Any, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

Array = jax.Array

# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------

# name -> (layers, hidden, heads). Intermediate is 4 * hidden. The small sizes are those of
# Turc et al. 2019 ("Well-Read Students Learn Better"), released with the original BERT.
NAMED_SIZES = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}


def _gelu_erf(x):
    """Exact GELU, ``x * (1 + erf(x / sqrt(2))) / 2`` (HF's and the original's ``gelu``). The same function
    as ``jax.nn.gelu(x, approximate=False)``, which goes through ``erfc``: XLA's erfc costs twice its erf
    on CPU (an exp and selects per element). Within 1.1e-6 of the float64 value in fp32 (erfc: 4e-7)."""
    half = jnp.asarray(0.5, x.dtype)
    return x * half * (1 + jax.lax.erf(x * jnp.asarray(0.7071067811865476, x.dtype)))


_ACTIVATIONS = {
    # HF's "gelu" is the exact erf form; "gelu_new"/"gelu_pytorch_tanh" the tanh approximation.
    "gelu": _gelu_erf,
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}

_HF_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
    "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id",
)
# The Google bert_config.json has the same names, without layer_norm_eps (always 1e-12) or pad id.
_GOOGLE_FIELDS = _HF_FIELDS[:-2]


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Architecture hyper-parameters (HF names). Immutable and hashable, so modules can hold it."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    # Not architecture: how to compute. Kept out of the exported JSON files.
    dtype: str = "float32"
    remat: bool = False
    attention_impl: str = "xla"   # or "splash": the Pallas TPU kernel (bert_jax/ops/splash_attention.py)

    def __post_init__(self):
        problems = []
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                problems.append(f"{name}={value!r} must be a positive integer")
        if not problems and self.hidden_size % self.num_attention_heads:
            problems.append(f"hidden_size={self.hidden_size} is not divisible by "
                            f"num_attention_heads={self.num_attention_heads}")
        if self.hidden_act not in _ACTIVATIONS:
            problems.append(f"hidden_act={self.hidden_act!r} is not one of {sorted(_ACTIVATIONS)}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name}={getattr(self, name)!r} must be in [0, 1)")
        if self.attention_impl not in ("xla", "splash"):
            problems.append(f"attention_impl={self.attention_impl!r} must be 'xla' or 'splash'")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            problems.append(f"dtype={self.dtype!r} must be float32, bfloat16 or float16")
        if problems:
            raise ValueError("Invalid BertConfig: " + "; ".join(problems))

    # -- derived -----------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)

    def replace(self, **changes) -> "BertConfig":
        return dataclasses.replace(self, **changes)

    # -- named sizes ---------------------------------------------------------------------------
    @classmethod
    def named(cls, size: str, **overrides) -> "BertConfig":
        """`BertConfig.named("tiny", vocab_size=8000)`: one of tiny/mini/small/medium/base/large."""
        if size not in NAMED_SIZES:
            raise ValueError(f"Unknown BERT size {size!r}; choose one of {', '.join(NAMED_SIZES)}")
        layers, hidden, heads = NAMED_SIZES[size]
        fields = dict(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                      intermediate_size=4 * hidden)
        fields.update(overrides)
        return cls(**fields)

    # -- JSON: HF config.json and Google bert_config.json -------------------------------------
    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "BertConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [k for k in _GOOGLE_FIELDS[:5] if k not in d]
        if missing:
            raise ValueError(f"{source}: not a BERT config, missing {', '.join(missing)}")
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{source}: position_embedding_type={d['position_embedding_type']!r} is not "
                             "supported (only 'absolute', as in the original BERT)")
        if d.get("is_decoder") or d.get("add_cross_attention"):
            raise ValueError(f"{source}: decoder / cross-attention BERT variants are not supported")
        fields = {k: v for k, v in d.items() if k in known}
        if fields.get("pad_token_id") is None:
            fields.pop("pad_token_id", None)
        return cls(**fields)

    @classmethod
    def from_json_file(cls, path: str) -> "BertConfig":
        """Reads HF `config.json` or Google `bert_config.json` (same field names)."""
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"Cannot read BERT config {path}: {e}") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(d).__name__}")
        return cls.from_dict(d, source=path)

    def to_hf_dict(self, architectures=("BertForPreTraining",)) -> dict:
        d = {k: getattr(self, k) for k in _HF_FIELDS}
        d.update(model_type="bert", architectures=list(architectures),
                 position_embedding_type="absolute")
        return d

    def to_google_dict(self) -> dict:
        return {k: getattr(self, k) for k in _GOOGLE_FIELDS}


# ----------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------

@flax.struct.dataclass
class BertOutput:
    sequence_output: Array  # [B, L, H]
    pooled_output: Array    # [B, H]


@flax.struct.dataclass
class PreTrainingOutput:
    mlm_logits: Array       # [B, L, V], or [B, P, V] with masked_positions
    nsp_logits: Array       # [B, 2]
    sequence_output: Array
    pooled_output: Array


@flax.struct.dataclass
class QuestionAnsweringOutput:
    start_logits: Array     # [B, L]
    end_logits: Array       # [B, L]


# ----------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------

def _init(config: BertConfig, *axes):
    return nn.with_logical_partitioning(
        nn.initializers.truncated_normal(config.initializer_range), axes)


def _zeros(*axes):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def _ones(*axes):
    return nn.with_logical_partitioning(nn.initializers.ones_init(), axes)


def LayerNorm(config: BertConfig, name: str = "LayerNorm"):  # noqa: N802 (a module factory)
    return LayerNormalization(epsilon=config.layer_norm_eps, dtype=config.dtype, name=name)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def layer_norm(x, scale, bias, eps, dtype=None):
    """LayerNorm over the last axis, statistics and arithmetic in fp32 (the mean, then the variance about
    it, as PyTorch computes them), output in ``dtype`` (default ``x.dtype``); with a hand-written backward pass:
    ``dx = rstd * (g - mean(g) - xhat * mean(g * xhat))`` for ``g = dy * scale``. Autodiff of the same
    maths makes XLA:CPU materialise ``rstd * scale`` broadcast to the full activation as a residual and
    take more passes over it in both directions (BERT-Mini step 1.03x, base 1.01x without them).
    Gradients checked against flax's module and PyTorch (tests/test_parity.py)."""
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
    """``flax.linen.LayerNorm``'s parameters (``scale``, ``bias``: fp32, logical axis ``embed``) computed by
    `layer_norm`; statistics in fp32 whatever the input, output in the compute ``dtype``, as flax's."""
    epsilon: float = 1e-12
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x):
        features = x.shape[-1]
        scale = self.param("scale", _ones("embed"), (features,), jnp.float32)
        bias = self.param("bias", _zeros("embed"), (features,), jnp.float32)
        return layer_norm(x, scale, bias, self.epsilon, jnp.dtype(self.dtype))


def _dense(config: BertConfig, features, axes, name, axis=-1):
    return Dense(features=features, axis=axis, kernel_axes=axes, dtype=config.dtype,
                 initializer_range=config.initializer_range, name=name)


def _bias_axes(features, axes):
    n = len(features) if isinstance(features, tuple) else 1
    return axes[-n:]


def _contract(x_TxI, kernel_IxO):
    """[T, *in] x [*in, *out] -> [T, *out]."""
    n_in = x_TxI.ndim - 1
    return jax.lax.dot_general(x_TxI, kernel_IxO, ((tuple(range(1, n_in + 1)), tuple(range(n_in))), ((), ())))


@jax.custom_vjp
def dense_matmul(x_TxI, kernel_IxO):
    """``x @ kernel`` over one flattened batch dimension, with a hand-written backward pass: the input
    gradient ``dy . kernel^T`` and the kernel gradient ``x^T . dy``, each one dot_general over the
    flattened token dimension. The same products JAX's autodiff of `flax.linen.DenseGeneral` forms on
    [B, L, H] inputs, but in the plain [T, K] x [K, N] forms XLA:CPU's fast matmul path takes: the
    BERT-base pre-training step is 1.27x faster with it (2-core CPU, measured in one process against
    DenseGeneral). Gradients are checked against PyTorch's in tests/test_parity.py."""
    return _contract(x_TxI, kernel_IxO)


def _dense_matmul_fwd(x_TxI, kernel_IxO):
    return _contract(x_TxI, kernel_IxO), (x_TxI, kernel_IxO)


def _dense_matmul_bwd(residuals, dy_TxO):
    x_TxI, kernel_IxO = residuals
    # dx as a 2-D product: contracting the kernel's trailing feature dims in place (e.g. qkv's [3, N, D])
    # makes XLA:CPU copy a transposed kernel per layer; the [T, O] x [K, O]^T form needs none.
    t, k = dy_TxO.shape[0], math.prod(x_TxI.shape[1:])
    dx = jax.lax.dot_general(dy_TxO.reshape(t, -1), kernel_IxO.reshape(k, -1),
                             (((1,), (1,)), ((), ()))).reshape(x_TxI.shape)
    dkernel = jax.lax.dot_general(x_TxI, dy_TxO, (((0,), (0,)), ((), ())))
    return dx.astype(x_TxI.dtype), dkernel.astype(kernel_IxO.dtype)


dense_matmul.defvjp(_dense_matmul_fwd, _dense_matmul_bwd)


class Dense(nn.Module):
    """``flax.linen.DenseGeneral``'s parameters (``kernel`` [*in, *features], ``bias`` [*features], fp32,
    logical axis names ``kernel_axes``) and maths (inputs and parameters cast to ``dtype``), computed
    as one matmul over the flattened leading dimensions with `dense_matmul`'s backward pass."""
    features: Any
    kernel_axes: tuple
    axis: Any = -1
    dtype: str = "float32"
    initializer_range: float = 0.02

    @nn.compact
    def __call__(self, x):
        features = tuple(self.features) if isinstance(self.features, (tuple, list)) else (self.features,)
        axis = tuple(self.axis) if isinstance(self.axis, (tuple, list)) else (self.axis,)
        axis = tuple(sorted(a % x.ndim for a in axis))
        if axis != tuple(range(x.ndim - len(axis), x.ndim)):
            raise ValueError(f"Dense contracts trailing input axes only, got axis={self.axis} for shape {x.shape}")
        in_shape = x.shape[axis[0]:]
        normal = nn.initializers.truncated_normal(self.initializer_range)

        def init_flat(rng, shape, dtype):  # drawn as [prod(in), prod(features)], as DenseGeneral does
            flat = (math.prod(shape[:len(in_shape)]), math.prod(shape[len(in_shape):]))
            return normal(rng, flat, dtype).reshape(shape)

        init = nn.with_logical_partitioning(init_flat, tuple(self.kernel_axes))
        kernel = self.param("kernel", init, in_shape + features, jnp.float32)
        bias = self.param("bias", _zeros(*_bias_axes(features, tuple(self.kernel_axes))), features,
                          jnp.float32)
        dtype = jnp.dtype(self.dtype)
        lead = x.shape[:axis[0]]
        x_TxI = x.astype(dtype).reshape((-1,) + in_shape)
        y = dense_matmul(x_TxI, kernel.astype(dtype)) + bias.astype(dtype)
        return y.reshape(lead + features)


class Dropout(nn.Module):
    """Inverted dropout whose keep/drop decisions use 16 random bits each (four per threefry block).

    ``flax.linen.Dropout`` draws a 32-bit uniform per element, and ``jax.random.bits`` makes each 32-bit
    word from a whole threefry2x32 block (64 bits, XOR-ed together); a BERT-base step at batch 8 x 128 makes
    ~47M dropout decisions. Here each block makes four decisions, ``bits16 < round((1 - rate) * 2**16)``,
    and kept values are scaled by ``2**16 / threshold`` so the expectation is exact; the dropout rate is
    ``rate`` to within 2**-17 (0.1 -> 0.1000061). The blocks are counted by position along
    ``[..., ceil(n / 4)]`` (element-wise, so batch-sharded activations get batch-sharded masks). With
    non-threefry keys (``jax_default_prng_impl``), two decisions per ``jax.random.bits`` word. Uses the
    ``"dropout"`` RNG stream, like flax's. Measured on the BERT-base step (2-core CPU): dropout costs
    3.5% of the step this way, against ~10% for 32-bit decisions.
    """
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
        keep = _keep_mask(self.make_rng("dropout"), shape, threshold).reshape(x.shape)
        return jnp.where(keep, x * jnp.asarray(65536.0 / threshold, x.dtype), jnp.zeros((), x.dtype))


def _rotate_left(x, bits):
    return (x << jnp.uint32(bits)) | (x >> jnp.uint32(32 - bits))


def threefry2x32(key1, key2, x1, x2):
    """Threefry-2x32 with 20 rounds (Salmon et al. 2011, Random123): the hash behind JAX's default PRNG,
    bit-identical to ``jax.extend.random.threefry2x32_p`` (tested), written out round by round.

    XLA:CPU lowers JAX's primitive as a 5-iteration while loop (for compile time), which writes both
    words of every block to memory between iterations; unrolled, the whole hash -- and whatever
    consumes its output -- compiles into one element-wise loop. TPUs and GPUs get the unrolled form
    from JAX too. ``key1``/``key2`` are uint32 scalars, ``x1``/``x2`` uint32 arrays (the counter)."""
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


def _keep_mask(key, shape, threshold):
    """Boolean [*shape]: 16-bit random numbers < threshold, four from each threefry2x32 block."""
    n = shape[-1]
    data = jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    if data.shape != (2,) or math.prod(shape) >= 2 ** 34:   # not a threefry key (or > 2^32 blocks)
        bits = jax.random.bits(key, shape[:-1] + ((n + 1) // 2,), jnp.uint32)
        return jnp.concatenate([bits & 0xFFFF, bits >> 16], axis=-1)[..., :n] < jnp.uint32(threshold)
    # One threefry2x32 block per 4 decisions, counted by position along [..., ceil(n / 4)] (element-wise,
    # so sharded activations get sharded masks); jax.random.bits would XOR the block's two words into one.
    block_shape = shape[:-1] + (-(-n // 4),)
    index = jnp.zeros(block_shape, jnp.uint32)
    stride = 1
    for d in reversed(range(len(block_shape))):
        index = index + jax.lax.broadcasted_iota(jnp.uint32, block_shape, d) * jnp.uint32(stride)
        stride *= block_shape[d]
    w1, w2 = threefry2x32(data[0], data[1], jnp.zeros(block_shape, jnp.uint32), index)
    # The four decisions as four bits of one word per block, then spread out: stacking the four
    # comparisons instead makes XLA evaluate the whole hash once per output element (4x the work).
    t = jnp.uint32(threshold)
    code = functools.reduce(jnp.bitwise_or, [
        (quarter < t).astype(jnp.uint32) << j
        for j, quarter in enumerate((w1 & 0xFFFF, w1 >> 16, w2 & 0xFFFF, w2 >> 16))])
    bit = jax.lax.broadcasted_iota(jnp.uint32, block_shape + (4,), len(block_shape))
    keep = ((code[..., None] >> bit) & 1) == 1
    return keep.reshape(shape[:-1] + (-1,))[..., :n]


class BertEmbeddings(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, input_ids, token_type_ids, position_ids, deterministic: bool):
        cfg = self.config

        def embed(num, name, axes):
            return nn.Embed(num, cfg.hidden_size, dtype=cfg.compute_dtype, param_dtype=jnp.float32,
                            embedding_init=_init(cfg, *axes), name=name)

        x = embed(cfg.vocab_size, "word_embeddings", ("vocab", "embed"))(input_ids)
        x = x + embed(cfg.max_position_embeddings, "position_embeddings", (None, "embed"))(position_ids)
        x = x + embed(cfg.type_vocab_size, "token_type_embeddings", (None, "embed"))(token_type_ids)
        x = LayerNorm(cfg)(x)
        return Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)


class BertSelfAttention(nn.Module):
    """Multi-head self-attention with a fused QKV kernel [H, 3, heads, head_dim], then the output
    projection, residual and LayerNorm (HF's BertAttention)."""
    config: BertConfig

    @nn.compact
    def __call__(self, x_BxLxH, bias_Bx1x1xL, deterministic: bool):
        cfg = self.config
        qkv = _dense(cfg, (3, cfg.num_attention_heads, cfg.head_dim),
                     ("embed", None, "heads", "kv"), "qkv")(x_BxLxH)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, L, N, D]
        if cfg.attention_impl == "splash":   # padding forms its own segment (bert_jax/ops/splash_attention.py)
            if not deterministic and cfg.attention_probs_dropout_prob > 0:
                raise ValueError("attention_impl='splash' has no dropout on the attention probabilities: set "
                                 "attention_probs_dropout_prob=0 (--config.model.attention_probs_dropout_prob=0.0)")
            from bert_jax.ops import splash_attention
            ctx = splash_attention.attention(q, k, v, (bias_Bx1x1xL[:, 0, 0, :] == 0).astype(jnp.int32))
        elif not deterministic and cfg.attention_probs_dropout_prob > 0:
            q = q / jnp.sqrt(cfg.head_dim).astype(q.dtype)
            scores = jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=jnp.float32)
            probs = jax.nn.softmax(scores + bias_Bx1x1xL, axis=-1)
            probs = Dropout(cfg.attention_probs_dropout_prob)(probs, deterministic=False)
            ctx = jnp.einsum("bnqk,bknd->bqnd", probs.astype(v.dtype), v)
        else:   # no dropout on the probabilities: the fused kernel (cuDNN flash attention on GPUs)
            ctx = jax.nn.dot_product_attention(q, k, v, bias=bias_Bx1x1xL.astype(q.dtype))
        out = _dense(cfg, cfg.hidden_size, ("heads", "kv", "embed"), "output", axis=(-2, -1))(ctx)
        out = Dropout(cfg.hidden_dropout_prob)(out, deterministic=deterministic)
        return LayerNorm(cfg)(out + x_BxLxH)


class BertLayer(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x, bias, deterministic: bool):
        cfg = self.config
        x = BertSelfAttention(cfg, name="attention")(x, bias, deterministic)
        h = _dense(cfg, cfg.intermediate_size, ("embed", "mlp"), "intermediate")(x)
        h = _ACTIVATIONS[cfg.hidden_act](h)
        h = _dense(cfg, cfg.hidden_size, ("mlp", "embed"), "output")(h)
        h = Dropout(cfg.hidden_dropout_prob)(h, deterministic=deterministic)
        return LayerNorm(cfg, name="output_LayerNorm")(h + x)


class BertEncoder(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x, bias, deterministic: bool):
        layer_cls = BertLayer
        if self.config.remat:
            layer_cls = nn.remat(BertLayer, static_argnums=(3,))
        for i in range(self.config.num_hidden_layers):
            x = layer_cls(self.config, name=f"layer_{i}")(x, bias, deterministic)
        return x


def attention_bias(attention_mask, dtype=jnp.float32):
    """[B, L] 1/0 mask -> additive [B, 1, 1, L] bias (0 where attended, a large negative elsewhere)."""
    mask = attention_mask[:, None, None, :].astype(bool)
    return jnp.where(mask, 0.0, jnp.finfo(dtype).min).astype(dtype)


class BertModel(nn.Module):
    """The encoder (embeddings + layers + pooler). Parameters of a full model live at ``params["bert"]``."""
    config: BertConfig
    add_pooling_layer: bool = True

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
                 deterministic: bool = True) -> BertOutput:
        cfg = self.config
        input_ids = jnp.asarray(input_ids)
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {input_ids.shape}")
        length = input_ids.shape[1]
        if length > cfg.max_position_embeddings:
            raise ValueError(f"sequence length {length} exceeds max_position_embeddings="
                             f"{cfg.max_position_embeddings}")
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(length), input_ids.shape)
        x = BertEmbeddings(cfg, name="embeddings")(input_ids, token_type_ids, position_ids, deterministic)
        x = BertEncoder(cfg, name="encoder")(x, attention_bias(attention_mask), deterministic)
        pooled = None
        if self.add_pooling_layer:
            pooled = jnp.tanh(_dense(cfg, cfg.hidden_size, ("embed", "embed_out"), "pooler")(x[:, 0]))
        return BertOutput(sequence_output=x, pooled_output=pooled)


def gather_positions(x_BxLxH, positions_BxP):
    """x[b, positions[b, p]] -> [B, P, H] (the original's gather_indexes)."""
    return jnp.take_along_axis(x_BxLxH, positions_BxP[..., None].astype(jnp.int32), axis=1)


class MissingParametersError(ValueError):
    """Parameters (usually a checkpoint's) lack a head the model applies."""


_HEAD_NAMES = {"cls": "the MLM + NSP pre-training heads", "classifier": "the classification head",
               "qa_outputs": "the question-answering head", "bert": "the encoder"}


def _require_params(module: nn.Module, *names: str, pooler: bool = False) -> None:
    """One clear error, instead of flax's ScopeParamNotFoundError deep in the model, when the parameters
    given to ``apply`` lack a head (e.g. an encoder-only HF checkpoint applied as BertForPreTraining)."""
    if module.is_initializing():
        return
    have = module.variables.get("params", {})
    missing = [n for n in names if n not in have]
    if pooler and "bert" in have and "pooler" not in have["bert"]:
        missing.append("bert/pooler")
    if missing:
        what = "; ".join(f"{n} ({_HEAD_NAMES.get(n, 'the pooler')})" for n in missing)
        raise MissingParametersError(
            f"{type(module).__name__}: the parameters lack {what}; they hold only {sorted(have)}. Add freshly "
            f"initialised ones with bert_jax.modeling.add_missing_heads({type(module).__name__}(config), params, "
            "rng) (continued pre-training from such a checkpoint: scripts/pretrain.py "
            "--config.init_checkpoint=PATH does it for you), or apply BertModel to params['bert'] for the encoder "
            "alone.")


def add_missing_heads(model: nn.Module, params, rng=None):
    """``params`` with every parameter ``model`` has and ``params`` lacks freshly initialised (e.g. the
    pre-training heads of an encoder-only checkpoint, for continued pre-training); the ones present must
    have the model's shapes. Returns a new tree; ``params`` is not changed."""
    from bert_jax.convert.mapping import flatten

    fresh = init_params(model, jax.random.PRNGKey(0) if rng is None else rng)
    given, flat_fresh = flatten(params), flatten(fresh)
    wrong = [f"{'/'.join(k)}: {tuple(v.shape)} vs model {tuple(flat_fresh[k].shape)}"
             for k, v in given.items() if k in flat_fresh and tuple(v.shape) != tuple(flat_fresh[k].shape)]
    if wrong:
        raise ValueError("parameters do not fit the model:\n  " + "\n  ".join(wrong))

    def pick(path, x):
        key = tuple(getattr(k, "key", str(k)) for k in path)
        return jnp.asarray(given[key], x.dtype) if key in given else x
    return jax.tree_util.tree_map_with_path(pick, fresh)


class BertPreTrainingHeads(nn.Module):
    """MLM head (transform + LayerNorm + decoder tied to the word embeddings + bias) and NSP head."""
    config: BertConfig

    @nn.compact
    def __call__(self, sequence_output, pooled_output, word_embeddings_VxH):
        cfg = self.config
        preds = _PredictionsHead(cfg, name="predictions")(sequence_output, word_embeddings_VxH)
        nsp = _dense(cfg, 2, ("embed", None), "seq_relationship")(pooled_output)
        return preds, nsp


class _PredictionsHead(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, h, word_embeddings_VxH):
        cfg = self.config
        h = _dense(cfg, cfg.hidden_size, ("embed", "embed_out"), "transform")(h)
        h = _ACTIVATIONS[cfg.hidden_act](h)
        h = LayerNorm(cfg, name="transform_LayerNorm")(h)
        bias = self.param("bias", _zeros("vocab"), (cfg.vocab_size,), jnp.float32)
        logits = jnp.einsum("...h,vh->...v", h, word_embeddings_VxH.astype(h.dtype),
                            preferred_element_type=jnp.float32)
        return logits + bias


class BertForPreTraining(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
                 masked_positions=None, deterministic: bool = True) -> PreTrainingOutput:
        _require_params(self, "bert", "cls", pooler=True)
        bert = BertModel(self.config, name="bert")
        enc = bert(input_ids, attention_mask, token_type_ids, position_ids, deterministic)
        seq = enc.sequence_output
        if masked_positions is not None:
            seq = gather_positions(seq, masked_positions)
        table = bert.variables["params"]["embeddings"]["word_embeddings"]["embedding"]
        table = nn.meta.unbox(table)
        mlm, nsp = BertPreTrainingHeads(self.config, name="cls")(seq, enc.pooled_output, table)
        return PreTrainingOutput(mlm_logits=mlm, nsp_logits=nsp.astype(jnp.float32),
                                 sequence_output=enc.sequence_output, pooled_output=enc.pooled_output)


class BertForSequenceClassification(nn.Module):
    """Pooled output -> dropout -> linear. ``num_labels=1`` is regression (STS-B)."""
    config: BertConfig
    num_labels: int = 2
    classifier_dropout: Optional[float] = None

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
                 deterministic: bool = True):
        _require_params(self, "bert", "classifier", pooler=True)
        cfg = self.config
        enc = BertModel(cfg, name="bert")(input_ids, attention_mask, token_type_ids, position_ids,
                                          deterministic)
        rate = cfg.hidden_dropout_prob if self.classifier_dropout is None else self.classifier_dropout
        x = Dropout(rate)(enc.pooled_output, deterministic=deterministic)
        logits = _dense(cfg, self.num_labels, ("embed", None), "classifier")(x)
        return logits.astype(jnp.float32)


class BertForTokenClassification(nn.Module):
    config: BertConfig
    num_labels: int = 2
    classifier_dropout: Optional[float] = None

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
                 deterministic: bool = True):
        _require_params(self, "bert", "classifier")
        cfg = self.config
        enc = BertModel(cfg, add_pooling_layer=False, name="bert")(
            input_ids, attention_mask, token_type_ids, position_ids, deterministic)
        rate = cfg.hidden_dropout_prob if self.classifier_dropout is None else self.classifier_dropout
        x = Dropout(rate)(enc.sequence_output, deterministic=deterministic)
        return _dense(cfg, self.num_labels, ("embed", None), "classifier")(x).astype(jnp.float32)


class BertForQuestionAnswering(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
                 deterministic: bool = True) -> QuestionAnsweringOutput:
        _require_params(self, "bert", "qa_outputs")
        cfg = self.config
        enc = BertModel(cfg, add_pooling_layer=False, name="bert")(
            input_ids, attention_mask, token_type_ids, position_ids, deterministic)
        logits = _dense(cfg, 2, ("embed", None), "qa_outputs")(enc.sequence_output).astype(jnp.float32)
        return QuestionAnsweringOutput(start_logits=logits[..., 0], end_logits=logits[..., 1])


def init_params(model: nn.Module, rng, seq_len: int = 8, batch: int = 1) -> Any:
    """Random parameters (unboxed, fp32) for ``model``."""
    ids = jnp.zeros((batch, seq_len), jnp.int32)
    # Compiled: op-by-op initialisation of a large model is many times slower.
    variables = jax.jit(lambda r: model.init(r, ids, deterministic=True))(rng)
    return nn.meta.unbox(variables["params"])


def param_shapes(model: nn.Module, seq_len: int = 8) -> Any:
    """The parameter tree of ``model`` as ShapeDtypeStructs, without allocating anything."""
    return jax.eval_shape(lambda r: init_params(model, r, seq_len), jax.random.PRNGKey(0))
