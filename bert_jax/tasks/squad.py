"""SQuAD v1.1 / v2.0: examples, sliding-window features, and n-best span decoding back to the text.

Pipeline (as google-research/bert's ``run_squad.py``, on numpy arrays)::

    examples = load_squad_tfds("v2.0", "validation")       # or load_squad_json("dev-v2.0.json")
    feats = make_features(examples, tokenizer, max_seq_length=384, doc_stride=128, max_query_length=64,
                          is_training=False)
    start_logits, end_logits = <model on feats.arrays>      # float [F, max_seq_length] each
    out = postprocess(examples, feats, start_logits, end_logits, version_2=True)
    metrics.squad_evaluate(gold_answers(examples), out.predictions, version_2=True, na_probs=out.null_odds)

Features are ``[CLS] question [SEP] context-window [SEP]`` (question truncated to ``max_query_length``
pieces); a long context is covered by windows that start ``doc_stride`` pieces apart. Training labels are
the answer's first/last piece positions in the window, or 0 (the ``[CLS]`` index) when the window does not
hold the whole answer or the question has none.

Character offsets: the tokenizer interface has no offset output, so the context is split the way BERT's
basic tokenizer splits it (whitespace, then every punctuation mark and CJK character is its own word), each
word is encoded on its own with ``tokenizer.encode`` (as run_squad.py does), and each piece gets the
characters it covers inside its word (the whole word when the pieces do not spell the word out, e.g. an
``[UNK]``). A predicted span is the original context between its first piece's start and last piece's
end, so predictions keep the original case, accents and punctuation.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import unicodedata
from typing import Sequence

import numpy as np

from bert_jax import tfds_loading

__all__ = [
    "SquadExample", "SquadFeatures", "SquadPredictions", "load_squad_json", "load_squad_tfds", "gold_answers",
    "split_words", "context_pieces", "doc_windows", "make_features", "postprocess",
]


# --------------------------------------------------------------------------------------- examples
@dataclasses.dataclass
class SquadExample:
    """One question. ``answers`` are ``(text, char_start)`` pairs; empty for a v2 unanswerable question
    (``is_impossible``). Training uses the first answer; evaluation takes the max over all of them."""

    qid: str
    question: str
    context: str
    answers: list[tuple[str, int]]
    is_impossible: bool = False
    title: str = ""


def gold_answers(examples: Sequence[SquadExample]) -> dict[str, list[str]]:
    """``{qid: [gold answer texts]}`` for :func:`bert_jax.tasks.metrics.squad_evaluate`."""
    return {ex.qid: [] if ex.is_impossible else [text for text, _ in ex.answers] for ex in examples}


def load_squad_json(path: str) -> list[SquadExample]:
    """Examples of an official SQuAD JSON file (``train-v1.1.json``, ``dev-v2.0.json`` ...)."""
    path = os.fspath(path)
    try:
        with open(path, "r", encoding="utf-8") as f:
            obj = json.load(f)
    except OSError as e:
        raise ValueError(f"cannot read SQuAD file {path}: {e}") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"SQuAD file {path} is not JSON ({e}); expected the official "
                         '{"version": ..., "data": [{"title", "paragraphs": [{"context", "qas"}]}]} layout') from e
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        raise ValueError(f"SQuAD file {path} has no 'data' list; expected the official SQuAD JSON layout")
    examples = []
    for a, article in enumerate(obj["data"]):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            if "context" not in paragraph or "qas" not in paragraph:
                raise ValueError(f"{where} lacks 'context' or 'qas'; it has {sorted(paragraph)}")
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                missing = [k for k in ("id", "question", "answers") if k not in qa]
                if missing:
                    raise ValueError(f"{where}: a question lacks {missing}; it has {sorted(qa)}")
                impossible = bool(qa.get("is_impossible", False))
                answers = [] if impossible else [(ans["text"], int(ans["answer_start"])) for ans in qa["answers"]]
                examples.append(SquadExample(qid=str(qa["id"]), question=qa["question"], context=context,
                                             answers=answers, is_impossible=impossible,
                                             title=article.get("title", "")))
    if not examples:
        raise ValueError(f"SQuAD file {path} holds no questions")
    return examples


def load_squad_tfds(version: str = "v1.1", split: str = "train", *, data_dir: str | None = None,
                    download: bool = True) -> list[SquadExample]:
    """Examples of tfds ``squad/v1.1`` or ``squad/v2.0`` (splits ``train``, ``validation``)."""
    version = version if version.startswith("v") else f"v{version}"
    if version not in ("v1.1", "v2.0"):
        raise ValueError(f"unknown SQuAD version {version!r}; expected 'v1.1' or 'v2.0'")
    if split not in ("train", "validation"):
        raise ValueError(f"SQuAD has no split {split!r}; expected 'train' or 'validation'")
    import tensorflow_datasets as tfds

    ds = tfds_loading.load(f"squad/{version}", split=split, data_dir=data_dir, download=download)

    def text(x):
        return x.decode("utf-8") if isinstance(x, bytes) else str(x)

    examples = []
    for ex in tfds.as_numpy(ds):
        impossible = bool(ex.get("is_impossible", False))
        answers = [] if impossible else [(text(t), int(s)) for t, s in zip(ex["answers"]["text"],
                                                                           ex["answers"]["answer_start"])]
        examples.append(SquadExample(qid=text(ex["id"]), question=text(ex["question"]), context=text(ex["context"]),
                                     answers=answers, is_impossible=impossible, title=text(ex.get("title", b""))))
    if not examples:
        raise ValueError(f"tfds squad/{version}[{split}] is empty")
    return examples


# ------------------------------------------------------------------------------ context offsets
def _is_whitespace(c: str) -> bool:
    return c in " \t\n\r" or unicodedata.category(c) == "Zs"


def _is_punctuation(c: str) -> bool:
    cp = ord(c)
    # BERT treats every non-alphanumeric ASCII character as punctuation ("$", "^", "`" ...).
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(c).startswith("P")


# CJK ideograph blocks (BERT's _is_chinese_char), each character a word of its own.
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
               (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _is_cjk(c: str) -> bool:
    cp = ord(c)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


@functools.lru_cache(maxsize=1)
def _word_pattern() -> re.Pattern:
    """One regex for :func:`split_words`: a punctuation mark / CJK ideograph, or a run of other
    non-whitespace characters. Unicode has punctuation (P*) and space separators (Zs) only below
    U+20000, so the classes are read off that range once."""
    cats = [unicodedata.category(chr(cp)) for cp in range(0x20000)]
    ascii_punct = [cp for cp in range(128) if _is_punctuation(chr(cp))]
    punct = sorted(set(ascii_punct) | {cp for cp, c in enumerate(cats) if c[0] == "P"})
    space = sorted({9, 10, 13, 32} | {cp for cp, c in enumerate(cats) if c == "Zs"})

    def char_class(points, extra_spans=()):
        spans = []
        for cp in points:
            if spans and spans[-1][1] == cp - 1:
                spans[-1][1] = cp
            else:
                spans.append([cp, cp])
        spans += [list(r) for r in extra_spans]
        return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in spans)

    single = char_class(punct, _CJK_RANGES)
    space = char_class(space)
    return re.compile(f"[{single}]|[^{single}{space}]+")


def split_words(text: str) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` character spans of the words BERT's basic tokenizer sees: runs of
    non-space characters, with each punctuation mark and CJK ideograph a word of its own."""
    return [m.span() for m in _word_pattern().finditer(text)]


def _piece_text(tokenizer, piece: str) -> str:
    if tokenizer.kind == "sentencepiece":
        return piece.replace("\u2581", "")
    return piece[2:] if piece.startswith("##") else piece


def context_pieces(tokenizer, text: str, cache: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of ``text`` (word by word) and int32 ``[n, 2]`` character offsets ``(start, end)`` of
    each piece in ``text``. ``cache`` (word -> pieces) may be shared between calls with one tokenizer."""
    cache = {} if cache is None else cache
    words = split_words(text)
    strings = [text[s:e] for s, e in words]
    new = list(dict.fromkeys(w for w in strings if w not in cache))
    for word, pieces in zip(new, tokenizer.encode_batch(new) if new else []):
        lengths = [len(_piece_text(tokenizer, p)) for p in tokenizer.convert_ids_to_tokens(pieces)]
        # The pieces spell the word out (no [UNK], no characters changed in length by normalisation):
        # each piece covers its own characters; otherwise each covers the whole word.
        spelled = tokenizer.unk_id not in pieces and sum(lengths) == len(word)
        cache[word] = (pieces, lengths if spelled else None)
    ids, offsets = [], []
    for (ws, we), word in zip(words, strings):
        pieces, lengths = cache[word]
        ids.extend(pieces)
        if lengths is None:
            offsets.extend([(ws, we)] * len(pieces))
        else:
            pos = ws
            for n in lengths:
                offsets.append((pos, pos + n))
                pos += n
    return np.asarray(ids, dtype=np.int32), np.asarray(offsets, dtype=np.int32).reshape(-1, 2)


def doc_windows(num_pieces: int, max_doc_tokens: int, doc_stride: int) -> list[tuple[int, int]]:
    """``[(start, length), ...]`` windows over ``num_pieces`` context pieces: each at most
    ``max_doc_tokens`` long, starting ``doc_stride`` after the previous one, the last reaching the end.
    An empty context still gets one (empty) window, so its question can be answered "no answer"."""
    if max_doc_tokens < 1:
        raise ValueError(f"no room for the context: max_doc_tokens={max_doc_tokens}; raise max_seq_length or lower "
                         "max_query_length")
    if doc_stride < 1:
        raise ValueError(f"doc_stride must be >= 1, got {doc_stride}")
    windows, start = [], 0
    while True:
        length = min(num_pieces - start, max_doc_tokens)
        windows.append((start, length))
        if start + length >= num_pieces:
            return windows
        start += min(length, doc_stride)


def _max_context_mask(windows: Sequence[tuple[int, int]], w: int) -> np.ndarray:
    """Bool [length of window w]: whether window w gives each of its pieces its most central view
    (score = min(left, right context) + 0.01 * window length; first best window wins, as run_squad.py)."""
    start, length = windows[w]
    pieces = np.arange(start, start + length)
    best_score = np.full(length, -np.inf)
    best_window = np.full(length, -1)
    for k, (s, n) in enumerate(windows):
        inside = (pieces >= s) & (pieces < s + n)
        score = np.minimum(pieces - s, s + n - 1 - pieces) + 0.01 * n
        better = inside & (score > best_score)
        best_score = np.where(better, score, best_score)
        best_window = np.where(better, k, best_window)
    return best_window == w


# ---------------------------------------------------------------------------------------- features
@dataclasses.dataclass
class SquadFeatures:
    """Model features of a list of examples (one row per window).

    Attributes:
      arrays: int32 ``input_ids``, ``token_type_ids``, ``attention_mask`` ``[F, max_seq_length]``; with
        ``is_training`` also int32 ``start_positions``, ``end_positions`` ``[F]`` (0 = no answer here).
      example_index: int32 ``[F]``, the example each row belongs to.
      window_index: int32 ``[F]``, which of its example's windows the row is.
      window_start, window_length: int32 ``[F]``, the window's first context piece and piece count.
      context_start: int32 ``[F]``, position of the window's first context token in the row (len(q) + 2).
      doc_offsets: per example, int32 ``[n_pieces, 2]`` character offsets of its context pieces.
      windows: per example, its ``(start, length)`` windows.
      num_skipped: training examples dropped because the answer text is not at its ``answer_start``.
    """

    arrays: dict[str, np.ndarray]
    example_index: np.ndarray
    window_index: np.ndarray
    window_start: np.ndarray
    window_length: np.ndarray
    context_start: np.ndarray
    doc_offsets: list[np.ndarray]
    windows: list[list[tuple[int, int]]]
    num_skipped: int = 0

    def __len__(self) -> int:
        return len(self.example_index)


def _answer_char_span(ex: SquadExample) -> tuple[int, int] | None:
    """``[start, end)`` of the first answer in the context, whitespace-trimmed; None if the text is not
    at its ``answer_start``."""
    text, start = ex.answers[0]
    found = ex.context[start:start + len(text)]
    if " ".join(found.split()) != " ".join(text.split()) or not text.strip():
        return None
    lead = len(text) - len(text.lstrip())
    trail = len(text) - len(text.rstrip())
    return start + lead, start + len(text) - trail


def make_features(examples: Sequence[SquadExample], tokenizer, *, max_seq_length: int = 384, doc_stride: int = 128,
                  max_query_length: int = 64, is_training: bool = False) -> SquadFeatures:
    """Sliding-window features for ``examples``; see :class:`SquadFeatures`. With ``is_training``, answerable
    examples whose answer text is not found at ``answer_start`` are skipped (as run_squad.py does) and
    counted in ``num_skipped``."""
    if max_seq_length < 4:
        raise ValueError(f"max_seq_length={max_seq_length} is too short for [CLS] q [SEP] ctx [SEP]")
    if max_query_length < 1:
        raise ValueError(f"max_query_length must be >= 1, got {max_query_length}")
    L = max_seq_length
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    word_cache: dict = {}
    questions = tokenizer.encode_batch([ex.question for ex in examples]) if examples else []
    rows = {k: [] for k in ("input_ids", "token_type_ids", "attention_mask")}
    starts_pos, ends_pos = [], []
    example_index, window_index, window_start, window_length, context_start = [], [], [], [], []
    doc_offsets, all_windows = [], []
    skipped = 0
    for e, (ex, q_ids) in enumerate(zip(examples, questions)):
        if ex.context not in cache:
            cache[ex.context] = context_pieces(tokenizer, ex.context, word_cache)
        doc_ids, offsets = cache[ex.context]
        q_ids = list(q_ids[:max_query_length])
        windows = doc_windows(len(doc_ids), L - len(q_ids) - 3, doc_stride)
        doc_offsets.append(offsets)
        all_windows.append(windows)

        tok_span = None  # first / last context piece of the answer
        if is_training and not ex.is_impossible:
            if not ex.answers:
                raise ValueError(f"question {ex.qid} is answerable (is_impossible=False) but has no answers")
            char_span = _answer_char_span(ex)
            covering = None
            if char_span is not None and len(offsets):
                covering = np.nonzero((offsets[:, 1] > char_span[0]) & (offsets[:, 0] < char_span[1]))[0]
            if covering is None or not len(covering):
                skipped += 1
                continue
            tok_span = (int(covering[0]), int(covering[-1]))

        c0 = len(q_ids) + 2
        for w, (start, length) in enumerate(windows):
            seq = [tokenizer.cls_id, *q_ids, tokenizer.sep_id, *doc_ids[start:start + length], tokenizer.sep_id]
            ids = np.full(L, tokenizer.pad_id, dtype=np.int32)
            ids[:len(seq)] = seq
            types = np.zeros(L, dtype=np.int32)
            types[c0:len(seq)] = 1
            mask = np.zeros(L, dtype=np.int32)
            mask[:len(seq)] = 1
            rows["input_ids"].append(ids)
            rows["token_type_ids"].append(types)
            rows["attention_mask"].append(mask)
            if is_training:
                if tok_span is not None and start <= tok_span[0] and tok_span[1] < start + length:
                    starts_pos.append(tok_span[0] - start + c0)
                    ends_pos.append(tok_span[1] - start + c0)
                else:
                    starts_pos.append(0)
                    ends_pos.append(0)
            example_index.append(e)
            window_index.append(w)
            window_start.append(start)
            window_length.append(length)
            context_start.append(c0)
    arrays = {k: np.stack(v) if v else np.zeros((0, L), np.int32) for k, v in rows.items()}
    if is_training:
        arrays["start_positions"] = np.asarray(starts_pos, dtype=np.int32)
        arrays["end_positions"] = np.asarray(ends_pos, dtype=np.int32)

    def i32(x):
        return np.asarray(x, dtype=np.int32)

    return SquadFeatures(arrays=arrays, example_index=i32(example_index), window_index=i32(window_index),
                         window_start=i32(window_start),
                         window_length=i32(window_length), context_start=i32(context_start),
                         doc_offsets=doc_offsets, windows=all_windows, num_skipped=skipped)


# ---------------------------------------------------------------------------------------- decoding
@dataclasses.dataclass
class SquadPredictions:
    """``predictions``: qid -> answer text ("" = no answer); ``nbest``: qid -> list of ``{"text",
    "probability", "start_logit", "end_logit"}``; ``null_odds``: qid -> null score minus the best span's
    score (v2; the value :func:`~bert_jax.tasks.metrics.squad_evaluate` takes as ``na_probs``)."""

    predictions: dict[str, str]
    nbest: dict[str, list[dict]]
    null_odds: dict[str, float]


def _top(x: np.ndarray, k: int) -> np.ndarray:
    # Highest first; ties keep the lower index first, as run_squad.py's stable sort.
    return np.argsort(-x, kind="stable")[:k]


def postprocess(examples: Sequence[SquadExample], features: SquadFeatures, start_logits, end_logits, *,
                n_best_size: int = 20, max_answer_length: int = 30, version_2: bool = False,
                null_score_diff_threshold: float = 0.0) -> SquadPredictions:
    """Answers from per-token start/end logits ``[F, max_seq_length]``, as run_squad.py decodes them:
    the ``n_best_size`` best starts x ends of each window, kept when both are context tokens, the start
    has its most central view in this window, ``start <= end`` and the span has at most
    ``max_answer_length`` pieces; ranked by start + end logit over all windows, duplicates (same text)
    dropped. v2: the null score is the smallest ``start[0] + end[0]`` over the windows, and the answer is
    "" when ``null - best span score > null_score_diff_threshold``."""
    start_logits = np.asarray(start_logits, dtype=np.float64)
    end_logits = np.asarray(end_logits, dtype=np.float64)
    F = len(features)
    if start_logits.shape != end_logits.shape or start_logits.ndim != 2 or start_logits.shape[0] != F:
        raise ValueError(f"start/end logits must both be [num_features={F}, max_seq_length], got "
                         f"{start_logits.shape} and {end_logits.shape}")
    by_example: dict[int, list[int]] = {}
    for f, e in enumerate(features.example_index):
        by_example.setdefault(int(e), []).append(f)

    predictions, nbest_out, null_odds = {}, {}, {}
    for e, ex in enumerate(examples):
        feats = by_example.get(e, [])
        offsets = features.doc_offsets[e]
        windows = features.windows[e]
        cands = []  # (score, start_logit, end_logit, first piece, last piece); pieces None = the null answer
        null = None  # (score, start_logit, end_logit)
        for f in feats:
            s_log, e_log = start_logits[f], end_logits[f]
            c0, w0, wn = int(features.context_start[f]), int(features.window_start[f]), int(features.window_length[f])
            if version_2:
                score = s_log[0] + e_log[0]
                if null is None or score < null[0]:
                    null = (score, s_log[0], e_log[0])
            central = _max_context_mask(windows, int(features.window_index[f]))
            s_idx, e_idx = _top(s_log, n_best_size), _top(e_log, n_best_size)
            S, E = np.meshgrid(s_idx, e_idx, indexing="ij")
            ok = ((S >= c0) & (S < c0 + wn) & (E >= c0) & (E < c0 + wn) & (E >= S)
                  & (E - S + 1 <= max_answer_length))
            ok &= central[np.clip(S - c0, 0, max(wn - 1, 0))] if wn else False
            for s, t in zip(S[ok], E[ok]):
                cands.append((s_log[s] + e_log[t], s_log[s], e_log[t], w0 + s - c0, w0 + t - c0))
        if null is not None:
            cands.append((null[0], null[1], null[2], None, None))
        cands.sort(key=lambda c: -c[0])  # stable: ties keep window / start / end order

        nbest, seen = [], set()
        for score, sl, el, ps, pe in cands:
            if len(nbest) >= n_best_size:
                break
            text = "" if ps is None else ex.context[offsets[ps, 0]:offsets[pe, 1]]
            if ps is not None and text in seen:
                continue
            seen.add(text)
            nbest.append({"text": text, "start_logit": float(sl), "end_logit": float(el)})
        if version_2 and "" not in seen and null is not None:
            nbest.append({"text": "", "start_logit": float(null[1]), "end_logit": float(null[2])})
        if not nbest:
            nbest.append({"text": "", "start_logit": 0.0, "end_logit": 0.0})
        totals = np.array([n["start_logit"] + n["end_logit"] for n in nbest])
        probs = np.exp(totals - totals.max())
        probs /= probs.sum()
        for n, p in zip(nbest, probs):
            n["probability"] = float(p)
        nbest_out[ex.qid] = nbest

        best_span = next((n for n in nbest if n["text"]), None)
        if not version_2:
            predictions[ex.qid] = nbest[0]["text"]
            continue
        if best_span is None:
            diff = float("inf")
        else:
            diff = float(null[0] - best_span["start_logit"] - best_span["end_logit"]) if null else float("-inf")
        null_odds[ex.qid] = diff
        predictions[ex.qid] = "" if diff > null_score_diff_threshold else best_span["text"]
    return SquadPredictions(predictions=predictions, nbest=nbest_out, null_odds=null_odds)
