r"""Pretrained vs scratch: the same architecture fine-tuned from a checkpoint and from random init, on
1%, 5%, 20% and 100% of the labelled training set, several seeds each.

    # Rotten Tomatoes (movie-disjoint split); PATH: any load_pretrained path (HF dir, Google TF-1 dir,
    # bert_jax pretraining workdir). Scratch is a random init of PATH's architecture, same tokenizer.
    python experiments/pretrained_vs_scratch/main.py --config=experiments/pretrained_vs_scratch/config.py \
      --workdir=runs/pvs --config.init_checkpoint=PATH --config.max_seq_length=64 --config.num_epochs=2
    # a local file task (fields as in experiments/classification):
    python experiments/pretrained_vs_scratch/main.py --config=experiments/pretrained_vs_scratch/config.py:task=csv \
      --workdir=runs/pvs_csv --config.init_checkpoint=PATH --config.train_file=train.csv \
      --config.eval_file=dev.csv --config.test_file=test.csv --config.fractions=0.1,1 --config.seeds=0,1

Writes results.json, table.md and accuracy_vs_examples.png; measured numbers in README.md here.
"""

import ml_collections

from bert_jax.configs.pretrain import parse_arg


def get_config(arg=None):
    arg = parse_arg(arg, task="rotten_tomatoes", recipe="")
    c = ml_collections.ConfigDict()
    c.task = arg.task                  # rotten_tomatoes | csv | a GLUE classification task
    c.train_file = ""                  # task=csv: as experiments/classification
    c.eval_file = ""
    c.test_file = ""
    c.text_fields = "text"
    c.label_field = "label"
    c.regression = False
    c.data_dir = ""

    # The pretrained arm (required); the scratch arm is a random init of the same BertConfig.
    c.init_checkpoint = ""
    c.tokenizer = ""                   # default: the checkpoint's own vocab (used by both arms)
    c.hidden_dropout_prob = 0.1

    # The grid: every fraction x init x seed. A fraction's subset is drawn with data_seed = seed (as
    # experiments/classification's train_fraction/data_seed do), so each seed sees a different subset,
    # and both inits see the same one.
    c.fractions = "0.01,0.05,0.2,1.0"
    c.train_examples = ""              # label budgets as counts (e.g. "100,300,1000"); overrides fractions
    c.seeds = "0,1,2"
    c.inits = "pretrained,scratch"

    # Fine-tuning hyper-parameters, the same for both arms (BERT paper defaults).
    c.max_seq_length = 128
    c.global_batch_size = 32
    c.eval_batch_size = 128
    c.num_epochs = 3.0
    c.min_train_steps = 0              # small fractions: raise the epochs until at least this many steps
    c.learning_rate = 5e-5
    c.learning_rates = ""              # a grid (e.g. "3e-5,1e-4,3e-4"): for each init x budget, the lr with the
                                       # best median dev metric over seeds is the one reported (never test)
    c.lr_search = "all_seeds"          # or "first_seed": every lr with the first seed only, the other seeds
                                       # at the lr that seed picked on dev (cheaper; dev only either way)
    c.max_evals = 0                    # >0: at most this many dev evaluations per run -- a small subset is
                                       # repeated within an epoch instead of evaluating after every pass
    c.warmup_proportion = 0.1
    c.weight_decay = 0.01
    c.early_stopping_patience = 0
    c.mesh_shape = (-1, 1, 1)
    c.checkpoint_every_steps = 1000    # each lr x seed run checkpoints in workdir/runs/ this often and on SIGTERM;
                                       # the same command resumes it, and skips the finished runs
    c.max_steps_this_run = 0           # >0: stop after this many training steps (saving); the same command resumes
    c.compilation_cache = True         # main.py: cache compiled steps in workdir/jax_cache (runs share them)
    c.probe = False                    # also frozen features + LogisticRegression at every budget x seed
    c.probe_features = "mean"          # "mean" (masked mean of the last layer) or "pooled"
    c.probe_c_grid = "0.01,0.1,1,10"   # C picked on dev
    c.metric = ""                      # plotted/tabled metric; "" = the task's main metric (accuracy)
    if arg.recipe == "main_job":
        main_job_recipe(c)
    elif arg.recipe:
        raise ValueError(f"recipe={arg.recipe!r}: the only recipe is main_job")
    return c


def main_job_recipe(c):
    """scripts/main_job.sh's fine-tuning grid (chosen on dev; see README.md here): three label budgets of
    at most 1,000 reviews, 3 seeds, both arms with the same lr grid, the best lr per arm x budget picked by
    median dev accuracy; small budgets get enough updates (min_train_steps) without evaluating the dev
    set after every tiny epoch (max_evals); the linear probe beside."""
    c.train_examples = "100,300,1000"
    c.seeds = "0,1,2"
    c.max_seq_length = 64
    c.global_batch_size = 16
    c.eval_batch_size = 256
    c.num_epochs = 1.0
    c.min_train_steps = 60
    c.max_evals = 1                    # the final model (of 2, the last was the best in every pre-trained run measured)
    c.learning_rate = 1e-4
    c.learning_rates = "1e-4,3e-4"
    c.lr_search = "first_seed"
    c.probe = True
