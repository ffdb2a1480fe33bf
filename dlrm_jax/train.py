"""The train loop: one run directory from a Config.

Reads top to bottom in sections: run directory, data, model and state,
compiled steps, loop (log, eval, checkpoint), summary.  One pass over
`train.examples` (the paper's single-epoch setting) unless `train.epochs` > 1.
A run resumes from its own directory: rerunning the same command continues
from the newest checkpoint and ends exactly where an uninterrupted run would.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dlrm_jax import config as config_lib, metrics as metrics_lib
from dlrm_jax.build import build
from dlrm_jax.data import make_source
from dlrm_jax.data.prefetch import prefetch
from dlrm_jax.errors import UserError
from dlrm_jax.parallel import distributed
from dlrm_jax.run import checkpoint, preemption, rundir, storage
from dlrm_jax.run.chrono import Chrono
from dlrm_jax.run.rundir import MetricsLog, write_json_atomic
from dlrm_jax.schedule import Schedule, schedule_for


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf."""


def train(cfg: config_lib.Config, run_dir: str | Path, *, progress: bool | None = None,
          verbose: bool = True) -> dict:
    """Train one run into `run_dir`; return its summary.  A finished run is not retrained.

    SIGTERM or SIGINT during training saves a checkpoint at the step reached and
    raises `preemption.Preempted` (dlrm_jax/run/preemption.py); the same call resumes."""
    chrono = Chrono(clock=time.time)
    distributed.initialize(cfg.distributed)  # before JAX touches a device
    watch = preemption.watch(multi_process=jax.process_count() > 1)
    run_dir = storage.path(run_dir)  # pathlib.Path, or epath.Path for gs:// (bucket checked now)
    created = not storage.exists(run_dir)
    try:
        return _train(cfg, run_dir, chrono, watch, progress=progress, verbose=verbose)
    except BaseException:
        # Stopped (bad input, a signal, a full disk): release the lock now, not at exit (a
        # notebook retries in the same process), and leave no empty directory behind.
        if jax.process_index() == 0:
            rundir.unlock(run_dir)
            if created:
                _remove_if_empty(run_dir)
        raise
    finally:
        watch.close()


def _train(cfg: config_lib.Config, run_dir: Path, chrono: Chrono, watch: preemption.Watch, *,
           progress: bool | None, verbose: bool) -> dict:
    log = (lambda *a: print(*a, file=sys.stderr)) if verbose else (lambda *a: None)

    # ---------------------------------------------------------------- run directory
    # Locked before anything is read or written, so a second trainer started at the
    # same time stops at the lock having written nothing, and one that got the lock
    # just after another finished sees that run's summary and leaves it alone.
    # config.json is written only once the data, eval set and mesh are known to work,
    # so a bad value never leaves a config.json that blocks the corrected rerun.
    primary = jax.process_index() == 0
    summary_path = run_dir / "summary.json"
    if primary:
        # The lock first, so that a second trainer on this directory is told it is taken
        # (whatever it would find there): it stops having written nothing.
        if storage.exists(run_dir) and not storage.is_dir(run_dir):
            raise UserError(f"--out {run_dir} exists and is not a directory")
        rundir.lock(run_dir)
    resuming = rundir.check(run_dir, cfg)  # on the primary: read now that no one else can write
    summary = rundir.read_summary(run_dir) if resuming else None
    if summary is not None and summary.get("status") == "done":
        log(f"{run_dir}: already done (summary.json); not retraining")
        if primary:
            rundir.unlock(run_dir)
        return summary

    # ---------------------------------------------------------------- data
    source = make_source(cfg)
    sched = schedule_for(cfg)
    if source.num_train is not None and cfg.train.examples > source.num_train:
        raise UserError(f"train.examples ({cfg.train.examples}) exceeds the {source.num_train} rows of the "
                        f"training split; lower it or use train.epochs for several passes")
    eval_set = source.eval_batch(cfg.eval.examples)
    if eval_set.labels.min() == eval_set.labels.max():
        raise UserError(f"the {len(eval_set.labels)} eval examples are all of one class, so NE is undefined; "
                        f"raise eval.examples")
    true_probs = source.eval_true_probs(cfg.eval.examples)
    bayes = metrics_lib.bayes_ne(true_probs, eval_set.labels) if true_probs is not None else None

    # ---------------------------------------------------------------- model and state
    built = build(cfg, source=source)  # mesh and placement: bad ones fail before compiling
    acct, par = built.accounting, built.par
    if primary:
        if not resuming:
            rundir.write_config(run_dir, cfg)
        storage.remove(summary_path)  # a failed run is retried from its last checkpoint
    state = par.init(cfg.seed)
    ckpt = checkpoint.Checkpointer(run_dir / "checkpoints", keep=cfg.checkpoint.keep)
    metrics_log = MetricsLog(run_dir / "metrics.jsonl") if primary else _NoMetricsLog()
    # The newest readable checkpoint; damaged newer ones are set aside (checkpoint.py).
    restored = ckpt.restore_newest_readable(state, layout=par.layout, log=log,
                                            restart_if_unreadable=cfg.checkpoint.restart_if_unreadable)
    start_step, state = restored.step, restored.state
    if start_step:
        chrono.resume(restored.run_time, start_step)  # the time earlier processes spent
        log(f"{run_dir}: resuming from step {start_step} ({start_step * sched.batch_size} examples)")
    metrics_log.truncate_after(start_step * sched.batch_size, log=log)
    for aside in restored.set_aside:  # after the truncation, dated at the step resumed from
        metrics_log.write(checkpoint.unreadable_event(aside, start_step, sched.batch_size, acct.flops_per_example))

    # ---------------------------------------------------------------- compiled steps
    train_step, predict = par.train_step, par.predict

    def evaluate(state) -> dict:
        return evaluate_logits(predict, state, eval_set, cfg.eval.batch_size, multiple=par.eval_multiple)

    # ---------------------------------------------------------------- loop
    def event(step: int, **values) -> dict:
        seen = step * sched.batch_size
        return {"step": step, "examples_seen": seen, "flops_seen": seen * acct.flops_per_example, **values}

    batches = prefetch(map(par.put_batch, _train_batches(source, cfg, sched, start_step)), size=3)
    bar = _progress_bar(sched.total_steps, start_step, progress)
    # The train-loss window not yet logged: a preemption checkpoint between log lines
    # keeps it, so the resumed run's next log line is the uninterrupted run's.
    window = ckpt.saved_log_window(start_step) if start_step else None
    loss_sum = jnp.asarray(window["loss_sum"] if window else 0.0, jnp.float32)
    loss_steps = int(window["loss_steps"]) if window else 0
    exchange = {k: int(v) for k, v in (window or {}).get("exchange", {}).items()}
    final_eval, error = None, None
    saved_step = start_step  # the newest checkpoint's step

    def preempt(step: int) -> preemption.Preempted:
        """Save at `step` (unless just saved) and say so; the caller raises."""
        if saved_step != step:
            _before_save(metrics_log, run_dir)
            ckpt.save(step, state, layout=par.layout, run_time=chrono.run_time(step),
                      log_window={"loss_sum": float(loss_sum), "loss_steps": loss_steps,
                                  "exchange": {k: int(v) for k, v in exchange.items()}})
        ckpt.close()
        return preemption.Preempted(step, step * sched.batch_size, watch.signal_name or "SIGTERM")

    if watch.requested_now():  # asked to stop during setup: nothing new to save
        bar.close()
        raise preempt(start_step)
    try:
        for step in range(start_step + 1, sched.total_steps + 1):
            state, loss, step_stats = train_step(state, *next(batches))
            loss_sum, loss_steps = loss_sum + loss, loss_steps + 1
            exchange = _add_exchange_stats(exchange, step_stats)
            chrono.step_done(loss)
            bar.update(1)
            if sched.is_log_step(step):
                mean_loss = float(loss_sum) / loss_steps
                loss_sum, loss_steps = jnp.zeros(()), 0
                if not math.isfinite(mean_loss):
                    raise TrainingDiverged(f"train loss is {mean_loss} at step {step} "
                                           f"({step * sched.batch_size} examples); lower the learning rates")
                metrics_log.write(event(step, train_loss=mean_loss, **{k: int(v) for k, v in exchange.items()}))
                exchange = {}
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                with chrono.paused() as t_pause:
                    if sched.is_eval_step(step):
                        final_eval = evaluate(state)
                        metrics_log.write(event(step, **final_eval, wall_s=chrono.run_time(step, t_pause).wall_s))
                    if sched.is_checkpoint_step(step):
                        _before_save(metrics_log, run_dir)
                        ckpt.save(step, state, layout=par.layout, run_time=chrono.run_time(step, t_pause))
                        saved_step = step
            # Checked after the step's log, eval and checkpoint, so the saved state and
            # metrics.jsonl agree; never at the last step, which ends the run anyway.
            if step < sched.total_steps and watch.requested(step):
                raise preempt(step)
    except TrainingDiverged as err:
        error = str(err)
    except preemption.Preempted:
        raise  # the checkpoint is saved and Orbax closed (preempt)
    except BaseException:  # interrupted (a notebook's KeyboardInterrupt): leave no Orbax threads behind
        ckpt.close()
        raise
    finally:
        bar.close()
    total_time = chrono.run_time(sched.total_steps)
    examples_per_s = (total_time.timed_steps * sched.batch_size / total_time.train_s
                      if total_time.timed_steps > 0 and total_time.train_s > 0 and not error else None)

    # ---------------------------------------------------------------- summary
    if error is None and final_eval is None:  # resumed after the final checkpoint
        final_eval = evaluate(state)
    summary = {
        "status": "failed" if error else "done",
        "error": error,
        **(final_eval or {k: None for k in ("eval_ne", "eval_logloss", "eval_auc", "eval_calibration")}),
        "eval_examples": int(len(eval_set.labels)),
        "train_examples": sched.total_steps * sched.batch_size,
        "params_embedding": acct.params_embedding,
        "params_dense": acct.params_dense,
        "flops_per_example": acct.flops_per_example,
        "train_flops": acct.flops_per_example * sched.total_steps * sched.batch_size,
        "embedding_bytes_per_example": acct.embedding_bytes_per_example,
        "examples_per_s": examples_per_s,
        "wall_s": chrono.run_time(sched.total_steps).wall_s,
        "bayes_ne": bayes,
        **({"auc_target": cfg.eval.auc_target,
            "auc_target_reached": None if final_eval is None else bool(final_eval["eval_auc"] >= cfg.eval.auc_target)}
           if cfg.eval.auc_target > 0 else {}),
        "seed": cfg.seed,
        "devices": par.devices,
        "platform": jax.devices()[0].platform,
        "jax_version": jax.__version__,
    }
    ckpt.close()
    if primary:
        _before_save(metrics_log, run_dir)
        write_json_atomic(summary_path, summary)
        rundir.unlock(run_dir)
    return summary


def _before_save(metrics_log, run_dir) -> None:
    """Before a checkpoint or the summary: every metrics line so far is durable (on a
    bucket they are buffered), so the resumed run finds each line it will not write
    again; and on a bucket this trainer still holds the run's lease."""
    metrics_log.flush()
    rundir.check_lock(run_dir)


def _remove_if_empty(path: Path) -> None:
    if storage.is_remote(path):
        return  # a prefix with no objects does not exist: nothing to remove
    try:
        path.rmdir()
    except OSError:
        pass


def _add_exchange_stats(acc: dict, stats: dict) -> dict:
    """Counters of the sharded embedding exchange since the last log line (device arrays, no sync).

    exchange_overflow_ids: unique ids that overflowed the all-to-all capacity
    and took a later round (handled exactly, but each round costs a collective);
    exchange_rounds_max: the most rounds one step took.
    """
    if not stats:
        return acc
    return {"exchange_overflow_ids": acc.get("exchange_overflow_ids", 0) + stats["exchange_overflow_ids"],
            "exchange_rounds_max": jnp.maximum(acc.get("exchange_rounds_max", 0), stats["exchange_rounds"])}


def _train_batches(source, cfg: config_lib.Config, sched: Schedule, start_step: int):
    """The global batches from `start_step` on: epoch e repeats examples [0, train.examples)."""
    b, n = sched.batch_size, cfg.train.examples
    start, stop = start_step * b, sched.total_steps * b
    hosts = (jax.process_index(), jax.process_count())
    if cfg.train.epochs == 1:
        yield from source.train_batches(b, start, stop, *hosts)
        return
    for epoch_start in range(start - start % n, stop, n):  # n % b == 0 (validated): no batch spans two epochs
        lo, hi = max(start, epoch_start) - epoch_start, min(stop, epoch_start + n) - epoch_start
        yield from source.train_batches(b, lo, hi, *hosts)


def evaluate_logits(predict, state, eval_set, batch_size: int, multiple: int = 1) -> dict:
    """Metrics over the whole eval set; the last chunk is padded so one shape compiles once.

    Chunks are a multiple of `multiple` examples (the devices a chunk is split over).
    """
    n = len(eval_set.labels)
    bs = -(-min(batch_size, n) // multiple) * multiple
    logits = []
    for lo in range(0, n, bs):
        dense, sparse = eval_set.dense[lo:lo + bs], eval_set.sparse[lo:lo + bs]
        pad = bs - len(dense)
        if pad:
            dense = np.concatenate([dense, np.zeros((pad, dense.shape[1]), dense.dtype)])
            sparse = np.concatenate([sparse, np.zeros((pad, sparse.shape[1]), sparse.dtype)])
        logits.append(np.asarray(predict(state.params, state.emb.table, dense, sparse))[:bs - pad])
    return metrics_lib.evaluate_logits(np.concatenate(logits), eval_set.labels)


class _NoMetricsLog:
    """metrics.jsonl is written by process 0 alone."""

    def truncate_after(self, examples_seen: int, log=None) -> None:
        pass

    def write(self, event: dict) -> None:
        pass

    def flush(self) -> None:
        pass


def _progress_bar(total: int, initial: int, enabled: bool | None):
    from tqdm.auto import tqdm
    # disable=None: a bar on a terminal, nothing in logs and pipes.
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, leave=False,
                disable=None if enabled is None else not enabled, file=sys.stderr)
