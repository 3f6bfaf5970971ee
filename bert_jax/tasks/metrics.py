"""Evaluation metrics for the fine-tuning tasks, computed as the official scorers compute them.

* Classification / regression: scikit-learn and scipy (``accuracy_score``, ``f1_score``,
  ``matthews_corrcoef``, ``pearsonr``, ``spearmanr``); :func:`glue_metrics` gives each GLUE task's
  official set and :data:`GLUE_MAIN_METRIC` the one used for model selection (the number the BERT paper
  reports: F1 for MRPC/QQP, Spearman for STS-B, Matthews corr. for CoLA, accuracy elsewhere).
* NER: entity-level precision / recall / F1 over BIO (IOB1, IOB2, IOBES) tags with conlleval's chunk
  rules -- an ``I-X`` after ``O`` or after a tag of another type starts a new entity, and an entity counts
  as correct only when its type, first and last token all match.
* SQuAD: exact match and F1 exactly as the official v1.1 / v2.0 evaluation scripts (answer normalisation:
  lower-case, drop punctuation, drop the articles a/an/the, collapse whitespace; max over gold answers;
  in v2 a question without gold answers has the gold answer ``""``, and the prediction ``""`` scores 1 on
  it and 0 elsewhere), plus v2's no-answer threshold search (``best_exact`` / ``best_f1``).

All scores are plain Python floats; the SQuAD ones are percentages (0-100) as the official scripts print
them, everything else is a fraction (0-1).
"""

from __future__ import annotations

import collections
import re
import string
import warnings
from typing import Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "accuracy", "f1_binary", "f1_macro", "matthews_corr", "pearson", "spearman",
    "GLUE_METRIC_NAMES", "GLUE_MAIN_METRIC", "glue_metrics", "classification_metrics",
    "regression_metrics", "main_metric",
    "split_tag", "bio_entities", "entity_prf",
    "normalize_answer", "squad_exact", "squad_f1", "squad_evaluate",
]


# ------------------------------------------------------------------------------ classification
def _pair(labels, preds, what: str) -> tuple[np.ndarray, np.ndarray]:
    labels, preds = np.asarray(labels), np.asarray(preds)
    if labels.ndim != 1 or preds.ndim != 1:
        raise ValueError(f"{what}: labels and predictions must be 1-D, got shapes {labels.shape} and {preds.shape}")
    if labels.shape != preds.shape:
        raise ValueError(f"{what}: {labels.shape[0]} labels but {preds.shape[0]} predictions")
    if labels.size == 0:
        raise ValueError(f"{what}: no examples to score")
    return labels, preds


def accuracy(labels, preds) -> float:
    """Fraction of exact matches (``sklearn.metrics.accuracy_score``)."""
    from sklearn.metrics import accuracy_score
    labels, preds = _pair(labels, preds, "accuracy")
    return float(accuracy_score(labels, preds))


def f1_binary(labels, preds, pos_label=1) -> float:
    """F1 of the positive class (MRPC/QQP: class 1, "equivalent"/"duplicate"); 0.0 when it is never
    predicted nor present (scikit-learn's ``zero_division=0``)."""
    from sklearn.metrics import f1_score
    labels, preds = _pair(labels, preds, "f1")
    return float(f1_score(labels, preds, pos_label=pos_label, average="binary", zero_division=0))


def f1_macro(labels, preds, label_ids: Sequence[int] | None = None) -> float:
    """Unweighted mean of per-class F1 over ``label_ids`` (default: the classes seen in either array)."""
    from sklearn.metrics import f1_score
    labels, preds = _pair(labels, preds, "f1_macro")
    return float(f1_score(labels, preds, labels=label_ids, average="macro", zero_division=0))


def matthews_corr(labels, preds) -> float:
    """Matthews correlation coefficient (CoLA); 0.0 when either side is constant (scikit-learn)."""
    from sklearn.metrics import matthews_corrcoef
    labels, preds = _pair(labels, preds, "matthews_corr")
    return float(matthews_corrcoef(labels, preds))


def _constant(x: np.ndarray) -> bool:
    return bool(np.all(x == x.flat[0]))


def pearson(labels, preds) -> float:
    """Pearson's r (STS-B); NaN when either side is constant (the correlation is undefined)."""
    from scipy.stats import pearsonr
    labels, preds = _pair(labels, preds, "pearson")
    labels, preds = labels.astype(np.float64), preds.astype(np.float64)
    if labels.size < 2 or _constant(labels) or _constant(preds):
        return float("nan")
    return float(pearsonr(labels, preds)[0])


def spearman(labels, preds) -> float:
    """Spearman's rank correlation (STS-B); NaN when either side is constant."""
    from scipy.stats import spearmanr
    labels, preds = _pair(labels, preds, "spearman")
    labels, preds = labels.astype(np.float64), preds.astype(np.float64)
    if labels.size < 2 or _constant(labels) or _constant(preds):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(labels, preds)[0])


_METRIC_FNS = {"accuracy": accuracy, "f1": f1_binary, "matthews_corr": matthews_corr,
               "pearson": pearson, "spearman": spearman}

# The GLUE leaderboard's metrics for each task (AX is scored with Matthews corr. by the server; its
# labels are hidden, so it has no dev metrics here).
GLUE_METRIC_NAMES: dict[str, tuple[str, ...]] = {
    "cola": ("matthews_corr",),
    "sst2": ("accuracy",),
    "mrpc": ("f1", "accuracy"),
    "stsb": ("pearson", "spearman"),
    "qqp": ("f1", "accuracy"),
    "mnli": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
    "ax": ("matthews_corr",),
}
# The number used to pick the best run on dev (as reported in the BERT paper's GLUE table).
GLUE_MAIN_METRIC: dict[str, str] = {
    "cola": "matthews_corr", "sst2": "accuracy", "mrpc": "f1", "stsb": "spearman", "qqp": "f1",
    "mnli": "accuracy", "qnli": "accuracy", "rte": "accuracy", "wnli": "accuracy", "ax": "matthews_corr",
}


def glue_metrics(task: str, labels, preds) -> dict[str, float]:
    """The official GLUE metrics of ``task`` from gold ``labels`` and ``preds`` (class ids, or scores for
    STS-B), plus ``combined`` (their mean) for the tasks with two."""
    key = task.lower().removeprefix("glue/")
    if key not in GLUE_METRIC_NAMES:
        raise ValueError(f"unknown GLUE task {task!r}; expected one of {sorted(GLUE_METRIC_NAMES)}")
    out = {name: _METRIC_FNS[name](labels, preds) for name in GLUE_METRIC_NAMES[key]}
    if len(out) > 1:
        out["combined"] = float(np.mean(list(out.values())))
    return out


def classification_metrics(labels, preds, num_labels: int) -> dict[str, float]:
    """Metrics for a local classification file: accuracy and macro-F1, plus F1 of class 1 and Matthews
    corr. for binary tasks."""
    out = {"accuracy": accuracy(labels, preds),
           "f1_macro": f1_macro(labels, preds, label_ids=list(range(num_labels)))}
    if num_labels == 2:
        out["f1"] = f1_binary(labels, preds)
        out["matthews_corr"] = matthews_corr(labels, preds)
    return out


def regression_metrics(labels, preds) -> dict[str, float]:
    """Metrics for a regression file: Pearson, Spearman and mean squared error."""
    labels, preds = _pair(labels, preds, "regression")
    mse = float(np.mean((labels.astype(np.float64) - preds.astype(np.float64)) ** 2))
    return {"pearson": pearson(labels, preds), "spearman": spearman(labels, preds), "mse": mse}


def main_metric(task: str, regression: bool = False) -> str:
    """Name of the metric that selects the best run: :data:`GLUE_MAIN_METRIC` for GLUE tasks; for local
    files ``accuracy`` (classification) or ``spearman`` (regression)."""
    key = task.lower().removeprefix("glue/")
    if key in GLUE_MAIN_METRIC:
        return GLUE_MAIN_METRIC[key]
    return "spearman" if regression else "accuracy"


# --------------------------------------------------------------------------------- NER (conlleval)
_CHUNK_PREFIXES = ("B", "I", "E", "S")


def split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER"`` -> ``("B", "PER")``; ``"O"`` -> ``("O", "")``; a bare ``"B"`` has the empty type."""
    if tag == "O":
        return "O", ""
    prefix, sep, etype = tag.partition("-")
    if prefix not in _CHUNK_PREFIXES:
        raise ValueError(f"tag {tag!r} is not O or one of B-/I-/E-/S- followed by a type")
    return prefix, etype


def _end_of_chunk(prev: str, prev_type: str, cur: str, cur_type: str) -> bool:
    # conlleval's endOfChunk: the chunk open at the previous token ends before the current one.
    if prev in ("E", "S"):
        return True
    if prev in ("B", "I") and cur in ("B", "S", "O"):
        return True
    return prev != "O" and prev_type != cur_type


def _start_of_chunk(prev: str, prev_type: str, cur: str, cur_type: str) -> bool:
    # conlleval's startOfChunk: a chunk begins at the current token.
    if cur in ("B", "S"):
        return True
    if cur in ("I", "E") and prev in ("E", "S", "O"):
        return True
    return cur != "O" and prev_type != cur_type


def bio_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entities ``(type, first, last)`` (inclusive token indices) of one sentence's tags, by conlleval's
    rules: ``B-X`` always starts an entity; ``I-X`` continues the open entity only if it is of type X,
    otherwise (after ``O``, or after another type) it starts a new one; ``O`` ends it. So IOB1 and IOB2
    files both score as conlleval scores them. ``E-X`` closes an entity and ``S-X`` is a one-token
    entity (the IOBES reading; conlleval itself has no ``S`` and treats ``B`` after ``E`` oddly)."""
    entities = []
    prev, prev_type = "O", ""
    start = None
    for i, tag in enumerate(list(tags) + ["O"]):  # the sentinel closes an entity at the sentence end
        cur, cur_type = split_tag(tag)
        if start is not None and _end_of_chunk(prev, prev_type, cur, cur_type):
            entities.append((prev_type, start, i - 1))
            start = None
        if _start_of_chunk(prev, prev_type, cur, cur_type):
            start = i
        prev, prev_type = cur, cur_type
    return entities


def entity_prf(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """Entity-level micro precision / recall / F1 (fractions) over sentences of tags, as conlleval
    computes them, plus token ``accuracy`` and a ``per_type`` mapping ``type -> {precision, recall, f1,
    support}``. ``gold`` and ``pred`` are lists of per-sentence tag lists of equal lengths."""
    if len(gold) != len(pred):
        raise ValueError(f"entity_prf: {len(gold)} gold sentences but {len(pred)} predicted ones")
    if not gold:
        raise ValueError("entity_prf: no sentences to score")
    n_correct, n_gold, n_pred = collections.Counter(), collections.Counter(), collections.Counter()
    tok_correct = tok_total = 0
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"entity_prf: sentence {i} has {len(g)} gold tags but {len(p)} predicted tags")
        g_ents, p_ents = set(bio_entities(g)), set(bio_entities(p))
        for etype, _, _ in g_ents:
            n_gold[etype] += 1
        for etype, _, _ in p_ents:
            n_pred[etype] += 1
        for etype, _, _ in g_ents & p_ents:
            n_correct[etype] += 1
        tok_correct += sum(a == b for a, b in zip(g, p))
        tok_total += len(g)

    def prf(c, ng, npred):
        precision = c / npred if npred else 0.0
        recall = c / ng if ng else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return precision, recall, f1

    precision, recall, f1 = prf(sum(n_correct.values()), sum(n_gold.values()), sum(n_pred.values()))
    per_type = {}
    for etype in sorted(set(n_gold) | set(n_pred)):
        p_, r_, f_ = prf(n_correct[etype], n_gold[etype], n_pred[etype])
        per_type[etype] = {"precision": p_, "recall": r_, "f1": f_, "support": n_gold[etype]}
    return {"precision": precision, "recall": recall, "f1": f1,
            "accuracy": tok_correct / tok_total if tok_total else 0.0,
            "num_gold": sum(n_gold.values()), "num_pred": sum(n_pred.values()),
            "num_correct": sum(n_correct.values()), "per_type": per_type}


# ------------------------------------------------------------------------------------------ SQuAD
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """The official scripts' normalisation: lower-case, remove ASCII punctuation, remove the articles
    a/an/the, and collapse whitespace (in that order)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _answer_tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def squad_exact(gold: str, pred: str) -> int:
    """1 if the normalised strings are equal."""
    return int(normalize_answer(gold) == normalize_answer(pred))


def squad_f1(gold: str, pred: str, version_2: bool = True) -> float:
    """Bag-of-tokens F1 of the normalised strings. v2.0: when either normalises to nothing (a no-answer),
    1 iff both do; v1.1 has no such rule, so there no shared token means 0."""
    gold_toks, pred_toks = _answer_tokens(gold), _answer_tokens(pred)
    if version_2 and (not gold_toks or not pred_toks):
        return float(gold_toks == pred_toks)
    num_same = sum((collections.Counter(gold_toks) & collections.Counter(pred_toks)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_toks)
    recall = num_same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def _gold_texts(answers: Iterable, version_2: bool) -> list[str]:
    texts = [a["text"] if isinstance(a, Mapping) else str(a) for a in answers]
    if version_2:
        # v2.0: gold answers that normalise to nothing are dropped; none left means "no answer".
        texts = [t for t in texts if normalize_answer(t)]
        return texts or [""]
    return texts


def squad_evaluate(gold: Mapping[str, Sequence], predictions: Mapping[str, str], *, version_2: bool = False,
                   na_probs: Mapping[str, float] | None = None, na_prob_thresh: float = 1.0) -> dict:
    """EM / F1 (percent) over ``gold``: ``{qid: [answer, ...]}`` (answer = text or ``{"text": ...}``;
    an empty list is a v2 unanswerable question) against ``predictions`` ``{qid: text}``.

    v1.1 (``version_2=False``): ``{"exact_match", "f1", "total"}``, each question scored by its best gold
    answer; a question without a prediction scores 0 (as the official script, which warns).
    v2.0: ``{"exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_*"}``; with
    ``na_probs`` (qid -> no-answer score, e.g. the null score difference) a question whose score exceeds
    ``na_prob_thresh`` is taken as answered "no answer", and ``best_exact``/``best_f1`` with their
    thresholds are added (the official ``find_best_thresh``). A missing prediction is an error in v2, as
    in the official script.
    """
    if not gold:
        raise ValueError("squad_evaluate: no gold questions")
    if version_2:
        missing = [q for q in gold if q not in predictions]
        if missing:
            raise ValueError(f"squad_evaluate (v2.0): {len(missing)} of {len(gold)} questions have no prediction, "
                             f"e.g. {missing[:3]}; predict '' for unanswerable questions instead of leaving them out")
    exact_raw, f1_raw, has_ans = {}, {}, {}
    for qid, answers in gold.items():
        golds = _gold_texts(answers, version_2)
        has_ans[qid] = bool(golds and golds != [""]) if version_2 else True
        if qid not in predictions:
            exact_raw[qid], f1_raw[qid] = 0, 0.0
            continue
        pred = predictions[qid]
        exact_raw[qid] = max(squad_exact(g, pred) for g in golds)
        f1_raw[qid] = max(squad_f1(g, pred, version_2) for g in golds)
    total = len(gold)
    if not version_2:
        return {"exact_match": 100.0 * sum(exact_raw.values()) / total,
                "f1": 100.0 * sum(f1_raw.values()) / total, "total": total}

    probs = {q: 0.0 for q in gold} if na_probs is None else {q: float(na_probs[q]) for q in gold}

    def thresholded(raw):
        return {q: float(not has_ans[q]) if probs[q] > na_prob_thresh else float(s) for q, s in raw.items()}

    exact, f1 = thresholded(exact_raw), thresholded(f1_raw)
    out = {"exact": 100.0 * sum(exact.values()) / total, "f1": 100.0 * sum(f1.values()) / total, "total": total}
    for name, qids in (("HasAns", [q for q in gold if has_ans[q]]), ("NoAns", [q for q in gold if not has_ans[q]])):
        if qids:
            out[f"{name}_exact"] = 100.0 * sum(exact[q] for q in qids) / len(qids)
            out[f"{name}_f1"] = 100.0 * sum(f1[q] for q in qids) / len(qids)
            out[f"{name}_total"] = len(qids)
    if na_probs is not None:
        for key, raw in (("exact", exact_raw), ("f1", f1_raw)):
            best, thresh = _best_threshold(predictions, raw, probs, has_ans)
            out[f"best_{key}"], out[f"best_{key}_thresh"] = best, thresh
    return out


def _best_threshold(preds, scores, na_probs, has_ans) -> tuple[float, float]:
    """The official ``find_best_thresh``: sweep the no-answer threshold over the sorted scores, starting
    from "everything is no-answer" (which earns every unanswerable question)."""
    cur = best = sum(1 for q in has_ans if not has_ans[q])
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda q: na_probs[q]):
        if has_ans[qid]:
            cur += scores[qid]
        elif preds[qid]:
            cur -= 1
        if cur > best:
            best, best_thresh = cur, na_probs[qid]
    return 100.0 * best / len(scores), float(best_thresh)
