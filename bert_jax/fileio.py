"""Paths: normalising them, expanding file patterns, and atomic writes.

`expand_patterns` is the one file globber (corpora, TFRecords, tokenizer input). Atomic writes: a file is
either absent, the old version, or complete -- never partial. Local paths: a temporary file in the same
directory, then ``os.replace``. ``gs://`` (and other URL) paths: ``tf.io.gfile`` write to ``PATH.tmp``,
then rename (object stores have no partial objects anyway).
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from typing import Any, List, Sequence, Union


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


def expand_patterns(patterns: Union[str, Sequence[str]], what: str = "input files", hint: str = "") -> List[str]:
    """The files that comma-separated paths / globs name (a list of them works too). The rules:

    * ``~`` is expanded; ``**`` matches any number of directories; ``gs://`` (any URL) patterns go
      through ``tf.io.gfile``;
    * a directory stands for every regular file below it;
    * the matches of each pattern are sorted by name, patterns keep the order given, and a file named
      twice is kept once (the first time);
    * a pattern that matches no file is a ValueError naming it (a typo must not silently drop data):
      ``{what}='PATTERN' matches no files; {hint}``.
    """
    if isinstance(patterns, str):
        patterns = patterns.split(",")
    patterns = [p.strip() for p in patterns if p and p.strip()]
    if not patterns:
        raise ValueError(f"{what} is empty" + (f"; {hint}" if hint else ""))
    files: List[str] = []
    for pattern in patterns:
        matched = _remote_matches(pattern) if is_remote(pattern) else _local_matches(pattern)
        if not matched:
            raise ValueError(f"{what}={pattern!r} matches no files" + (f"; {hint}" if hint else ""))
        files.extend(matched)
    return list(dict.fromkeys(files))


def _local_matches(pattern: str) -> List[str]:
    out = []
    for path in sorted(glob.glob(os.path.expanduser(pattern), recursive=True)):
        if os.path.isdir(path):
            for root, dirs, names in os.walk(path):
                dirs.sort()
                out.extend(os.path.join(root, n) for n in sorted(names) if os.path.isfile(os.path.join(root, n)))
        elif os.path.isfile(path):
            out.append(path)
    return out


def _remote_matches(pattern: str) -> List[str]:
    import tensorflow as tf

    out = []
    for path in sorted(tf.io.gfile.glob(pattern)):
        if tf.io.gfile.isdir(path):
            for root, dirs, names in tf.io.gfile.walk(path):
                dirs.sort()
                out.extend(os.path.join(root, n) for n in sorted(names))
        else:
            out.append(path)
    return out


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
