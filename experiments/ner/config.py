r"""Token classification (NER) fine-tuning: CoNLL-style BIO files or tfds conll2003, first-piece labels.

    # local CoNLL files (token [other columns ...] tag per line, a blank line between sentences):
    python experiments/ner/main.py --config=experiments/ner/config.py:task=conll --workdir=runs/ner \
      --config.train_file=train.txt --config.eval_file=dev.txt --config.init_checkpoint=PATH
    # CoNLL-2003 English from tfds (train -> dev; test scored with the best run):
    python experiments/ner/main.py --config=experiments/ner/config.py:task=conll2003 --workdir=runs/conll03 \
      --config.init_checkpoint=PATH --config.learning_rates=2e-5,3e-5,5e-5 --config.seeds=0,1,2

Expected (BERT paper, Devlin et al. 2019, Table 7, CoNLL-2003 NER, entity F1): BERT-base dev 96.4 /
test 92.4, BERT-large dev 96.6 / test 92.8 -- with document context around each sentence, which this
sentence-level recipe does not add. Measured here: see experiments/ner/README.md.
"""

import ml_collections

from bert_jax.configs.pretrain import parse_arg

TASKS = ("conll", "conll2003")


def get_config(arg=None):
    arg = parse_arg(arg, task="conll", size="tiny")
    if arg.task not in TASKS:
        raise ValueError(f"task={arg.task!r}: choose one of {', '.join(TASKS)}")
    c = ml_collections.ConfigDict()
    c.task = arg.task                  # conll (local files) | conll2003 (tfds)
    # Local files (task=conll). The label set is the training file's tags; the eval file may not add any.
    c.train_file = ""
    c.eval_file = ""
    c.test_file = ""                   # optional; scored when tagged, else only its predictions are written
    c.tag_column = -1                  # which column holds the NER tag (-1 = the last)
    c.data_dir = ""                    # tfds data_dir for conll2003 ("" = tfds default)
    c.train_fraction = 1.0             # a random fraction of the training sentences (data_seed picks it)
    c.data_seed = 0

    # Model: a load_pretrained path (HF dir, Google TF-1 dir, bert_jax workdir/export); empty = random
    # init of `model_size` with the vocab of `tokenizer`.
    c.init_checkpoint = ""
    c.tokenizer = ""                   # default: the checkpoint's own vocab / SentencePiece model
    c.model_size = arg.size
    c.hidden_dropout_prob = 0.1

    # Optimisation (BERT paper, Appendix A.3 ranges: batch 16/32, lr {2,3,5}e-5, 2-4 epochs).
    c.max_seq_length = 128             # words past it are predicted O (counted in results.json)
    c.global_batch_size = 32
    c.eval_batch_size = 128
    c.num_epochs = 3.0
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
