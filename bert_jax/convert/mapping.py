"""One mapping table between bert_jax's parameter tree and the two external BERT layouts.

Both the HF/PyTorch layout (``bert.encoder.layer.0.attention.self.query.weight``, Linear weights
``[out, in]``) and the original Google TF-1 layout (``bert/encoder/layer_0/attention/self/query/kernel``,
kernels ``[in, out]``) are described by the same table of `Entry`s, one per bert_jax parameter.
`to_bert_jax` checks that every source tensor is used and every shape matches before anything is
returned, and reports all problems in one error.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Callable, Dict, Mapping, Sequence, Tuple

import numpy as np

from bert_jax.modeling import BertConfig

Path = Tuple[str, ...]

# Which groups of parameters a checkpoint can hold. "encoder" is required.
GROUPS = ("encoder", "pooler", "pretraining", "classifier", "qa")


@dataclasses.dataclass(frozen=True)
class Entry:
    ours: Path                      # path in the bert_jax params tree
    sources: Tuple[str, ...]        # external tensor names
    load: Callable[..., np.ndarray]  # external arrays -> ours
    save: Callable[[np.ndarray], Tuple[np.ndarray, ...]]  # ours -> external arrays
    group: str


@dataclasses.dataclass(frozen=True)
class Style:
    """How one external format names and lays out tensors."""
    name: str
    sep: str                       # "." or "/"
    layer: str                     # "layer.{i}" or "layer_{i}"
    encoder_prefix: str            # "bert"
    kernel: str                    # "weight" or "kernel"
    kernel_out_in: bool            # True: PyTorch Linear [out, in]
    embedding: str                 # suffix of embedding tables ("weight" or "")
    ln_scale: str                  # "weight" or "gamma"
    ln_bias: str                   # "bias" or "beta"
    mlm_bias: str                  # name of the MLM output bias
    nsp: Tuple[str, str]           # NSP weight / bias names; weight is [2, H] in both layouts
    classifier: Tuple[str, str]
    qa: Tuple[str, str]
    ignored: Tuple[str, ...]       # glob patterns of tensors that are not parameters


HF = Style(
    name="HF", sep=".", layer="layer.{i}", encoder_prefix="bert", kernel="weight",
    kernel_out_in=True, embedding="weight", ln_scale="weight", ln_bias="bias",
    mlm_bias="cls.predictions.bias",
    nsp=("cls.seq_relationship.weight", "cls.seq_relationship.bias"),
    classifier=("classifier.weight", "classifier.bias"),
    qa=("qa_outputs.weight", "qa_outputs.bias"),
    # position_ids is a buffer; the decoder is tied to the word embeddings and the MLM bias.
    ignored=("*position_ids", "cls.predictions.decoder.weight", "cls.predictions.decoder.bias"),
)

GOOGLE = Style(
    name="Google TF-1", sep="/", layer="layer_{i}", encoder_prefix="bert", kernel="kernel",
    kernel_out_in=False, embedding="", ln_scale="gamma", ln_bias="beta",
    mlm_bias="cls/predictions/output_bias",
    nsp=("cls/seq_relationship/output_weights", "cls/seq_relationship/output_bias"),
    # run_classifier.py / run_squad.py name their heads like this.
    classifier=("output_weights", "output_bias"),
    qa=("cls/squad/output_weights", "cls/squad/output_bias"),
    # Optimizer slots and bookkeeping written by the original's TPUEstimator.
    ignored=("global_step", "*/adam_m", "*/adam_v", "*/Adam", "*/Adam_1", "good_steps",
             "loss_scale", "current_loss_scale", "beta1_power", "beta2_power"),
)


def _identity(x):
    return x


def build_table(config: BertConfig, style: Style) -> list:
    s, H, N, D = style.sep, config.hidden_size, config.num_attention_heads, config.head_dim

    def name(*parts):
        return s.join(p for p in parts if p)

    def kernel_load(w):       # external kernel -> ours [in, out]
        return w.T if style.kernel_out_in else w

    def kernel_save(k):
        return k.T if style.kernel_out_in else k

    table = []

    def dense(ours: Path, ext: str, group: str, in_shape=None, out_shape=None):
        """A Dense layer; ours may reshape its in/out dims (e.g. [N, D, H] for attention output)."""
        def load_k(w):
            k = kernel_load(w)
            return k.reshape(*(in_shape or k.shape[:1]), *(out_shape or k.shape[1:]))

        def save_k(k):
            return (kernel_save(k.reshape(int(np.prod(in_shape or k.shape[:1])), -1)),)

        def load_b(b):
            return b.reshape(out_shape) if out_shape else b

        table.append(Entry(ours + ("kernel",), (name(ext, style.kernel),), load_k, save_k, group))
        table.append(Entry(ours + ("bias",), (name(ext, "bias"),), load_b,
                           lambda b: (b.reshape(-1),), group))

    def layer_norm(ours: Path, ext: str, group: str):
        table.append(Entry(ours + ("scale",), (name(ext, "LayerNorm", style.ln_scale),), _identity,
                           lambda x: (x,), group))
        table.append(Entry(ours + ("bias",), (name(ext, "LayerNorm", style.ln_bias),), _identity,
                           lambda x: (x,), group))

    bert = style.encoder_prefix
    for table_name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        table.append(Entry(("bert", "embeddings", table_name, "embedding"),
                           (name(bert, "embeddings", table_name, style.embedding),),
                           _identity, lambda x: (x,), "encoder"))
    layer_norm(("bert", "embeddings", "LayerNorm"), name(bert, "embeddings"), "encoder")

    for i in range(config.num_hidden_layers):
        ours = ("bert", "encoder", f"layer_{i}")
        ext = name(bert, "encoder", style.layer.format(i=i))
        att = name(ext, "attention")
        qkv_names = [name(att, "self", p) for p in ("query", "key", "value")]

        def load_qkv_k(q, k, v):
            return np.stack([kernel_load(w).reshape(H, N, D) for w in (q, k, v)], axis=1)

        def save_qkv_k(x):
            return tuple(kernel_save(x[:, j].reshape(H, H)) for j in range(3))

        def load_qkv_b(q, k, v):
            return np.stack([b.reshape(N, D) for b in (q, k, v)], axis=0)

        def save_qkv_b(x):
            return tuple(x[j].reshape(H) for j in range(3))

        table.append(Entry(ours + ("attention", "qkv", "kernel"),
                           tuple(name(n, style.kernel) for n in qkv_names), load_qkv_k, save_qkv_k,
                           "encoder"))
        table.append(Entry(ours + ("attention", "qkv", "bias"),
                           tuple(name(n, "bias") for n in qkv_names), load_qkv_b, save_qkv_b,
                           "encoder"))
        dense(ours + ("attention", "output"), name(att, "output", "dense"), "encoder",
              in_shape=(N, D))
        layer_norm(ours + ("attention", "LayerNorm"), name(att, "output"), "encoder")
        dense(ours + ("intermediate",), name(ext, "intermediate", "dense"), "encoder")
        dense(ours + ("output",), name(ext, "output", "dense"), "encoder")
        layer_norm(ours + ("output_LayerNorm",), name(ext, "output"), "encoder")

    dense(("bert", "pooler"), name(bert, "pooler", "dense"), "pooler")

    dense(("cls", "predictions", "transform"), name("cls", "predictions", "transform", "dense"),
          "pretraining")
    layer_norm(("cls", "predictions", "transform_LayerNorm"),
               name("cls", "predictions", "transform"), "pretraining")
    table.append(Entry(("cls", "predictions", "bias"), (style.mlm_bias,), _identity,
                       lambda x: (x,), "pretraining"))

    def head(ours: Path, names: Tuple[str, str], group: str, out_in: bool):
        # NSP / classifier / QA weights: [labels, H] in both layouts (the original stores
        # output_weights transposed), so out_in is True for both.
        table.append(Entry(ours + ("kernel",), (names[0],), (lambda w: w.T) if out_in else _identity,
                           (lambda k: (k.T,)) if out_in else (lambda k: (k,)), group))
        table.append(Entry(ours + ("bias",), (names[1],), _identity, lambda b: (b,), group))

    head(("cls", "seq_relationship"), style.nsp, "pretraining", out_in=True)
    head(("classifier",), style.classifier, "classifier", out_in=True)
    head(("qa_outputs",), style.qa, "qa", out_in=True)
    return table


def _set(tree: dict, path: Path, value):
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def _get(tree: Mapping, path: Path):
    for p in path:
        tree = tree[p]
    return tree


def flatten(tree: Mapping, prefix: Path = ()) -> Dict[Path, np.ndarray]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def to_bert_jax(tensors: Mapping[str, np.ndarray], config: BertConfig, style: Style,
                expected_shapes: Mapping[Path, tuple], source: str) -> dict:
    """External tensors -> bert_jax params; raises one ValueError listing every problem.

    ``expected_shapes`` maps our parameter paths (all groups, any label count) to shapes; head
    shapes whose label count is free are matched on their hidden dimension only.
    """
    table = build_table(config, style)
    present = {e.group for e in table if any(s in tensors for s in e.sources)}
    if "encoder" not in present:
        found = ", ".join(sorted(tensors)[:8]) or "no tensors"
        raise ValueError(f"{source}: no BERT encoder weights in {style.name} naming found "
                         f"(expected e.g. {table[0].sources[0]!r}; found {found})")
    used, missing, bad_shapes, params = set(), [], [], {}
    for e in table:
        if e.group not in present:
            continue
        absent = [s for s in e.sources if s not in tensors]
        if absent:
            missing.extend(absent)
            continue
        arrays = [np.asarray(tensors[s]) for s in e.sources]
        used.update(e.sources)
        try:
            value = e.load(*arrays)
        except ValueError:  # reshape failed: a source shape is wrong
            bad_shapes.append(f"{'+'.join(e.sources)}: got {[a.shape for a in arrays]}")
            continue
        want = expected_shapes.get(e.ours)
        if want is not None and tuple(value.shape) != tuple(want):
            if not (e.group in ("classifier", "qa") and value.shape[:-1] == tuple(want)[:-1]):
                bad_shapes.append(f"{'+'.join(e.sources)} -> {'/'.join(e.ours)}: got "
                                  f"{tuple(value.shape)}, the config needs {tuple(want)}")
                continue
        _set(params, e.ours, value.astype(np.float32) if value.dtype != np.float32 else value)
    unused = [k for k in tensors if k not in used
              and not any(fnmatch.fnmatchcase(k, pat) for pat in style.ignored)]
    problems = []
    if missing:
        problems.append(f"missing tensors ({len(missing)}): {', '.join(sorted(missing))}")
    if unused:
        problems.append(f"unused tensors ({len(unused)}): {', '.join(sorted(unused))}")
    if bad_shapes:
        problems.append(f"shape mismatches ({len(bad_shapes)}): {'; '.join(bad_shapes)}")
    if problems:
        raise ValueError(f"Cannot load {source} as {style.name} BERT with hidden={config.hidden_size}, "
                         f"layers={config.num_hidden_layers}, vocab={config.vocab_size}:\n  - "
                         + "\n  - ".join(problems))
    return params


def from_bert_jax(params: Mapping, config: BertConfig, style: Style) -> Dict[str, np.ndarray]:
    """bert_jax params -> external tensors for every group the tree holds (asserts all are used)."""
    flat = {k: np.asarray(v, dtype=np.float32) for k, v in flatten(params).items()}
    out, used = {}, set()
    for e in build_table(config, style):
        if e.ours not in flat:
            continue
        used.add(e.ours)
        for s, arr in zip(e.sources, e.save(flat[e.ours])):
            out[s] = np.ascontiguousarray(arr)
    unused = sorted("/".join(k) for k in flat if k not in used)
    if unused:
        raise ValueError(f"Parameters with no {style.name} name (not a BERT tree?): {', '.join(unused)}")
    if ("bert", "embeddings", "word_embeddings", "embedding") not in used:
        raise ValueError("params hold no encoder at params['bert']")
    return out


def expected_shapes(config: BertConfig, num_labels: Sequence[int] = (2,)) -> Dict[Path, tuple]:
    """Shapes of every parameter any bert_jax BERT model of ``config`` can have."""
    import jax

    from bert_jax import modeling

    shapes = {}
    for model in (modeling.BertForPreTraining(config),
                  modeling.BertForSequenceClassification(config, num_labels=num_labels[0]),
                  modeling.BertForQuestionAnswering(config)):
        tree = modeling.param_shapes(model)
        shapes.update({k: v.shape for k, v in flatten(jax.tree_util.tree_map(lambda x: x, tree)).items()})
    return shapes
