r"""SQuAD v1.1 / v2.0 fine-tuning: a start/end span head over sliding windows, n-best decoding, EM/F1.

    # tfds squad/v1.1 (train -> validation), the BERT paper's recipe (3 epochs, lr 5e-5, batch 32):
    python experiments/squad/main.py --config=experiments/squad/config.py:task=squad1 \
      --workdir=runs/squad1 --config.init_checkpoint=PATH
    # SQuAD 2.0 (unanswerable questions, the null-score threshold; 2 epochs, batch 48):
    python experiments/squad/main.py --config=experiments/squad/config.py:task=squad2 \
      --workdir=runs/squad2 --config.init_checkpoint=PATH
    # the official JSON files instead of tfds:
    python experiments/squad/main.py --config=experiments/squad/config.py:task=squad1 --workdir=runs/squad1 \
      --config.train_file=train-v1.1.json --config.eval_file=dev-v1.1.json --config.init_checkpoint=PATH

Expected (BERT paper, Devlin et al. 2019, Tables 2-3, dev set): v1.1 BERT-base 80.8 EM / 88.5 F1,
BERT-large 84.1 / 90.9; v2.0 BERT-large 78.7 EM / 81.9 F1. Measured here: see experiments/squad/README.md.
"""

import ml_collections

from bert_jax.configs.pretrain import parse_arg

TASKS = ("squad1", "squad2")


def get_config(arg=None):
    arg = parse_arg(arg, task="squad1", size="tiny")
    if arg.task not in TASKS:
        raise ValueError(f"task={arg.task!r}: choose one of {', '.join(TASKS)}")
    v2 = arg.task == "squad2"
    c = ml_collections.ConfigDict()
    c.task = arg.task                  # squad1 (v1.1) | squad2 (v2.0, with unanswerable questions)
    # Data: official SQuAD JSON files; either left empty reads tfds squad/v1.1|v2.0 (train / validation).
    c.train_file = ""
    c.eval_file = ""
    c.data_dir = ""                    # tfds data_dir ("" = tfds default)
    c.train_fraction = 1.0             # a random fraction of the training questions (data_seed picks it)
    c.data_seed = 0

    # Model: a load_pretrained path (HF dir, Google TF-1 dir, bert_jax workdir/export); empty = random
    # init of `model_size` with the vocab of `tokenizer`.
    c.init_checkpoint = ""
    c.tokenizer = ""                   # default: the checkpoint's own vocab / SentencePiece model
    c.model_size = arg.size
    c.hidden_dropout_prob = 0.1

    # Features and decoding (google-research/bert run_squad.py defaults).
    c.max_seq_length = 384             # [CLS] question [SEP] context window [SEP]
    c.doc_stride = 128                 # a long context is read in windows starting this many pieces apart
    c.max_query_length = 64            # question pieces kept
    c.n_best_size = 20                 # best starts x ends considered per window, answers kept per question
    c.max_answer_length = 30           # pieces
    c.null_score_diff_threshold = 0.0  # v2: predict "" when null score - best span score > this

    # Optimisation (BERT paper: v1.1 3 epochs batch 32 lr 5e-5; v2.0 2 epochs batch 48 lr 5e-5).
    c.global_batch_size = 48 if v2 else 32
    c.eval_batch_size = 128
    c.num_epochs = 2.0 if v2 else 3.0
    c.learning_rate = 5e-5
    c.learning_rates = ""              # comma-separated sweep; overrides learning_rate when set
    c.seeds = "0"                      # comma-separated; the reported metrics are the median over seeds
    c.warmup_proportion = 0.1
    c.weight_decay = 0.01
    c.early_stopping_patience = 0      # epochs without dev F1 gain before stopping (0 = run all epochs)
    c.mesh_shape = (-1, 1, 1)
    c.save_best_model = True           # best run's params -> workdir/best_model (bert_jax format)
    c.checkpoint_every_steps = 1000    # each lr x seed run checkpoints in workdir/runs/ this often and on SIGTERM;
                                       # the same command resumes it, and skips the finished runs
    c.max_steps_this_run = 0           # >0: stop after this many training steps (saving); the same command resumes
    return c
