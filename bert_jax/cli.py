"""The shared shape of bert_jax's command-line mains (scripts/ and experiments/).

    from bert_jax import cli
    cli.define_flags("experiments/ner/config.py:task=conll", "Output directory.")
    ...
    if __name__ == "__main__":
        cli.run(train_and_evaluate, "ner")

``--config`` (an ml_collections config file with ``:arg``, locked) and ``--workdir`` are defined once per
process however many mains are imported (tests import several). ``run`` first makes glibc keep freed
memory for reuse (`bert_jax.memory.keep_freed_memory`: XLA:CPU's per-step buffers are not page-faulted
in again every step; it has to happen before the first JAX computation), quiets Orbax's INFO logging
unless ``--verbosity`` is given and turns a ValueError / FloatingPointError into one ``name: message``
line and exit status 1, instead of a traceback.
"""

from __future__ import annotations

from typing import Callable

from absl import app, flags, logging
from ml_collections import config_flags

from bert_jax import memory

FLAGS = flags.FLAGS


def define_flags(config_help: str, workdir_help: str = "Output directory (results.json, TensorBoard).") -> None:
    if "config" not in FLAGS:
        config_flags.DEFINE_config_file("config", None, config_help, lock_config=True)
    if "workdir" not in FLAGS:
        flags.DEFINE_string("workdir", None, workdir_help)


def run(train_and_evaluate: Callable, name: str, before: Callable[[], None] | None = None) -> None:
    """``app.run`` of ``train_and_evaluate(FLAGS.config, FLAGS.workdir)``."""
    flags.mark_flags_as_required(["config", "workdir"])

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        memory.keep_freed_memory()
        if not FLAGS["verbosity"].present:  # Orbax logs every file it writes at INFO
            logging.set_verbosity(logging.WARNING)
        try:
            if before is not None:
                before()
            train_and_evaluate(FLAGS.config, FLAGS.workdir)
        except (ValueError, FloatingPointError) as e:
            raise SystemExit(f"{name}: {e}") from None

    app.run(main)
