"""Tokenizers for bert_jax: WordPiece (BERT ``vocab.txt``) and SentencePiece, behind one interface.

Both implementations subclass :class:`Tokenizer`, so pretraining-data creation, whole-word masking and
fine-tuning code never needs to know which one it holds::

    tok = load_tokenizer("path/to/vocab.txt")          # or a .model, or an HF / checkpoint directory
    ids = tok.encode("Hello world")                    # no [CLS]/[SEP]
    ids_list = tok.encode_batch(lines)                 # the hot path (flat arrays: encode_batch_flat)
    starts = tok.word_start_table[np.asarray(ids)]     # whole-word masking, vectorised
    feats = tok.encode_for_model("a", "b", max_length=128)   # [CLS] a [SEP] b [SEP], padded, int32

WordPiece is built on the ``tokenizers`` library with the exact pipeline of the original BERT
(``BertNormalizer`` -> ``BertPreTokenizer`` -> ``WordPiece`` with ``##`` continuation, 100 chars per word),
so ids equal ``transformers.BertTokenizerFast`` / ``BertTokenizer`` (tested on real text).
SentencePiece models are trained by ``scripts/train_tokenizer.py`` with ``[PAD]``=0, ``[UNK]``=1,
``[CLS]``=2, ``[SEP]``=3, ``[MASK]``=4; other SentencePiece models load too as long as they have
the five BERT specials (ALBERT's ``<pad>``/``<unk>`` are accepted as pad/unk).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import threading
from typing import Iterable, Sequence

import numpy as np

from bert_jax import fileio

__all__ = [
    "SPECIAL_TOKENS",
    "Tokenizer",
    "WordPieceTokenizer",
    "SentencePieceTokenizer",
    "load_tokenizer",
    "check_vocab_size",
    "truncate_pair",
]

# BERT's special tokens in the order scripts/train_tokenizer.py gives them ids 0..4.
PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)

CONFIG_NAME = "tokenizer_config.json"  # HF's name; holds do_lower_case for a vocab.txt
WORDPIECE_VOCAB_NAME = "vocab.txt"
SENTENCEPIECE_MODEL_NAME = "spiece.model"  # what save() writes; loading accepts any *.model
MAX_INPUT_CHARS_PER_WORD = 100  # the original BERT's WordpieceTokenizer limit


# --------------------------------------------------------------------------------------------- helpers
def _read_json_dict(path: str) -> dict | None:
    """The JSON object in ``path``, or None if it is absent; a broken file is a clear ValueError."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, "r", encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read tokenizer settings as JSON ({e}); fix or delete the file.") from e
    return obj if isinstance(obj, dict) else None


def _lowercase_setting(path: str, *, sidecar: bool = True) -> bool | None:
    """do_lower_case recorded beside a vocab/model file: ``<stem>.json``, then tokenizer_config.json."""
    candidates = [os.path.splitext(path)[0] + ".json"] if sidecar else []
    candidates.append(os.path.join(os.path.dirname(os.path.abspath(path)), CONFIG_NAME))
    for candidate in candidates:
        obj = _read_json_dict(candidate)
        if obj is not None and isinstance(obj.get("do_lower_case"), bool):
            return obj["do_lower_case"]
    return None


def truncate_pair(ids_a: list[int], ids_b: list[int] | None, budget: int) -> tuple[list[int], list[int] | None]:
    """Longest-first truncation exactly as HF ``tokenizers`` does it (so fine-tuning features match).

    ``budget`` is the number of non-special tokens allowed. For a pair, if only the longer sequence has to
    shrink it keeps ``budget - len(shorter)`` tokens; if both must shrink they get ``budget // 2`` and
    ``budget // 2 + budget % 2`` with the odd token going to the originally longer one (the second one on
    a tie) -- the closed form of the Rust implementation, not the one-token-at-a-time Python loop.
    """
    if budget < 0:
        raise ValueError(f"truncation budget must be >= 0, got {budget}")
    if ids_b is None:
        return ids_a[:budget], None
    n_a, n_b = len(ids_a), len(ids_b)
    if n_a + n_b <= budget:
        return ids_a, ids_b
    swap = n_a > n_b
    n1, n2 = (n_b, n_a) if swap else (n_a, n_b)  # n1 is the shorter
    n2 = n1 if n1 > budget else max(n1, budget - n1)
    if n1 + n2 > budget:
        n1 = budget // 2
        n2 = n1 + budget % 2
    if swap:
        n1, n2 = n2, n1
    return ids_a[:n1], ids_b[:n2]


# ------------------------------------------------------------------------------------------ interface
class Tokenizer:
    """The interface shared by :class:`WordPieceTokenizer` and :class:`SentencePieceTokenizer`.

    Attributes:
      kind: ``"wordpiece"`` or ``"sentencepiece"``.
      path: the vocab / model file this tokenizer was read from (for messages).
      vocab_size: number of ids (rows the model's embedding table must have).
      do_lower_case: whether text is lower-cased before tokenizing.
      pad_id, unk_id, cls_id, sep_id, mask_id: the BERT special ids.
      special_ids: frozenset of the five above plus any other control ids.
      word_start_table: bool ``[vocab_size]``; True where an id begins a new word (special ids True).
    """

    kind: str = ""

    def __init__(self, *, path: str, vocab_size: int, do_lower_case: bool, special: dict[str, int],
                 extra_special_ids: Iterable[int], word_start_table: np.ndarray, fingerprint_payload: bytes):
        self.path = path
        self.vocab_size = int(vocab_size)
        self.do_lower_case = bool(do_lower_case)
        self.pad_id = int(special[PAD])
        self.unk_id = int(special[UNK])
        self.cls_id = int(special[CLS])
        self.sep_id = int(special[SEP])
        self.mask_id = int(special[MASK])
        self.special_ids = frozenset({self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id}
                                     | {int(i) for i in extra_special_ids})
        table = np.asarray(word_start_table, dtype=bool).copy()
        if table.shape != (self.vocab_size,):
            raise AssertionError(f"word_start_table shape {table.shape} != ({self.vocab_size},)")
        table[list(self.special_ids)] = True
        table.setflags(write=False)
        self.word_start_table = table
        self._fingerprint_payload = fingerprint_payload

    # -- implemented by subclasses ------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        raise NotImplementedError

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """``[self.encode(t) for t in texts]``, computed in native code on several threads."""
        raise NotImplementedError

    def encode_batch_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`encode_batch` as arrays: the ids of all texts concatenated (int32) and each text's count
        (int64), without a Python list per text -- the form bulk consumers (pretraining data) want."""
        ids = self.encode_batch(texts)
        lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lens.sum()))
        return flat, lens

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        raise NotImplementedError

    def convert_ids_to_tokens(self, ids) -> list[str]:
        raise NotImplementedError

    def token_to_id(self, token: str) -> int | None:
        raise NotImplementedError

    def save(self, directory: str) -> str:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------------
    def __repr__(self) -> str:
        return (f"{type(self).__name__}(path={self.path!r}, vocab_size={self.vocab_size}, "
                f"do_lower_case={self.do_lower_case})")

    def fingerprint(self) -> str:
        """sha256 (hex) of the vocab/model bytes plus the lower-casing flag; identifies the id mapping."""
        h = hashlib.sha256(self._fingerprint_payload)
        h.update(b"\0do_lower_case=" + (b"1" if self.do_lower_case else b"0"))
        return h.hexdigest()

    def _check_ids(self, ids) -> list[int]:
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1)]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token ids {bad[:5]} are outside [0, {self.vocab_size}) for tokenizer {self.path}")
        return ids

    def build_model_inputs(self, ids_a: list[int], ids_b: list[int] | None = None,
                           max_length: int = 128) -> dict[str, np.ndarray]:
        """``[CLS] A [SEP] (B [SEP])`` truncated longest-first, padded with pad_id to ``max_length``."""
        n_special = 3 if ids_b is not None else 2
        if max_length < n_special:
            raise ValueError(f"max_length={max_length} leaves no room for the {n_special} special tokens; "
                             f"use max_length >= {n_special}")
        ids_a, ids_b = truncate_pair(list(ids_a), None if ids_b is None else list(ids_b), max_length - n_special)
        input_ids = np.full((max_length,), self.pad_id, dtype=np.int32)
        token_type_ids = np.zeros((max_length,), dtype=np.int32)
        attention_mask = np.zeros((max_length,), dtype=np.int32)
        seq = [self.cls_id, *ids_a, self.sep_id]
        n_a = len(seq)
        if ids_b is not None:
            seq += [*ids_b, self.sep_id]
        input_ids[:len(seq)] = seq
        token_type_ids[n_a:len(seq)] = 1
        attention_mask[:len(seq)] = 1
        return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}

    def encode_for_model(self, text_a: str, text_b: str | None = None,
                         max_length: int = 128) -> dict[str, np.ndarray]:
        """Model features for one example: int32 ``input_ids``, ``token_type_ids``, ``attention_mask``
        of length ``max_length``. Same ids as ``BertTokenizerFast(a, b, truncation="longest_first",
        padding="max_length", max_length=...)``; ``text_b=""`` still counts as a (empty) second segment."""
        ids_b = None if text_b is None else self.encode(text_b)
        return self.build_model_inputs(self.encode(text_a), ids_b, max_length)

    def encode_batch_for_model(self, texts_a: Sequence[str], texts_b: Sequence[str] | None = None,
                               max_length: int = 128) -> dict[str, np.ndarray]:
        """:meth:`encode_for_model` over a batch, tokenizing with :meth:`encode_batch`; arrays ``[N, max_length]``."""
        if texts_b is not None and len(texts_b) != len(texts_a):
            raise ValueError(f"texts_a has {len(texts_a)} entries but texts_b has {len(texts_b)}")
        all_a = self.encode_batch(list(texts_a))
        all_b = self.encode_batch(list(texts_b)) if texts_b is not None else [None] * len(all_a)
        feats = [self.build_model_inputs(a, b, max_length) for a, b in zip(all_a, all_b)]
        keys = ("input_ids", "token_type_ids", "attention_mask")
        if not feats:
            return {k: np.zeros((0, max_length), np.int32) for k in keys}
        return {k: np.stack([f[k] for f in feats]) for k in keys}

    def is_word_start(self, ids) -> np.ndarray:
        """``word_start_table[ids]`` with a bounds check."""
        ids = np.asarray(ids)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"token ids outside [0, {self.vocab_size}) for tokenizer {self.path}")
        return self.word_start_table[ids]


# ----------------------------------------------------------------------------------------- WordPiece
# The fast path of WordPieceTokenizer.encode_batch_flat. For an ASCII text with no control characters,
# BertNormalizer only lower-cases (when asked) and BertPreTokenizer splits on whitespace and on every ASCII
# punctuation character (all printable non-alphanumerics), so the words are exactly these regex matches.
_TEXT_SEPARATOR = "\x1f"  # a control character; a text holding one takes the slow path
# Texts that need the full pipeline: control characters (BERT deletes them) and literal special tokens (matched
# verbatim); a text holding the separator is sent there by a separate check.
_NOT_PLAIN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1e\x7f]|\[(?:PAD|UNK|CLS|SEP|MASK)\]")
_WORDS_LOWER = re.compile(r"[a-z0-9]+|[!-/:-@\[-`{-~\x1f]")
_WORDS_CASED = re.compile(r"[A-Za-z0-9]+|[!-/:-@\[-`{-~\x1f]")


class _GrowingIndex(dict):
    """word -> index; a missing word gets the next index and is remembered in ``new``."""

    def __init__(self, *args):
        super().__init__(*args)
        self.new: list[str] = []

    def __missing__(self, word):
        k = self[word] = len(self)
        self.new.append(word)
        return k

    def take_new(self) -> list[str]:
        new, self.new = self.new, []
        return new


class _WordPieceCache:
    """Word -> WordPiece ids, each distinct word computed once by the Rust WordPiece model.

    Pieces are kept as CSR arrays so a batch of word indices expands to ids with numpy gathers. Bounded:
    past ``max_words`` distinct words the cache starts afresh (a long tail of rare words cannot grow it
    without limit). Thread-safe.
    """

    def __init__(self, model, max_words: int = 2_000_000):
        self._model = model
        self._max_words = max_words
        self._lock = threading.Lock()
        self._reset()

    def __getstate__(self):   # pickles as its model; the cache is rebuilt where it is used
        return {"model": self._model, "max_words": self._max_words}

    def __setstate__(self, state):
        self.__init__(state["model"], state["max_words"])

    def _reset(self):
        self._index = _GrowingIndex({_TEXT_SEPARATOR: 0})   # the text separator: a word with no pieces
        self._starts = np.zeros(1 << 16, dtype=np.int64)   # pieces of word w: _pieces[_starts[w]:_starts[w+1]]
        self._pieces = np.zeros(1 << 18, dtype=np.int32)
        self._n_words, self._n_pieces = 1, 0

    def lookup(self, words: list[str]) -> np.ndarray:
        """Indices of ``words`` (new ones WordPiece'd and added)."""
        with self._lock:
            if self._n_words > self._max_words:
                self._reset()
            # dict lookups at C speed; only a new word runs Python (_GrowingIndex.__missing__)
            ids = np.fromiter(map(self._index.__getitem__, words), dtype=np.int64, count=len(words))
            new = self._index.take_new()
            if new:
                self._append(new, [[t.id for t in self._model.tokenize(w)] for w in new])
            return ids

    def _append(self, new: list[str], pieces: list[list[int]]):
        counts = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
        n_w, n_p = self._n_words + len(new), self._n_pieces + int(counts.sum())
        if n_w + 1 > len(self._starts):
            self._starts = np.resize(self._starts, max(2 * len(self._starts), n_w + 1))
        if n_p > len(self._pieces):
            self._pieces = np.resize(self._pieces, max(2 * len(self._pieces), n_p))
        self._starts[self._n_words + 1:n_w + 1] = self._n_pieces + np.cumsum(counts)
        self._pieces[self._n_pieces:n_p] = np.fromiter(itertools.chain.from_iterable(pieces), dtype=np.int32,
                                                       count=n_p - self._n_pieces)
        self._n_words, self._n_pieces = n_w, n_p

    def expand(self, word_ids: np.ndarray, n_texts: int) -> tuple[np.ndarray, np.ndarray]:
        """The pieces of ``word_ids`` (texts separated by word 0) concatenated, and each text's count."""
        with self._lock:
            starts, pieces = self._starts, self._pieces
            first = starts[word_ids]
            counts = (starts[word_ids + 1] - first).astype(np.int32)
            if counts.max(initial=0) <= 1:   # every word one piece (or a separator): a plain gather
                flat = pieces[first[counts == 1]]
            else:
                total = int(counts.sum())
                out_starts = np.cumsum(counts, dtype=np.int64) - counts
                src = np.repeat(first - out_starts, counts) + np.arange(total)
                flat = pieces[src]
        ends = np.cumsum(counts, dtype=np.int64)[word_ids == 0]   # token count before each separator
        total = len(flat)
        bounds = np.concatenate([[0], ends, [total]])
        lens = np.diff(bounds)
        if len(lens) != n_texts:
            raise AssertionError(f"fast WordPiece path split {len(lens)} texts, expected {n_texts}")
        return flat, lens

def _read_vocab_txt(path: str) -> tuple[list[str], bytes]:
    """Tokens of a BERT vocab.txt (one per line, id = line number) and the raw bytes; ValueError if not one."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"cannot read WordPiece vocab {path}: {e}") from e
    expected = "expected a BERT vocab.txt: UTF-8 text, one token per line, containing " + ", ".join(SPECIAL_TOKENS)
    if not data.strip():
        raise ValueError(f"WordPiece vocab {path} is empty; {expected}.")
    if b"\0" in data:
        raise ValueError(f"WordPiece vocab {path} is a binary file (contains NUL bytes); {expected}.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"WordPiece vocab {path} is not UTF-8 text ({e}); {expected}.") from e
    # As HF's load_vocab: strip only the newline (tokens may contain spaces); also tolerate CRLF files.
    tokens = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    if tokens and tokens[-1] == "" and text.endswith("\n"):
        tokens.pop()
    missing = [t for t in SPECIAL_TOKENS if t not in set(tokens)]
    if missing:
        raise ValueError(f"WordPiece vocab {path} ({len(tokens)} lines) lacks the special token(s) "
                         f"{', '.join(missing)}; {expected}.")
    return tokens, data


_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
            (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def _infer_lower_case(tokens: Sequence[str]) -> bool:
    """A vocab where no token outside brackets ([CLS], [unused0], ...) changes under lower-casing is uncased.

    (Not ``str.isupper``: symbols such as "ℝ" count as upper-case letters yet have no lower-case form, and the
    uncased BERT vocab contains them.)"""
    for t in tokens:
        if t.startswith("[") and t.endswith("]"):
            continue
        if t != t.lower():
            return False
    return True


class WordPieceTokenizer(Tokenizer):
    """BERT WordPiece on HF ``tokenizers``; ids identical to ``transformers.BertTokenizerFast``.

    Args:
      vocab: path of a vocab.txt, or the token list (id = position) with ``path`` naming its origin.
      do_lower_case: lower-case (and, as BERT does, strip accents) before WordPiece. None: from
        ``<stem>.json`` / tokenizer_config.json beside the vocab, else inferred from the vocab's case.
      strip_accents: None follows do_lower_case (BERT's rule); True/False forces it.
      tokenize_chinese_chars: put spaces around CJK ideographs (the original's behaviour).
    """

    kind = "wordpiece"

    def __init__(self, vocab: str | Sequence[str], do_lower_case: bool | None = None, *,
                 strip_accents: bool | None = None, tokenize_chinese_chars: bool = True, path: str | None = None):
        from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers
        from tokenizers import Tokenizer as _RustTokenizer

        if isinstance(vocab, (str, os.PathLike)):
            path = os.fspath(vocab)
            tokens, _ = _read_vocab_txt(path)
            if do_lower_case is None:
                do_lower_case = _lowercase_setting(path)
        else:
            tokens = list(vocab)
            path = path or "<in-memory vocab>"
            missing = [t for t in SPECIAL_TOKENS if t not in set(tokens)]
            if missing:
                raise ValueError(f"WordPiece vocab {path} lacks the special token(s) {', '.join(missing)}")
        if do_lower_case is None:
            do_lower_case = _infer_lower_case(tokens)
        self._tokens = tokens
        # Duplicate lines: the last occurrence wins, as in HF's load_vocab; vocab_size stays the line count
        # because that is the number of embedding rows a checkpoint trained with this file has.
        self._vocab = {t: i for i, t in enumerate(tokens)}
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = bool(tokenize_chinese_chars)

        rust = _RustTokenizer(models.WordPiece(vocab=dict(self._vocab), unk_token=UNK, continuing_subword_prefix="##",
                                               max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
        rust.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=self.tokenize_chinese_chars,
                                                     strip_accents=strip_accents, lowercase=bool(do_lower_case))
        rust.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        rust.decoder = decoders.WordPiece(prefix="##", cleanup=True)
        # As BertTokenizerFast: the specials are matched verbatim in raw text ("[MASK]" -> mask_id).
        rust.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
        self._rust = rust
        self._word_cache = _WordPieceCache(rust.model)

        special = {t: self._vocab[t] for t in SPECIAL_TOKENS}
        table = np.array([not t.startswith("##") for t in tokens], dtype=bool)
        options = b""
        if strip_accents is not None or not self.tokenize_chinese_chars:
            options = f"\0strip_accents={strip_accents}\0chinese={self.tokenize_chinese_chars}".encode()
        super().__init__(path=path, vocab_size=len(tokens), do_lower_case=do_lower_case, special=special,
                         extra_special_ids=(), word_start_table=table,
                         fingerprint_payload=self._vocab_bytes() + options)

    def _vocab_bytes(self) -> bytes:
        # Canonical vocab.txt bytes: equal to the file for the usual LF-terminated vocab, and identical
        # after save(), so the fingerprint survives a save/load round trip.
        return ("\n".join(self._tokens) + "\n").encode("utf-8")

    @property
    def vocab(self) -> list[str]:
        return list(self._tokens)

    def normalize(self, text: str) -> str:
        """The text after BERT's normalizer (cleaning, CJK spacing, lower-casing / accent stripping)."""
        return self._rust.normalizer.normalize_str(text)

    def tokenize(self, text: str) -> list[str]:
        """WordPiece strings of ``text`` (no special tokens)."""
        return self._rust.encode(text, add_special_tokens=False).tokens

    def encode(self, text: str) -> list[int]:
        return self._rust.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        flat, lens = self.encode_batch_flat(texts)
        return [a.tolist() for a in np.split(flat, np.cumsum(lens)[:-1])] if len(lens) else []

    def encode_batch_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Ids of many texts at once, equal to the Rust pipeline's (and HF's) for every text.

        Plain ASCII texts (no control characters, no literal special tokens) -- nearly all of English
        text -- take a fast path: BERT's normaliser and pre-tokenizer reduce to lower-casing and one regex
        (words of letters/digits, single punctuation characters), and each distinct word is WordPiece'd
        once by the Rust model and remembered: the Rust tokenizer's per-call cost dominates on sentences
        (figures in benchmarks/README.md). Other texts go through the full Rust pipeline.
        """
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a list of strings, not one string; use encode()")
        texts = list(texts)
        n = len(texts)
        lens = np.zeros(n, dtype=np.int64)
        fast = [i for i, t in enumerate(texts) if t.isascii()]
        body = _TEXT_SEPARATOR.join(texts[i] for i in fast)
        if _NOT_PLAIN.search(body) or body.count(_TEXT_SEPARATOR) != max(len(fast) - 1, 0):
            # rare: control characters or literal "[MASK]" etc. somewhere; sort the texts out
            fast = [i for i in fast if not _NOT_PLAIN.search(texts[i]) and _TEXT_SEPARATOR not in texts[i]]
            body = _TEXT_SEPARATOR.join(texts[i] for i in fast)
        pieces_of_fast = None
        if fast:
            words = (_WORDS_LOWER if self.do_lower_case else _WORDS_CASED).findall(
                body.lower() if self.do_lower_case else body)
            word_ids = self._word_cache.lookup(words)
            pieces_of_fast, fast_lens = self._word_cache.expand(word_ids, len(fast))
            lens[fast] = fast_lens
        slow = sorted(set(range(n)).difference(fast)) if len(fast) < n else []
        if not slow:
            return (pieces_of_fast if pieces_of_fast is not None else np.zeros(0, np.int32)), lens
        # encode_batch_fast skips offset tracking; it runs in Rust on all cores (RAYON_NUM_THREADS caps it).
        slow_ids = [e.ids for e in self._rust.encode_batch_fast([texts[i] for i in slow], add_special_tokens=False)]
        lens[slow] = [len(x) for x in slow_ids]
        out = np.empty(int(lens.sum()), dtype=np.int32)
        starts = np.cumsum(lens) - lens
        if fast:
            fast_starts = starts[fast]
            offsets = np.repeat(fast_starts - (np.cumsum(lens[fast]) - lens[fast]), lens[fast])
            out[offsets + np.arange(len(pieces_of_fast))] = pieces_of_fast
        for i, ids in zip(slow, slow_ids):
            out[starts[i]:starts[i] + len(ids)] = ids
        return out, lens

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """Text from ids, joining ``##`` pieces and cleaning spaces before punctuation like HF's decode."""
        text = self._rust.decode(self._check_ids(ids), skip_special_tokens=skip_special_tokens)
        # The Rust decoder cleans up per token; HF's decode also cleans the joined string (" ' " -> "'").
        for before, after in _CLEANUP:
            text = text.replace(before, after)
        return text

    def convert_ids_to_tokens(self, ids) -> list[str]:
        return [self._tokens[i] for i in self._check_ids(ids)]

    def token_to_id(self, token: str) -> int | None:
        return self._vocab.get(token)

    def save(self, directory: str) -> str:
        """Writes ``vocab.txt`` and an HF-compatible ``tokenizer_config.json``; returns the vocab path."""
        directory = os.fspath(directory)
        config = {"do_lower_case": self.do_lower_case, "strip_accents": self.strip_accents,
                  "tokenize_chinese_chars": self.tokenize_chinese_chars, "tokenizer_class": "BertTokenizer",
                  "unk_token": UNK, "sep_token": SEP, "pad_token": PAD, "cls_token": CLS, "mask_token": MASK}
        vocab_path = os.path.join(directory, WORDPIECE_VOCAB_NAME)
        fileio.atomic_write(vocab_path, self._vocab_bytes())
        fileio.atomic_write(os.path.join(directory, CONFIG_NAME), (json.dumps(config, indent=2) + "\n").encode())
        return vocab_path


# ------------------------------------------------------------------------------------- SentencePiece
class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model (unigram or BPE) with the BERT special pieces.

    Args:
      model: path of a ``.model`` file.
      do_lower_case: None: from ``<prefix>.json`` / tokenizer_config.json beside the model, else whether the
        model's own normalizer case-folds (``nmt_nfkc_cf``). True on a model that does not case-fold
        lower-cases in Python first; False on a case-folding model is an error (it cannot be undone).
    """

    kind = "sentencepiece"

    def __init__(self, model: str, do_lower_case: bool | None = None):
        import sentencepiece as spm

        path = os.fspath(model)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ValueError(f"cannot read SentencePiece model {path}: {e}") from e
        expected = "expected a SentencePiece .model file (e.g. from scripts/train_tokenizer.py)"
        if not data:
            raise ValueError(f"SentencePiece model {path} is empty; {expected}.")
        sp = spm.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(data)
        except (RuntimeError, OSError) as e:
            raise ValueError(f"SentencePiece model {path} cannot be parsed ({str(e).strip()}); {expected}.") from e
        if sp.get_piece_size() == 0:
            raise ValueError(f"SentencePiece model {path} has no pieces; {expected}.")
        self._sp = sp
        self._model_bytes = data
        self._model_case_folds = sp.normalize("ABC") == sp.normalize("abc")

        if do_lower_case is None:
            do_lower_case = _lowercase_setting(path)
        if do_lower_case is None:
            do_lower_case = self._model_case_folds
        if not do_lower_case and self._model_case_folds:
            raise ValueError(f"SentencePiece model {path} lower-cases text in its own normalizer (nmt_nfkc_cf), "
                             "so do_lower_case=False cannot be honoured; pass do_lower_case=None or True, or "
                             "train a cased model (scripts/train_tokenizer.py without --lowercase).")
        self._python_lower = bool(do_lower_case) and not self._model_case_folds

        n = sp.get_piece_size()
        pieces = [sp.id_to_piece(i) for i in range(n)]
        special = {}
        for token in SPECIAL_TOKENS:
            i = sp.piece_to_id(token)
            if sp.id_to_piece(i) == token:
                special[token] = i
        # Models from other tools (ALBERT) name pad/unk <pad>/<unk>; SentencePiece knows them by role.
        if PAD not in special and sp.pad_id() >= 0:
            special[PAD] = sp.pad_id()
        if UNK not in special and sp.unk_id() >= 0:
            special[UNK] = sp.unk_id()
        missing = [t for t in SPECIAL_TOKENS if t not in special]
        if missing:
            raise ValueError(f"SentencePiece model {path} lacks the special piece(s) {', '.join(missing)}; train it "
                             "with scripts/train_tokenizer.py, which reserves [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4.")
        self._pieces = pieces
        self._piece_ids = {p: i for i, p in enumerate(pieces)}
        controls = [i for i in range(n) if sp.is_control(i)]
        table = np.array([p.startswith("\u2581") for p in pieces], dtype=bool)
        super().__init__(path=path, vocab_size=n, do_lower_case=do_lower_case, special=special,
                         extra_special_ids=controls, word_start_table=table, fingerprint_payload=data)

    @property
    def model_case_folds(self) -> bool:
        """Whether the model's own normalizer case-folds (trained with ``--lowercase``)."""
        return self._model_case_folds

    def _prep(self, text: str) -> str:
        if not isinstance(text, str):
            raise TypeError(f"expected str, got {type(text).__name__}")
        return text.lower() if self._python_lower else text

    def normalize(self, text: str) -> str:
        """The text as the model sees it (NFKC, whitespace runs collapsed, case folded if lower-casing);
        ``decode(encode(x)) == normalize(x)`` whenever no piece of x is unknown."""
        return self._sp.normalize(self._prep(text)).replace("\u2581", " ").strip(" ")

    def tokenize(self, text: str) -> list[str]:
        return self._sp.encode(self._prep(text), out_type=str)

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(self._prep(text), out_type=int)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a list of strings, not one string; use encode()")
        texts = [self._prep(t) for t in texts]
        return self._sp.encode(texts, out_type=int, num_threads=os.cpu_count() or 1) if texts else []

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        ids = self._check_ids(ids)
        if skip_special_tokens:
            ids = [i for i in ids if i not in self.special_ids]
        return self._sp.decode(ids)

    def convert_ids_to_tokens(self, ids) -> list[str]:
        return [self._pieces[i] for i in self._check_ids(ids)]

    def token_to_id(self, token: str) -> int | None:
        return self._piece_ids.get(token)

    def save(self, directory: str) -> str:
        """Writes ``spiece.model`` (the model bytes unchanged) and ``tokenizer_config.json``; returns the model path."""
        directory = os.fspath(directory)
        model_path = os.path.join(directory, SENTENCEPIECE_MODEL_NAME)
        fileio.atomic_write(model_path, self._model_bytes)
        config = {"do_lower_case": self.do_lower_case, "tokenizer_kind": self.kind}
        fileio.atomic_write(os.path.join(directory, CONFIG_NAME), (json.dumps(config, indent=2) + "\n").encode())
        return model_path


# ------------------------------------------------------------------------------------------- loading
def _wordpiece_from_tokenizer_json(path: str, do_lower_case: bool | None) -> WordPieceTokenizer:
    """A WordPiece tokenizer from an HF ``tokenizer.json`` (for model dirs that ship no vocab.txt)."""
    obj = _read_json_dict(path)
    model = (obj or {}).get("model") or {}
    if model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
        raise ValueError(f"{path} is not a WordPiece tokenizer.json (model type {model.get('type')!r}); "
                         "expected a BERT vocab.txt, a SentencePiece .model, or a WordPiece tokenizer.json.")
    vocab = model["vocab"]
    tokens = [None] * len(vocab)
    for token, i in vocab.items():
        if not isinstance(i, int) or not 0 <= i < len(tokens) or tokens[i] is not None:
            raise ValueError(f"{path}: WordPiece vocab ids are not 0..{len(vocab) - 1} without gaps (token {token!r})")
        tokens[i] = token
    normalizer = obj.get("normalizer") or {}
    if do_lower_case is None:
        do_lower_case = _lowercase_setting(path, sidecar=False)
    if do_lower_case is None and normalizer.get("type") == "BertNormalizer":
        do_lower_case = bool(normalizer.get("lowercase"))
    strip_accents = normalizer.get("strip_accents") if normalizer.get("type") == "BertNormalizer" else None
    chinese = normalizer.get("handle_chinese_chars", True) if normalizer.get("type") == "BertNormalizer" else True
    return WordPieceTokenizer(tokens, do_lower_case, strip_accents=strip_accents,
                              tokenize_chinese_chars=bool(chinese), path=path)


def _find_in_directory(directory: str) -> str:
    """The one tokenizer file in an HF model dir / checkpoint dir."""
    vocab = os.path.join(directory, WORDPIECE_VOCAB_NAME)
    models = sorted(f for f in os.listdir(directory) if f.endswith(".model")
                    and os.path.isfile(os.path.join(directory, f)))
    if os.path.isfile(vocab) and models:
        raise ValueError(f"{directory} holds both {WORDPIECE_VOCAB_NAME} and SentencePiece model(s) {models}; "
                         "pass the file to use to load_tokenizer instead of the directory.")
    if os.path.isfile(vocab):
        return vocab
    if SENTENCEPIECE_MODEL_NAME in models:
        return os.path.join(directory, SENTENCEPIECE_MODEL_NAME)
    if len(models) == 1:
        return os.path.join(directory, models[0])
    if len(models) > 1:
        raise ValueError(f"{directory} holds several SentencePiece models {models}; pass the one to use.")
    tokenizer_json = os.path.join(directory, "tokenizer.json")
    if os.path.isfile(tokenizer_json):
        return tokenizer_json
    raise ValueError(f"no tokenizer in directory {directory}: expected {WORDPIECE_VOCAB_NAME} (WordPiece), a "
                     f"SentencePiece *.model (e.g. {SENTENCEPIECE_MODEL_NAME}) or an HF tokenizer.json.")


def load_tokenizer(path, do_lower_case: bool | None = None) -> Tokenizer:
    """The tokenizer stored at ``path``.

    ``path`` is a WordPiece ``vocab.txt`` (any ``*.txt``), a SentencePiece ``*.model``, an HF
    ``tokenizer.json`` with a WordPiece model, or a directory holding one of them (HF model dir, bert_jax
    checkpoint dir, or what :meth:`Tokenizer.save` wrote). ``do_lower_case=None`` takes the setting recorded
    beside the file (``<stem>.json``, then ``tokenizer_config.json``), else infers it (a vocab without upper-case
    letters is uncased; a SentencePiece model is lower-casing if its normalizer case-folds).
    Anything that is not a tokenizer raises one ValueError naming the path and what was expected.
    """
    if path is None or (isinstance(path, str) and not path):
        raise ValueError("load_tokenizer needs a path to a vocab.txt, a SentencePiece .model or a directory; got "
                         f"{path!r}")
    path = os.fspath(path)
    if do_lower_case is not None and not isinstance(do_lower_case, bool):
        raise ValueError(f"do_lower_case must be True, False or None, got {do_lower_case!r}")
    if not os.path.exists(path):
        raise ValueError(f"tokenizer path {path} does not exist; expected a WordPiece vocab.txt, a SentencePiece "
                         ".model, or a directory holding one.")
    if os.path.isdir(path):
        path = _find_in_directory(path)
    name = os.path.basename(path).lower()
    if name.endswith(".txt"):
        return WordPieceTokenizer(path, do_lower_case)
    if name.endswith(".model"):
        return SentencePieceTokenizer(path, do_lower_case)
    if name.endswith(".json"):
        return _wordpiece_from_tokenizer_json(path, do_lower_case)
    raise ValueError(f"unknown tokenizer file type {os.path.splitext(name)[1] or '(no extension)'!r} for {path}; "
                     "expected a WordPiece vocab.txt (*.txt), a SentencePiece *.model, an HF tokenizer.json, "
                     "or a directory holding one.")


def check_vocab_size(tokenizer: Tokenizer, model_vocab_size: int, what: str = "model") -> None:
    """ValueError unless the tokenizer's vocab size equals the model's embedding rows (``vocab_size``)."""
    n_tok, n_model = int(tokenizer.vocab_size), int(model_vocab_size)
    if n_tok == n_model:
        return
    if n_tok > n_model:
        consequence = (f"ids up to {n_tok - 1} would index past the {what}'s {n_model}-row embedding table")
    else:
        consequence = f"the {what} has {n_model - n_tok} embedding rows no token can reach"
    raise ValueError(
        f"vocab size mismatch: tokenizer {tokenizer.path} ({tokenizer.kind}) has {n_tok} ids but the {what} "
        f"config has vocab_size={n_model}; {consequence}. Use the tokenizer the {what} was trained with, or set "
        f"the {what}'s vocab_size to {n_tok} (and retrain/convert its embeddings).")
