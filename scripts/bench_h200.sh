#!/usr/bin/env bash
# One-GPU (H200) benchmark of the train step, bf16 vs f32, with hardware ceilings.
#
#   OUT=/path/to/results scripts/bench_h200.sh
#
# Writes to $OUT:
#   bench_f32.json, bench_bf16.json  `dlrm-scaling bench --json`: the criteo-mlperf shape
#       (26 tables capped at 4M rows, ~24M rows x 128, row-wise Adagrad), batch 65536,
#       MLPs in float32 / bfloat16 (`model.compute_dtype`), with the compiled step's
#       per-device memory
#   ne_f32/, ne_bf16/                run directories of a short synthetic run (small preset,
#       2^20 examples): the eval NE that bf16 MLPs cost, if any
#   ceilings.json                    a large bf16 matmul (TFLOP/s), a large copy (GB/s), and
#       each bench result's roofline fraction (scripts/ceilings.py)
#   h200.json                        the headline numbers of all the above
#
# Needs a JAX that sees the GPU (pip install -e . "jax[cuda12]"); PYTHON picks the
# interpreter (default .venv/bin/python, else python3).  About 6 minutes on one H200.
# SMOKE=1 runs the same pipeline with tiny shapes on any device (a check of the script).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the directory for the results}"
mkdir -p "$OUT"
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export DLRM_SCALING_COMPILE_CACHE=${DLRM_SCALING_COMPILE_CACHE:-off}

"$PY" -c "import jax, sys; d = jax.devices()[0]; print(d.device_kind, jax.__version__); \
sys.exit(0 if d.platform == 'gpu' or '${SMOKE:-0}' == '1' else 'no GPU visible to JAX: install jax[cuda12]')"

bench=(--preset criteo-mlperf --set model.table_rows=4000000 --set mesh.data=1 --set mesh.model=1
       --batch 65536 --steps 20 --repeats 5 --json)
ne=(--preset small --set train.examples=2**20 --set train.batch_size=8192 --set eval.examples=2**17
    --set mesh.data=1 --set mesh.model=1 --no-progress)
sizes=()
if [ "${SMOKE:-0}" = 1 ]; then
  bench=(--preset tiny --set mesh.data=1 --set mesh.model=1 --batch 256 --steps 2 --repeats 1 --json)
  ne=(--preset tiny --set train.examples=2048 --set mesh.data=1 --set mesh.model=1 --no-progress)
  sizes=(--matmul-n 256 --copy-gib 0.01)
fi
"$PY" -m dlrm_jax bench "${bench[@]}" --set model.compute_dtype=float32 > "$OUT/bench_f32.json"
"$PY" -m dlrm_jax bench "${bench[@]}" --set model.compute_dtype=bfloat16 > "$OUT/bench_bf16.json"

for dtype in float32 bfloat16; do
  dir="$OUT/ne_${dtype/float32/f32}"; dir=${dir/bfloat16/bf16}
  rm -rf "$dir"
  "$PY" -m dlrm_jax train "${ne[@]}" --set model.compute_dtype=$dtype --out "$dir"
  rm -rf "$dir/checkpoints"  # not needed for the comparison; keeps $OUT small
done

"$PY" scripts/ceilings.py "${sizes[@]}" --out "$OUT/ceilings.json" --bench "$OUT/bench_f32.json" "$OUT/bench_bf16.json" > /dev/null

"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
load = lambda p: json.loads((out / p).read_text())
ceil = load("ceilings.json")
summary = {"device_kind": ceil["device_kind"], "jax_version": ceil["jax_version"],
           "matmul_bf16_tflops": ceil["matmul_bf16_tflops"], "copy_gbps": ceil["copy_gbps"]}
for name in ("f32", "bf16"):
    b = load(f"bench_{name}.json")
    r = ceil["roofline"][str(out / f"bench_{name}.json")]
    summary[f"bench_{name}"] = {"examples_per_s": b["examples_per_s"], "achieved_tflops": b["achieved_tflops"],
                                "memory_per_device": b.get("memory_per_device"),
                                "roofline_fraction": r["roofline_fraction"], "bound": r["bound"]}
    s = load(f"ne_{name}/summary.json")
    summary[f"eval_ne_{name}"] = s["eval_ne"]
summary["bf16_speedup"] = summary["bench_bf16"]["examples_per_s"] / summary["bench_f32"]["examples_per_s"]
summary["eval_ne_bf16_minus_f32"] = summary["eval_ne_bf16"] - summary["eval_ne_f32"]
(out / "h200.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
EOF
