r"""Pre-train BERT (MLM + NSP) on TFRecords from scripts/create_pretraining_data.py.

    python scripts/pretrain.py --config=bert_jax/configs/pretrain.py:size=tiny --workdir=runs/tiny \
      --config.train_files='data/pretrain/*.tfrecord' --config.eval_files='data/eval/*.tfrecord' \
      --config.tokenizer=vocab.txt --config.num_train_steps=2000 --config.global_batch_size=64

Re-running the same command resumes from the workdir's newest complete checkpoint (also after kill -9);
a second run on a workdir that a live run holds is refused. Several hosts (outside a Cloud TPU VM, where
nothing is needed): --coordinator_address=HOST:PORT --num_processes=N --process_id=I; every wait is
bounded (--initialization_timeout, --heartbeat_timeout, --config.progress_timeout_s) and a run that
cannot make progress names the missing process and exits non-zero.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bert_jax import cli  # noqa: E402

cli.define_flags("Config file, e.g. bert_jax/configs/pretrain.py:size=tiny",
                 "Where checkpoints, TensorBoard events and results go (resumes from it).")


def _train_and_evaluate(config, workdir):
    from bert_jax.training import loop
    loop.train_and_evaluate(config, workdir)


if __name__ == "__main__":
    cli.run(_train_and_evaluate, "pretrain")
