#!/usr/bin/env bash
# The real-data smoke experiment: the first 9,999 rows of the Criteo Kaggle
# train.txt (research use only; never copied into this repository).
#   1. prepare: first 8,000 lines train, the remaining 1,999 val (--split head:8000),
#      categoricals hashed into 65,536 rows per feature, log1p dense;
#   2. baseline: hashed logistic regression (scripts/criteo_lr_baseline.py);
#   3. DLRM: the criteo-kaggle preset (reference DLRM sizes), one pass, batch 128.
# Prints AUC and NE of both on the 1,999 held-out rows.  About a minute on 2 CPU cores.
#
#   scripts/criteo_head_experiment.sh [TSV] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
TSV=${1:-../shared/data/criteo_kaggle_train_head9999.tsv}
OUT=${2:-runs/criteo_head}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python

rm -rf "$OUT/data" "$OUT/dlrm"
mkdir -p "$OUT"
"$PY" -m dlrm_jax data criteo-prepare --src "$TSV" --split head:8000 \
    --hash-rows 65536 --out "$OUT/data"
"$PY" scripts/criteo_lr_baseline.py "$OUT/data" --json > "$OUT/lr_baseline.json"
"$PY" -m dlrm_jax train --preset criteo-kaggle --no-progress --out "$OUT/dlrm" \
    --set data.source=criteo:"$OUT/data" --set model.table_rows=0 \
    --set train.examples=8000 --set train.epochs=1 --set train.batch_size=128 \
    --set eval.examples=1999 --set seed=0
"$PY" - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
lr = json.load(open(f"{out}/lr_baseline.json"))
dl = json.load(open(f"{out}/dlrm/summary.json"))
m = json.load(open(f"{out}/data/manifest.json"))
print(f"rows {m['rows']:,} (train {m['splits']['train']['rows']:,}, val "
      f"{m['splits']['val']['rows']:,}); label rate {m['stats']['label_rate']:.4f}")
print(f"hashed logistic regression: AUC {lr['eval_auc']:.4f}  NE {lr['eval_ne']:.4f}")
print(f"DLRM (criteo-kaggle, 1 pass): AUC {dl['eval_auc']:.4f}  NE {dl['eval_ne']:.4f}  "
      f"({dl['train_examples']:,} training examples)")
EOF
