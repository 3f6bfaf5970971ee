"""The shared shape of bert_jax's command-line mains (scripts/ and experiments/).

    from bert_jax import cli
    cli.define_flags("experiments/ner/config.py:task=conll", "Output directory.")
    ...
    if __name__ == "__main__":
        cli.run(train_and_evaluate, "ner")

``--config`` (an ml_collections config file with ``:arg``, locked) and ``--workdir`` are defined once per
process however many mains are imported (tests import several). ``run`` first makes glibc keep freed
memory for reuse (`bert_jax.memory.keep_freed_memory`: XLA:CPU's per-step buffers are not page-faulted
in again every step; it has to happen before the first JAX computation), makes ``--workdir`` and the
config's path fields (`PATH_FIELDS`) absolute with ``~`` expanded (users type relative paths), quiets Orbax's INFO logging
unless ``--verbosity`` is given and turns a ValueError / FloatingPointError into one ``name: message``
line and exit status 1, instead of a traceback.

Compiled programs are kept on disk (``--compilation_cache``, default ``~/.cache/bert_jax/jax``; ``""``:
off; `enable_compilation_cache`): the second run of a command -- another seed, a resumed run, the next
lr of a sweep in a new process -- loads its steps instead of compiling them again.

Every main runs as several processes the same way (outside a Cloud TPU VM, where nothing is needed):
``--coordinator_address=HOST:PORT --num_processes=N --process_id=I``, with every wait bounded
(``--initialization_timeout``, ``--heartbeat_timeout``; `parallel.initialize_distributed`).
"""

from __future__ import annotations

from typing import Callable

from absl import app, flags, logging
from ml_collections import config_flags

from bert_jax import fileio, memory

FLAGS = flags.FLAGS

# Config fields that hold paths (single paths, or comma-separated lists of paths/globs), at any depth
# (e.g. ``phases[i].train_files``). `normalize_config_paths` makes them absolute once, at load time.
PATH_FIELDS = frozenset({
    "init_checkpoint", "tokenizer", "train_files", "eval_files", "train_files_512", "train_file",
    "eval_file", "test_file", "data_dir", "corpus", "output_dir"})


def normalize_config_paths(config):
    """Every `PATH_FIELDS` value in ``config`` (nested ConfigDicts and lists of them too): relative to the
    current directory or absolute, ``~`` expanded -> absolute. Returns ``config`` (changed in place)."""
    import ml_collections

    def visit(c):
        for key in list(c.keys()):
            value = c[key]
            if isinstance(value, ml_collections.ConfigDict):
                visit(value)
            elif isinstance(value, (list, tuple)):
                for item in value:
                    if isinstance(item, ml_collections.ConfigDict):
                        visit(item)
            elif key in PATH_FIELDS and isinstance(value, str) and value:
                c[key] = fileio.normalize_path_list(value)
    visit(config)
    return config


def normalize_flag_paths(*names: str) -> None:
    """The absl flags ``names`` (paths or comma-separated lists of paths/globs) made absolute, ``~``
    expanded, for mains that do not go through `run`."""
    for name in names:
        if FLAGS[name].value:
            FLAGS[name].value = fileio.normalize_path_list(FLAGS[name].value)


def define_flags(config_help: str, workdir_help: str = "Output directory (results.json, TensorBoard).") -> None:
    if "config" not in FLAGS:
        config_flags.DEFINE_config_file("config", None, config_help, lock_config=True)
    if "workdir" not in FLAGS:
        flags.DEFINE_string("workdir", None, workdir_help)
    if "compilation_cache" not in FLAGS:
        flags.DEFINE_string("compilation_cache", "~/.cache/bert_jax/jax",
                            "Directory where compiled programs are kept and reused across runs ('' = off).")
    if "coordinator_address" not in FLAGS:
        flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0 (multi-process runs off TPU VMs).")
        flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process runs).")
        flags.DEFINE_integer("process_id", None, "This process's index (multi-process runs).")
        flags.DEFINE_integer("initialization_timeout", 300,
                             "Seconds every process has to connect to the coordinator (multi-process runs).")
        flags.DEFINE_integer("heartbeat_timeout", 100, "Seconds without a heartbeat after which a process "
                             "counts as dead and every process stops.")


def run(train_and_evaluate: Callable, name: str, before: Callable[[], None] | None = None) -> None:
    """``app.run`` of ``train_and_evaluate(FLAGS.config, FLAGS.workdir)``."""
    flags.mark_flags_as_required(["config", "workdir"])

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        memory.keep_freed_memory()
        if not FLAGS["verbosity"].present:  # Orbax logs every file it writes at INFO
            logging.set_verbosity(logging.WARNING)
        if FLAGS.compilation_cache:
            enable_compilation_cache(FLAGS.compilation_cache)
        try:
            from bert_jax.training import parallel
            parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                                            initialization_timeout=FLAGS.initialization_timeout,
                                            heartbeat_timeout=FLAGS.heartbeat_timeout)
            import jax
            if jax.process_count() > 1:
                print(f"{name}: process {jax.process_index()} of {jax.process_count()}, {jax.device_count()} "
                      f"devices ({jax.local_device_count()} local)", flush=True)
            if before is not None:
                before()
            config = normalize_config_paths(FLAGS.config)
            train_and_evaluate(config, fileio.normalize_path(FLAGS.workdir))
        except (ValueError, FloatingPointError) as e:
            raise SystemExit(f"{name}: {e}") from None

    app.run(main)

def enable_compilation_cache(directory: str, min_compile_seconds: float = 1.0) -> None:
    """Keeps XLA's executables of compilations longer than ``min_compile_seconds`` in ``directory``
    (least recently used dropped beyond 4 GiB); a program compiled before in any process is loaded, not
    compiled. A ``JAX_COMPILATION_CACHE_DIR`` in the environment wins."""
    import os

    import jax
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    jax.config.update("jax_compilation_cache_dir", fileio.normalize_path(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    jax.config.update("jax_compilation_cache_max_size", 4 << 30)


def parse_list(value, cast):
    """A comma-separated config value (or a list) as a list of ``cast`` values; one clear error otherwise."""
    if isinstance(value, (list, tuple)):
        return [cast(v) for v in value]
    items = [v.strip() for v in str(value).split(",") if v.strip()]
    if not items:
        raise ValueError(f"empty list {value!r}")
    try:
        return [cast(v) for v in items]
    except ValueError:
        raise ValueError(f"cannot read {value!r} as comma-separated {cast.__name__}s") from None
