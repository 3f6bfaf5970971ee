"""Process-level memory settings that make numpy- and XLA-heavy loops faster on CPU hosts.

glibc ``malloc`` serves every block above ``M_MMAP_THRESHOLD`` (128 KiB to 32 MiB, adapting) with a fresh
``mmap`` and gives it back with ``munmap`` when freed. A loop that allocates the same large temporaries
each iteration -- numpy batch code, XLA CPU buffers every step -- then page-faults all of that memory in
again each time; on virtual machines those faults cost a third of the system time of
``scripts/create_pretraining_data.py``. :func:`keep_freed_memory` raises the threshold and the trim
threshold so freed blocks stay in the heap and are reused without faults. The cost is that the heap does
not shrink back after a peak -- fine for a job that runs one workload until it exits.

Equivalent to starting the process with ``MALLOC_MMAP_THRESHOLD_=... MALLOC_TRIM_THRESHOLD_=...``; a no-op
off glibc (macOS, musl) or when the ``BERT_JAX_KEEP_FREED_MEMORY=0`` environment variable is set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_applied: bool | None = None


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = (1 << 31) - 1,
                      top_pad: int = 64 << 20) -> bool:
    """Makes glibc keep freed blocks below ``mmap_threshold`` (32 MiB: glibc's largest allowed on 64-bit)
    for reuse. Returns whether it took effect.

    Call it early (before large allocations, before forking workers, which inherit it). Idempotent."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("BERT_JAX_KEEP_FREED_MEMORY", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = all(mallopt(param, int(value)) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, mmap_threshold), (_M_TRIM_THRESHOLD, trim_threshold), (_M_TOP_PAD, top_pad)))
    _applied = ok
    return ok
