"""Atomic file writes: a file is either absent, the old version, or complete -- never partial.

Local paths: a temporary file in the same directory, then ``os.replace``. ``gs://`` (and other URL) paths:
``tf.io.gfile`` write to ``PATH.tmp``, then rename (object stores have no partial objects anyway).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Union


def is_remote(path: str) -> bool:
    return "://" in str(path)


def normalize_path(path: str) -> str:
    """A path as a user typed it -> absolute, with ``~`` expanded; URLs (``gs://...``) and "" unchanged.
    Done once where paths enter (CLI flags, config loading, `load_pretrained`): Orbax and the worker
    processes need absolute paths, and a relative one would mean a different file after a ``chdir``."""
    path = os.fspath(path) if path is not None else path
    if not path or is_remote(path):
        return path
    return os.path.abspath(os.path.expanduser(path))


def normalize_path_list(spec: str) -> str:
    """``normalize_path`` of each entry of a comma-separated list of paths or globs."""
    if not spec:
        return spec
    return ",".join(normalize_path(p.strip()) for p in str(spec).split(",") if p.strip())


def atomic_write(path: str, data: Union[bytes, str]) -> str:
    """Writes ``data`` (bytes, or text as UTF-8) to ``path`` atomically; returns ``path``."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    if is_remote(path):
        import tensorflow as tf
        with tf.io.gfile.GFile(path + ".tmp", "wb") as f:
            f.write(payload)
        tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
        return path
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        umask = os.umask(0)  # mkstemp makes 0600 files; give the result the usual umask-derived mode
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str, obj: Any) -> str:
    """``obj`` as indented JSON (non-JSON values via ``str``), atomically."""
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str) -> Any:
    if is_remote(path):
        import tensorflow as tf
        with tf.io.gfile.GFile(path) as f:
            return json.loads(f.read())
    with open(path, encoding="utf-8") as f:
        return json.load(f)
