r"""FLOPs and wall time of a BERT pre-training run, for planning and for checking claims.

    python scripts/estimate_cost.py --config=bert_jax/configs/pretrain.py:size=base --chip=tpu-v4 --num_chips=16
    python scripts/estimate_cost.py --size=base --seq_len=128 --batch_size=256 --num_steps=1000000 \
        --chip=h100 --num_chips=8 --mfu=0.4
    # The BERT paper: BERT-large, 90% of 1M steps at 128 (20 predictions), 10% at 512 (80), batch 256,
    # "4 days on 16 Cloud TPUs" (= 64 TPU chips; the paper does not name the generation -- v2 then):
    python scripts/estimate_cost.py --size=large --phases=128:900000:256:20,512:100000:256:80 \
        --chip=tpu-v2 --num_chips=64 --wall_hours=96

FLOPs are the model's matmul FLOPs (`bert_jax.flops`: encoder, attention, pooler/NSP and the sparse
MLM head over ``max_predictions`` positions; ``--max_predictions=0`` counts the dense head over every
position), ×3 for training. Wall time = FLOPs / (chips × published bf16 peak per chip × MFU).
``--wall_hours`` inverts it: the MFU a run of that length implies.

``--phases`` items are ``SEQ_LEN:STEPS[:BATCH[:MAX_PREDICTIONS]]`` (BATCH defaults to
``--batch_size``, MAX_PREDICTIONS to ``--max_predictions`` or else ceil(0.15 × SEQ_LEN)). With
``--config`` the size, phases, batch, steps, predictions and remat come from the config file
(``bert_jax.training.phases`` splits it into phases exactly as training does), and any of the flags
above that is given explicitly overrides it.
"""

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

config_flags.DEFINE_config_file("config", None, "A pre-training config file, e.g. "
                                "bert_jax/configs/pretrain.py:size=base.", lock_config=False)
flags.DEFINE_string("size", None, "Model size: tiny, mini, small, medium, base, large (default base).")
flags.DEFINE_integer("vocab_size", 30522, "Vocabulary size (the tokenizer's).")
flags.DEFINE_integer("seq_len", None, "Sequence length of a single-phase run (default 128).")
flags.DEFINE_integer("batch_size", None, "Global batch size in sequences (default 256).")
flags.DEFINE_integer("num_steps", None, "Training steps of a single-phase run (default 1,000,000).")
flags.DEFINE_string("phases", None, "SEQ_LEN:STEPS[:BATCH[:MAX_PREDICTIONS]],... e.g. 128:900000,512:100000.")
flags.DEFINE_integer("max_predictions", None, "Masked positions per sequence (sparse MLM head); 0 = dense "
                     "head over all positions; default ceil(0.15 * seq_len).")
flags.DEFINE_boolean("remat", None, "Each layer rematerialised: also print the hardware FLOPs it adds.")
flags.DEFINE_string("chip", "tpu-v4", "Chip whose published bf16 peak to use: one of "
                    "tpu-v2, tpu-v3, tpu-v4, tpu-v5e, tpu-v5p, tpu-v6e, a100, h100, h100-pcie, h200.")
flags.DEFINE_float("peak_flops", None, "Peak FLOP/s per chip, instead of --chip's published value.")
flags.DEFINE_integer("num_chips", 1, "Number of chips.")
flags.DEFINE_float("mfu", 0.4, "Model FLOPs utilisation to assume for the wall time, in (0, 1].")
flags.DEFINE_float("wall_hours", None, "A run's wall time: print the MFU it implies.")
FLAGS = flags.FLAGS


def _default_predictions(seq_len):
    return math.ceil(0.15 * seq_len)


def _predictions(value, seq_len):
    """Flag/phase value -> the sparse head's P, or None for the dense head."""
    if value is None:
        return min(_default_predictions(seq_len), seq_len)
    if value == 0:
        return None
    if not 0 < value <= seq_len:
        raise SystemExit(f"max_predictions={value} must be in [0, seq_len={seq_len}] (0 = dense MLM head)")
    return value


def _duration(hours):
    if hours * 60 < 1:
        return f"{hours * 3600:,.3g} seconds"
    if hours < 1:
        return f"{hours * 60:,.1f} minutes"
    return f"{hours:,.1f} hours = {hours / 24:,.2f} days"


def parse_phases(text, default_batch, default_predictions):
    phases = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        parts = item.split(":")
        try:
            if not 2 <= len(parts) <= 4:
                raise ValueError
            nums = [int(p) for p in parts]
        except ValueError:
            raise SystemExit(f"--phases: {item!r} is not SEQ_LEN:STEPS[:BATCH[:MAX_PREDICTIONS]] "
                             "(integers, e.g. 128:900000 or 512:100000:256:80)") from None
        seq_len, steps = nums[0], nums[1]
        batch = nums[2] if len(nums) > 2 else default_batch
        if seq_len <= 0 or steps < 0 or batch <= 0:
            raise SystemExit(f"--phases: {item!r} needs seq_len > 0, steps >= 0 and batch > 0")
        preds = _predictions(nums[3] if len(nums) > 3 else default_predictions, seq_len)
        phases.append((seq_len, steps, batch, preds))
    if not phases:
        raise SystemExit("--phases is empty; e.g. --phases=128:900000,512:100000")
    return phases


def _given(name):
    return FLAGS[name].present


def from_config(config, vocab_size):
    """(BertConfig, phases) of a pre-training config, both as training derives them."""
    from bert_jax.training import phases as phases_lib, trainer as trainer_lib
    try:
        total = phases_lib.train_steps(config)
        phases = [(p.seq_len, p.end_step - p.start_step, p.global_batch_size, p.max_predictions)
                  for p in phases_lib.make_phases(config, total)]
        return trainer_lib.model_config(config, vocab_size), phases
    except Exception as e:  # noqa: BLE001 (TrainingError, ValueError...: one clear message)
        raise SystemExit(f"--config: {e}") from None


def main(argv):
    if len(argv) > 1:
        raise SystemExit(f"Unexpected arguments: {' '.join(argv[1:])}")
    from bert_jax import flops
    from bert_jax.modeling import BertConfig

    default_batch = FLAGS.batch_size or 256
    model_cfg = None
    if FLAGS.config is not None:
        model_cfg, phases = from_config(FLAGS.config, FLAGS.vocab_size)
        # An explicit flag replaces the config's value in every phase.
        phases = [(FLAGS.seq_len if _given("seq_len") else L,
                   FLAGS.num_steps if _given("num_steps") and len(phases) == 1 else n,
                   FLAGS.batch_size if _given("batch_size") else b,
                   _predictions(FLAGS.max_predictions, FLAGS.seq_len if _given("seq_len") else L)
                   if _given("max_predictions") else p)
                  for L, n, b, p in phases]
        source = f"config {config_flags.get_config_filename(FLAGS['config'])}"
    else:
        source = "flags"
    if FLAGS.phases:
        phases = parse_phases(FLAGS.phases, default_batch, FLAGS.max_predictions)
    elif FLAGS.config is None:
        seq_len = FLAGS.seq_len or 128
        phases = [(seq_len, FLAGS.num_steps if FLAGS.num_steps is not None else 1_000_000, default_batch,
                   _predictions(FLAGS.max_predictions, seq_len))]
    if FLAGS.num_chips <= 0:
        raise SystemExit(f"--num_chips={FLAGS.num_chips} must be positive")
    try:
        peak = FLAGS.peak_flops if FLAGS.peak_flops else flops.chip_peak_flops(FLAGS.chip)
        max_len = max([512] + [p[0] for p in phases])
        if model_cfg is None or FLAGS.size:
            size = FLAGS.size or "base"
            model_cfg = BertConfig.named(size, vocab_size=FLAGS.vocab_size, max_position_embeddings=max_len,
                                         remat=bool(model_cfg and model_cfg.remat))
        else:
            size = FLAGS.config.size
        if FLAGS.remat is not None:
            model_cfg = model_cfg.replace(remat=FLAGS.remat)
        cfg = model_cfg
        run = flops.training_run_flops(cfg, phases)
        hours = flops.wall_seconds(run["total_flops"], peak, FLAGS.num_chips, FLAGS.mfu) / 3600
    except ValueError as e:
        raise SystemExit(f"estimate_cost: {e}") from None
    remat = cfg.remat

    print(f"model: BERT-{size} ({cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, intermediate "
          f"{cfg.intermediate_size}, vocab {cfg.vocab_size}): {flops.num_parameters(cfg):,} parameters "
          f"(from {source})")
    for i, ph in enumerate(run["phases"], 1):
        head = "dense MLM head" if ph["max_predictions"] is None else f"{ph['max_predictions']} predictions/seq"
        print(f"phase {i}: seq {ph['seq_len']}, {ph['num_steps']:,} steps x batch {ph['batch_size']} ({head}): "
              f"{ph['tokens']:.3g} tokens x {ph['train_flops_per_token'] / 1e9:.3f} GFLOP/token (train) = "
              f"{ph['flops']:.3g} FLOPs")
    print(f"total: {run['total_flops']:.4g} FLOPs ({flops.format_flops(run['total_flops'])}) over "
          f"{run['total_tokens']:.4g} tokens")
    if remat:
        print(f"  with remat the chips also recompute each layer's forward: {run['hardware_flops']:.4g} "
              "hardware FLOPs in all (MFU counts the model FLOPs above)")
    chip = f"{FLAGS.chip}" if not FLAGS.peak_flops else "chip"
    print(f"hardware: {FLAGS.num_chips} x {chip} at {peak / 1e12:,.1f} TFLOP/s (bf16 peak) = "
          f"{FLAGS.num_chips * peak / 1e15:,.3g} PFLOP/s")
    print(f"wall time at MFU {100 * FLAGS.mfu:.0f}%: {_duration(hours)} "
          f"({hours * FLAGS.num_chips:,.4g} chip-hours)")
    if FLAGS.wall_hours is not None:
        if FLAGS.wall_hours <= 0:
            raise SystemExit(f"--wall_hours={FLAGS.wall_hours} must be positive")
        implied = flops.mfu(run["total_flops"] / (FLAGS.wall_hours * 3600), peak, FLAGS.num_chips)
        verdict = ("impossible: above the chips' peak" if implied > 1 else
                   "optimistic: above ~60% MFU, rarely reached" if implied > 0.6 else
                   "low: under 10%, the chips mostly wait" if implied < 0.1 else "typical: 10-60%")
        print(f"a run of {_duration(FLAGS.wall_hours)} implies MFU {100 * implied:.1f}% ({verdict})")


if __name__ == "__main__":
    app.run(main)
