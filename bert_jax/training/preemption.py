"""SIGTERM (a TPU VM preemption, a job scheduler's notice) -> save at the next step boundary and
return normally, so that re-running the same command resumes."""

from __future__ import annotations

import signal

from bert_jax.training import parallel

CHECK_EVERY_STEPS = 10   # processes compare their flags (a collective) this often


class PreemptionFlag:
    """SIGTERM sets a flag; the loop saves at the next step boundary and returns."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no signal handling
            self._previous = None
        return self

    def _handle(self, signum, frame):
        del signum, frame
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def stop_now(self, step: int, phase_end: int) -> bool:
        """Whether every process stops after ``step``: all processes must stop at the same step, so the
        flags are compared every `CHECK_EVERY_STEPS` steps and at the end of a phase -- a collective
        that every process runs at the same steps."""
        if step % CHECK_EVERY_STEPS == 0 or step == phase_end:
            return parallel.any_process(self.requested)
        return False
