"""Token classification (NER) data: CoNLL-style BIO files, tfds ``conll2003``, first-piece labelling.

::

    train = read_conll("train.txt")                # token ... tag per line, blank line between sentences
    labels = label_names(train)                    # ("O", "B-LOC", "B-MISC", ...) from the training tags
    feats = make_features(train, tokenizer, labels, max_length=128)
    # feats.arrays: int32 input_ids / token_type_ids / attention_mask [N, L], int32 labels [N, L]
    # (IGNORE_INDEX = -100 except on each word's first piece) and float32 label_mask [N, L]
    tags = decode_predictions(pred_ids_NxL, feats, labels)    # word-level tags, one list per sentence
    metrics.entity_prf(dev.tags, tags)                         # conlleval precision / recall / F1

Each word is encoded on its own (``tokenizer.encode``); only its first piece carries the word's label,
the model's prediction there is the word's prediction. A word the tokenizer turns into nothing gets
``[UNK]`` so every word has a piece. Words cut off by ``max_length`` are predicted ``O`` (counted in
``NerFeatures.num_truncated_words``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from bert_jax import tfds_loading

from bert_jax.tasks import metrics as metrics_lib

__all__ = ["IGNORE_INDEX", "NerExamples", "NerFeatures", "read_conll", "load_conll2003_tfds", "label_names",
           "check_tags", "make_features", "decode_predictions"]

IGNORE_INDEX = -100


@dataclasses.dataclass
class NerExamples:
    """Sentences of words with one tag per word (``tags`` None for unlabelled text)."""

    words: list[list[str]]
    tags: list[list[str]] | None
    source: str = ""
    lines: list[int] | None = None  # first line of each sentence in its file, for messages

    def __len__(self) -> int:
        return len(self.words)


def _check_tag(tag: str, where: str) -> None:
    try:
        metrics_lib.split_tag(tag)
    except ValueError:
        raise ValueError(f"{where}: tag {tag!r} is not O or B-/I-/E-/S-<TYPE>; is the tag in the last column "
                         "(or tag_column set right)?") from None


def read_conll(path: str, *, tag_column: int = -1, labelled: bool = True) -> NerExamples:
    """Sentences of a CoNLL file: one ``token [other columns ...] tag`` line per word (tab- or
    space-separated), a blank line between sentences, ``-DOCSTART-`` lines skipped. ``labelled=False``
    reads a token-only file."""
    path = os.fspath(path)
    try:
        with open(path, "r", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ValueError(f"cannot read CoNLL file {path}: {e}") from e
    words, tags, starts = [], [], []
    cur_w, cur_t, cur_start = [], [], None

    def flush():
        nonlocal cur_w, cur_t, cur_start
        if cur_w:
            words.append(cur_w)
            tags.append(cur_t)
            starts.append(cur_start)
        cur_w, cur_t, cur_start = [], [], None

    for n, line in enumerate(lines, 1):
        cols = line.split()
        if not cols:
            flush()
            continue
        if cols[0] == "-DOCSTART-":
            flush()
            continue
        if labelled:
            if len(cols) < 2:
                raise ValueError(f"{path}, line {n}: {line.strip()!r} has one column; expected 'token ... tag' "
                                 "(pass labelled=False for a token-only file)")
            _check_tag(cols[tag_column], f"{path}, line {n}")
            cur_t.append(cols[tag_column])
        cur_start = cur_start or n
        cur_w.append(cols[0])
    flush()
    if not words:
        raise ValueError(f"CoNLL file {path} is empty: no sentences (expected 'token ... tag' lines)")
    return NerExamples(words=words, tags=tags if labelled else None, source=path, lines=starts)


def load_conll2003_tfds(split: str = "train", *, data_dir: str | None = None, download: bool = True
                        ) -> tuple[NerExamples, tuple[str, ...]]:
    """tfds ``conll2003`` (splits ``train``, ``dev``, ``test``) and its NER tag names (id = position)."""
    if split not in ("train", "dev", "test"):
        raise ValueError(f"conll2003 has no split {split!r}; expected 'train', 'dev' or 'test'")
    import tensorflow_datasets as tfds

    builder = tfds.builder("conll2003", data_dir=data_dir)
    names = tuple(builder.info.features["ner"].feature.names)
    ds = tfds_loading.load("conll2003", split=split, data_dir=data_dir, download=download)
    words, tags = [], []
    for i, ex in enumerate(tfds.as_numpy(ds)):
        w = [t.decode("utf-8") for t in ex["tokens"]]
        t = [names[int(k)] for k in ex["ner"]]
        if len(w) != len(t):
            raise ValueError(f"tfds conll2003[{split}] example {i} has {len(w)} tokens but {len(t)} NER tags")
        words.append(w)
        tags.append(t)
    if not words:
        raise ValueError(f"tfds conll2003[{split}] is empty")
    return NerExamples(words=words, tags=tags, source=f"tfds conll2003[{split}]"), names


def label_names(examples: NerExamples) -> tuple[str, ...]:
    """The tag set of (training) examples: ``O`` first, then the others sorted by type and prefix."""
    if examples.tags is None:
        raise ValueError(f"{examples.source} has no tags to take a label set from")
    tags = {t for sent in examples.tags for t in sent}
    others = sorted(tags - {"O"}, key=lambda t: (metrics_lib.split_tag(t)[1], t))
    return ("O",) + tuple(others)


def check_tags(examples: NerExamples, names: Sequence[str]) -> None:
    """ValueError naming the file, sentence and tag if a tag is not in ``names`` (the training tag set)."""
    allowed = set(names)
    for i, sent in enumerate(examples.tags or []):
        for tag in sent:
            if tag not in allowed:
                where = f"line {examples.lines[i]}" if examples.lines else f"sentence {i}"
                raise ValueError(f"{examples.source}, {where}: tag {tag!r} is not in the label set {list(names)} "
                                 "(taken from the training data); fix the tag or add it to the training data")


@dataclasses.dataclass
class NerFeatures:
    """``arrays``: int32 ``input_ids``, ``token_type_ids``, ``attention_mask`` ``[N, L]``, and when the
    examples are tagged int32 ``labels`` (``IGNORE_INDEX`` off first pieces) and float32 ``label_mask``;
    ``word_index``: int32 ``[N, L]``, the word whose first piece sits at each position (-1 elsewhere);
    ``num_words``: words per sentence; ``num_truncated_words``: words past ``max_length``."""

    arrays: dict[str, np.ndarray]
    word_index: np.ndarray
    num_words: np.ndarray
    num_truncated_words: int = 0

    def __len__(self) -> int:
        return len(self.num_words)


def make_features(examples: NerExamples, tokenizer, names: Sequence[str] | None, max_length: int = 128
                  ) -> NerFeatures:
    """First-piece features of ``examples`` (``[CLS] pieces [SEP]``, padded to ``max_length``); labels
    when ``names`` is given and the examples are tagged (every tag must be in ``names``)."""
    if max_length < 3:
        raise ValueError(f"max_length={max_length} leaves no room for a word between [CLS] and [SEP]")
    labelled = names is not None and examples.tags is not None
    if labelled:
        check_tags(examples, names)
        to_id = {t: i for i, t in enumerate(names)}
    flat = [w for sent in examples.words for w in sent]
    pieces = tokenizer.encode_batch(flat) if flat else []
    N, L = len(examples), max_length
    ids = np.full((N, L), tokenizer.pad_id, dtype=np.int32)
    mask = np.zeros((N, L), dtype=np.int32)
    labels = np.full((N, L), IGNORE_INDEX, dtype=np.int32)
    word_index = np.full((N, L), -1, dtype=np.int32)
    truncated = 0
    k = 0
    for i, sent in enumerate(examples.words):
        seq = [tokenizer.cls_id]
        for w in range(len(sent)):
            p = pieces[k + w] or [tokenizer.unk_id]
            room = L - 1 - len(seq)
            if room <= 0:
                truncated += len(sent) - w
                break
            word_index[i, len(seq)] = w
            if labelled:
                labels[i, len(seq)] = to_id[examples.tags[i][w]]
            seq.extend(p[:room])
        k += len(sent)
        seq.append(tokenizer.sep_id)
        ids[i, :len(seq)] = seq
        mask[i, :len(seq)] = 1
    arrays = {"input_ids": ids, "token_type_ids": np.zeros((N, L), np.int32), "attention_mask": mask}
    if labelled:
        arrays["labels"] = labels
        arrays["label_mask"] = (labels != IGNORE_INDEX).astype(np.float32)
    return NerFeatures(arrays=arrays, word_index=word_index,
                       num_words=np.array([len(s) for s in examples.words], dtype=np.int32),
                       num_truncated_words=truncated)


def decode_predictions(pred_ids, features: NerFeatures, names: Sequence[str]) -> list[list[str]]:
    """Word-level tags from per-position label ids ``[N, L]`` (e.g. the argmax of the logits): each word
    takes the prediction at its first piece; words cut off by ``max_length`` get ``O``."""
    pred_ids = np.asarray(pred_ids)
    if pred_ids.shape != features.word_index.shape:
        raise ValueError(f"predictions have shape {pred_ids.shape}, features {features.word_index.shape}")
    out = []
    for i, n in enumerate(features.num_words):
        tags = ["O"] * int(n)
        for pos in np.nonzero(features.word_index[i] >= 0)[0]:
            label = int(pred_ids[i, pos])
            if not 0 <= label < len(names):
                raise ValueError(f"predicted label id {label} is outside 0..{len(names) - 1}")
            tags[features.word_index[i, pos]] = names[label]
        out.append(tags)
    return out
