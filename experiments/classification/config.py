r"""Sentence(-pair) classification / regression fine-tuning: GLUE, Rotten Tomatoes, or any local file.

    # a local CSV/TSV/JSONL file (the contract outside scripts use):
    python experiments/classification/main.py --config=experiments/classification/config.py:task=csv \
      --workdir=runs/cls --config.train_file=train.csv --config.eval_file=dev.csv \
      --config.text_fields=text --config.label_field=label --config.init_checkpoint=PATH \
      --config.num_epochs=3 --config.learning_rate=5e-5 --config.global_batch_size=32 \
      --config.max_seq_length=128 --config.seeds=0,1,2
    # GLUE from tfds, the paper's protocol (lr sweep x seeds, best on dev, median over seeds):
    python experiments/classification/main.py --config=experiments/classification/config.py:task=rte \
      --workdir=runs/rte --config.init_checkpoint=PATH --config.learning_rates=2e-5,3e-5,5e-5 --config.seeds=0,1,2,3,4
    # Rotten Tomatoes (the snippets SST-2 was built from; movie-disjoint split):
    python experiments/classification/main.py --config=experiments/classification/config.py:task=rotten_tomatoes \
      --workdir=runs/rt --config.init_checkpoint=PATH

Expected numbers: see experiments/README.md (measured there, with the commands that made them).
"""

import ml_collections

from bert_jax.configs.pretrain import parse_arg


def get_config(arg=None):
    arg = parse_arg(arg, task="csv", size="tiny")
    c = ml_collections.ConfigDict()
    c.task = arg.task                  # csv | rotten_tomatoes | cola sst2 mrpc stsb qqp mnli qnli rte wnli ax
    # Local files (task=csv; any of .csv/.tsv/.jsonl). text_fields: one field, or two comma-separated.
    c.train_file = ""
    c.eval_file = ""
    c.test_file = ""                   # optional; scored when labelled, else predictions are written
    c.text_fields = "text"
    c.label_field = "label"
    c.regression = False
    c.data_dir = ""                    # tfds data_dir for GLUE ("" = tfds default)
    c.train_fraction = 1.0             # use a random fraction of the training set (data_seed picks it)
    c.data_seed = 0

    # Model: a load_pretrained path (HF dir, Google TF-1 dir, bert_jax workdir/export); empty = random
    # init of `model_size` with the vocab of `tokenizer`.
    c.init_checkpoint = ""
    c.tokenizer = ""                   # default: the checkpoint's own vocab / SentencePiece model
    c.model_size = arg.size
    c.hidden_dropout_prob = 0.1
    c.dtype = "float32"                # compute dtype: bfloat16 = bf16 matmuls, fp32 params/optimizer/statistics
    c.kernels = "fast"                 # or "reference": plain flax modules instead of bert_jax/ops (modeling.KERNELS)

    # Optimisation (BERT paper: batch 32, lr in {2,3,5}e-5, 3 epochs, 10% warmup, AdamW wd 0.01).
    c.max_seq_length = 128
    c.global_batch_size = 32
    c.eval_batch_size = 128
    c.num_epochs = 3.0
    c.learning_rate = 5e-5
    c.learning_rates = ""              # comma-separated sweep; overrides learning_rate when set
    c.seeds = "0"                      # comma-separated; the reported metrics are the median over seeds
    c.warmup_proportion = 0.1
    c.weight_decay = 0.01
    c.optimizer = "adamw"              # or "lamb"; adam_b1 / adam_b2 / adam_eps / grad_clip_norm are read too
    c.early_stopping_patience = 0      # epochs without dev gain before stopping (0 = run all epochs)
    c.mesh_shape = (-1, 1, 1)
    c.save_best_model = True           # best run's params -> workdir/best_model (bert_jax format)
    c.checkpoint_every_steps = 1000    # each lr x seed run checkpoints in workdir/runs/ this often and on SIGTERM;
                                       # the same command resumes it, and skips the finished runs
    c.max_steps_this_run = 0           # >0: stop after this many training steps (saving); the same command resumes
    return c
