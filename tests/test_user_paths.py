"""Issue 12's user-facing cases: relative and ~ paths, encoder-only checkpoints, non-UTF-8 input."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import bert_jax
from bert_jax import cli, fileio, modeling
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_normalize_path_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert fileio.normalize_path("runs/x") == str(tmp_path / "runs" / "x")
    assert fileio.normalize_path("~/a") == os.path.join(os.path.expanduser("~"), "a")
    assert fileio.normalize_path("gs://b/x") == "gs://b/x"
    assert fileio.normalize_path("") == ""
    assert fileio.normalize_path("/abs/p") == "/abs/p"
    assert fileio.normalize_path_list("d/*.tfrecord, /e/*.tfrecord,gs://f/*") == \
        f"{tmp_path}/d/*.tfrecord,/e/*.tfrecord,gs://f/*"


def test_config_path_fields_nested(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = ml_collections.ConfigDict(dict(
        tokenizer="tok/vocab.txt", init_checkpoint="", learning_rate=1e-3, size="tiny",
        train_files="a/*.tfrecord,b/*.tfrecord",
        phases=[ml_collections.ConfigDict(dict(train_files="c/*.tfrecord", seq_len=128))]))
    c.lock()
    cli.normalize_config_paths(c)
    assert c.tokenizer == str(tmp_path / "tok" / "vocab.txt")
    assert c.init_checkpoint == ""          # empty stays empty (random init)
    assert c.size == "tiny" and c.learning_rate == 1e-3
    assert c.train_files == f"{tmp_path}/a/*.tfrecord,{tmp_path}/b/*.tfrecord"
    assert c.phases[0].train_files == f"{tmp_path}/c/*.tfrecord"


def test_encoder_only_checkpoint_gets_one_clear_error_and_fresh_heads():
    config, params = bert_jax.load_pretrained(helpers.minilm_dir())
    assert sorted(params) == ["bert"]
    ids = jnp.array([[101, 7592, 2088, 102]], jnp.int32)
    model = bert_jax.BertForPreTraining(config)
    with pytest.raises(modeling.MissingParametersError, match=r"lack cls \(the MLM \+ NSP pre-training heads\)"):
        model.apply({"params": params}, ids)
    with pytest.raises(modeling.MissingParametersError, match="classifier"):
        bert_jax.BertForSequenceClassification(config).apply({"params": params}, ids)
    full = modeling.add_missing_heads(model, params, jax.random.PRNGKey(1))
    out = model.apply({"params": full}, ids)
    assert out.mlm_logits.shape == (1, 4, config.vocab_size)
    # the encoder is the checkpoint's, untouched; the heads are new
    np.testing.assert_array_equal(full["bert"]["pooler"]["kernel"], params["bert"]["pooler"]["kernel"])
    enc = bert_jax.BertModel(config).apply({"params": params["bert"]}, ids)
    np.testing.assert_allclose(out.sequence_output, enc.sequence_output, atol=1e-6)
    with pytest.raises(ValueError, match="do not fit"):
        bad = jax.tree_util.tree_map(lambda x: x, params)
        bad["bert"]["pooler"]["kernel"] = np.zeros((3, 3), np.float32)
        modeling.add_missing_heads(model, bad)


def test_non_utf8_input_is_reported(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "good.txt").write_bytes(b"One fine sentence here.\nAnother fine one.\n")
    (d / "bad.txt").write_bytes(b"Caf\xe9 au lait.\nAnd \xff\xfe here too.\nA clean line.\n")
    vocab = os.path.join(helpers.minilm_dir(), "vocab.txt")
    r = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "create_pretraining_data.py"),
                        "--input_file=corpus/*.txt", "--output_dir=out", f"--vocab_file={vocab}",
                        "--dupe_factor=1", "--num_workers=1", "--max_seq_length=32",
                        "--max_predictions_per_seq=4"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    warnings = [l for l in r.stderr.splitlines() if "not valid UTF-8" in l]
    assert len(warnings) == 1, r.stderr[-2000:]
    assert "2 line(s)" in warnings[0] and str(tmp_path / "corpus" / "bad.txt") in warnings[0]
    summary = json.load(open(tmp_path / "out" / "summary.json"))
    assert summary["skipped"]["lines_with_invalid_utf8"] == 2
