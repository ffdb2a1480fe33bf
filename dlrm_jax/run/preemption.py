"""Preemption: SIGTERM (and Ctrl-C) end a run at a step boundary with a checkpoint.

Cloud TPU VMs (spot, preemptible, maintenance events) and most schedulers stop
a job with SIGTERM and a short grace period before SIGKILL.  The train loop
asks `Watch.requested(step)` after every step; when it says yes the loop saves
a checkpoint at that step, writes nothing that says "done", and raises
`Preempted`, which the CLI turns into one line and exit code `PREEMPTED_EXIT`.
Rerunning the same command resumes from that checkpoint.

One process: a Python handler records the signal.  Several processes
(`jax.distributed`): the processes must save at the *same* step, or their
checkpoint is torn.  JAX's coordination service already catches SIGTERM on
every process and agrees on a step through
`multihost_utils.reached_preemption_sync_point`, which is what Orbax's
preemption support uses too; a Python SIGTERM handler there would replace the
service's own, so none is installed and SIGINT is turned into SIGTERM.
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Sequence

# EX_TEMPFAIL (sysexits.h): "try again later", which is what a preempted run asks for.
PREEMPTED_EXIT = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """A signal stopped the run at `step`, after its checkpoint was saved."""

    def __init__(self, step: int, examples: int, signal_name: str):
        self.step, self.examples, self.signal_name = step, examples, signal_name
        super().__init__(f"preempted ({signal_name}) at step {step} ({examples:,} examples); "
                         f"rerun the same command to resume")


class SweepPreempted(Preempted):
    """A signal stopped a sweep; `unfinished` points resume on its rerun."""

    def __init__(self, unfinished: Sequence[str], signal_name: str):
        self.unfinished = list(unfinished)
        Exception.__init__(self, f"preempted ({signal_name}): {len(self.unfinished)} point(s) unfinished "
                                 f"({', '.join(self.unfinished) or 'none'}); rerun the same command to resume")
        self.step, self.examples, self.signal_name = 0, 0, signal_name


class Watch:
    """Whether a stop was asked for; `close()` puts the previous handlers back."""

    def __init__(self, multi_process: bool = False):
        self.signal_name: str | None = None
        self._multi = multi_process
        self._previous: dict[int, object] = {}
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread (a notebook's worker thread)
        wanted = (signal.SIGINT,) if multi_process else SIGNALS
        for sig in wanted:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self._multi:
            # The coordination service's SIGTERM notifier makes every process agree.
            self.signal_name = signal.Signals(signum).name
            os.kill(os.getpid(), signal.SIGTERM)
            return
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait for the save
        self.signal_name = signal.Signals(signum).name

    def requested(self, step: int) -> bool:
        """True at the step at which to save and stop (the same step on every process)."""
        if not self._multi:
            return self.signal_name is not None
        from jax.experimental import multihost_utils
        if multihost_utils.reached_preemption_sync_point(step):
            self.signal_name = self.signal_name or "SIGTERM"
            return True
        return False

    def requested_now(self) -> bool:
        """A stop asked for before the loop (no step to agree on yet): this process's view."""
        return self.signal_name is not None

    def close(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def watch(multi_process: bool = False) -> Watch:
    return Watch(multi_process)
