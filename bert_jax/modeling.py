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
* the layers ``config.kernels`` names (`KERNELS`): ``"fast"`` (the default) takes `bert_jax.ops`' drop-ins
  for flax's ``DenseGeneral``, ``LayerNorm`` and ``Dropout`` (hand-written backward passes, bf16 matmuls
  with fp32 accumulation, 16-bit dropout decisions) and ``jax.nn.dot_product_attention`` (cuDNN flash
  attention on GPUs) wherever attention-probability dropout is off; ``"reference"`` takes flax's own
  modules and the attention formula written out. The parameters are the same, so a checkpoint loads into
  either (tests/test_reference_kernels.py holds the two equal).
* exact GELU through ``erf``.

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

Shape suffixes (as nanodo): ``x_BxLxH`` is an array of shape ``[B, L, H]``. The letters:

    B  batch                         H  hidden size (``hidden_size``)
    L  sequence length (queries)     N  attention heads (``num_attention_heads``)
    K  sequence length (keys)        D  head dim (H / N)
    P  masked positions per row      I  intermediate (MLP) size (``intermediate_size``)
    V  vocabulary size               C  classes / labels of a head
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from bert_jax.ops.dense import Dense
from bert_jax.ops.dropout import Dropout
from bert_jax.ops.layer_norm import LayerNormalization

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
    as ``jax.nn.gelu(x, approximate=False)``, which goes through ``erfc``, dearer than erf in XLA:CPU (an
    exp and selects per element; measured in benchmarks/README.md). Within 1.1e-6 of the float64 value in
    fp32 (erfc: 4e-7)."""
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
    kernels: str = "fast"         # or "reference": flax's own layers instead of bert_jax/ops (`KERNELS`)

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
        if self.kernels not in KERNELS:
            problems.append(f"kernels={self.kernels!r} must be one of {', '.join(map(repr, KERNELS))}")
        elif self.kernels == "reference" and self.attention_impl == "splash":
            problems.append("kernels='reference' computes attention by the formula; attention_impl='splash' is "
                            "a kernel: set attention_impl='xla'")
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


@dataclasses.dataclass(frozen=True)
class Kernels:
    """The layers a model is built from; each class takes the constructor arguments of flax's."""
    dense: Any              # nn.DenseGeneral's
    layer_norm: Any         # nn.LayerNorm's
    dropout: Any            # nn.Dropout's
    fused_attention: bool   # jax.nn.dot_product_attention where the attention probabilities have no dropout


KERNELS = {   # BertConfig.kernels -> its layers
    "fast": Kernels(Dense, LayerNormalization, Dropout, fused_attention=True),   # bert_jax/ops
    # flax's own modules; the variance about the mean (PyTorch's, and the fast kernel's)
    "reference": Kernels(nn.DenseGeneral, functools.partial(nn.LayerNorm, use_fast_variance=False), nn.Dropout,
                         fused_attention=False),
}


def _dense(config: BertConfig, features, axes, name, axis=-1):
    """A dense layer over the trailing ``axis``: kernel [*in, *features] with the logical names ``axes``."""
    n_features = len(features) if isinstance(features, tuple) else 1
    return KERNELS[config.kernels].dense(
        features=features, axis=axis, dtype=config.compute_dtype, param_dtype=jnp.float32,
        kernel_init=_init(config, *axes), bias_init=_zeros(*axes[-n_features:]), name=name)


def _layer_norm(config: BertConfig, name: str = "LayerNorm"):
    return KERNELS[config.kernels].layer_norm(
        epsilon=config.layer_norm_eps, dtype=config.compute_dtype, param_dtype=jnp.float32,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
        bias_init=_zeros("embed"), name=name)


def _dropout(config: BertConfig, rate: float):
    return KERNELS[config.kernels].dropout(rate)


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
        x = _layer_norm(cfg)(x)
        return _dropout(cfg, cfg.hidden_dropout_prob)(x, deterministic=deterministic)


class BertSelfAttention(nn.Module):
    """Multi-head self-attention with a fused QKV kernel [H, 3, heads, head_dim], then the output
    projection, residual and LayerNorm (HF's BertAttention)."""
    config: BertConfig

    @nn.compact
    def __call__(self, x_BxLxH, bias_Bx1x1xK, deterministic: bool):
        cfg = self.config
        qkv_BxLx3xNxD = _dense(cfg, (3, cfg.num_attention_heads, cfg.head_dim),
                               ("embed", None, "heads", "kv"), "qkv")(x_BxLxH)
        q_BxLxNxD, k_BxKxNxD, v_BxKxNxD = qkv_BxLx3xNxD[:, :, 0], qkv_BxLx3xNxD[:, :, 1], qkv_BxLx3xNxD[:, :, 2]
        probs_dropout = not deterministic and cfg.attention_probs_dropout_prob > 0
        if cfg.attention_impl == "splash":   # padding forms its own segment (bert_jax/ops/splash_attention.py)
            if probs_dropout:
                raise ValueError("attention_impl='splash' has no dropout on the attention probabilities: set "
                                 "attention_probs_dropout_prob=0 (--config.model.attention_probs_dropout_prob=0.0)")
            from bert_jax.ops import splash_attention
            ctx_BxLxNxD = splash_attention.attention(q_BxLxNxD, k_BxKxNxD, v_BxKxNxD,
                                                     (bias_Bx1x1xK[:, 0, 0, :] == 0).astype(jnp.int32))
        elif probs_dropout or not KERNELS[cfg.kernels].fused_attention:   # the formula: fp32 scores, softmax
            q_BxLxNxD = q_BxLxNxD / jnp.sqrt(cfg.head_dim).astype(q_BxLxNxD.dtype)
            scores_BxNxLxK = jnp.einsum("bqnd,bknd->bnqk", q_BxLxNxD, k_BxKxNxD,
                                        preferred_element_type=jnp.float32)
            probs_BxNxLxK = jax.nn.softmax(scores_BxNxLxK + bias_Bx1x1xK, axis=-1)
            probs_BxNxLxK = _dropout(cfg, cfg.attention_probs_dropout_prob)(probs_BxNxLxK, deterministic)
            ctx_BxLxNxD = jnp.einsum("bnqk,bknd->bqnd", probs_BxNxLxK.astype(v_BxKxNxD.dtype), v_BxKxNxD)
        else:   # no dropout on the probabilities: the fused kernel (cuDNN flash attention on GPUs)
            # The bias in the compute dtype, kept finite: float32's min is -inf in bfloat16, and a row
            # with no attended key (a padding row of a batch) would be NaN, and its weight-0 loss too.
            bias_Bx1x1xK = jnp.maximum(bias_Bx1x1xK, jnp.finfo(q_BxLxNxD.dtype).min).astype(q_BxLxNxD.dtype)
            ctx_BxLxNxD = jax.nn.dot_product_attention(q_BxLxNxD, k_BxKxNxD, v_BxKxNxD, bias=bias_Bx1x1xK)
        out_BxLxH = _dense(cfg, cfg.hidden_size, ("heads", "kv", "embed"), "output", axis=(-2, -1))(ctx_BxLxNxD)
        out_BxLxH = _dropout(cfg, cfg.hidden_dropout_prob)(out_BxLxH, deterministic=deterministic)
        return _layer_norm(cfg)(out_BxLxH + x_BxLxH)


class BertLayer(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x_BxLxH, bias_Bx1x1xK, deterministic: bool):
        cfg = self.config
        x_BxLxH = BertSelfAttention(cfg, name="attention")(x_BxLxH, bias_Bx1x1xK, deterministic)
        h_BxLxI = _dense(cfg, cfg.intermediate_size, ("embed", "mlp"), "intermediate")(x_BxLxH)
        h_BxLxI = _ACTIVATIONS[cfg.hidden_act](h_BxLxI)
        h_BxLxH = _dense(cfg, cfg.hidden_size, ("mlp", "embed"), "output")(h_BxLxI)
        h_BxLxH = _dropout(cfg, cfg.hidden_dropout_prob)(h_BxLxH, deterministic=deterministic)
        return _layer_norm(cfg, name="output_LayerNorm")(h_BxLxH + x_BxLxH)


class BertEncoder(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x_BxLxH, bias_Bx1x1xK, deterministic: bool):
        layer_cls = BertLayer
        if self.config.remat:
            layer_cls = nn.remat(BertLayer, static_argnums=(3,))
        for i in range(self.config.num_hidden_layers):
            x_BxLxH = layer_cls(self.config, name=f"layer_{i}")(x_BxLxH, bias_Bx1x1xK, deterministic)
        return x_BxLxH


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
    have the model's shapes (`bert_jax.convert.merge.merge_pretrained`'s rules). Returns a new tree;
    ``params`` is not changed."""
    from bert_jax.convert.merge import merge_pretrained

    return merge_pretrained(init_params(model, jax.random.PRNGKey(0) if rng is None else rng), params)


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
        h = _layer_norm(cfg, name="transform_LayerNorm")(h)
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
        pooled_BxH = _dropout(cfg, rate)(enc.pooled_output, deterministic=deterministic)
        logits_BxC = _dense(cfg, self.num_labels, ("embed", None), "classifier")(pooled_BxH)
        return logits_BxC.astype(jnp.float32)


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
        x_BxLxH = _dropout(cfg, rate)(enc.sequence_output, deterministic=deterministic)
        logits_BxLxC = _dense(cfg, self.num_labels, ("embed", None), "classifier")(x_BxLxH)
        return logits_BxLxC.astype(jnp.float32)


class BertForQuestionAnswering(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
                 deterministic: bool = True) -> QuestionAnsweringOutput:
        _require_params(self, "bert", "qa_outputs")
        cfg = self.config
        enc = BertModel(cfg, add_pooling_layer=False, name="bert")(
            input_ids, attention_mask, token_type_ids, position_ids, deterministic)
        logits_BxLx2 = _dense(cfg, 2, ("embed", None), "qa_outputs")(enc.sequence_output).astype(jnp.float32)
        return QuestionAnsweringOutput(start_logits=logits_BxLx2[..., 0], end_logits=logits_BxLx2[..., 1])


def init_params(model: nn.Module, rng, seq_len: int = 8, batch: int = 1) -> Any:
    """Random parameters (unboxed, fp32) for ``model``."""
    # Compiled (op-by-op initialisation of a large model is many times slower), once per model and
    # shape: the runs of a fine-tuning protocol initialise the same model again and again.
    variables = _compiled_init(model, seq_len, batch)(rng)
    return nn.meta.unbox(variables["params"])


@functools.lru_cache(maxsize=16)
def _compiled_init(model: nn.Module, seq_len: int, batch: int):
    return jax.jit(lambda r: model.init(r, jnp.zeros((batch, seq_len), jnp.int32), deterministic=True))


def param_shapes(model: nn.Module, seq_len: int = 8) -> Any:
    """The parameter tree of ``model`` as ShapeDtypeStructs, without allocating anything."""
    return jax.eval_shape(lambda r: init_params(model, r, seq_len), jax.random.PRNGKey(0))
