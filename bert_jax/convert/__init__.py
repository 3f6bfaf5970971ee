"""Checkpoint formats in and out: HF (safetensors / pytorch_model.bin), Google TF-1, bert_jax (Orbax).

    config, params = load_pretrained(path)    # the format is detected from what the path holds
    save_pretrained(out_dir, config, params)  # HF layout that transformers loads
"""

from __future__ import annotations

import os

from bert_jax import checkpoint, fileio
from bert_jax.convert import google, hf

FORMATS = ("hf", "google", "bert_jax")


def detect_format(path: str) -> str:
    path = os.fspath(path)
    if not os.path.exists(path) and not os.path.exists(path + ".index"):
        raise ValueError(f"Checkpoint path {path} does not exist")
    if checkpoint.is_bert_jax_dir(path):
        return "bert_jax"
    if hf.is_hf_dir(path):
        return "hf"
    if google.is_google_checkpoint(path):
        return "google"
    listing = sorted(os.listdir(path))[:12] if os.path.isdir(path) else [os.path.basename(path)]
    raise ValueError(
        f"Unknown checkpoint format at {path} (holds: {', '.join(listing) or 'nothing'}). Expected an HF "
        f"directory (config.json + model.safetensors or pytorch_model.bin), a Google TF-1 directory "
        f"(bert_config.json + bert_model.ckpt.index/.data-*), or a bert_jax directory ({checkpoint.MARKER}).")


def load_pretrained(path, format: str | None = None):
    """Returns ``(BertConfig, params)``; the encoder is at ``params["bert"]``, heads (``cls``,
    ``classifier``, ``qa_outputs``) only where the checkpoint has them (`bert_jax.modeling.add_missing_heads`
    gives fresh ones). Arrays are host numpy fp32. ``path`` may be relative or start with ``~``."""
    path = fileio.normalize_path(os.fspath(path))
    fmt = format or detect_format(path)
    if fmt == "hf":
        return hf.load(path)
    if fmt == "google":
        return google.load(path)
    if fmt == "bert_jax":
        return checkpoint.load_params(path)
    raise ValueError(f"format={fmt!r}: choose one of {', '.join(FORMATS)}")


def save_pretrained(out_dir, config, params, format: str = "hf"):
    """Writes ``params`` as an HF directory (default; ``transformers.BertForPreTraining.from_pretrained``
    loads it), a Google TF-1 checkpoint, or a bert_jax (Orbax) directory."""
    out_dir = fileio.normalize_path(os.fspath(out_dir))
    if format == "hf":
        return hf.save(out_dir, config, params)
    if format == "google":
        return google.save(out_dir, config, params)
    if format == "bert_jax":
        return checkpoint.save_params(out_dir, config, params)
    raise ValueError(f"format={format!r}: choose one of {', '.join(FORMATS)}")
