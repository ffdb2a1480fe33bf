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
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dlrm_jax import accounting, checkpoint, config as config_lib, distributed, embedding as emb_lib
from dlrm_jax import metrics as metrics_lib, model as model_lib, parallel, step as step_lib
from dlrm_jax.data import make_source
from dlrm_jax.data.prefetch import prefetch
from dlrm_jax.errors import UserError
from dlrm_jax.rundir import MetricsLog, read_json, write_json_atomic

LOGS_PER_RUN = 20  # train-loss lines when train.log_every_examples is 0


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf."""


@dataclass(frozen=True)
class Schedule:
    """Step counts derived from examples and batch size (never configured twice)."""
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


def schedule_for(cfg: config_lib.Config) -> Schedule:
    t = cfg.train
    b = t.batch_size
    total = (t.examples * t.epochs) // b  # full batches only: every step has the same shape

    def every(examples: int, default: int) -> int:
        return max(1, math.ceil(examples / b)) if examples > 0 else default

    return Schedule(batch_size=b, total_steps=total,
                    log_every=every(t.log_every_examples, max(1, total // LOGS_PER_RUN)),
                    eval_every=every(t.eval_every_examples, 0),
                    checkpoint_every=every(cfg.checkpoint.every_examples, 0))


def train(cfg: config_lib.Config, run_dir: str | Path, *, progress: bool | None = None,
          verbose: bool = True) -> dict:
    """Train one run into `run_dir`; return its summary.  A finished run is not retrained."""
    t_start = time.time()
    distributed.initialize(cfg.distributed)  # before JAX touches a device
    run_dir = Path(run_dir)
    log = (lambda *a: print(*a, file=sys.stderr)) if verbose else (lambda *a: None)

    # ---------------------------------------------------------------- run directory
    # Checked now, written only once the data, eval set and mesh are known to work,
    # so a bad value never leaves a config.json that blocks the corrected rerun.
    primary = jax.process_index() == 0
    resuming = _check_run_dir(run_dir, cfg)
    summary_path = run_dir / "summary.json"
    if resuming and summary_path.exists():
        summary = read_json(summary_path)
        if summary.get("status") == "done":
            log(f"{run_dir}: already done (summary.json); not retraining")
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
    model = model_lib.from_config(cfg.model)
    layout = emb_lib.layout_for(source.table_sizes, cfg.model.embed_dim)
    acct = accounting.account(cfg.model, layout.rows, cfg.embedding.optimizer)
    tx = step_lib.dense_optimizer(cfg.train)
    par = parallel.parallelize(cfg, model, tx, layout)  # mesh and placement: bad ones fail before compiling
    if primary:
        _write_run_dir(run_dir, cfg, resuming)
        _lock_run_dir(run_dir)
        summary_path.unlink(missing_ok=True)  # a failed run is retried from its last checkpoint
    state = par.init(cfg.seed)
    ckpt = checkpoint.Checkpointer(run_dir / "checkpoints", keep=cfg.checkpoint.keep)
    metrics_log = MetricsLog(run_dir / "metrics.jsonl") if primary else _NoMetricsLog()
    start_step = ckpt.latest_step() or 0
    before = checkpoint.RunTime()  # the time earlier processes spent up to the restored checkpoint
    if start_step:
        state = ckpt.restore(start_step, state, layout=par.layout)
        before = ckpt.saved_run_time(start_step)
        log(f"{run_dir}: resuming from step {start_step} ({start_step * sched.batch_size} examples)")
    metrics_log.truncate_after(start_step * sched.batch_size)

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
    loss_sum, loss_steps, final_eval, error = jnp.zeros(()), 0, None, None
    t_loop = None  # throughput is timed from the end of the first (compiling) step ...
    t_paused = 0.0  # ... without the time spent in evals and checkpoints

    def run_time(step: int, now: float) -> checkpoint.RunTime:
        """The run's time at `step`, this process's share (timed up to `now`) added to `before`."""
        timed = max(0, step - start_step - 1)
        train_s = now - t_loop - t_paused if t_loop is not None else 0.0
        return checkpoint.RunTime(before.wall_s + time.time() - t_start, before.train_s + train_s,
                                  before.timed_steps + timed)
    try:
        for step in range(start_step + 1, sched.total_steps + 1):
            state, loss = train_step(state, *next(batches))
            loss_sum, loss_steps = loss_sum + loss, loss_steps + 1
            if t_loop is None:
                jax.block_until_ready(loss)
                t_loop = time.time()
            bar.update(1)
            if not sched.is_log_step(step):
                continue
            mean_loss = float(loss_sum) / loss_steps
            loss_sum, loss_steps = jnp.zeros(()), 0
            if not math.isfinite(mean_loss):
                raise TrainingDiverged(f"train loss is {mean_loss} at step {step} "
                                       f"({step * sched.batch_size} examples); lower the learning rates")
            metrics_log.write(event(step, train_loss=mean_loss))
            bar.set_postfix(loss=f"{mean_loss:.4f}")
            t_pause = time.time()
            if sched.is_eval_step(step):
                final_eval = evaluate(state)
                metrics_log.write(event(step, **final_eval, wall_s=run_time(step, t_pause).wall_s))
            if sched.is_checkpoint_step(step):
                ckpt.save(step, state, layout=par.layout, run_time=run_time(step, t_pause))
            t_paused += time.time() - t_pause
    except TrainingDiverged as err:
        error = str(err)
    except BaseException:  # interrupted (a notebook's KeyboardInterrupt): leave no Orbax threads behind
        ckpt.close()
        raise
    finally:
        bar.close()
    total_time = run_time(sched.total_steps, time.time())
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
        "wall_s": run_time(sched.total_steps, time.time()).wall_s,
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
        write_json_atomic(summary_path, summary)
        _unlock_run_dir(run_dir)
    return summary


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


def _check_run_dir(run_dir: Path, cfg: config_lib.Config) -> bool:
    """True if `run_dir` holds this run (same config); False if it is new; UserError otherwise."""
    cfg_path = run_dir / "config.json"
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} exists and is not a directory")
    if not cfg_path.exists():
        if run_dir.exists() and any(p.name not in RUN_DIR_EXTRAS for p in run_dir.iterdir()):
            raise UserError(f"--out {run_dir} is not empty and holds no config.json; use a new directory")
        return False
    try:
        existing = config_lib.from_dict(read_json(cfg_path))
    except (UserError, ValueError) as err:
        raise UserError(f"{cfg_path}: not a config of this version ({err}); use a new --out")
    diff = config_lib.diff(existing, cfg)
    if diff:
        raise UserError(f"{run_dir} holds a run with a different config ({', '.join(diff)}); use a new --out")
    return True


# Files that may sit in a run directory before its config.json: the sweep
# runner's log of the run's stderr, and the lock.
RUN_DIR_EXTRAS = (".gitkeep", "train.log", ".lock")


def _write_run_dir(run_dir: Path, cfg: config_lib.Config, resuming: bool) -> None:
    if resuming:
        return
    try:
        write_json_atomic(run_dir / "config.json", cfg.to_dict())
    except OSError as err:
        raise UserError(f"cannot write the run directory --out {run_dir}: {err.strerror or err}")


def _lock_run_dir(run_dir: Path) -> None:
    """Hold an exclusive lock on the run directory until the process exits.

    Two trainers on one directory (a sweep rerun while an orphaned run goes on)
    would interleave metrics lines and checkpoint saves; the second one stops here.
    """
    import fcntl
    _unlock_run_dir(run_dir)  # this process trained here before (a retry in the same session)
    f = open(run_dir / ".lock", "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise UserError(f"{run_dir} is being trained by another process (lock {run_dir / '.lock'})")
    _LOCKS[str(run_dir.resolve())] = f  # released at the end of train() or when the process dies


_LOCKS: dict = {}


def _unlock_run_dir(run_dir: Path) -> None:
    f = _LOCKS.pop(str(run_dir.resolve()), None)
    if f is not None:
        (run_dir / ".lock").unlink(missing_ok=True)  # a finished run dir holds only the contract's files
        f.close()


class _NoMetricsLog:
    """metrics.jsonl is written by process 0 alone."""

    def truncate_after(self, examples_seen: int) -> None:
        pass

    def write(self, event: dict) -> None:
        pass


def _progress_bar(total: int, initial: int, enabled: bool | None):
    from tqdm.auto import tqdm
    # disable=None: a bar on a terminal, nothing in logs and pipes.
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, leave=False,
                disable=None if enabled is None else not enabled, file=sys.stderr)
