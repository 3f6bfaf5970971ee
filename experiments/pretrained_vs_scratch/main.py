r"""Pretrained vs scratch: does pre-training buy accuracy, and how much more with few labels? See config.py.

For every fraction x seed, one random subset of the training set (drawn as experiments/classification's
``train_fraction`` with ``data_seed=seed``) is fine-tuned twice with ``bert_jax.training.finetune``
(the protocol experiments/classification runs): from ``init_checkpoint`` and from a random init of the
same ``BertConfig`` (same tokenizer, same hyper-parameters; the head's init uses the seed in both).

Writes into ``workdir``:
  results.json             every run (dev/test metrics, steps, epochs, time) and, per init x fraction,
                           mean / std (ddof=1) / median over seeds; rewritten after every run
  table.md                 the same summary as a markdown table
  accuracy_vs_examples.png the metric vs labelled examples (log x), error bars = std over seeds
  runs/<init>_f<fraction>_s<seed>/tb/  TensorBoard summaries of each run
Runs already in ``results.json`` from an earlier call with the same settings are kept, not re-run, so
an interrupted grid resumes, and the two arms may run as separate jobs (``--config.inits=scratch``).
"""

import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import flags  # noqa: E402

from bert_jax import cli, fileio  # noqa: E402

cli.define_flags("experiments/pretrained_vs_scratch/config.py:task=...",
                 "Output directory (results.json, table.md, accuracy_vs_examples.png).")
FLAGS = flags.FLAGS
INITS = ("pretrained", "scratch")
# Settings that change a run's result; a run in an existing results.json is reused only when they match.
RUN_KEYS = ("task", "train_file", "eval_file", "test_file", "text_fields", "label_field", "data_dir",
            "init_checkpoint", "tokenizer", "hidden_dropout_prob", "max_seq_length", "global_batch_size",
            "num_epochs", "min_train_steps", "learning_rate", "warmup_proportion", "weight_decay",
            "early_stopping_patience", "mesh_shape", "max_evals", "lr_search")


def parse_grid(config):
    """(fractions, seeds, inits) from the config, each validated; one ValueError naming the field."""
    from bert_jax.cli import parse_list

    try:
        fractions = parse_list(config.fractions, float)
    except ValueError as e:
        raise ValueError(f"fractions={config.fractions!r}: {e}; give fractions of the training set in (0, 1], "
                         "e.g. 0.01,0.05,0.2,1") from None
    bad = [f for f in fractions if not 0.0 < f <= 1.0]
    if bad:
        raise ValueError(f"fractions={config.fractions!r}: {bad[0]} is outside (0, 1]; give fractions of the "
                         "training set, e.g. 0.01,0.05,0.2,1")
    if len(set(fractions)) != len(fractions):
        raise ValueError(f"fractions={config.fractions!r} lists a fraction twice")
    try:
        seeds = parse_list(config.seeds, int)
    except ValueError as e:
        raise ValueError(f"seeds={config.seeds!r}: {e}; give one or more integer seeds, e.g. 0,1,2") from None
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={config.seeds!r} lists a seed twice")
    try:
        inits = parse_list(config.inits, str)
    except ValueError as e:
        raise ValueError(f"inits={config.inits!r}: {e}; use pretrained,scratch") from None
    if any(i not in INITS for i in inits) or len(set(inits)) != len(inits):
        raise ValueError(f"inits={config.inits!r}: choose from {INITS}, each at most once")
    return sorted(fractions), seeds, [i for i in INITS if i in inits]


def subset_indices(n_train: int, fraction: float, seed: int):
    """experiments/classification's ``train_fraction`` subset: the first round(f * n) of a permutation."""
    import numpy as np
    n = max(1, int(round(fraction * n_train)))
    return np.random.default_rng(seed).permutation(n_train)[:n]


def epochs_for(config, n_examples: int, repeats: int = 1) -> float:
    """``num_epochs``, raised so that the run takes at least ``min_train_steps`` steps; with ``repeats``, in
    epochs of the subset repeated that many times."""
    import math
    steps_per_epoch = math.ceil(n_examples * repeats / int(config.global_batch_size))
    epochs = float(config.num_epochs) / repeats
    if config.min_train_steps and epochs * steps_per_epoch < int(config.min_train_steps):
        epochs = int(config.min_train_steps) / steps_per_epoch
    return epochs


def stats(values):
    import numpy as np
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()), "n": int(len(v)),
            "values": [float(x) for x in v]}


def summarize(runs, metric: str):
    """Per init x fraction: examples and mean/std/median of the dev (and test) metric over seeds."""
    rows = []
    for init in INITS:
        for fraction in sorted({r["fraction"] for r in runs if r["init"] == init}):
            rs = [r for r in runs if r["init"] == init and r["fraction"] == fraction]
            row = {"init": init, "fraction": fraction,
                   "train_examples": int(round(sum(r["train_examples"] for r in rs) / len(rs))),
                   "seeds": [r["seed"] for r in rs], "dev": stats([r["dev_metrics"][metric] for r in rs])}
            if all(r.get("test_metrics") for r in rs):
                row["test"] = stats([r["test_metrics"][metric] for r in rs])
            rows.append(row)
    return rows


def _cell(s):
    if not s:
        return "–"
    if s["n"] == 1:
        return f"{s['mean']:.4f} (1 seed)"
    return f"{s['mean']:.4f} ± {s['std']:.4f} ({s['median']:.4f})"


def markdown_table(summary, metric: str, task: str) -> str:
    by = {(r["init"], r["fraction"]): r for r in summary}
    inits = [i for i in INITS if any(r["init"] == i for r in summary)]
    has_test = any("test" in r for r in summary)
    splits = ["dev"] + (["test"] if has_test else [])
    header = ["fraction", "labelled examples"] + [f"{i} {s}" for s in splits for i in inits]
    if len(inits) == 2:
        header += [f"gain {s}" for s in splits]
    lines = [f"{task}: {metric}, mean ± std over seeds (median)", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for fraction in sorted({r["fraction"] for r in summary}):
        n = next(r["train_examples"] for r in summary if r["fraction"] == fraction)
        cells = [f"{fraction:g}", str(n)]
        cells += [_cell(by.get((i, fraction), {}).get(s)) for s in splits for i in inits]
        if len(inits) == 2:
            for s in splits:
                a, b = (by.get((i, fraction), {}).get(s) for i in inits)
                cells.append(f"{a['mean'] - b['mean']:+.4f}" if a and b else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary, metric: str, task: str, path: str, probe_summary=None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = ["dev"] + (["test"] if any("test" in r for r in summary) else [])
    fig, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 4.2), squeeze=False)
    for ax, split in zip(axes[0], splits):
        curves = [(summary, init, style, f"{init}, fine-tuned") for init, style in zip(INITS, ("o-", "s-"))]
        curves += [(probe_summary or [], init, style, f"{init}, linear probe")
                   for init, style in zip(INITS, ("o:", "s:"))]
        for rows_all, init, style, name in curves:
            rows = sorted((r for r in rows_all if r["init"] == init and split in r), key=lambda r: r["fraction"])
            if not rows:
                continue
            ax.errorbar([r["train_examples"] for r in rows], [r[split]["median"] for r in rows],
                        yerr=[r[split]["std"] for r in rows], fmt=style, capsize=4,
                        label=name if probe_summary else init)
        ax.set_xscale("log")
        ax.set_xlabel("labelled training examples (log scale)")
        ax.set_ylabel(f"{split} {metric} (median over seeds, bars: std)")
        ax.set_title(f"{task}: {split}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    fileio.atomic_write(path, buf.getvalue())


def _write_text(path: str, text: str) -> None:
    fileio.atomic_write(path, text)


def _previous_runs(workdir: str, config) -> list:
    import json
    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        old = json.load(f)
    same = all(json.dumps(old.get("config", {}).get(k), sort_keys=True) == json.dumps(
        _plain(config[k]), sort_keys=True) for k in RUN_KEYS)
    if not same:
        raise ValueError(f"{path} holds runs made with other settings (one of {', '.join(RUN_KEYS)} differs); "
                         "use a new --workdir")
    return old.get("runs", [])


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def budgets(config, n_train: int):
    """The label budgets as fractions of the training set: ``train_examples`` (counts) when given, else
    ``fractions``."""
    from bert_jax.cli import parse_list

    if not config.get("train_examples"):
        return parse_grid(config)[0]
    try:
        counts = parse_list(config.train_examples, int)
    except ValueError as e:
        raise ValueError(f"train_examples={config.train_examples!r}: {e}; give label budgets, e.g. 100,300,1000") from None
    bad = [c for c in counts if not 0 < c <= n_train]
    if bad:
        raise ValueError(f"train_examples={config.train_examples!r}: {bad[0]} is not in 1..{n_train} (the training "
                         "set's size)")
    if len(set(counts)) != len(counts):
        raise ValueError(f"train_examples={config.train_examples!r} lists a budget twice")
    return sorted(c / n_train for c in counts)


def learning_rates(config):
    from bert_jax.cli import parse_list

    if not config.get("learning_rates"):
        return [float(config.learning_rate)]
    try:
        lrs = parse_list(config.learning_rates, float)
    except ValueError as e:
        raise ValueError(f"learning_rates={config.learning_rates!r}: {e}; e.g. 3e-5,1e-4,3e-4") from None
    if any(not lr > 0 for lr in lrs) or len(set(lrs)) != len(lrs):
        raise ValueError(f"learning_rates={config.learning_rates!r}: give distinct positive values")
    return lrs


def repeats_for(config, n_examples: int) -> int:
    """How often a small subset is repeated within one epoch so that a run makes at most ``max_evals`` dev
    evaluations (one per epoch, the last one possibly partial) however many passes ``min_train_steps`` asks
    for; 1 = no repetition."""
    import math
    if not config.get("max_evals"):
        return 1
    reps = max(1, math.ceil(epochs_for(config, n_examples) / int(config.max_evals)))
    while math.ceil(epochs_for(config, n_examples, reps) - 1e-9) > int(config.max_evals):
        reps += 1
    return reps


def select_learning_rates(runs, metric: str, selection_seeds=None):
    """{(init, fraction): (lr, {lr: median dev metric})}: per init x budget, the learning rate with the best
    median dev metric over seeds (ties: the smaller lr); only ``selection_seeds`` take part when given
    (``lr_search=first_seed``). Dev only -- test never takes part."""
    import numpy as np
    out = {}
    for key in sorted({(r["init"], r["fraction"]) for r in runs}):
        rs = [r for r in runs if (r["init"], r["fraction"]) == key
              and (selection_seeds is None or r["seed"] in selection_seeds)]
        if not rs:
            continue
        medians = {lr: float(np.median([r["dev_metrics"][metric] for r in rs if r["learning_rate"] == lr]))
                   for lr in sorted({r["learning_rate"] for r in rs})}
        out[key] = (max(medians, key=lambda lr: (medians[lr], -lr)), medians)
    return out


def train_and_evaluate(config, workdir: str) -> dict:
    import time

    import ml_collections
    import numpy as np

    from bert_jax.tasks import classification as cls
    from bert_jax.training import protocol as protocol_lib

    _, seeds, inits = parse_grid(config)
    lrs = learning_rates(config)
    lr_search = config.get("lr_search", "all_seeds")
    if lr_search not in ("all_seeds", "first_seed"):
        raise ValueError(f"lr_search={lr_search!r}: choose all_seeds (every lr x seed) or first_seed (every lr "
                         "with the first seed; the other seeds at the lr it picked)")
    selection_seeds = {seeds[0]} if lr_search == "first_seed" and len(lrs) > 1 else None
    if not config.init_checkpoint:
        raise ValueError("init_checkpoint is empty: the pretrained arm needs a load_pretrained path (the "
                         "scratch arm is a random init of its architecture)")
    if config.regression:
        raise ValueError("regression=True is not supported: this experiment compares classifiers")
    os.makedirs(workdir, exist_ok=True)
    previous = _previous_runs(workdir, config)
    spec, splits = cls.load_task(config, workdir)  # a labelled test_file is scored
    if "train" not in splits:
        raise ValueError(f"task {spec.name} has no training split")
    if spec.is_regression:
        raise ValueError(f"task {spec.name} is a regression task; this experiment compares classifiers")
    metric = config.metric or spec.main_metric
    model_config, pretrained, tokenizer = protocol_lib.load_model_and_tokenizer(config)
    encoded = {"train": cls.encode_examples(tokenizer, splits["train"], config.max_seq_length),
               "dev": cls.encode_examples(tokenizer, splits["dev"], config.max_seq_length)}
    if "test" in splits and (np.asarray(splits["test"].labels) >= 0).all():
        encoded["test"] = cls.encode_examples(tokenizer, splits["test"], config.max_seq_length)
    if metric not in spec.metrics(encoded["dev"]["labels"], encoded["dev"]["labels"]):
        raise ValueError(f"metric={metric!r} is not one of the task's metrics")
    n_train = len(encoded["train"]["input_ids"])
    fractions = budgets(config, n_train)

    def evaluate(labels):
        return lambda outputs: spec.metrics(labels, outputs.argmax(-1))

    def key(r):
        return (r["init"], r["fraction"], r["seed"], r.get("learning_rate", float(config.learning_rate)))
    done = {key(r) for r in previous}
    runs = list(previous)  # kept whole, so an interruption never loses a finished run
    for r in runs:
        r.setdefault("learning_rate", float(config.learning_rate))
    probe_runs = []
    per_cell = len(lrs) + len(seeds) - 1 if selection_seeds else len(lrs) * len(seeds)
    total, t_start = len(fractions) * len(inits) * per_cell, time.time()

    def save(final=False):
        selected = select_learning_rates(runs, metric, selection_seeds)
        chosen = [r for r in runs if (r["init"], r["fraction"]) in selected
                  and r["learning_rate"] == selected[(r["init"], r["fraction"])][0]]
        summary = summarize(chosen, metric)
        for row in summary:
            lr, medians = selected[(row["init"], row["fraction"])]
            row["learning_rate"] = lr
            row["dev_median_by_learning_rate"] = {f"{k:g}": v for k, v in medians.items()}
        result = {"task": config.task, "metric": metric, "fractions": fractions, "seeds": seeds, "inits": inits,
                  "learning_rates": lrs,
                  "lr_search": lr_search,
                  "complete": all(any((i, f, s) == key(r)[:3] for r in chosen) for i in inits for f in fractions
                                  for s in seeds) if selection_seeds else
                              all((i, f, s, lr) in {key(r) for r in runs}
                                  for i in inits for f in fractions for s in seeds for lr in lrs),
                  "summary": summary, "runs": runs, "init_checkpoint": config.init_checkpoint,
                  "model_config": model_config.to_hf_dict(), "config": config.to_dict(),
                  "data_sizes": {k: int(len(v["input_ids"])) for k, v in encoded.items()},
                  "majority_baseline": majority_baseline(encoded, spec, metric)}
        if probe_runs:
            result["probe_summary"] = summarize(probe_runs, metric)
            result["probe_runs"] = probe_runs
        protocol_lib.write_results(workdir, result)
        table = markdown_table(summary, metric, config.task)
        if probe_runs:
            table += "\n" + markdown_table(result["probe_summary"], metric,
                                           f"{config.task}, linear probe ({config.probe_features} features)")
        _write_text(os.path.join(workdir, "table.md"), table)
        if final:   # the plot once, at the end (results.json and table.md after every run)
            plot(summary, metric, config.task, os.path.join(workdir, "accuracy_vs_examples.png"),
                 result.get("probe_summary"))
        return result

    k = 0
    for fraction in fractions:
        for seed in seeds:
            idx = subset_indices(n_train, fraction, seed)
            reps = repeats_for(config, len(idx))
            train = {name: np.tile(np.asarray(a)[idx], (reps,) + (1,) * (np.ndim(a) - 1))
                     for name, a in encoded["train"].items()}
            for init in inits:
                for lr in lrs:
                    if selection_seeds and seed not in selection_seeds and lr != select_learning_rates(
                            runs, metric, selection_seeds)[(init, fraction)][0]:
                        continue
                    k += 1
                    if (init, fraction, seed, lr) in done:
                        continue
                    run_cfg = ml_collections.ConfigDict(config.to_dict())
                    run_cfg.seeds = str(seed)
                    run_cfg.learning_rates = ""
                    run_cfg.learning_rate = lr
                    run_cfg.save_best_model = False
                    run_cfg.num_epochs = epochs_for(config, len(idx), reps)
                    run_cfg.init_checkpoint = config.init_checkpoint if init == "pretrained" else ""
                    label = f"{init}_f{fraction:g}_s{seed}" + (f"_lr{lr:g}" if len(lrs) > 1 else "")
                    print(f"[{k}/{total}] {label}: {len(idx)} examples" + (f" (x{reps} per epoch)" if reps > 1 else "")
                          + f", {run_cfg.num_epochs:g} epochs, lr {lr:g} ({time.time() - t_start:.0f}s elapsed)",
                          flush=True)
                    protocol = protocol_lib.run_protocol(
                        run_cfg, os.path.join(workdir, "runs", label), model_config,
                        pretrained if init == "pretrained" else None, "classification", spec.num_labels, train,
                        encoded["dev"], evaluate(encoded["dev"]["labels"]), metric, task=label)
                    res = protocol.summary
                    run = {"init": init, "fraction": fraction, "seed": seed, "data_seed": seed,
                           "learning_rate": lr, "train_examples": int(len(idx)), "repeats_per_epoch": reps,
                           "epochs": float(run_cfg.num_epochs * reps),
                           "steps": res["steps"], "best_epoch": res["runs"][0]["best_epoch"],
                           "seconds": res["runs"][0]["seconds"], "dev_metrics": res["metrics"],
                           "history": res["runs"][0]["history"]}
                    if "test" in encoded:
                        out = protocol.best_finetuner.predict(protocol.best_params, encoded["test"],
                                                              int(config.eval_batch_size))
                        run["test_metrics"] = spec.metrics(encoded["test"]["labels"], out.argmax(-1))
                    del protocol, res
                    runs.append(run)
                    save()
                    # Recorded in results.json (never run again): its lr x seed run needs no saved model.
                    protocol_lib.drop_saved_params(os.path.join(workdir, "runs", label))
    if config.get("probe"):
        probe_runs.extend(linear_probe_grid(config, model_config, pretrained, encoded, spec, metric, fractions,
                                            seeds, inits))
    result = save(final=True)
    print(open(os.path.join(workdir, "table.md"), encoding="utf-8").read(), flush=True)
    print(f"-> {os.path.join(workdir, 'results.json')}, table.md, accuracy_vs_examples.png", flush=True)
    return result


def majority_baseline(encoded, spec, metric: str) -> dict:
    """The metric of always predicting the training set's most frequent label, on dev (and test)."""
    import numpy as np
    labels = np.asarray(encoded["train"]["labels"])
    majority = int(np.bincount(labels[labels >= 0]).argmax())
    return {split: float(spec.metrics(encoded[split]["labels"],
                                      np.full(len(encoded[split]["labels"]), majority))[metric])
            for split in ("dev", "test") if split in encoded}


def linear_probe_grid(config, model_config, pretrained, encoded, spec, metric, fractions, seeds, inits):
    """Frozen features + logistic regression (C picked on dev) at every budget x seed, for each init:
    the pretrained encoder, and a random init of the same architecture (seed 0). Same subsets as the
    fine-tuning runs. Features are the masked mean of the last layer (``probe_features``)."""
    import time

    import ml_collections
    import numpy as np

    from bert_jax import probe

    n_train = len(encoded["train"]["input_ids"])
    subsets = {(f, s): subset_indices(n_train, f, s) for f in fractions for s in seeds}
    needed = np.unique(np.concatenate(list(subsets.values())))
    feature_fn = probe.make_feature_fn(model_config, config.probe_features)
    c_grid = cli.parse_list(config.probe_c_grid, float)
    out = []
    for init in inits:
        t0 = time.time()
        enc_cfg = ml_collections.ConfigDict(dict(seed=0, features=config.probe_features,
                                                 init_checkpoint=config.init_checkpoint))
        params = probe.encoder_params(enc_cfg, model_config, pretrained if init == "pretrained" else None)
        bs = int(config.eval_batch_size)
        train_feats = np.zeros((n_train, model_config.hidden_size), np.float32)
        train_feats[needed] = probe.extract_features(
            feature_fn, params, {k: np.asarray(v)[needed] for k, v in encoded["train"].items()}, bs)
        feats = {split: probe.extract_features(feature_fn, params, encoded[split], bs)
                 for split in ("dev", "test") if split in encoded}
        print(f"[probe {init}] features of {len(needed) + sum(len(f) for f in feats.values())} texts in "
              f"{time.time() - t0:.0f}s", flush=True)
        labels = {split: np.asarray(encoded[split]["labels"]) for split in encoded}
        for (fraction, seed), idx in subsets.items():
            y = labels["train"][idx]
            if len(np.unique(y)) < 2:
                continue  # a one-class subset cannot fit a classifier
            clf, c, _, by_c = probe.fit_best(train_feats[idx], y, feats["dev"], labels["dev"], c_grid,
                                             lambda t, p: spec.metrics(t, p)[metric])
            run = {"init": init, "fraction": fraction, "seed": seed, "data_seed": seed, "train_examples": len(idx),
                   "c": c, "dev_metrics": spec.metrics(labels["dev"], clf.predict(feats["dev"]))}
            if "test" in feats:
                run["test_metrics"] = spec.metrics(labels["test"], clf.predict(feats["test"]))
            out.append(run)
    return out


def _before():
    if FLAGS.config.compilation_cache:
        # The job's own cache, every compilation kept: its runs of one fraction share their programs.
        cli.enable_compilation_cache(os.path.join(FLAGS.workdir, "jax_cache"), min_compile_seconds=0)


if __name__ == "__main__":
    cli.run(train_and_evaluate, "pretrained_vs_scratch", before=_before)
