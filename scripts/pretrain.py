r"""Pre-train BERT (MLM + NSP) on TFRecords from scripts/create_pretraining_data.py.

    python scripts/pretrain.py --config=bert_jax/configs/pretrain.py:size=tiny --workdir=runs/tiny \
      --config.train_files='data/pretrain/*.tfrecord' --config.eval_files='data/eval/*.tfrecord' \
      --config.tokenizer=vocab.txt --config.num_train_steps=2000 --config.global_batch_size=64

Re-running the same command resumes from the workdir's newest checkpoint. Several hosts (outside a
Cloud TPU VM, where nothing is needed): --coordinator_address=HOST:PORT --num_processes=N --process_id=I.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Config file, e.g. bert_jax/configs/pretrain.py:size=tiny",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, TensorBoard events and results go.")
flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0 (multi-process runs off TPU VMs).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process runs).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-process runs).")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:  # Orbax logs every file it writes at INFO
        logging.set_verbosity(logging.WARNING)
    from bert_jax.training import loop, parallel
    parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    try:
        loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except (ValueError, FloatingPointError) as e:
        raise SystemExit(f"pretrain: {e}") from None


if __name__ == "__main__":
    app.run(main)
