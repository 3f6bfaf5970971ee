"""bert_jax's own checkpoint formats (Orbax).

* An exported model directory: ``bert_jax.json`` (format marker + config) and ``params/`` (an Orbax
  PyTree checkpoint of the parameter tree). ``bert_jax.json`` is written last, so a directory without
  it is an incomplete export.
* A training workdir (see `bert_jax.training`): ``bert_jax.json`` plus ``checkpoints/<step>/`` written
  by an Orbax ``CheckpointManager``; `load_params` takes the newest step's ``params``.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from bert_jax import fileio
from bert_jax.fileio import is_remote, read_json, write_json
from bert_jax.modeling import BertConfig

MARKER = "bert_jax.json"
FORMAT_VERSION = 1


write_json_atomic = write_json  # the name the training and experiment code use


def abspath(path: str) -> str:
    return fileio.normalize_path(path)


def write_marker(directory: str, config: BertConfig, **extra) -> None:
    meta = {"format": "bert_jax", "version": FORMAT_VERSION, "config": config.to_hf_dict(),
            "dtype": config.dtype}
    meta.update(extra)
    write_json(os.path.join(directory, MARKER), meta)


def read_marker(directory: str):
    path = os.path.join(directory, MARKER)
    try:
        meta = read_json(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable bert_jax checkpoint marker ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != "bert_jax" or "config" not in meta:
        raise ValueError(f"{path}: not a bert_jax checkpoint marker (needs format=bert_jax and config)")
    return BertConfig.from_dict(meta["config"], source=path), meta


def is_bert_jax_dir(path: str) -> bool:
    if is_remote(path):
        import tensorflow as tf
        return tf.io.gfile.exists(os.path.join(path, MARKER))
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, MARKER))


def _local_checkpointer():
    """An Orbax checkpointer for host numpy trees that this process reads or writes alone (no collective
    with the other processes of a multi-process run: an export is written by one of them)."""
    import orbax.checkpoint as ocp
    me = jax.process_index()
    return ocp.StandardCheckpointer(
        multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me}))


def save_params(directory: str, config: BertConfig, params) -> str:
    """Exports ``params`` (host numpy or jax arrays) as a bert_jax model directory."""
    directory = abspath(directory)
    target = os.path.join(directory, "params")
    if os.path.exists(target):
        raise ValueError(f"{target} already exists; choose an empty output directory")
    os.makedirs(directory, exist_ok=True)
    host = jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x)), params)
    with _local_checkpointer() as ckptr:
        ckptr.save(target, host)
        ckptr.wait_until_finished()
    write_marker(directory, config)
    return directory


def latest_step_dir(checkpoints_dir: str):
    steps = [int(d) for d in os.listdir(checkpoints_dir) if d.isdigit()
             and os.path.isdir(os.path.join(checkpoints_dir, d))]
    return (max(steps), os.path.join(checkpoints_dir, str(max(steps)))) if steps else (None, None)


def _restore_tree(path: str):
    path = abspath(path)  # Orbax refuses relative paths
    try:
        with _local_checkpointer() as ckptr:
            tree = ckptr.restore(path)
    except Exception as e:  # orbax/tensorstore raise many error types for a damaged checkpoint
        raise ValueError(f"{path}: cannot restore Orbax checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    return jax.tree_util.tree_map(lambda x: np.asarray(x), tree)


def load_params(directory: str):
    """(config, params) from an exported model directory or a training workdir (newest step)."""
    directory = abspath(directory)
    config, _ = read_marker(directory)
    if os.path.isdir(os.path.join(directory, "params")):
        return config, _restore_tree(os.path.join(directory, "params"))
    ckpt_dir = os.path.join(directory, "checkpoints")
    if os.path.isdir(ckpt_dir):
        step, step_dir = latest_step_dir(ckpt_dir)
        if step is None:
            raise ValueError(f"{ckpt_dir}: no finished checkpoint step yet")
        return config, _restore_tree(os.path.join(step_dir, "params"))
    raise ValueError(f"{directory}: has {MARKER} but neither params/ nor checkpoints/")
