r"""The linear probe: how much a frozen encoder's features know about a task. See config.py for commands.

Every text goes once through a jitted ``BertModel`` forward (in fixed-size batches over all devices);
its feature is the pooled output or the masked mean of the last layer. A scikit-learn
``LogisticRegression`` (after a ``StandardScaler`` fitted on train) is fitted on the training split for
each C of the grid; the C with the best dev main metric is kept and scored on dev and test.

Writes ``workdir/results.json``: ``metrics`` (dev, at the chosen C), ``test_metrics``, ``c_grid`` (dev
scores of every C), ``best_c``, ``feature_extraction`` (seconds, examples/s), data sizes, the config;
``workdir/predictions_<split>.csv`` (idx, label, prediction); with ``compare_finetune`` also
``workdir/finetune/`` (the shared fine-tuning protocol on the same encoded split) and a side-by-side
``comparison``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import flags  # noqa: E402

from bert_jax import cli  # noqa: E402
from bert_jax import probe as probe_lib  # noqa: E402

cli.define_flags("experiments/linear_probe/config.py:task=...", "Output directory (results.json, predictions).")
FLAGS = flags.FLAGS
FEATURES = probe_lib.FEATURES
make_feature_fn, encoder_params, extract_features, make_probe = (
    probe_lib.make_feature_fn, probe_lib.encoder_params, probe_lib.extract_features, probe_lib.make_probe)


def _write_predictions(path, idx, labels, preds):
    from bert_jax import fileio

    fileio.atomic_write(path, "idx,label,prediction\n"
                        + "".join(f"{int(i)},{int(y)},{int(p)}\n" for i, y, p in zip(idx, labels, preds)))


def _save_npz(path, **arrays):
    import io

    import numpy as np

    from bert_jax import fileio
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    fileio.atomic_write(path, buf.getvalue())


def finetune_beside(config, workdir: str, spec, model_config, pretrained, encoded) -> dict:
    """Fine-tuning on the probe's own encoded splits (the same train subset, tokens and checkpoint) with
    ``config.finetune``'s hyper-parameters, through the shared lr x seed protocol; writes and returns
    ``workdir/results.json`` as experiments/classification would."""
    import ml_collections

    from bert_jax.training import protocol as protocol_lib

    ft_config = ml_collections.ConfigDict(dict(config.finetune))
    for key in ("task", "init_checkpoint", "tokenizer", "max_seq_length", "train_fraction", "data_seed"):
        ft_config[key] = config[key]
    ft_config.save_best_model = False

    def evaluate(outputs):
        return spec.metrics(encoded["dev"]["labels"], outputs.argmax(-1))

    protocol = protocol_lib.run_protocol(ft_config, workdir, model_config, pretrained, "classification",
                                         spec.num_labels, encoded["train"], encoded["dev"], evaluate,
                                         spec.main_metric, task=config.task)
    result = protocol.summary
    for name, arrays in encoded.items():
        if name not in ("train", "dev"):
            outputs = protocol.best_finetuner.predict(protocol.best_params, arrays, int(ft_config.eval_batch_size))
            key = "test_metrics" if name == "test" or name.startswith("test:") else f"{name}_metrics"
            result[key] = spec.metrics(arrays["labels"], outputs.argmax(-1))
    result["data_sizes"] = {name: int(len(a["input_ids"])) for name, a in encoded.items()}
    protocol_lib.write_results(workdir, result)
    return result


def train_and_evaluate(config, workdir: str) -> dict:
    import time

    import jax
    import numpy as np

    from bert_jax.tasks import classification as cls
    from bert_jax.training import finetune
    from bert_jax.training import protocol as protocol_lib

    if config.features not in FEATURES:
        raise ValueError(f"features={config.features!r}: choose one of {FEATURES}")
    if config.regression:
        raise ValueError("regression=True: the linear probe is a classifier (LogisticRegression); use "
                         "experiments/classification for regression tasks")
    try:
        c_grid = sorted(cli.parse_list(config.c_grid, float))
    except ValueError as e:
        raise ValueError(f"c_grid={config.c_grid!r}: {e}; give the C values to try, e.g. 0.01,0.1,1,10") from None
    if any(not c > 0 for c in c_grid):
        raise ValueError(f"c_grid={config.c_grid!r}: every C must be > 0")
    if not 0.0 < config.train_fraction <= 1.0:
        raise ValueError(f"train_fraction={config.train_fraction}: must be in (0, 1]")
    os.makedirs(workdir, exist_ok=True)
    from bert_jax.tasks import classification as cls_tasks
    spec, splits = cls_tasks.load_task(config, workdir)  # a labelled test_file is scored
    if "train" not in splits:
        raise ValueError(f"task {spec.name} has no training split to fit the probe on")
    if spec.is_regression:
        raise ValueError(f"task {spec.name} is a regression task; the linear probe is a classifier")
    if config.train_fraction < 1.0:  # the same subset as experiments/classification's train_fraction
        n = max(1, int(round(config.train_fraction * len(splits["train"]))))
        splits["train"] = splits["train"].subset(
            np.random.default_rng(config.data_seed).permutation(len(splits["train"]))[:n])
    model_config, pretrained, tokenizer = protocol_lib.load_model_and_tokenizer(config)
    params = encoder_params(config, model_config, pretrained)
    feature_fn = make_feature_fn(model_config, config.features)

    # Labelled splits only (GLUE test splits have no labels): train, dev, then test / extra dev sets.
    encoded, feats, timing = {}, {}, {}
    for name, examples in splits.items():
        if name != "train" and (np.asarray(examples.labels) < 0).any():
            continue
        encoded[name] = cls.encode_examples(tokenizer, examples, config.max_seq_length)
        t0 = time.time()
        feats[name] = extract_features(feature_fn, params, encoded[name], int(config.feature_batch_size),
                                       int(config.length_bucket))
        seconds = time.time() - t0
        timing[name] = {"examples": len(feats[name]), "seconds": round(seconds, 2),
                        "examples_per_second": round(len(feats[name]) / max(seconds, 1e-9), 1)}
        print(f"features[{name}]: {feats[name].shape} in {seconds:.1f}s", flush=True)
        if config.save_features:
            _save_npz(os.path.join(workdir, f"features_{name.replace(':', '_')}.npz"), features=feats[name],
                      labels=np.asarray(encoded[name]["labels"]), idx=np.asarray(encoded[name]["idx"]))
    if len(np.unique(encoded["train"]["labels"])) < 2:
        raise ValueError("the training split has a single label; a classifier needs at least two")

    labels = {name: np.asarray(a["labels"]) for name, a in encoded.items()}
    grid, best = [], None
    for c in c_grid:
        t0 = time.time()
        probe = make_probe(c, config.standardize, int(config.max_iter)).fit(feats["train"], labels["train"])
        dev = spec.metrics(labels["dev"], probe.predict(feats["dev"]))
        train_acc = float(np.mean(probe.predict(feats["train"]) == labels["train"]))
        grid.append({"C": c, "dev": dev, "train_accuracy": train_acc, "seconds": round(time.time() - t0, 2)})
        print(f"C={c:g}: dev {spec.main_metric} {dev[spec.main_metric]:.4f} (train accuracy {train_acc:.4f})",
              flush=True)
        if best is None or finetune.score(dev, spec.main_metric) > finetune.score(best[1], spec.main_metric):
            best = (probe, dev, c)
    probe, dev_metrics, best_c = best

    result = {
        "task": config.task, "main_metric": spec.main_metric, "features": config.features,
        "metrics": dev_metrics, "best_c": best_c, "c_grid": grid,
        "feature_extraction": {
            "seconds": round(sum(t["seconds"] for t in timing.values()), 2),
            "examples": int(sum(t["examples"] for t in timing.values())), "per_split": timing,
            "devices": jax.device_count(), "platform": jax.devices()[0].platform},
        "init_checkpoint": config.init_checkpoint or None, "model_config": model_config.to_hf_dict(),
        "label_names": list(spec.label_names), "config": config.to_dict(),
        "data_sizes": {name: int(len(f)) for name, f in feats.items()},
    }
    for name in feats:
        if name == "train":
            continue
        preds = probe.predict(feats[name])
        _write_predictions(os.path.join(workdir, f"predictions_{name.replace(':', '_')}.csv"),
                           encoded[name]["idx"], labels[name], preds)
        if name != "dev":
            key = "test_metrics" if name == "test" or name.startswith("test:") else f"{name}_metrics"
            result[key] = spec.metrics(labels[name], preds)

    if config.compare_finetune:
        ft = finetune_beside(config, os.path.join(workdir, "finetune"), spec, model_config, pretrained, encoded)
        main = spec.main_metric
        result["finetune"] = {k: ft[k] for k in ("metrics", "spread", "seeds", "best_learning_rate", "steps",
                                                 "test_metrics") if k in ft}
        result["finetune"]["workdir"] = os.path.join(workdir, "finetune")
        result["comparison"] = {
            "main_metric": main,
            "linear_probe": {"dev": dev_metrics[main], "test": result.get("test_metrics", {}).get(main)},
            "finetune": {"dev": ft["metrics"][main], "test": ft.get("test_metrics", {}).get(main)},
        }
    protocol_lib.write_results(workdir, result)
    line = (f"linear probe ({config.features}) on {config.task}: dev {spec.main_metric} "
            f"{dev_metrics[spec.main_metric]:.4f} (C={best_c:g})")
    if "test_metrics" in result:
        line += f"; test {spec.main_metric} {result['test_metrics'][spec.main_metric]:.4f}"
    if "comparison" in result:
        cmp = result["comparison"]["finetune"]
        line += f" | fine-tuning: dev {cmp['dev']:.4f}" + (f", test {cmp['test']:.4f}" if cmp["test"] is not None
                                                          else "")
    print(line + f" -> {os.path.join(workdir, 'results.json')}", flush=True)
    return result


if __name__ == "__main__":
    cli.run(train_and_evaluate, "linear_probe")
