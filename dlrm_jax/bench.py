"""`dlrm-scaling bench`: examples/s of the jitted train step.

Times the step alone (batches are generated before timing and cycled, so the
data source is not measured): compile and warm up, then `repeats` timings of
`steps` steps each, reporting the median.  With `dense_embedding=True` the same
process also times the dense-gradient baseline (tables as optax params, the
full-table gradient and update every step) for comparison.

The step runs on the mesh and embedding placement the config names
(`mesh.*`, `embedding.sharding`), and the result carries the compiled step's
per-device memory (XLA's memory analysis: arguments, outputs, temporaries).
"""
from __future__ import annotations

import statistics
import time

import jax
import optax

from dlrm_jax import config as config_lib, embedding as emb_lib, step as step_lib
from dlrm_jax.build import build
from dlrm_jax.compile.memory import memory_per_device
from dlrm_jax.errors import UserError
from dlrm_jax.parallel import distributed, host_memory

NUM_DISTINCT_BATCHES = 4


def bench(cfg: config_lib.Config, batch_size: int | None = None, steps: int = 20, repeats: int = 5,
          dense_embedding: bool = False) -> dict:
    if batch_size is not None:
        if batch_size <= 0:
            raise UserError(f"--batch must be positive, got {batch_size}")
        cfg = cfg.replace(**{"train.batch_size": batch_size,
                             "train.examples": max(cfg.train.examples, batch_size)})
    if steps <= 0 or repeats <= 0:
        raise UserError("--steps and --repeats must be positive")
    distributed.initialize(cfg.distributed)
    b = cfg.train.batch_size
    built = build(cfg)
    source, layout, model, tx = built.source, built.layout, built.model, built.tx
    acct, par = built.accounting, built.par
    host_batches = [next(source.train_batches(b, i * b, (i + 1) * b, jax.process_index(), jax.process_count()))
                    for i in range(NUM_DISTINCT_BATCHES)]
    batches = [tuple(jax.device_put(x) for x in par.put_batch(batch)) for batch in host_batches]
    state = par.init(0)
    step = par.train_step.lower(state, *batches[0]).compile()
    memory = memory_per_device(step)
    sparse_rate, state, host = _time(step, state, batches, steps, repeats)
    result = {
        "examples_per_s": sparse_rate,
        "batch_size": b,
        "embedding_optimizer": cfg.embedding.optimizer,
        "table_rows": layout.total_rows,
        "embed_dim": layout.dim,
        "params_embedding": acct.params_embedding,
        "params_dense": acct.params_dense,
        "flops_per_example": acct.flops_per_example,
        "embedding_bytes_per_example": acct.embedding_bytes_per_example,
        "achieved_tflops": sparse_rate * acct.flops_per_example / 1e12,
        "devices": par.devices,
        "mesh": built.mesh_shape,
        "embedding_sharding": built.embedding_sharding,
        "table_groups": _groups(par),
        "memory_per_device": memory,
        "platform": jax.devices()[0].platform,
        "device_kind": jax.devices()[0].device_kind,
        "jax_version": jax.__version__,
        "malloc_keeps_freed_memory": host_memory.active(),
        "host_per_step": host,   # process-wide minor page faults, user and system CPU seconds
        "steps": steps, "repeats": repeats,
    }
    del state
    if dense_embedding:  # on one device: the baseline the sparse path replaces
        single = [tuple(jax.device_put(x) for x in batch) for batch in host_batches]
        result["dense_embedding_examples_per_s"] = _bench_dense_embedding(cfg, model, tx, layout, single,
                                                                         steps, repeats)
    return result


def _groups(par) -> list[dict]:
    """Each table group: features, rows (padding included), devices it is split over, rows per device."""
    if par.placement is None:
        return []
    return [{"features": len(g.features), "rows": g.rows, "shards": g.shards, "rows_per_device": g.shard_rows}
            for g in par.placement.groups]


def _time(step, state, batches, steps: int, repeats: int) -> tuple[float, object, dict]:
    """Median examples/s over `repeats` timings, and the host's cost per step over all of them."""
    b = batches[0][0].shape[0]
    for i in range(3):  # compile and warm up
        state, loss = step(state, *batches[i % len(batches)])[:2]
    jax.block_until_ready(state)
    rates = []
    usage0 = _rusage()
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(steps):
            state, loss = step(state, *batches[i % len(batches)])[:2]
        jax.block_until_ready((state, loss))
        rates.append(steps * b / (time.perf_counter() - t))
    usage1 = _rusage()
    host = {k: (usage1[k] - usage0[k]) / (steps * repeats) for k in usage0}
    return statistics.median(rates), state, host


def _rusage() -> dict:
    """This process's minor page faults and CPU seconds (user, system) so far; {} without `resource`.

    A step whose temporaries are faulted in afresh shows ~one fault per 4 KiB
    and system time (see dlrm_jax/parallel/host_memory.py), which is how that cost was found.
    """
    try:
        import resource
    except ImportError:  # not Unix
        return {}
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"minor_page_faults": r.ru_minflt, "user_s": r.ru_utime, "system_s": r.ru_stime}


def _bench_dense_embedding(cfg, model, tx, layout, batches, steps, repeats) -> float:
    """The baseline the sparse path replaces: jax.grad through jnp.take, optax on the whole table."""
    e = cfg.embedding
    emb_tx = emb_lib.dense_reference(e.optimizer, e.learning_rate, e.eps, e.initial_accumulator)

    def init(key):
        s = step_lib.init_state(key, model, tx, layout, e)
        return (s.params, s.opt_state, s.emb.table, emb_tx.init(s.emb.table))

    def dense_step(st, dense, sparse, labels):
        params, opt_state, table, emb_state = st

        def loss_fn(params, table):
            rows = emb_lib.lookup(table, layout.concatenated_ids(sparse))
            return step_lib.bce_loss(model.apply({"params": params}, dense, rows), labels)

        loss, (gp, gt) = jax.value_and_grad(loss_fn, argnums=(0, 1))(params, table)
        up, opt_state = tx.update(gp, opt_state, params)
        ut, emb_state = emb_tx.update(gt, emb_state, table)
        return (optax.apply_updates(params, up), opt_state, optax.apply_updates(table, ut), emb_state), loss

    st = jax.jit(init)(jax.random.PRNGKey(0))
    rate, _, _ = _time(jax.jit(dense_step, donate_argnums=0), st, batches, steps, repeats)
    return rate


def format_result(r: dict) -> str:
    lines = [f"{r['examples_per_s']:,.0f} examples/s  (batch {r['batch_size']}, {r['table_rows']:,} rows x "
             f"{r['embed_dim']}, {r['embedding_optimizer']}, {r['devices']} x {r['device_kind']}, "
             f"jax {r['jax_version']}; median of {r['repeats']} x {r['steps']} steps)",
             f"  {r['achieved_tflops']:.3f} TFLOP/s of model FLOPs ({r['flops_per_example']:,} per example)"]
    mem = r.get("memory_per_device") or {}
    if mem:
        mesh = r.get("mesh", {})
        axes = " x ".join(f"{k}={v}" for k, v in mesh.items())
        lines.append(f"  per device ({r.get('embedding_sharding')} on mesh {axes}): "
                     f"arguments {_mib(mem['argument'])}, outputs "
                     f"{_mib(mem['output'])}, temporaries {_mib(mem['temp'])}, peak ~{_mib(mem['peak'])}")
    host = r.get("host_per_step") or {}
    if host:
        kept = "kept" if r.get("malloc_keeps_freed_memory") else "returned to the OS (default malloc)"
        lines.append(f"  host per step: {host['minor_page_faults']:,.0f} page faults, "
                     f"CPU {host['user_s'] * 1e3:.1f} ms "
                     f"user + {host['system_s'] * 1e3:.1f} ms system; freed memory {kept}")
    if "dense_embedding_examples_per_s" in r:
        d = r["dense_embedding_examples_per_s"]
        lines.append(f"  dense-gradient baseline: {d:,.0f} examples/s (sparse is {r['examples_per_s'] / d:.2f}x)")
    return "\n".join(lines)


def _mib(n: int) -> str:
    return f"{n / 2 ** 20:,.1f} MiB"
