"""Process-level memory settings that make numpy- and XLA-heavy loops faster on CPU hosts.

glibc ``malloc`` serves every block above ``M_MMAP_THRESHOLD`` (128 KiB to 32 MiB, adapting) with a fresh
``mmap`` and gives it back with ``munmap`` when freed; threads allocate from their own arenas, which can
hold no block above 64 MiB and give freed memory back to the kernel too. A loop that allocates the same
large temporaries each iteration -- numpy batch code, XLA:CPU's buffers every train step (a 1 GiB
temporary allocation at BERT-base, batch 8) -- then page-faults all of that memory in again each time
(measurements in benchmarks/README.md). :func:`keep_freed_memory` makes glibc serve everything from one
heap (one arena, no ``mmap``) and never trim it, so freed blocks are reused without faults. The cost is
that the heap does not shrink back after a peak -- fine for a job that runs one workload until it exits
-- and that threads share one allocator lock.

It must run before the threads that will allocate start (before the first JAX computation starts XLA's
thread pools): ``bert_jax.cli.run`` calls it first thing in every script's ``main``. Equivalent to starting
the process with ``GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:
glibc.malloc.trim_threshold=...``; a no-op off glibc (macOS, musl) or when the
``BERT_JAX_KEEP_FREED_MEMORY=0`` environment variable is set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_applied: bool | None = None


def keep_freed_memory(single_heap: bool = True, mmap_threshold: int = 32 << 20,
                      trim_threshold: int = (1 << 31) - 1, top_pad: int = 64 << 20) -> bool:
    """Makes glibc keep freed memory for reuse, trimming the heap only above ``trim_threshold`` bytes of
    free top. ``single_heap``: one arena and no ``mmap``-ed blocks (what XLA's per-step buffers need);
    otherwise only blocks below ``mmap_threshold`` (32 MiB: glibc's largest allowed on 64-bit) are kept,
    and threads keep their own arenas (what ``scripts/create_pretraining_data.py`` uses: its tokenizer
    threads allocate concurrently). Returns whether it took effect.

    Call it early: before the first JAX computation, before other threads start allocating, before forking
    workers (which inherit it). Only the first call acts; later ones return its result."""
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
    options = [(_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0)] if single_heap else [(_M_MMAP_THRESHOLD, mmap_threshold)]
    options += [(_M_TRIM_THRESHOLD, trim_threshold), (_M_TOP_PAD, top_pad)]
    ok = all(mallopt(param, int(value)) == 1 for param, value in options)
    _applied = ok
    return ok
