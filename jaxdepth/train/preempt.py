"""Stopping a run on SIGTERM (preemption) or Ctrl-C: at a step boundary, at the same step
on every process, so that all of them save one checkpoint together.

A signal handler only records the request; it never raises inside a step or a collective
(where a checkpoint would be inconsistent, or one process would save while the others wait
in a collective). The training loop asks `StopRequest.agreed(step)` at every step boundary,
and every process gets the same answer at the same step:

- one process: the recorded flag itself, no collective.
- several processes: the flag all-gathered over the processes (`process_allgather`) at every
  step boundary: a tiny collective (about 5 ms with gloo on CPU) that also waits for the
  step to finish, so the host no longer runs ahead of the devices by more than a step.
  `jaxdepth.parallel.maybe_initialize_distributed` turns JAX's own preemption service off:
  it agrees on "the furthest process's last reported step + 1" through
  `multihost_utils.reached_preemption_sync_point` (what Orbax's `reached_preemption` wraps),
  so a notice that arrives while no step is being reported (restoring, compiling, between
  two runs of a sweep) names a step the loop never asks about, and the run is not stopped.
  Where the service is on anyway (jax.distributed initialised elsewhere), its notifier owns
  SIGTERM and its sync point is used, with that limit.

A second Ctrl-C (or, without JAX's notifier, a second SIGTERM) aborts at once: the handler
raises KeyboardInterrupt wherever the program is, and no further checkpoint is written (the
newest complete one is kept). With JAX's notifier a second SIGTERM is absorbed by it; the
scheduler's SIGKILL, or Ctrl-C, ends the process.

The request is process-wide and outlives one `train` call: a signal that arrives during a
run's last step (or between two runs of a sweep) stops the next run at its first boundary
rather than being lost.
"""

from __future__ import annotations

import signal
import threading
from typing import Self

import jax
import numpy as np
from jax.experimental import multihost_utils

_requested: list[str] = []  # names of the signals received and not yet acted on


def jax_preemption_service() -> bool:
    """Whether JAX's preemption notifier owns SIGTERM in this process."""
    return jax.distributed.is_initialized() and jax.config.jax_enable_preemption_service


class StopRequest:
    """Context manager over a training loop: installs the signal handlers (main thread only;
    restored on exit) and answers, at each step boundary, whether every process stops there.
    `stopped_by` names the signal that stopped the run once `agreed` has said so."""

    def __init__(self):
        self.jax_notifier = jax_preemption_service()
        self.collective = not self.jax_notifier and jax.process_count() > 1
        self.stopped_by: str | None = None
        self._old: dict = {}

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            signums = [signal.SIGINT] + ([] if self.jax_notifier else [signal.SIGTERM])
            for s in signums:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()

    def _handle(self, signum, frame) -> None:
        if _requested or self.stopped_by:
            raise KeyboardInterrupt  # the second request: abort now
        _requested.append(signal.Signals(signum).name)
        if self.jax_notifier:  # Ctrl-C: tell JAX's notifier, which tells every process
            signal.raise_signal(signal.SIGTERM)

    def agreed(self, step: int) -> bool:
        """Whether every process stops at this step boundary; call it at every boundary
        (after `step` steps, from the first one the loop starts at), on every process."""
        if self.jax_notifier:
            stop = multihost_utils.reached_preemption_sync_point(step)
        elif self.collective:
            stop = bool(np.any(multihost_utils.process_allgather(np.asarray(bool(_requested)))))
        else:
            stop = bool(_requested)
        if stop:
            self.stopped_by = _requested[0] if _requested else "a preemption notice"
            _requested.clear()
        return stop
