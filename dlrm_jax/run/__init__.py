"""The run directory and its lifecycle: files, lock, metrics log, summary, checkpoints, time, preemption."""
