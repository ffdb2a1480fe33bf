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
from dlrm_jax import metrics as metrics_lib, model as model_lib, sharding, step as step_lib
from dlrm_jax.data import make_source
from dlrm_jax.data.prefetch import prefetch
from dlrm_jax.errors import UserError
from dlrm_jax.rundir import MetricsLog, read_json, write_json_atomic

LOGS_PER_RUN = 20  # train-loss lines when train.log_every_examples is 0
# Keys that say how a run is laid out on devices, not what it computes: a run
# may resume on another mesh or placement (its checkpoints restore onto it).
PLACEMENT_KEYS = ("mesh.", "distributed.", "embedding.sharding", "embedding.replicate_below_rows")


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
    _claim_run_dir(run_dir, cfg, primary=jax.process_index() == 0)
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        summary = read_json(summary_path)
        if summary.get("status") == "done":
            log(f"{run_dir}: already done (summary.json); not retraining")
            return summary
        summary_path.unlink()  # a failed run is retried from its last checkpoint

    # ---------------------------------------------------------------- data
    source = make_source(cfg)
    sched = schedule_for(cfg)
    eval_set = source.eval_batch(cfg.eval.examples)
    true_probs = source.eval_true_probs(cfg.eval.examples)
    bayes = metrics_lib.bayes_ne(true_probs, eval_set.labels) if true_probs is not None else None

    # ---------------------------------------------------------------- model and state
    model = model_lib.from_config(cfg.model)
    layout = emb_lib.layout_for(source.table_sizes, cfg.model.embed_dim)
    acct = accounting.account(cfg.model, layout.rows, cfg.embedding.optimizer)
    tx = step_lib.dense_optimizer(cfg.train)
    par = sharding.parallelize(cfg, model, tx, layout)  # mesh and placement: bad ones fail before compiling
    state = par.init(cfg.seed)
    ckpt = checkpoint.Checkpointer(run_dir / "checkpoints", keep=cfg.checkpoint.keep)
    metrics_log = MetricsLog(run_dir / "metrics.jsonl") if jax.process_index() == 0 else _NoMetricsLog()
    start_step = ckpt.latest_step() or 0
    if start_step:
        state = ckpt.restore(start_step, state, layout=par.layout)
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

    batches = prefetch(map(par.put_batch, source.train_batches(sched.batch_size, start_step * sched.batch_size,
                                                               sched.total_steps * sched.batch_size,
                                                               jax.process_index(), jax.process_count())), size=3)
    bar = _progress_bar(sched.total_steps, start_step, progress)
    loss_sum, loss_steps, final_eval, error = jnp.zeros(()), 0, None, None
    t_loop = None  # throughput is timed from the end of the first (compiling) step
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
            if sched.is_eval_step(step):
                final_eval = evaluate(state)
                metrics_log.write(event(step, **final_eval, wall_s=time.time() - t_start))
            if sched.is_checkpoint_step(step):
                ckpt.save(step, state, layout=par.layout)
    except TrainingDiverged as err:
        error = str(err)
    finally:
        bar.close()
    timed_steps = sched.total_steps - start_step - 1
    examples_per_s = (timed_steps * sched.batch_size / (time.time() - t_loop)
                      if t_loop is not None and timed_steps > 0 and not error else None)

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
        "wall_s": time.time() - t_start,
        "bayes_ne": bayes,
        "seed": cfg.seed,
        "devices": par.devices,
        "platform": jax.devices()[0].platform,
        "jax_version": jax.__version__,
    }
    ckpt.close()
    if jax.process_index() == 0:
        write_json_atomic(summary_path, summary)
    return summary


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


def _claim_run_dir(run_dir: Path, cfg: config_lib.Config, primary: bool = True) -> None:
    """Create the run dir with config.json, or check an existing one holds the same config.

    With several processes only the primary one writes (the others check what is there).
    """
    cfg_path = run_dir / "config.json"
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} exists and is not a directory")
    if cfg_path.exists():
        try:
            existing = config_lib.from_dict(read_json(cfg_path))
        except (UserError, ValueError) as err:
            raise UserError(f"{cfg_path}: not a config of this version ({err}); use a new --out")
        diff = [k for k, v in _flat(cfg.to_dict()).items()
                if _flat(existing.to_dict()).get(k) != v and not k.startswith(PLACEMENT_KEYS)]
        if diff:
            raise UserError(f"{run_dir} holds a run with a different config ({', '.join(diff)}); use a new --out")
        return
    if not primary:
        return
    if run_dir.exists() and any(p.name not in (".gitkeep", "train.log") for p in run_dir.iterdir()):
        raise UserError(f"--out {run_dir} is not empty and holds no config.json; use a new directory")
    write_json_atomic(cfg_path, cfg.to_dict())


class _NoMetricsLog:
    """metrics.jsonl is written by process 0 alone."""

    def truncate_after(self, examples_seen: int) -> None:
        pass

    def write(self, event: dict) -> None:
        pass


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _progress_bar(total: int, initial: int, enabled: bool | None):
    from tqdm.auto import tqdm
    # disable=None: a bar on a terminal, nothing in logs and pipes.
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, leave=False,
                disable=None if enabled is None else not enabled, file=sys.stderr)
