"""Step counts derived from examples and batch size, in one place.

Every count a run uses (its steps, the dense learning rate's warm-up and
decay, the log, eval and checkpoint intervals) comes from here, so the
optimizer's schedule and the loop's intervals can never disagree.  Intervals
and warm-up given in examples round up to whole steps: a run logs, evaluates
and warms up at least as often and as long as asked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

LOGS_PER_RUN = 20  # train-loss lines when train.log_every_examples is 0


def total_steps(train_cfg) -> int:
    """Full batches only: every step has the same shape (config validation keeps it >= 1)."""
    return (train_cfg.examples * train_cfg.epochs) // train_cfg.batch_size


def steps_for(examples: int, batch_size: int) -> int:
    """Whole steps that cover `examples` (0 stays 0)."""
    return max(1, math.ceil(examples / batch_size)) if examples > 0 else 0


def warmup_steps(train_cfg) -> int:
    return min(total_steps(train_cfg), steps_for(train_cfg.warmup_examples, train_cfg.batch_size))


@dataclass(frozen=True)
class Schedule:
    """The loop's step counts (see the module docstring)."""
    batch_size: int
    total_steps: int
    log_every: int
    eval_every: int       # 0: only at the end
    checkpoint_every: int  # 0: only at the end

    def is_log_step(self, step: int) -> bool:
        # Checkpoint steps are always log steps, so the train-loss average never
        # straddles a checkpoint and a resumed run logs the same lines.
        return (step % self.log_every == 0 or self.is_checkpoint_step(step) or self.is_eval_step(step)
                or step == self.total_steps)

    def is_eval_step(self, step: int) -> bool:
        return step == self.total_steps or (self.eval_every > 0 and step % self.eval_every == 0)

    def is_checkpoint_step(self, step: int) -> bool:
        return step == self.total_steps or (self.checkpoint_every > 0 and step % self.checkpoint_every == 0)


def schedule_for(cfg) -> Schedule:
    t, b = cfg.train, cfg.train.batch_size
    total = total_steps(t)
    return Schedule(batch_size=b, total_steps=total,
                    log_every=steps_for(t.log_every_examples, b) or max(1, total // LOGS_PER_RUN),
                    eval_every=steps_for(t.eval_every_examples, b),
                    checkpoint_every=steps_for(cfg.checkpoint.every_examples, b))
