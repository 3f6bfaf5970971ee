r"""Compile the real train step for a Cloud TPU slice on this (CPU) machine: does it fit, how fast at best.

    python scripts/aot_compile.py --config=bert_jax/configs/pretrain.py:size=base --topology=v5e:2x2 \
      --config.parallelism=jit --config.dtype=bfloat16 [--config.x=v ...] [--phase=0] [--json=out.json]
    python scripts/aot_compile.py --config=bert_jax/configs/pretrain.py:size=large,seq_len=512 \
      --topology=v5p:2x2x1 --config.global_batch_size=256 --config.remat=True
    python scripts/aot_compile.py --task=classification --config=bert_jax/configs/pretrain.py:size=base \
      --topology=v5e:2x2 --config.global_batch_size=32

Builds the pre-training `Trainer` of the config (``parallelism=jit`` over the config's ``mesh_shape``) -- or,
``--task=classification``, the fine-tuning step -- over the named topology's devices, compiles each phase's
step with the TPU compiler (needs libtpu: ``pip install "jax[tpu]"``) and prints per device the parameters +
optimizer state, temporaries and peak against the chip's HBM, XLA's FLOPs and bytes per step, the roofline
step time (``max(FLOPs / peak, bytes / HBM bandwidth)``, chips in `bert_jax.flops`), tokens/s, and the whole
run's wall time and chip-hours at that speed. Exit status 1 with one line when a step does not fit (how much
over, what to try) or the input is wrong. A lower bound: real steps are slower (the README's TPU table).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bert_jax import aot  # noqa: E402  (no jax import yet)

aot.prepare_environment()   # before JAX initialises: CPU backend, quiet compile-only libtpu

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Pre-training config, e.g. bert_jax/configs/pretrain.py:size=base.",
                                lock_config=True)
flags.DEFINE_string("topology", None, "TPU slice, e.g. v5e:2x2, v4:2x2x1, v5p:2x2x2, v6e:4x4.")
flags.DEFINE_enum("task", "pretrain", list(aot.TASKS), "Which step: pre-training (every phase) or fine-tuning "
                  "(sequence classification, the config's size/dtype/batch/seq_len).")
flags.DEFINE_integer("phase", None, "Only this pre-training phase (index into the config's phases).")
flags.DEFINE_integer("vocab_size", None, "Vocabulary size (default: config.tokenizer's, else 30522).")
flags.DEFINE_integer("num_labels", 2, "Classes of the fine-tuning head.")
flags.DEFINE_string("json", None, "Write the report as JSON here.")
flags.mark_flags_as_required(["config", "topology"])
FLAGS = flags.FLAGS


def _vocab_size(config):
    if FLAGS.vocab_size:
        return FLAGS.vocab_size
    if config.get("tokenizer"):
        from bert_jax.tokenization import load_tokenizer
        return load_tokenizer(config.tokenizer).vocab_size
    return 30522


def _gib(x):
    return f"{x / aot.GiB:.2f} GiB"


def _duration(seconds):
    hours = seconds / 3600
    return f"{hours * 60:.1f} min" if hours < 1 else f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


def _print_step(r, topo):
    pred = f", {r['max_predictions']} predictions" if r.get("max_predictions") else ""
    print(f"{r['step']}: seq {r['seq_len']}, batch {r['global_batch']} ({r['per_device_batch']} per device){pred}"
          f" -- compiled in {r['compile_seconds']:.0f} s")
    if not r["fits"]:
        print(f"  memory per device: params + optimizer state {_gib(r['state_bytes_per_device'])}; the compiler "
              f"needs {_gib(r['peak_bytes_per_device'])} of {_gib(r['hbm_bytes_per_device'])}: DOES NOT FIT")
        return
    print(f"  memory per device: params + optimizer state {_gib(r['state_bytes_per_device'])}, temporaries "
          f"{_gib(r['temp_bytes_per_device'])}, peak {_gib(r['peak_bytes_per_device'])} of "
          f"{_gib(r['hbm_bytes_per_device'])} HBM ({100 * r['peak_bytes_per_device'] / r['hbm_bytes_per_device']:.0f}%): fits")
    print(f"  XLA per step: {r['flops_per_step'] / 1e12:.2f} TFLOP ({r['flops_per_device'] / 1e12:.3f} per device; the "
          f"model's matmuls {r['model_flops_per_step'] / 1e12:.2f}), {r['bytes_per_device'] / 1e9:.2f} GB accessed per device")
    print(f"  roofline: compute {1e3 * r['compute_seconds']:.1f} ms, HBM {1e3 * r['memory_seconds']:.1f} ms -> step >= "
          f"{1e3 * r['estimated_step_seconds']:.1f} ms ({r['bound']}-bound), <= {r['tokens_per_second']:,.0f} tokens/s, "
          f"MFU at the roofline {100 * r['mfu_at_roofline']:.0f}%")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = FLAGS.config
    if FLAGS.task == "pretrain" and config.parallelism == "pmap":
        # pmap cannot be lowered for devices that are not attached; its layout (replicated state, batch split
        # over every device) is the jit step's over a data-only mesh.
        print("aot_compile: parallelism=pmap compiled as jit over a data-only mesh (the same layout)")
        config.parallelism, config.mesh_shape = "jit", (-1, 1, 1)
    try:
        topo = aot.get_topology(FLAGS.topology)
        vocab = _vocab_size(config)
        if FLAGS.task == "pretrain":
            steps = aot.pretrain_steps(config, topo, vocab, FLAGS.phase)
        else:
            steps = [aot.classification_step(config, topo, vocab, FLAGS.num_labels)]
    except ValueError as e:   # AotError, TrainingError, BertConfig's ValueError: one line
        raise SystemExit(f"aot_compile: {e}") from None
    from bert_jax import flops
    from bert_jax.training import phases as phases_lib, trainer as trainer_lib
    mesh = dict(zip(("data", "fsdp", "tensor"), steps[0].mesh.devices.shape))
    print(f"aot_compile: {FLAGS.task} BERT-{config.size} ({config.dtype}{', remat' if config.remat else ''}"
          f"{', splash attention' if steps[0].splash else ''}) on {topo.name} = {topo.num_chips} x {topo.device_kind} "
          f"({topo.num_devices} devices, {topo.num_hosts} host{'s' if topo.num_hosts > 1 else ''}), mesh "
          + " x ".join(f"{k} {v}" for k, v in mesh.items()), flush=True)
    reports = []
    for step in steps:
        r = aot.compile_step(step, topo)
        reports.append(r)
        _print_step(r, topo)
    result = {"topology": topo.name, "device_kind": topo.device_kind, "chip": topo.chip,
              "num_devices": topo.num_devices, "num_chips": topo.num_chips, "num_hosts": topo.num_hosts,
              "task": FLAGS.task, "size": config.size, "dtype": config.dtype, "remat": bool(config.remat),
              "fits": all(r["fits"] for r in reports), "steps": reports}
    # The headline fields: the worst step (largest peak, slowest).
    for key, pick in (("hbm_bytes_per_device", min), ("peak_bytes_per_device", max)):
        result[key] = pick(r[key] for r in reports)
    if result["fits"]:
        result["flops_per_step"] = max(r["flops_per_step"] for r in reports)
        result["estimated_step_seconds"] = max(r["estimated_step_seconds"] for r in reports)
    if FLAGS.task == "pretrain" and result["fits"] and FLAGS.phase is None:
        # The whole run at these step times; FLOPs as scripts/estimate_cost.py counts them.
        total = phases_lib.train_steps(config)
        phases = phases_lib.make_phases(config, total)
        seconds = sum((p.end_step - p.start_step) * r["estimated_step_seconds"] for p, r in zip(phases, reports))
        run = flops.training_run_flops(trainer_lib.model_config(config, _vocab_size(config)), [(p.seq_len, p.end_step - p.start_step, p.global_batch_size, p.max_predictions)
                        for p in phases])
        peak = topo.per_device(flops.PEAK_BF16_FLOPS) * topo.devices_per_chip
        mfu = flops.mfu(run["total_flops"] / seconds, peak, topo.num_chips)
        result.update(run_steps=total, run_seconds=seconds, run_chip_hours=seconds / 3600 * topo.num_chips,
                      run_model_flops=run["total_flops"], run_mfu_at_roofline=mfu)
        print(f"whole run ({total:,} steps) at these step times: {_duration(seconds)} on {topo.num_chips} chips = "
              f"{seconds / 3600 * topo.num_chips:,.3g} chip-hours (MFU {100 * mfu:.0f}%; the same as "
              f"scripts/estimate_cost.py --config=... --chip={topo.chip} --num_chips={topo.num_chips} --mfu={mfu:.2f})")
    if FLAGS.json:
        with open(FLAGS.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    bad = [r for r in reports if not r["fits"]]
    if bad:
        raise SystemExit("aot_compile: " + aot.advice(bad[0], config, topo))


if __name__ == "__main__":
    app.run(main)
