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
    arg = parse_arg(arg, task="rotten_tomatoes")
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
    c.model_size = "tiny"              # unused (the architecture comes from init_checkpoint); kept so
                                       # load_model_and_tokenizer sees the classification fields
    c.hidden_dropout_prob = 0.1

    # The grid: every fraction x init x seed. A fraction's subset is drawn with data_seed = seed (as
    # experiments/classification's train_fraction/data_seed do), so each seed sees a different subset,
    # and both inits see the same one.
    c.fractions = "0.01,0.05,0.2,1.0"
    c.seeds = "0,1,2"
    c.inits = "pretrained,scratch"

    # Fine-tuning hyper-parameters, the same for both arms (BERT paper defaults).
    c.max_seq_length = 128
    c.global_batch_size = 32
    c.eval_batch_size = 128
    c.num_epochs = 3.0
    c.min_train_steps = 0              # small fractions: raise the epochs until at least this many steps
    c.learning_rate = 5e-5
    c.warmup_proportion = 0.1
    c.weight_decay = 0.01
    c.early_stopping_patience = 0
    c.mesh_shape = (-1, 1, 1)
    c.compilation_cache = True         # main.py: cache compiled steps in workdir/jax_cache (runs share them)
    c.metric = ""                      # plotted/tabled metric; "" = the task's main metric (accuracy)
    return c
