"""Pretraining instances: pure numpy functions of (document tokens, seed) -> masked sentence pairs.

The algorithm is the original BERT ``create_pretraining_data.py`` (google-research/bert):

* Each document is walked sentence by sentence, filling a chunk up to a target length (``max_seq_length - 3``;
  with probability ``short_seq_prob`` a random length in ``[2, max_seq_length - 3]``, drawn once per document
  as the original does). The chunk is split at a random sentence boundary into A and B.
* NSP: with probability 0.5 (always, if the chunk has one sentence) B is replaced by a segment from a random
  other document, starting at a random sentence, and the unused sentences of the chunk are put back;
  ``next_sentence_labels`` is **1 for a random next** (as the original).
  SOP (``sentence_order=True``, ALBERT): B is the real continuation and with probability 0.5 A and B are
  swapped (label 1); a one-sentence chunk still takes a random B with label 1, as ALBERT's script does.
* ``truncate_seq_pair``: repeatedly trim one token from the longer of A and B (B on a tie), at the front or
  the back with probability 1/2 -- computed in closed form (the counts are deterministic, the front/back
  split is binomial), so A and B stay contiguous spans of the source.
* ``[CLS] A [SEP] B [SEP]``, then masking: ``num_to_predict = min(max_predictions, max(1, round(n *
  masked_lm_prob)))`` with ``n`` the length including ``[CLS]``/``[SEP]``; candidates are shuffled (whole
  words as units with whole-word masking) and taken greedily while they fit; each chosen token becomes
  ``[MASK]`` 80%, a random id (uniform over the vocab) 10%, itself 10%. ``[CLS]``/``[SEP]``/padding are never
  masked; with whole-word masking a word is masked entirely or not at all.

Differences from the original, all deliberate: the random streams differ (numpy / ``random`` seeded per
shard x dupe round x chunk, so output is deterministic for a seed and shard count whatever the number of
workers); instances are shuffled within a chunk of documents rather than globally (the input pipeline
shuffles again); a whole word never spans a ``[SEP]``.

:func:`mask_tokens` is the one masking function: the offline script uses it, and so does the input
pipeline's dynamic (on-the-fly) masking via :func:`dynamic_mask_batch`.
"""

from __future__ import annotations

import dataclasses
import os
import random
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "TokenStore", "TokenStoreWriter", "InstanceConfig", "truncation_counts", "truncate_seq_pair",
    "document_pairs", "assemble_pairs", "structural_special_mask", "mask_tokens", "dynamic_mask_batch",
    "create_instances", "derive_rngs", "KeyedRandom",
]


# ---------------------------------------------------------------------------------------- token store
@dataclasses.dataclass(frozen=True)
class TokenStore:
    """Tokenised documents, flat: sentence ``s`` is ``tokens[sentence_starts[s]:sentence_starts[s + 1]]``
    and document ``d`` is sentences ``doc_starts[d]:doc_starts[d + 1]`` (contiguous in ``tokens``).
    Every document has at least one sentence and every sentence at least one token."""

    tokens: np.ndarray           # int32 [T]
    sentence_starts: np.ndarray  # int64 [S + 1]
    doc_starts: np.ndarray       # int64 [D + 1]

    @property
    def num_docs(self) -> int:
        return len(self.doc_starts) - 1

    @property
    def num_sentences(self) -> int:
        return len(self.sentence_starts) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.sentence_starts[-1])

    def doc_num_tokens(self) -> np.ndarray:
        """Tokens per document, int64 ``[D]``."""
        return np.diff(self.sentence_starts[self.doc_starts])

    def document(self, d: int) -> list[np.ndarray]:
        """Document ``d`` as a list of sentence token arrays."""
        s0, s1 = int(self.doc_starts[d]), int(self.doc_starts[d + 1])
        return [self.tokens[self.sentence_starts[s]:self.sentence_starts[s + 1]] for s in range(s0, s1)]

    @classmethod
    def from_documents(cls, documents: Iterable[Sequence[Sequence[int]]]) -> "TokenStore":
        """From documents given as lists of sentences of token ids; empty sentences/documents are dropped."""
        w = TokenStoreWriter()
        for doc in documents:
            w.add_document(doc)
        return w.finish()

    def save(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        for name in ("tokens", "sentence_starts", "doc_starts"):
            np.save(os.path.join(directory, name + ".npy"), getattr(self, name))

    @classmethod
    def load(cls, directory: str, mmap: bool = True) -> "TokenStore":
        mode = "r" if mmap else None
        # np.asarray drops the memmap subclass (its per-index overhead), keeping the mapping.
        return cls(*(np.asarray(np.load(os.path.join(directory, name + ".npy"), mmap_mode=mode))
                     for name in ("tokens", "sentence_starts", "doc_starts")))


class TokenStoreWriter:
    """Accumulates tokenised documents into a :class:`TokenStore` (numpy chunks: compact for big corpora)."""

    def __init__(self):
        self._token_chunks: list[np.ndarray] = []
        self._sentence_len_chunks: list[np.ndarray] = []
        self._doc_count_chunks: list[np.ndarray] = []
        self.num_docs = 0

    def add_document(self, sentences: Sequence[Sequence[int]]) -> bool:
        """Adds a document (sentences of ids); returns False (and adds nothing) if it has no tokens."""
        lens = [len(s) for s in sentences if len(s)]
        if not lens:
            return False
        tokens = np.fromiter((t for s in sentences for t in s), dtype=np.int32, count=sum(lens))
        self.add_flat(tokens, lens, [len(lens)])
        return True

    def add_flat(self, tokens: np.ndarray, sentence_lens: Sequence[int], doc_sentence_counts: Sequence[int]):
        """Adds many documents at once: ``tokens`` flat, ``sentence_lens`` all > 0, counts all > 0."""
        tokens = np.asarray(tokens, dtype=np.int32)
        lens = np.asarray(sentence_lens, dtype=np.int64)
        counts = np.asarray(doc_sentence_counts, dtype=np.int64)
        if lens.sum() != tokens.size or counts.sum() != lens.size or (lens <= 0).any() or (counts <= 0).any():
            raise ValueError("add_flat: sentence lengths must be > 0 and sum to the number of tokens, and "
                             "sentence counts must be > 0 and sum to the number of sentences")
        self._token_chunks.append(tokens)
        self._sentence_len_chunks.append(lens)
        self._doc_count_chunks.append(counts)
        self.num_docs += len(counts)

    def finish(self) -> TokenStore:
        def cat(chunks, dtype):
            return np.concatenate(chunks) if chunks else np.zeros((0,), dtype)

        tokens = cat(self._token_chunks, np.int32)
        lens = cat(self._sentence_len_chunks, np.int64)
        counts = cat(self._doc_count_chunks, np.int64)
        self._token_chunks, self._sentence_len_chunks, self._doc_count_chunks = [], [], []
        sentence_starts = np.zeros((len(lens) + 1,), dtype=np.int64)
        np.cumsum(lens, out=sentence_starts[1:])
        doc_starts = np.zeros((len(counts) + 1,), dtype=np.int64)
        np.cumsum(counts, out=doc_starts[1:])
        return TokenStore(tokens, sentence_starts, doc_starts)


# -------------------------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class InstanceConfig:
    """What the instances look like (the original's flags) and the tokenizer ids they need."""

    max_seq_length: int = 128
    max_predictions_per_seq: int = 20
    masked_lm_prob: float = 0.15
    short_seq_prob: float = 0.1
    whole_word_mask: bool = False
    sentence_order: bool = False
    dynamic_masking: bool = False     # True: write unmasked pairs (masks drawn by the input pipeline)
    vocab_size: int = 0
    cls_id: int = 0
    sep_id: int = 0
    pad_id: int = 0
    mask_id: int = 0
    word_start_table: np.ndarray | None = None  # bool [vocab_size]; needed for whole_word_mask

    def __post_init__(self):
        if self.max_seq_length < 5:
            raise ValueError(f"max_seq_length={self.max_seq_length} is too short: [CLS] A [SEP] B [SEP] needs at "
                             "least 5 positions; use max_seq_length >= 5")
        if not 0.0 <= self.masked_lm_prob <= 1.0:
            raise ValueError(f"masked_lm_prob={self.masked_lm_prob} must be in [0, 1]")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise ValueError(f"short_seq_prob={self.short_seq_prob} must be in [0, 1]")
        if self.max_predictions_per_seq < 1 and not self.dynamic_masking:
            raise ValueError(f"max_predictions_per_seq={self.max_predictions_per_seq} must be >= 1")
        if self.vocab_size <= 0:
            raise ValueError(f"vocab_size={self.vocab_size} must be > 0")
        if self.whole_word_mask and (self.word_start_table is None or len(self.word_start_table) != self.vocab_size):
            raise ValueError("whole_word_mask needs word_start_table (bool [vocab_size]) from the tokenizer")

    @classmethod
    def from_tokenizer(cls, tokenizer, **kwargs) -> "InstanceConfig":
        return cls(vocab_size=tokenizer.vocab_size, cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id,
                   pad_id=tokenizer.pad_id, mask_id=tokenizer.mask_id,
                   word_start_table=np.asarray(tokenizer.word_start_table, dtype=bool), **kwargs)


def derive_rngs(*entropy: int) -> tuple[random.Random, np.random.Generator]:
    """A ``random.Random`` (scalar decisions) and a numpy Generator (vectorised ones) from integers."""
    if any(int(e) < 0 for e in entropy):
        raise ValueError(f"seeds must be non-negative integers, got {entropy}")
    ss = np.random.SeedSequence([int(e) for e in entropy])
    py_seed = int.from_bytes(ss.generate_state(4, np.uint32).tobytes(), "little")
    return random.Random(py_seed), np.random.default_rng(ss.spawn(1)[0])


class KeyedRandom:
    """Counter-based random numbers for a batch of rows: row ``r`` gets the same numbers whatever batch, host or
    position it is in, as a function of ``(key, row_ids[r], column, draw number)`` (a splitmix64 hash).

    Duck-types the two ``numpy.random.Generator`` methods :func:`mask_tokens` uses (``random`` and
    ``integers`` with shape ``[rows, columns]``), so dynamic masks depend only on (seed, epoch, example index).
    """

    _GOLDEN = np.uint64(0x9E3779B97F4A7C15)

    def __init__(self, key: Sequence[int], row_ids: np.ndarray):
        k = np.uint64(0)
        for part in key:
            k = self._mix(np.asarray([k ^ np.uint64(int(part) & 0xFFFFFFFFFFFFFFFF)], dtype=np.uint64))[0]
        self._key = k
        self._rows = self._mix(np.asarray(row_ids, dtype=np.uint64) * self._GOLDEN ^ k)
        self._draw = 0

    @staticmethod
    def _mix(z: np.ndarray) -> np.ndarray:
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))

    def _bits(self, shape) -> np.ndarray:
        n, width = shape
        if n != len(self._rows):
            raise ValueError(f"KeyedRandom has {len(self._rows)} rows, asked for {n}")
        self._draw += 1
        cols = np.arange(width, dtype=np.uint64) * np.uint64(0xD1B54A32D192ED03)
        salt = self._mix(np.asarray([self._key + np.uint64(self._draw)], dtype=np.uint64))[0]
        return self._mix(self._rows[:, None] ^ (cols[None, :] + salt))

    def random(self, shape, dtype=np.float64) -> np.ndarray:
        bits = self._bits(shape)
        if np.dtype(dtype) == np.float32:
            return (bits >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)
        return (bits >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)

    def integers(self, low: int, high: int, size, dtype=np.int64) -> np.ndarray:
        span = np.uint64(high - low)
        return (low + (self._bits(size) % span).astype(np.int64)).astype(dtype)


# -------------------------------------------------------------------------------------------- pairs
def truncation_counts(len_a: int, len_b: int, max_num_tokens: int) -> tuple[int, int]:
    """How many tokens the original's ``truncate_seq_pair`` removes from A and from B.

    The original removes one token at a time from the longer sequence (B on a tie) until the pair fits;
    the counts follow in closed form.
    """
    excess = len_a + len_b - max_num_tokens
    if excess <= 0:
        return 0, 0
    if len_a > len_b:
        diff = len_a - len_b
        if excess <= diff:
            return excess, 0
        r = excess - diff   # now equal: B, A, B, A, ...
        return diff + r // 2, (r + 1) // 2
    diff = len_b - len_a
    if excess <= diff:
        return 0, excess
    r = excess - diff
    return r // 2, diff + (r + 1) // 2


def truncate_seq_pair(tokens_a: list, tokens_b: list, max_num_tokens: int, rnd: random.Random) -> None:
    """The original's in-place ``truncate_seq_pair`` on lists (front or back with probability 1/2)."""
    trim_a, trim_b = truncation_counts(len(tokens_a), len(tokens_b), max_num_tokens)
    for tokens, trim in ((tokens_a, trim_a), (tokens_b, trim_b)):
        front = rnd.getrandbits(trim).bit_count() if trim else 0
        del tokens[:front]
        if trim - front:
            del tokens[len(tokens) - (trim - front):]


def document_pairs(store: TokenStore, doc: int, max_num_tokens: int, short_seq_prob: float,
                   rnd: random.Random, sentence_order: bool = False, out: list | None = None) -> list:
    """Sentence pairs of one document, as the original's ``create_instances_from_document``.

    Returns (appends to ``out``) tuples ``(a_start, a_len, b_start, b_len, label)``: A and B are the token
    spans ``store.tokens[start:start + len]`` after truncation to ``max_num_tokens`` in total.
    """
    out = [] if out is None else out
    ss = store.sentence_starts
    doc_starts = store.doc_starts
    s0, s1 = int(doc_starts[doc]), int(doc_starts[doc + 1])
    starts = ss[s0:s1 + 1].tolist()   # token offsets of this document's sentences
    n = s1 - s0
    num_docs = store.num_docs
    target = max_num_tokens
    rand, getrandbits = rnd.random, rnd.getrandbits
    if rand() < short_seq_prob:
        target = 2 + int(rand() * (max_num_tokens - 1))     # uniform in [2, max_num_tokens]
    c0 = 0  # first sentence of the current chunk
    i = 0
    while i < n:
        if i == n - 1 or starts[i + 1] - starts[c0] >= target:
            m = i - c0 + 1
            a_end = c0 + (1 + int(rand() * (m - 1)) if m >= 2 else 1)     # uniform in [1, m - 1]
            a_start = starts[c0]
            a_len = starts[a_end] - a_start
            if m == 1 or (not sentence_order and rand() < 0.5):
                label = 1
                target_b = target - a_len
                r = doc
                for _ in range(10):
                    r = int(rand() * num_docs)
                    if r != doc:
                        break
                r0, r1 = int(doc_starts[r]), int(doc_starts[r + 1])
                rs = r0 + int(rand() * (r1 - r0))
                b_start = int(ss[rs])
                # the original extends sentence by sentence until len(B) >= target_b (at least one)
                k = int(ss[rs + 1:r1 + 1].searchsorted(b_start + target_b)) + rs + 1
                b_len = int(ss[min(k, r1)]) - b_start
                i = a_end - 1  # put the unused sentences of the chunk back
            else:
                b_start = starts[a_end]
                b_len = starts[i + 1] - b_start
                label = 0
                if sentence_order and rand() < 0.5:
                    label = 1
                    a_start, a_len, b_start, b_len = b_start, b_len, a_start, a_len
            trim_a, trim_b = truncation_counts(a_len, b_len, max_num_tokens)
            if trim_a:
                a_start += getrandbits(trim_a).bit_count()
                a_len -= trim_a
            if trim_b:
                b_start += getrandbits(trim_b).bit_count()
                b_len -= trim_b
            out.append((a_start, a_len, b_start, b_len, label))
            c0 = i + 1
        i += 1
    return out


def assemble_pairs(tokens: np.ndarray, pairs: np.ndarray, max_seq_length: int, cls_id: int, sep_id: int,
                   pad_id: int) -> dict[str, np.ndarray]:
    """``[CLS] A [SEP] B [SEP]`` padded to ``max_seq_length`` for pairs ``[N, 5]`` from :func:`document_pairs`.

    Returns int32 ``input_ids``, ``attention_mask``, ``token_type_ids`` ``[N, L]``, ``next_sentence_labels [N, 1]``
    and the bool ``special_mask [N, L]`` of the [CLS]/[SEP]/padding positions.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 5)
    a_start, a_len, b_start, b_len, label = (pairs[:, k:k + 1] for k in range(5))
    if np.any(a_len < 1) or np.any(b_len < 1) or np.any(a_len + b_len + 3 > max_seq_length):
        raise AssertionError("pairs must have 1 <= len(A), 1 <= len(B), len(A) + len(B) + 3 <= max_seq_length")
    n = len(pairs)
    j = np.arange(max_seq_length, dtype=np.int64)[None, :]
    sep1 = a_len + 1
    total = a_len + b_len + 3
    in_a = (j >= 1) & (j < sep1)
    in_b = (j > sep1) & (j < total - 1)
    text_pos = in_a | in_b
    src = np.where(in_a, a_start - 1 + j, b_start - sep1 - 1 + j)
    src[~text_pos] = 0
    ids = np.asarray(tokens[src.reshape(-1)], dtype=np.int32).reshape(n, max_seq_length)
    ids[~text_pos] = pad_id
    rows = np.arange(n)
    ids[:, 0] = cls_id
    ids[rows, sep1[:, 0]] = sep_id
    ids[rows, total[:, 0] - 1] = sep_id
    attention_mask = (j < total).astype(np.int32)
    token_type_ids = ((j > sep1) & (j < total)).astype(np.int32)
    return {"input_ids": ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
            "next_sentence_labels": label.astype(np.int32), "special_mask": ~text_pos}


def structural_special_mask(attention_mask: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
    """Positions of ``[CLS]``, both ``[SEP]`` and padding in ``[CLS] A [SEP] B [SEP]`` rows, from the
    layout alone (so a literal ``[SEP]`` inside the text is still a maskable token)."""
    attention_mask = np.asarray(attention_mask)
    token_type_ids = np.asarray(token_type_ids)
    length = attention_mask.sum(axis=-1, keepdims=True)
    first_sep = ((token_type_ids == 0) & (attention_mask > 0)).sum(axis=-1, keepdims=True) - 1
    j = np.arange(attention_mask.shape[-1])
    return (j == 0) | (j == first_sep) | (j == length - 1) | (j >= length)


# ------------------------------------------------------------------------------------------- masking
def mask_tokens(ids: np.ndarray, special_mask: np.ndarray, word_starts: np.ndarray | None,
                rng: np.random.Generator, masked_lm_prob: float, max_predictions: int, vocab_size: int,
                mask_id: int, whole_word: bool = False, lengths: np.ndarray | None = None
                ) -> dict[str, np.ndarray]:
    """Masked-LM masking of a batch of sequences, vectorised (the original's rules).

    Args:
      ids: int ``[N, L]`` (or ``[L]``) token ids.
      special_mask: bool like ``ids``; True where a token may never be masked ([CLS], [SEP], padding).
      word_starts: bool like ``ids``; True where a token begins a word (``tokenizer.word_start_table[ids]``).
        Only used with ``whole_word``; a word is a start token plus the following non-start tokens
        (a special token also ends a word).
      rng: numpy Generator, or a :class:`KeyedRandom` (masks a function of each row's id).
      masked_lm_prob, max_predictions: ``num_to_predict = min(max_predictions, max(1, round(n * p)))``
        with ``n`` the sequence length incl. [CLS]/[SEP] (``lengths``, default ``L``).
      vocab_size, mask_id: for the 80% ``[MASK]`` / 10% random id / 10% unchanged replacement.
      whole_word: mask whole words (all pieces or none), choosing words in random order while they fit.
    Returns:
      ``input_ids`` (masked, int32 ``[N, L]``), ``masked_lm_positions`` / ``masked_lm_ids`` (int32) and
      ``masked_lm_weights`` (float32) ``[N, max_predictions]``: positions ascending, padded with 0 / 0 / 0.0.
    """
    ids = np.asarray(ids)
    squeeze = ids.ndim == 1
    if squeeze:
        ids = ids[None]
        special_mask = np.asarray(special_mask)[None]
        word_starts = None if word_starts is None else np.asarray(word_starts)[None]
        lengths = None if lengths is None else np.asarray(lengths).reshape(1)
    n_rows, seq_len = ids.shape
    special_mask = np.asarray(special_mask, dtype=bool)
    if special_mask.shape != ids.shape:
        raise ValueError(f"special_mask shape {special_mask.shape} != ids shape {ids.shape}")
    cand = ~special_mask
    if lengths is None:
        lengths = np.full((n_rows,), seq_len, dtype=np.int64)
    lengths = np.asarray(lengths).reshape(n_rows)
    k = np.minimum(max_predictions, np.maximum(1, np.round(lengths * masked_lm_prob).astype(np.int64)))

    if whole_word:
        if word_starts is None:
            raise ValueError("whole_word masking needs word_starts")
        word_starts = np.asarray(word_starts, dtype=bool)
        prev_cand = np.zeros_like(cand)
        prev_cand[:, 1:] = cand[:, :-1]
        starts = cand & (word_starts | ~prev_cand)
    else:
        starts = cand
    gid = np.cumsum(starts, axis=1) - 1          # unit (word or token) index of each candidate
    num_units = starts.sum(axis=1)
    gid = np.maximum(gid, 0)
    keys = rng.random((n_rows, seq_len), dtype=np.float32)
    keys[np.arange(seq_len)[None, :] >= num_units[:, None]] = 2.0   # nonexistent units sort last
    order = np.argsort(keys, axis=1)              # units in random order
    if whole_word:
        flat = (np.arange(n_rows)[:, None] * seq_len + gid)[cand]
        sizes = np.bincount(flat, minlength=n_rows * seq_len).reshape(n_rows, seq_len)
        sorted_sizes = np.take_along_axis(sizes, order, axis=1)
        take_sorted = np.zeros((n_rows, seq_len), dtype=bool)
        remaining = k.copy()
        for col in range(int(num_units.max(initial=0))):
            s = sorted_sizes[:, col]
            take = (s > 0) & (s <= remaining)
            take_sorted[:, col] = take
            remaining -= s * take
            if not remaining.any():
                break
    else:
        take_sorted = np.arange(seq_len)[None, :] < np.minimum(k, num_units)[:, None]
    take_unit = np.zeros((n_rows, seq_len), dtype=bool)
    np.put_along_axis(take_unit, order, take_sorted, axis=1)
    masked = cand & np.take_along_axis(take_unit, gid, axis=1)

    u = rng.random((n_rows, seq_len), dtype=np.float32)
    out_ids = ids.astype(np.int32, copy=True)
    out_ids[masked & (u < 0.8)] = mask_id
    rand_pos = masked & (u >= 0.9)
    if rand_pos.any():   # drawn for every position so that a row's draws do not depend on the other rows
        out_ids[rand_pos] = rng.integers(0, vocab_size, size=(n_rows, seq_len), dtype=np.int32)[rand_pos]

    # masked positions in row-major order -> [N, max_predictions] slots (ascending positions per row)
    rows, cols = np.nonzero(masked)
    counts = np.bincount(rows, minlength=n_rows)
    row_starts = np.zeros((n_rows,), dtype=np.int64)
    np.cumsum(counts[:-1], out=row_starts[1:])
    slots = np.arange(rows.size) - row_starts[rows]
    positions = np.zeros((n_rows, max_predictions), dtype=np.int32)
    labels = np.zeros((n_rows, max_predictions), dtype=np.int32)
    weights = np.zeros((n_rows, max_predictions), dtype=np.float32)
    positions[rows, slots] = cols
    labels[rows, slots] = ids[rows, cols]
    weights[rows, slots] = 1.0
    result = {"input_ids": out_ids, "masked_lm_positions": positions, "masked_lm_ids": labels,
              "masked_lm_weights": weights}
    if squeeze:
        result = {key: v[0] for key, v in result.items()}
    return result


def dynamic_mask_batch(batch: dict, rng: np.random.Generator, *, masked_lm_prob: float, max_predictions: int,
                       vocab_size: int, mask_id: int, whole_word: bool = False,
                       word_start_table: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Masks a batch of unmasked pairs (``input_ids``, ``attention_mask``, ``token_type_ids``, ...) with
    :func:`mask_tokens`; returns the batch with the original's masked features."""
    ids = np.asarray(batch["input_ids"])
    attention_mask = np.asarray(batch["attention_mask"])
    special = structural_special_mask(attention_mask, batch["token_type_ids"])
    word_starts = None
    if whole_word:
        if word_start_table is None:
            raise ValueError("whole-word dynamic masking needs the tokenizer's word_start_table")
        word_starts = np.asarray(word_start_table, dtype=bool)[ids]
    masked = mask_tokens(ids, special, word_starts, rng, masked_lm_prob, max_predictions, vocab_size, mask_id,
                         whole_word=whole_word, lengths=attention_mask.sum(axis=-1))
    out = dict(batch)
    out.update(masked)
    return out


# ------------------------------------------------------------------------------------ whole chunks
def create_instances(store: TokenStore, doc_indices: Sequence[int], config: InstanceConfig,
                     rnd: random.Random, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """All instances of some documents (one dupe round), masked unless ``config.dynamic_masking``, in a
    random order. Returns ``{feature: array [N, ...]}`` with the record features (int32/float32), under
    the in-memory names (`bert_jax.data.records` writes them under the file's)."""
    max_num_tokens = config.max_seq_length - 3
    pairs: list = []
    for d in doc_indices:
        document_pairs(store, int(d), max_num_tokens, config.short_seq_prob, rnd, config.sentence_order, pairs)
    if not pairs:
        pairs_arr = np.zeros((0, 5), dtype=np.int64)
    else:
        pairs_arr = np.asarray(pairs, dtype=np.int64)
    pairs_arr = pairs_arr[rng.permutation(len(pairs_arr))]
    feats = assemble_pairs(store.tokens, pairs_arr, config.max_seq_length, config.cls_id, config.sep_id,
                           config.pad_id)
    special = feats.pop("special_mask")
    if config.dynamic_masking:
        return feats
    word_starts = config.word_start_table[feats["input_ids"]] if config.whole_word_mask else None
    masked = mask_tokens(feats["input_ids"], special, word_starts, rng, config.masked_lm_prob,
                         config.max_predictions_per_seq, config.vocab_size, config.mask_id,
                         whole_word=config.whole_word_mask, lengths=feats["attention_mask"].sum(axis=1))
    feats.update(masked)
    return feats
