r"""BERT pre-training (MLM + NSP/SOP).

    python scripts/pretrain.py --config=bert_jax/configs/pretrain.py:size=tiny --workdir=DIR \
      --config.train_files='data/train-*.tfrecord' --config.eval_files='data/eval-*.tfrecord' \
      --config.tokenizer=vocab.txt --config.num_train_steps=2000 --config.global_batch_size=64

The argument is ``size=tiny|mini|small|medium|base|large`` (optionally ``,seq_len=512`` etc.).
For ``base``/``large`` the defaults are the BERT paper's recipe: batch 256, lr 1e-4, 10k warmup
steps, linear decay, AdamW beta=(0.9, 0.999), weight decay 0.01, 1M steps of which 90% at sequence
length 128 (20 predictions) and 10% at 512 (80 predictions) -- give the 512 data with
``--config.phases[1].train_files``-style overrides or ``--config.train_files_512``.

Durations are in natural units: ``num_train_steps``, or ``num_train_examples``, or
``num_train_epochs`` (needs the data's ``summary.json``); `bert_jax.training.phases.train_steps`
converts them. Phases are fractions of the total.
"""

import ml_collections

from bert_jax.training.parallel import DEFAULT_RULES


def parse_arg(arg, **defaults):
    """"size=tiny,seq_len=128" -> ConfigDict, with types taken from the defaults."""
    out = ml_collections.ConfigDict(defaults)
    for part in filter(None, (arg or "").split(",")):
        if "=" not in part:
            raise ValueError(f"config argument {part!r} must be key=value (e.g. size=tiny)")
        key, value = part.split("=", 1)
        if key not in defaults:
            raise ValueError(f"unknown config argument {key!r}; known: {', '.join(defaults)}")
        out[key] = type(defaults[key])(value)
    return out


def get_config(arg=None):
    arg = parse_arg(arg, size="base", seq_len=128)
    paper_recipe = arg.size in ("base", "large")
    c = ml_collections.ConfigDict()
    c.size = arg.size
    # Architecture overrides on top of the named size (None = the size's value), e.g.
    # --config.model.hidden_dropout_prob=0.0 or --config.model.num_hidden_layers=3.
    c.model = ml_collections.ConfigDict({
        name: ml_collections.config_dict.placeholder(kind) for name, kind in (
            ("hidden_size", int), ("num_hidden_layers", int), ("num_attention_heads", int),
            ("intermediate_size", int), ("hidden_act", str), ("hidden_dropout_prob", float),
            ("attention_probs_dropout_prob", float), ("max_position_embeddings", int),
            ("type_vocab_size", int), ("initializer_range", float), ("layer_norm_eps", float),
            # "splash": the Pallas TPU attention kernel (needs attention_probs_dropout_prob=0.0)
            ("attention_impl", str),
            # "reference": flax's own layers instead of bert_jax/ops' kernels (same parameters)
            ("kernels", str))})
    c.dtype = "float32"                 # compute dtype; "bfloat16" on TPU/GPU (params stay fp32)
    c.remat = False                     # jax.checkpoint each layer (large batches / long sequences)

    # Data. The tokenizer that made the data (vocab.txt or SentencePiece .model); the model's vocab
    # size follows it.
    c.tokenizer = ""
    c.train_files = ""                  # comma-separated globs of TFRecords
    c.eval_files = ""
    c.dynamic_masking = False           # records hold unmasked pairs; mask on the fly (RoBERTa)
    c.masked_lm_prob = 0.15             # for dynamic masking
    c.whole_word_mask = False           # for dynamic masking
    c.seq_len = arg.seq_len
    c.max_predictions = 20 if arg.seq_len <= 128 else 80
    c.shuffle_buffer = 10_000
    c.sentence_order = False            # the records' labels are SOP rather than NSP (ALBERT)

    # Duration, batch and optimizer.
    c.global_batch_size = 256
    c.grad_accum_steps = 1
    c.num_train_steps = 1_000_000 if paper_recipe else 100_000
    c.num_train_examples = 0            # alternative to num_train_steps
    c.num_train_epochs = 0.0            # alternative; needs summary.json beside the train files
    c.optimizer = "adamw"               # or "lamb"
    c.learning_rate = 1e-4
    c.warmup_steps = 10_000 if paper_recipe else 1_000
    c.decay_power = 1.0                 # 1.0 = linear decay to end_learning_rate
    c.end_learning_rate = 0.0
    c.weight_decay = 0.01
    c.adam_b1 = 0.9
    c.adam_b2 = 0.999
    c.adam_eps = 1e-6
    c.grad_clip_norm = 1.0

    # Sequence-length phases, as fractions of the total steps. Empty: one phase from the fields above.
    c.phases = []
    if paper_recipe and arg.seq_len == 128:
        c.phases = [
            ml_collections.ConfigDict(dict(fraction=0.9, seq_len=128, max_predictions=20,
                                           global_batch_size=0, train_files="")),
            ml_collections.ConfigDict(dict(fraction=0.1, seq_len=512, max_predictions=80,
                                           global_batch_size=0, train_files="")),
        ]
    c.train_files_512 = ""              # shorthand for the 512 phase's train files

    # Parallelism.
    c.parallelism = "pmap"              # "pmap" (replicated) or "jit" (Mesh + named shardings)
    c.mesh_shape = (-1, 1, 1)           # (data, fsdp, tensor) for parallelism=jit
    c.logical_axis_rules = [list(r) for r in DEFAULT_RULES]

    # Initialisation: random (empty) or an explicit pretrained checkpoint -- never confused with
    # resuming, which always happens by itself from the workdir's own checkpoints.
    c.init_checkpoint = ""
    c.seed = 0
    # PRNG for dropout. "threefry" (JAX's default) gives the same masks whatever the device layout, so
    # pmap/jit and 1-host/N-host runs match; "unsafe_rbg" (MaxText's default) makes dropout masks
    # cheaper (figures in benchmarks/README.md) but its bits depend on the sharding.
    c.rng_impl = "threefry"

    # Periodic work.
    c.log_every_steps = 100
    c.eval_every_steps = 2_000
    c.eval_batches = 50
    c.checkpoint_every_steps = 5_000
    c.keep_checkpoints = 3
    c.max_steps_this_run = 0            # >0: save and exit after this many steps (job time limits);
                                        # the next run resumes where this one stopped
    c.progress_timeout_s = 1800         # several processes: a step / eval / save that makes no progress
                                        # for this long ends every process, naming the missing one
    c.peak_flops = 0.0                  # per device, for MFU; 0 = look up the chip, or skip on CPU
    return c
