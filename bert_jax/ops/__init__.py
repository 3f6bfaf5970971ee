"""Performance kernels, each beside its reference test (tests/test_<name>.py)."""
