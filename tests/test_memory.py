"""bert_jax.memory.keep_freed_memory: freed large blocks are reused without page faults, also when a
thread other than the main one allocates them (as XLA's thread pools do), and the opt-out works."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHILD = r"""
import ctypes, json, os, resource, sys, threading
sys.path.insert(0, {root!r})
from bert_jax import memory
applied = memory.keep_freed_memory(**json.loads(sys.argv[1]))
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 96 << 20          # above glibc's largest mmap threshold and a thread arena's heap size
faults = []

def work():
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        p = libc.malloc(size)
        ctypes.memset(p, 1, size)       # touch every page
        libc.free(p)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

t = threading.Thread(target=work)
t.start(); t.join()
print(json.dumps({{"applied": applied, "faults": faults, "pages": size // os.sysconf("SC_PAGE_SIZE")}}))
"""


def _run(kwargs, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    env.pop("GLIBC_TUNABLES", None)
    out = subprocess.run([sys.executable, "-c", _CHILD.format(root=ROOT), json.dumps(kwargs)], env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_keep_freed_memory_reuses_large_blocks_without_faults():
    kept = _run({})
    if not kept["applied"]:
        pytest.skip("not glibc")
    pages = kept["pages"]
    # first allocation faults its pages in; every later one reuses them
    assert kept["faults"][0] > pages // 2
    assert max(kept["faults"][1:]) < pages // 20, kept
    # without it (opt-out, and the per-thread-arena mode create_pretraining_data uses) every round faults
    # again (fewer faults where the kernel backs memory with transparent huge pages, but still many more)
    for result in (_run({}, {"BERT_JAX_KEEP_FREED_MEMORY": "0"}), _run({"single_heap": False})):
        assert min(result["faults"][1:]) > 10 * (max(kept["faults"][1:]) + 1), (result, kept)
