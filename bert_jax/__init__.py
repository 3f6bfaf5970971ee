"""bert_jax: BERT pre-training and fine-tuning in JAX/Flax (linen)."""

from bert_jax.modeling import (
    BertConfig,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    NAMED_SIZES,
)
from bert_jax.convert import load_pretrained, save_pretrained

__all__ = [
    "BertConfig", "BertModel", "BertForPreTraining", "BertForSequenceClassification",
    "BertForTokenClassification", "BertForQuestionAnswering", "NAMED_SIZES",
    "load_pretrained", "save_pretrained",
]
