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

# experiments/classification/main.py defines the shared --config and --workdir flags when imported (a
# second definition would clash in one process); this experiment reuses them and its data loading.
from bert_jax import cli, fileio  # noqa: E402
from experiments.classification import main as classification  # noqa: E402

FLAGS = flags.FLAGS
INITS = ("pretrained", "scratch")
# Settings that change a run's result; a run in an existing results.json is reused only when they match.
RUN_KEYS = ("task", "train_file", "eval_file", "test_file", "text_fields", "label_field", "data_dir",
            "init_checkpoint", "tokenizer", "hidden_dropout_prob", "max_seq_length", "global_batch_size",
            "num_epochs", "min_train_steps", "learning_rate", "warmup_proportion", "weight_decay",
            "early_stopping_patience", "mesh_shape")


def parse_grid(config):
    """(fractions, seeds, inits) from the config, each validated; one ValueError naming the field."""
    from bert_jax.training.finetune import parse_list

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


def epochs_for(config, n_examples: int) -> float:
    """``num_epochs``, raised so that the run takes at least ``min_train_steps`` steps."""
    import math
    steps_per_epoch = math.ceil(n_examples / int(config.global_batch_size))
    epochs = float(config.num_epochs)
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


def plot(summary, metric: str, task: str, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = ["dev"] + (["test"] if any("test" in r for r in summary) else [])
    fig, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 4.2), squeeze=False)
    for ax, split in zip(axes[0], splits):
        for init, style in zip(INITS, ("o-", "s--")):
            rows = sorted((r for r in summary if r["init"] == init and split in r), key=lambda r: r["fraction"])
            if not rows:
                continue
            ax.errorbar([r["train_examples"] for r in rows], [r[split]["mean"] for r in rows],
                        yerr=[r[split]["std"] for r in rows], fmt=style, capsize=4, label=init)
        ax.set_xscale("log")
        ax.set_xlabel("labelled training examples (log scale)")
        ax.set_ylabel(f"{split} {metric}")
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


def train_and_evaluate(config, workdir: str) -> dict:
    import time

    import ml_collections
    import numpy as np

    from bert_jax.tasks import classification as cls
    from bert_jax.training import finetune

    fractions, seeds, inits = parse_grid(config)
    if not config.init_checkpoint:
        raise ValueError("init_checkpoint is empty: the pretrained arm needs a load_pretrained path (the "
                         "scratch arm is a random init of its architecture)")
    if config.regression:
        raise ValueError("regression=True is not supported: this experiment compares classifiers")
    os.makedirs(workdir, exist_ok=True)
    previous = _previous_runs(workdir, config)
    spec, splits = classification.load_task(config, workdir)  # a labelled test_file is scored
    if "train" not in splits:
        raise ValueError(f"task {spec.name} has no training split")
    if spec.is_regression:
        raise ValueError(f"task {spec.name} is a regression task; this experiment compares classifiers")
    metric = config.metric or spec.main_metric
    model_config, pretrained, tokenizer = finetune.load_model_and_tokenizer(config)
    encoded = {"train": cls.encode_examples(tokenizer, splits["train"], config.max_seq_length),
               "dev": cls.encode_examples(tokenizer, splits["dev"], config.max_seq_length)}
    if "test" in splits and (np.asarray(splits["test"].labels) >= 0).all():
        encoded["test"] = cls.encode_examples(tokenizer, splits["test"], config.max_seq_length)
    if metric not in spec.metrics(encoded["dev"]["labels"], encoded["dev"]["labels"]):
        raise ValueError(f"metric={metric!r} is not one of the task's metrics")
    n_train = len(encoded["train"]["input_ids"])

    def evaluate(labels):
        return lambda outputs: spec.metrics(labels, outputs.argmax(-1))

    done = {(r["init"], r["fraction"], r["seed"]) for r in previous}
    runs = list(previous)  # kept whole, so an interruption never loses a finished run
    total, t_start = len(fractions) * len(seeds) * len(inits), time.time()

    def save():
        summary = summarize(runs, metric)
        result = {"task": config.task, "metric": metric, "fractions": fractions, "seeds": seeds, "inits": inits,
                  "complete": all((i, f, s) in {(r["init"], r["fraction"], r["seed"]) for r in runs}
                                  for i in inits for f in fractions for s in seeds),
                  "summary": summary, "runs": runs, "init_checkpoint": config.init_checkpoint,
                  "model_config": model_config.to_hf_dict(), "config": config.to_dict(),
                  "data_sizes": {k: int(len(v["input_ids"])) for k, v in encoded.items()}}
        finetune.write_results(workdir, result)
        _write_text(os.path.join(workdir, "table.md"), markdown_table(summary, metric, config.task))
        plot(summary, metric, config.task, os.path.join(workdir, "accuracy_vs_examples.png"))
        return result

    k = 0
    for fraction in fractions:
        for seed in seeds:
            idx = subset_indices(n_train, fraction, seed)
            train = {name: np.asarray(a)[idx] for name, a in encoded["train"].items()}
            for init in inits:
                k += 1
                if (init, fraction, seed) in done:
                    continue
                run_cfg = ml_collections.ConfigDict(config.to_dict())
                run_cfg.seeds = str(seed)
                run_cfg.learning_rates = ""
                run_cfg.save_best_model = False
                run_cfg.num_epochs = epochs_for(config, len(idx))
                run_cfg.init_checkpoint = config.init_checkpoint if init == "pretrained" else ""
                label = f"{init}_f{fraction:g}_s{seed}"
                print(f"[{k}/{total}] {label}: {len(idx)} examples, {run_cfg.num_epochs:g} epochs "
                      f"({time.time() - t_start:.0f}s elapsed)", flush=True)
                res = finetune.run_protocol(
                    run_cfg, os.path.join(workdir, "runs", label), model_config,
                    pretrained if init == "pretrained" else None, "classification", spec.num_labels, train,
                    encoded["dev"], evaluate(encoded["dev"]["labels"]), metric, task=label)
                best = res.pop("_best")
                run = {"init": init, "fraction": fraction, "seed": seed, "data_seed": seed,
                       "train_examples": int(len(idx)), "epochs": float(run_cfg.num_epochs),
                       "steps": res["steps"], "best_epoch": res["runs"][0]["best_epoch"],
                       "seconds": res["runs"][0]["seconds"], "dev_metrics": res["metrics"],
                       "history": res["runs"][0]["history"]}
                if "test" in encoded:
                    out = best["finetuner"].predict(best["params"], encoded["test"], int(config.eval_batch_size))
                    run["test_metrics"] = spec.metrics(encoded["test"]["labels"], out.argmax(-1))
                del best, res
                runs.append(run)
                save()
    result = save()
    print(open(os.path.join(workdir, "table.md"), encoding="utf-8").read(), flush=True)
    print(f"-> {os.path.join(workdir, 'results.json')}, table.md, accuracy_vs_examples.png", flush=True)
    return result


def enable_compilation_cache(directory: str) -> None:
    """Keeps XLA's executables on disk. The runs of one fraction differ only in seed, init and subset --
    the same shapes and learning-rate schedule, so the same programs -- and each run builds its steps
    afresh (``finetune.run_protocol``); with the cache only the first run of a fraction compiles (on 2
    CPU cores a compile costs 20-60 s, a cached one ~3 s)."""
    import jax
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _before():
    if FLAGS.config.compilation_cache:
        enable_compilation_cache(os.path.join(FLAGS.workdir, "jax_cache"))


if __name__ == "__main__":
    cli.run(train_and_evaluate, "pretrained_vs_scratch", before=_before)
