r"""Fine-tune BERT for token classification (NER). See config.py for the commands.

Each word is labelled on its first word piece; entity-level precision / recall / F1 as conlleval
computes them. Writes into ``workdir``: ``results.json`` (``metrics``: ``precision``, ``recall``,
``f1`` (entity level), token ``accuracy`` and the entity counts, median over seeds at the best learning
rate; ``per_type`` scores and ``label_names`` of the best run; ``runs``; data sizes, steps, the config),
``predictions.json`` (per dev sentence: ``words``, ``gold``, ``pred``) and ``predictions.conll``
(``word gold pred`` lines, conlleval's input) of the best run, the same for ``test_file`` when given,
and TensorBoard summaries per run under ``workdir/tb/``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from bert_jax import cli  # noqa: E402

cli.define_flags("experiments/ner/config.py:task=conll|conll2003",
                 "Output directory (results.json, predictions, TensorBoard).")

TASKS = ("conll", "conll2003")
METRIC_KEYS = ("precision", "recall", "f1", "accuracy", "num_gold", "num_pred", "num_correct")


def _is_tagged(path: str) -> bool:
    """Whether a CoNLL file's first word line has a tag column (a test file may be token-only)."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            for line in f:
                cols = line.split()
                if cols and cols[0] != "-DOCSTART-":
                    return len(cols) > 1
    except OSError as e:
        raise ValueError(f"cannot read CoNLL file {path}: {e}") from e
    return True  # no word lines: read_conll says the file is empty


def load_data(config):
    """(label names, {"train", "dev", ["test"]: NerExamples}) for the configured task."""
    from bert_jax.tasks import ner

    if config.task == "conll":
        if not config.train_file or not config.eval_file:
            raise ValueError("task=conll needs --config.train_file and --config.eval_file (CoNLL-style files)")
        col = int(config.tag_column)
        splits = {"train": ner.read_conll(config.train_file, tag_column=col),
                  "dev": ner.read_conll(config.eval_file, tag_column=col)}
        if config.test_file:
            splits["test"] = ner.read_conll(config.test_file, tag_column=col, labelled=_is_tagged(config.test_file))
        names = ner.label_names(splits["train"])
    elif config.task == "conll2003":
        data_dir = config.data_dir or None
        splits = {}
        for name, split in (("train", "train"), ("dev", "dev"), ("test", "test")):
            splits[name], names = ner.load_conll2003_tfds(split, data_dir=data_dir)
    else:
        raise ValueError(f"task={config.task!r}: choose one of {', '.join(TASKS)}")
    for name, examples in splits.items():
        if name != "train" and examples.tags is not None:
            ner.check_tags(examples, names)
    return names, splits


def write_predictions(workdir: str, prefix: str, examples, pred_tags) -> dict:
    """``<prefix>predictions.json`` and ``<prefix>predictions.conll``; returns their paths."""
    from bert_jax import fileio

    gold = examples.tags or [[None] * len(w) for w in examples.words]
    rows = [{"words": w, "gold": g, "pred": p} for w, g, p in zip(examples.words, gold, pred_tags)]
    paths = {"json": os.path.join(workdir, f"{prefix}predictions.json"),
             "conll": os.path.join(workdir, f"{prefix}predictions.conll")}
    fileio.write_json(paths["json"], rows)
    lines = []
    for r in rows:
        for cols in zip(r["words"], r["gold"], r["pred"]):
            lines.append(" ".join(x for x in cols if x is not None))
        lines.append("")
    fileio.atomic_write(paths["conll"], "\n".join(lines))
    return paths


def train_and_evaluate(config, workdir: str) -> dict:
    import jax
    import numpy as np

    from bert_jax.tasks import metrics as metrics_lib
    from bert_jax.tasks import ner
    from bert_jax.training import protocol as protocol_lib

    os.makedirs(workdir, exist_ok=True)
    names, splits = load_data(config)
    if config.train_fraction < 1.0:
        train = splits["train"]
        n = max(1, int(round(config.train_fraction * len(train))))
        keep = np.sort(np.random.default_rng(config.data_seed).permutation(len(train))[:n])
        lines = [train.lines[i] for i in keep] if train.lines else None
        splits["train"] = ner.NerExamples(words=[train.words[i] for i in keep], tags=[train.tags[i] for i in keep],
                                          source=train.source, lines=lines)
    model_config, pretrained, tokenizer = protocol_lib.load_model_and_tokenizer(config)
    feats = {name: ner.make_features(ex, tokenizer, names, max_length=int(config.max_seq_length))
             for name, ex in splits.items()}
    for name, f in feats.items():
        if f.num_truncated_words:
            print(f"{name}: {f.num_truncated_words} words past max_seq_length={config.max_seq_length} are "
                  "predicted O", flush=True)
    print(f"{config.task}: {len(names)} labels {list(names)}; " + ", ".join(
        f"{name} {len(ex)} sentences" for name, ex in splits.items()), flush=True)

    def decode(name, outputs_NxLxC):
        return ner.decode_predictions(np.asarray(outputs_NxLxC).argmax(-1), feats[name], names)

    def evaluate(outputs):
        m = metrics_lib.entity_prf(splits["dev"].tags, decode("dev", outputs))
        return {k: float(m[k]) for k in METRIC_KEYS}

    protocol = protocol_lib.run_protocol(config, workdir, model_config, pretrained, "token", len(names),
                                     feats["train"].arrays, feats["dev"].arrays, evaluate, "f1", task=config.task)
    result, finetuner = protocol.summary, protocol.best_finetuner
    # The best parameters come back on the host; placed as in training, predict does not recompile.
    params = jax.device_put(protocol.best_params, finetuner.replicated)
    result["label_names"] = list(names)
    result["prediction_files"] = {}
    for name in [n for n in ("dev", "test") if n in splits]:
        outputs = finetuner.predict(params, feats[name].arrays, int(config.eval_batch_size))
        tags = decode(name, outputs)
        prefix = "" if name == "dev" else f"{name}_"
        if splits[name].tags is not None:
            m = metrics_lib.entity_prf(splits[name].tags, tags)
            if name == "dev":  # the best run's own scores (``metrics`` is the median over seeds)
                result["best_run_metrics"] = {k: float(m[k]) for k in METRIC_KEYS}
                result["per_type"] = m["per_type"]
            else:
                result["test_metrics"] = m
        if jax.process_index() == 0:
            result["prediction_files"][name] = write_predictions(workdir, prefix, splits[name], tags)
    result["data_sizes"] = {name: {"sentences": len(ex), "words": int(sum(len(w) for w in ex.words)),
                                   "truncated_words": int(feats[name].num_truncated_words)}
                            for name, ex in splits.items()}
    protocol_lib.write_results(workdir, result)
    m = result["metrics"]
    print(f"{config.task}: dev entity P {m['precision']:.4f} R {m['recall']:.4f} F1 {m['f1']:.4f} (median of "
          f"{len(result['seeds'])} seed(s), lr {result['best_learning_rate']:g})"
          + (f"; test F1 {result['test_metrics']['f1']:.4f}" if "test_metrics" in result else "")
          + f" -> {os.path.join(workdir, 'results.json')}", flush=True)
    return result


if __name__ == "__main__":
    cli.run(train_and_evaluate, "ner")
