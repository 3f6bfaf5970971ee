"""HF transformers layout: a directory with config.json + model.safetensors (or pytorch_model.bin,
or a sharded ``*.index.json``). Reading safetensors needs no PyTorch; pytorch_model.bin does."""

from __future__ import annotations

import json
import os
from typing import Dict

import numpy as np

from bert_jax import fileio
from bert_jax.convert import mapping
from bert_jax.modeling import BertConfig

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def is_hf_dir(path: str) -> bool:
    return (os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json"))
            and any(os.path.isfile(os.path.join(path, f)) for f in WEIGHT_FILES))


def _read_safetensors(path: str) -> Dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: corrupt or truncated safetensors file ({e}); re-download or "
                         "re-export it") from None


def _read_torch(path: str) -> Dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise ValueError(f"{path}: reading pytorch_model.bin needs PyTorch (pip install torch), or "
                         "convert it to model.safetensors first") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a broken pickle/zip
        raise ValueError(f"{path}: corrupt or truncated PyTorch checkpoint ({type(e).__name__}: {e})") from None
    return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy()
            for k, v in state.items()}


def read_tensors(directory: str) -> Dict[str, np.ndarray]:
    for fname in WEIGHT_FILES:
        path = os.path.join(directory, fname)
        if not os.path.isfile(path):
            continue
        reader = _read_safetensors if "safetensors" in fname else _read_torch
        if fname.endswith(".index.json"):
            try:
                with open(path, encoding="utf-8") as f:
                    shards = sorted(set(json.load(f)["weight_map"].values()))
            except (OSError, ValueError, KeyError) as e:
                raise ValueError(f"{path}: not a valid sharded-checkpoint index ({e})") from None
            tensors = {}
            for shard in shards:
                tensors.update(reader(os.path.join(directory, shard)))
            return tensors
        return reader(path)
    raise ValueError(f"{directory}: no weights file; expected one of {', '.join(WEIGHT_FILES)}")


def normalize_names(tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Accept the name variants HF checkpoints come in: encoder-only (no ``bert.`` prefix) and the
    old LayerNorm ``gamma``/``beta`` names."""
    out = {}
    has_prefix = any(k.startswith("bert.") for k in tensors)
    for k, v in tensors.items():
        if k.endswith("LayerNorm.gamma"):
            k = k[: -len("gamma")] + "weight"
        elif k.endswith("LayerNorm.beta"):
            k = k[: -len("beta")] + "bias"
        if not has_prefix and k.split(".")[0] in ("embeddings", "encoder", "pooler"):
            k = "bert." + k
        out[k] = v
    return out


def load(directory: str):
    config = BertConfig.from_json_file(os.path.join(directory, "config.json"))
    tensors = normalize_names(read_tensors(directory))
    params = mapping.to_bert_jax(tensors, config, mapping.HF, mapping.expected_shapes(config),
                                 source=directory)
    return config, params


def save(out_dir: str, config: BertConfig, params) -> str:
    """Writes config.json + model.safetensors that ``transformers`` loads (``BertForPreTraining``
    when the tree has the pre-training heads, ``BertModel`` otherwise)."""
    tensors = mapping.from_bert_jax(params, config, mapping.HF)
    if "cls.predictions.bias" in tensors:
        archs = ["BertForPreTraining"]
    elif "classifier.weight" in tensors:
        archs = ["BertForSequenceClassification"]
    elif "qa_outputs.weight" in tensors:
        archs = ["BertForQuestionAnswering"]
    else:
        archs = ["BertModel"]
    hf_config = config.to_hf_dict(architectures=archs)
    if "classifier.weight" in tensors:
        hf_config["num_labels"] = int(tensors["classifier.weight"].shape[0])
    from safetensors.numpy import save
    fileio.atomic_write(os.path.join(out_dir, "model.safetensors"), save(tensors, metadata={"format": "pt"}))
    fileio.write_json(os.path.join(out_dir, "config.json"), hf_config)
    return out_dir
