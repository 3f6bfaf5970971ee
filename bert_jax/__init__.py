"""bert_jax: BERT pre-training and fine-tuning in JAX/Flax (linen).

The public names are imported lazily, so tools that only need the data or tokenizer modules
(``scripts/create_pretraining_data.py`` and its worker processes) do not pay for importing jax and flax.
"""

import importlib

_PUBLIC = {
    "BertConfig": "bert_jax.modeling",
    "BertModel": "bert_jax.modeling",
    "BertForPreTraining": "bert_jax.modeling",
    "BertForSequenceClassification": "bert_jax.modeling",
    "BertForTokenClassification": "bert_jax.modeling",
    "BertForQuestionAnswering": "bert_jax.modeling",
    "NAMED_SIZES": "bert_jax.modeling",
    "load_pretrained": "bert_jax.convert",
    "save_pretrained": "bert_jax.convert",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bert_jax' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
