r"""The linear probe: frozen BERT features + scikit-learn logistic regression, on a fine-tuning split.

    # Rotten Tomatoes (movie-disjoint split), all-MiniLM-L6-v2, pooled output ([CLS] -> pooler):
    python experiments/linear_probe/main.py --config=experiments/linear_probe/config.py:task=rotten_tomatoes \
      --workdir=runs/probe_rt --config.init_checkpoint=PATH --config.max_seq_length=64
    # mean of the last layer's token vectors over the attention mask instead, and fine-tuning beside it:
    python experiments/linear_probe/main.py \
      --config=experiments/linear_probe/config.py:task=rotten_tomatoes,features=mean \
      --workdir=runs/probe_rt_mean --config.init_checkpoint=PATH --config.compare_finetune=True
    # any local CSV/TSV/JSONL file (the same fields as experiments/classification):
    python experiments/linear_probe/main.py --config=experiments/linear_probe/config.py:task=csv \
      --workdir=runs/probe --config.train_file=train.csv --config.eval_file=dev.csv --config.test_file=test.csv \
      --config.text_fields=text --config.label_field=label --config.init_checkpoint=PATH

Measured numbers: see README.md next to this file.
"""

import ml_collections

from bert_jax.configs.pretrain import parse_arg


def get_config(arg=None):
    arg = parse_arg(arg, task="rotten_tomatoes", features="pooled", size="tiny")
    c = ml_collections.ConfigDict()
    c.task = arg.task                  # rotten_tomatoes | csv | a GLUE classification task (as classification)
    # Local files (task=csv), read exactly as experiments/classification reads them.
    c.train_file = ""
    c.eval_file = ""
    c.test_file = ""                   # optional; scored when labelled
    c.text_fields = "text"             # one field, or two comma-separated (sentence pairs)
    c.label_field = "label"
    c.regression = False               # must stay False: the probe is a classifier
    c.data_dir = ""                    # tfds data_dir for GLUE tasks
    c.train_fraction = 1.0             # fit on a random fraction of the training set (as classification)
    c.data_seed = 0                    # picks that fraction

    # The frozen encoder: a load_pretrained path; empty = random init of `model_size` (a baseline).
    c.init_checkpoint = ""
    c.tokenizer = ""                   # default: the checkpoint's own vocab
    c.model_size = arg.size
    c.seed = 0                         # random init (empty init_checkpoint) only
    c.max_seq_length = 128

    # Features: "pooled" (BERT's pooler: tanh(W [CLS])) or "mean" (last layer averaged over the mask).
    c.features = arg.features
    c.feature_batch_size = 128         # examples per jitted forward (rounded up to the device count)
    c.length_bucket = 16               # batches go by length, cut to a multiple of this (0 = max_seq_length)
    c.save_features = False            # also write workdir/features_<split>.npz (features, labels)

    # The probe: StandardScaler + LogisticRegression(C); C is the best dev main metric over the grid
    # (ties go to the smaller C, i.e. more regularisation).
    c.c_grid = "0.001,0.01,0.1,1,10,100"
    c.standardize = True
    c.max_iter = 2000

    # Fine-tuning beside the probe: the shared fine-tuning protocol (bert_jax.training.protocol) on the
    # probe's encoded splits (same checkpoint, tokenizer, max_seq_length, train subset), these hyper-parameters.
    c.compare_finetune = False
    c.finetune = ml_collections.ConfigDict(dict(
        num_epochs=3.0, learning_rate=5e-5, global_batch_size=32, eval_batch_size=128, seeds="0",
        warmup_proportion=0.1, weight_decay=0.01))
    return c
