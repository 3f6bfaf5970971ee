"""The original google-research/bert TF-1 checkpoint: ``bert_config.json`` + ``bert_model.ckpt.*``
(``.index`` and ``.data-*``). Read with TensorFlow's checkpoint reader; no PyTorch involved."""

from __future__ import annotations

import glob
import os
from typing import Dict, Optional

import numpy as np

from bert_jax.convert import mapping
from bert_jax.modeling import BertConfig


def find_checkpoint_prefix(path: str) -> Optional[str]:
    """A directory holding ``*.ckpt*.index`` files (newest wins), or a checkpoint prefix itself."""
    if os.path.isfile(path + ".index"):
        return path
    if os.path.isdir(path):
        preferred = os.path.join(path, "bert_model.ckpt")
        if os.path.isfile(preferred + ".index"):
            return preferred
        indexes = sorted(glob.glob(os.path.join(path, "*.index")), key=os.path.getmtime)
        if indexes:
            return indexes[-1][: -len(".index")]
    return None


def is_google_checkpoint(path: str) -> bool:
    prefix = find_checkpoint_prefix(path)
    return prefix is not None and os.path.isfile(os.path.join(os.path.dirname(prefix), "bert_config.json"))


def read_tensors(prefix: str) -> Dict[str, np.ndarray]:
    import tensorflow as tf
    try:
        reader = tf.train.load_checkpoint(prefix)
        names = reader.get_variable_to_shape_map()
        return {name: np.asarray(reader.get_tensor(name)) for name in names}
    except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as e:  # TF's reader raises all of these
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{prefix}: corrupt or truncated TF checkpoint ({msg}); both "
                         f"{os.path.basename(prefix)}.index and its .data-* files are needed") from None


def load(path: str):
    prefix = find_checkpoint_prefix(path)
    if prefix is None:
        raise ValueError(f"{path}: no TF checkpoint (*.index) found")
    config = BertConfig.from_json_file(os.path.join(os.path.dirname(prefix), "bert_config.json"))
    tensors = read_tensors(prefix)
    params = mapping.to_bert_jax(tensors, config, mapping.GOOGLE, mapping.expected_shapes(config),
                                 source=prefix)
    return config, params


def save(out_dir: str, config: BertConfig, params, name: str = "bert_model.ckpt") -> str:
    """Writes a TF-1-style checkpoint with the original variable names (for the original code)."""
    import json

    import tensorflow as tf

    tensors = mapping.from_bert_jax(params, config, mapping.GOOGLE)
    os.makedirs(out_dir, exist_ok=True)
    prefix = os.path.join(out_dir, name)
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])
    with open(os.path.join(out_dir, "bert_config.json"), "w", encoding="utf-8") as f:
        json.dump(config.to_google_dict(), f, indent=2)
    return prefix
