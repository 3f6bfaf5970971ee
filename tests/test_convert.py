"""Config I/O, the bert_jax (Orbax) format, scripts/convert_checkpoint.py, and bad checkpoints."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import bert_jax
from bert_jax import modeling
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny():
    cfg = modeling.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=24, max_position_embeddings=16)
    params = modeling.init_params(modeling.BertForPreTraining(cfg), jax.random.PRNGKey(0))
    return cfg, params


@pytest.fixture
def hf_dir(tiny, tmp_path):
    cfg, params = tiny
    return bert_jax.save_pretrained(str(tmp_path / "hf"), cfg, params)


def test_named_sizes():
    expected = {"tiny": (2, 128), "mini": (4, 256), "small": (4, 512), "medium": (8, 512),
                "base": (12, 768), "large": (24, 1024)}
    for name, (layers, hidden) in expected.items():
        c = bert_jax.BertConfig.named(name)
        assert (c.num_hidden_layers, c.hidden_size, c.intermediate_size) == (layers, hidden, 4 * hidden)
        assert c.hidden_size // c.num_attention_heads == 64
    with pytest.raises(ValueError, match="Unknown BERT size 'huge'"):
        bert_jax.BertConfig.named("huge")


def test_config_json_round_trips(tmp_path):
    c = bert_jax.BertConfig.named("mini", vocab_size=8000, hidden_act="gelu_new", type_vocab_size=3)
    for name, d in (("config.json", c.to_hf_dict()), ("bert_config.json", c.to_google_dict())):
        (tmp_path / name).write_text(json.dumps(d))
        back = bert_jax.BertConfig.from_json_file(str(tmp_path / name))
        assert back == c
    assert "layer_norm_eps" not in c.to_google_dict()


@pytest.mark.parametrize("bad,match", [
    (dict(hidden_size=100, num_attention_heads=3), "not divisible by num_attention_heads=3"),
    (dict(vocab_size=0), "vocab_size=0 must be a positive integer"),
    (dict(hidden_act="swishy"), "hidden_act='swishy'"),
    (dict(dtype="int8"), "dtype='int8'"),
])
def test_bad_config_values(bad, match):
    with pytest.raises(ValueError, match=match):
        bert_jax.BertConfig(**bad)


def test_bad_config_files(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(ValueError, match="Cannot read BERT config .*a.json"):
        bert_jax.BertConfig.from_json_file(str(tmp_path / "a.json"))
    (tmp_path / "b.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 768}))
    with pytest.raises(ValueError, match="not a BERT config, missing vocab_size"):
        bert_jax.BertConfig.from_json_file(str(tmp_path / "b.json"))


def test_bert_jax_format_round_trip(tiny, tmp_path):
    cfg, params = tiny
    bert_jax.save_pretrained(str(tmp_path / "bj"), cfg, params, format="bert_jax")
    cfg2, params2 = bert_jax.load_pretrained(str(tmp_path / "bj"))
    assert cfg2 == cfg
    a, b = helpers.flat(params), helpers.flat(params2)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    with pytest.raises(ValueError, match="already exists"):
        bert_jax.save_pretrained(str(tmp_path / "bj"), cfg, params, format="bert_jax")


def test_unknown_format(tmp_path):
    (tmp_path / "weights.npz").write_bytes(b"123")
    with pytest.raises(ValueError, match=r"Unknown checkpoint format .*weights.npz.*Expected an HF directory"):
        bert_jax.load_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="does not exist"):
        bert_jax.load_pretrained(str(tmp_path / "nope"))


def test_truncated_safetensors(hf_dir):
    path = os.path.join(hf_dir, "model.safetensors")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated safetensors file"):
        bert_jax.load_pretrained(hf_dir)


def _edit_tensors(hf_dir, fn):
    path = os.path.join(hf_dir, "model.safetensors")
    tensors = load_file(path)
    fn(tensors)
    save_file(tensors, path)


def test_missing_key(hf_dir):
    _edit_tensors(hf_dir, lambda t: t.pop("bert.encoder.layer.1.attention.self.key.weight"))
    with pytest.raises(ValueError, match=r"missing tensors \(1\): bert.encoder.layer.1.attention.self.key.weight"):
        bert_jax.load_pretrained(hf_dir)


def test_unused_key(hf_dir):
    def add(t):
        t["bert.encoder.layer.2.output.dense.weight"] = np.zeros((16, 24), np.float32)
        t["cls.some_adapter.weight"] = np.zeros((3,), np.float32)
    _edit_tensors(hf_dir, add)
    with pytest.raises(ValueError, match=r"unused tensors \(2\): bert.encoder.layer.2.output.dense.weight, "
                                         r"cls.some_adapter.weight"):
        bert_jax.load_pretrained(hf_dir)


def test_wrong_shape(hf_dir):
    _edit_tensors(hf_dir, lambda t: t.update({"bert.encoder.layer.0.intermediate.dense.weight":
                                              np.zeros((30, 16), np.float32)}))
    with pytest.raises(ValueError, match=r"shape mismatches \(1\): bert.encoder.layer.0.intermediate.dense.weight"
                                         r" -> bert/encoder/layer_0/intermediate/kernel: got \(16, 30\), the config "
                                         r"needs \(16, 24\)"):
        bert_jax.load_pretrained(hf_dir)


def test_config_vocab_does_not_match_weights(hf_dir):
    path = os.path.join(hf_dir, "config.json")
    cfg = json.load(open(path))
    cfg["vocab_size"] = 60
    json.dump(cfg, open(path, "w"))
    with pytest.raises(ValueError, match=r"word_embeddings.*got \(50, 16\), the config needs \(60, 16\)"):
        bert_jax.load_pretrained(hf_dir)


def test_truncated_google_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")  # noqa: F841 (the HF model builds the TF checkpoint)
    transformers = pytest.importorskip("transformers")
    model = helpers.perturbed_hf_model(transformers.BertForPreTraining)
    helpers.write_google_checkpoint_from_hf(model, tmp_path)
    data = next(p for p in tmp_path.iterdir() if ".data-" in p.name)
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(ValueError, match="corrupt or truncated TF checkpoint"):
        bert_jax.load_pretrained(str(tmp_path))


def run_script(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "convert_checkpoint.py"), *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO)


def test_convert_script_round_trip_and_errors(hf_dir, tmp_path, tiny):
    r = run_script(f"--input={hf_dir}", f"--output={tmp_path / 'bj'}", "--output_format=bert_jax")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Converted" in r.stdout
    r = run_script(f"--input={tmp_path / 'bj'}", f"--output={tmp_path / 'hf2'}", "--output_format=hf")
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = load_file(os.path.join(hf_dir, "model.safetensors")), load_file(str(tmp_path / "hf2" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])

    _edit_tensors(hf_dir, lambda t: t.pop("bert.pooler.dense.bias"))
    r = run_script(f"--input={hf_dir}", f"--output={tmp_path / 'x'}")
    assert r.returncode != 0
    assert "convert_checkpoint: Cannot load" in r.stderr and "bert.pooler.dense.bias" in r.stderr
    assert "Traceback" not in r.stderr
