"""A run's time, kept by one object (as big_vision's `chrono`).

Two clocks: wall time from the process's start (compiles, evals and
checkpoints included), and train time, from the end of the first (compiling)
step with evals and checkpoints paused out, which throughput counts.  A
resumed run adds what the processes before it recorded with the restored
checkpoint (`RunTime`), so `wall_s` and `examples_per_s` cover every process
a run took, not the last.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, NamedTuple

import jax


class RunTime(NamedTuple):
    """A run's time up to a checkpoint, summed over the processes that trained it.

    wall_s: seconds from each process's start to the checkpoint (compiles, evals
    and checkpoints included); train_s and timed_steps: the steps that throughput
    counts (each process's first, compiling step, evals and checkpoints excluded).
    Work done after the checkpoint by a process that was then killed is lost and
    not counted.
    """
    wall_s: float = 0.0
    train_s: float = 0.0
    timed_steps: int = 0


class Chrono:
    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._t_start = clock()
        self._before, self._start_step = RunTime(), 0
        self._t_loop: float | None = None  # end of this process's first (compiling) step
        self._paused = 0.0

    def resume(self, before: RunTime, start_step: int) -> None:
        """This process continues from `start_step`, whose checkpoint recorded `before`."""
        self._before, self._start_step = before, start_step

    def step_done(self, result) -> None:
        """Call after each step; the first waits for its result and starts the train clock."""
        if self._t_loop is None:
            jax.block_until_ready(result)
            self._t_loop = self._clock()

    @contextmanager
    def paused(self):
        """Evals and checkpoints: not train time.  Yields the time the pause began."""
        t = self._clock()
        try:
            yield t
        finally:
            self._paused += self._clock() - t

    def run_time(self, step: int, now: float | None = None) -> RunTime:
        """The run's time at `step`: this process's share (train time up to `now`) added to `before`."""
        now = self._clock() if now is None else now
        timed = max(0, step - self._start_step - 1)
        train_s = now - self._t_loop - self._paused if self._t_loop is not None else 0.0
        b = self._before
        return RunTime(b.wall_s + self._clock() - self._t_start, b.train_s + train_s, b.timed_steps + timed)
