"""One run per workdir: ``workdir/run.lock``, an ``flock``-ed file naming its holder (host, pid, start).

* A second run on a workdir that a live run holds is refused with one line naming the holder
  (`WorkdirInUse`, a ``ValueError``: the command-line mains print it and exit 1).
* The kernel drops an ``flock`` when its process dies (kill -9 included), so a lock file that still
  names a holder but is not locked was left by a dead run: it is taken over with a warning.
* Several processes: process 0 alone takes the lock (the workdir is shared -- Orbax needs that) and
  tells the others through the coordination service's key-value store, so every process of a refused
  run stops with the same line instead of waiting for process 0.
* ``gs://`` workdirs cannot be ``flock``-ed: no lock, one note saying so.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import sys
from typing import Optional

LOCK_NAME = "run.lock"
_KV_KEY = "bert_jax/workdir_lock"


class WorkdirInUse(ValueError):
    """Another live run holds the workdir."""


def _describe(holder: dict) -> str:
    if not holder:
        return "an unknown process"
    return (f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}"
            + (f", started {holder['started']}" if holder.get("started") else ""))


def _read(fd: int) -> dict:
    try:
        raw = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        return json.loads(raw) if raw else {}
    except (OSError, ValueError):
        return {"unreadable": True}


class WorkdirLock:
    """Holds ``workdir/run.lock`` until `release` (or process death)."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.path = os.path.join(workdir, LOCK_NAME)
        self.fd: Optional[int] = None
        self.taken_over: dict = {}

    def acquire(self) -> "WorkdirLock":
        os.makedirs(self.workdir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise WorkdirInUse(
                    f"workdir {self.workdir} is in use by another run ({_describe(holder)}; lock file {self.path}): "
                    "wait for it to finish or stop it, or pass another --workdir") from None
            # A filesystem without flock (some network mounts): say so and go on unlocked.
            print(f"warning: cannot lock {self.path} ({os.strerror(e.errno)}); make sure no other run uses "
                  f"this workdir", file=sys.stderr, flush=True)
            return self
        previous = _read(fd)
        if previous:
            self.taken_over = previous
            print(f"warning: taking over {self.path} from a run that is gone ({_describe(previous)})",
                  file=sys.stderr, flush=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(),
              "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)  # an empty file: nobody holds it (the file stays: no unlink race)
        except OSError:
            pass
        os.close(self.fd)  # drops the flock
        self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def acquire(workdir: str, is_remote: bool = False, process_index: int = 0, process_count: int = 1,
            kv_client=None, timeout_s: float = 300.0) -> WorkdirLock:
    """Takes the workdir's lock on process 0 and shares the outcome with the other processes through
    ``kv_client`` (`jax`'s distributed client); raises `WorkdirInUse` on every process of a refused run."""
    lock = WorkdirLock(workdir)
    if process_index == 0:
        error = ""
        if is_remote:
            print(f"note: {workdir} is remote; remote workdirs are not locked -- make sure no other run uses it",
                  flush=True)
        else:
            try:
                lock.acquire()
            except WorkdirInUse as e:
                error = str(e)
        if process_count > 1 and kv_client is not None:
            kv_client.key_value_set(_KV_KEY, error or "ok", allow_overwrite=True)
        if error:
            raise WorkdirInUse(error)
        return lock
    if kv_client is not None:
        try:
            answer = kv_client.blocking_key_value_get(_KV_KEY, int(timeout_s * 1000))
        except Exception as e:
            raise WorkdirInUse(f"process {process_index}: process 0 did not say within {timeout_s:.0f} s whether it "
                               f"holds the lock of workdir {workdir} ({str(e).splitlines()[0][:200]})") from None
        if answer != "ok":
            raise WorkdirInUse(f"process {process_index}: {answer}")
    return lock
