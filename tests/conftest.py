"""Test setup: 8 simulated CPU devices (a TPU slice stand-in), quiet TF logging."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# libtpu (requirements-test.txt: the TPU compiler for tests/test_aot_compile.py) would otherwise be tried as
# a backend in every test process, warning about TPU_* variables and taking /tmp/libtpu_lockfile.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
