"""Host preprocessing rate of the SparseCore backend: ids per second per host core.

    python scripts/sparsecore_preprocess_rate.py --topology v5p-128 --batch 262144

Builds the SparseCore feature specs of `criteo-mlperf` (adagrad) for the slice
(chips, SparseCores per chip, chips per host), draws one host's slice of a
synthetic criteo-mlperf batch (Zipf ids over the real table sizes), and times
jax-tpu-embedding's preprocess_sparse_dense_matmul_input on it: what
`SparseCoreEmbedding.preprocess` runs in the data pipeline's background thread
every step.  The per-core figure is ids over the process's CPU time (all its
threads), which a loaded machine does not inflate; wall time is printed too.
Prints one JSON line.
"""
import argparse
import json
import os
import time

# chips, SparseCores per chip, chips per host (Cloud TPU VMs: 4 chips per host on v5p, 8 on v6e-256's hosts)
SLICES = {"v5p-128": (64, 4, 4), "v6e-256": (256, 2, 8)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--topology", default="v5p-128", choices=sorted(SLICES))
    p.add_argument("--batch", type=int, default=262144, help="global batch")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import numpy as np
    from jax_tpu_embedding.sparsecore.lib.nn import embedding

    from dlrm_jax.config import load_config
    from dlrm_jax.data import make_source
    from dlrm_jax.embedding.sparsecore import backend as sparsecore

    chips, sc, per_host = SLICES[a.topology]
    hosts = chips // per_host
    cfg = load_config("criteo-mlperf", ["embedding.backend=sparsecore", "embedding.optimizer=adagrad",
                                        f"train.batch_size={a.batch}", f"train.examples={a.batch}"])
    source = make_source(cfg)
    rows = list(source.table_sizes)
    sc_features, _ = sparsecore.split_features(rows, cfg.embedding.tensorcore_below_rows)
    specs = sparsecore.feature_specs(rows, cfg.model.embed_dim, cfg.embedding, a.batch, chips, sc, sc_features)
    host_batch = a.batch // hosts
    batch = next(iter(source.train_batches(a.batch, 0, a.batch, 0, hosts)))       # host 0's slice
    feats = {sparsecore.feature_name(f): np.ascontiguousarray(batch.sparse[:, f:f + 1]) for f in sc_features}
    weights = {k: np.ones(v.shape, np.float32) for k, v in feats.items()}

    def run(i):
        embedding.preprocess_sparse_dense_matmul_input(feats, weights, specs, local_device_count=per_host,
                                                       global_device_count=chips, num_sc_per_device=sc,
                                                       allow_id_dropping=False, batch_number=i)

    run(0)  # warm-up
    times, cpu = [], []
    for i in range(a.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        run(i + 1)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)   # all threads of the process: core-seconds, whatever the load
    ids = host_batch * len(sc_features)
    cores = len(os.sched_getaffinity(0))
    best = min(times)
    print(json.dumps({"topology": a.topology, "global_batch": a.batch, "hosts": hosts, "host_batch": host_batch,
                      "sparsecore_features": len(sc_features), "ids_per_host_step": ids, "cores": cores,
                      "seconds_best": best, "seconds_median": float(np.median(times)),
                      "cpu_seconds_median": float(np.median(cpu)), "ids_per_s": ids / best,
                      "ids_per_core_second": ids / float(np.median(cpu))}))


if __name__ == "__main__":
    main()
