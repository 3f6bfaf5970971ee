"""Test setup: 8 simulated CPU devices (a TPU slice stand-in), quiet TF logging."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# libtpu (requirements-test.txt: the TPU compiler for tests/test_aot_compile.py) would otherwise be tried as
# a backend in every test process, warning about TPU_* variables and taking /tmp/libtpu_lockfile.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

# One on-disk compilation cache for the session, set before anything compiles (jax decides once, at the first
# compilation, whether a cache is used). Tests build new Trainers / Finetuners / jitted functions for the same
# programs again and again; jax's in-memory caches are per function object and miss, this one is keyed by the
# program and loads the executable instead of compiling it again. Only programs that took over a second.
_COMPILATION_CACHE = tempfile.mkdtemp(prefix="bert_jax_tests_jax_cache_")
atexit.register(shutil.rmtree, _COMPILATION_CACHE, True)
jax.config.update("jax_compilation_cache_dir", _COMPILATION_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
jax.config.update("jax_compilation_cache_max_size", 2 << 30)   # least recently used dropped beyond 2 GiB


@pytest.fixture(scope="session")
def pretrain_data_64(tmp_path_factory):
    """Real pre-training records (Python docs tutorial / howto, MiniLM's vocab, seq 64, 10 predictions), made
    once per session for the loop, crash-safety and multi-host tests."""
    from tests.test_pretrain_loop import make_data

    root = tmp_path_factory.mktemp("data64")
    train, vocab = make_data(str(root / "train64"), 64, 10)
    evalf, _ = make_data(str(root / "eval64"), 64, 10, subdir="howto")
    return {"train": train, "eval": evalf, "vocab": vocab}
