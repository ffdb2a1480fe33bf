#!/usr/bin/env bash
# Run one dlrm-scaling command on every worker of a Cloud TPU VM pod slice.
#
#   scripts/launch_tpu_pod.sh setup TPU_NAME ZONE            # copy this checkout, install it on all workers
#   scripts/launch_tpu_pod.sh run   TPU_NAME ZONE -- train --preset criteo-mlperf \
#       --set data.source=criteo:gs://BUCKET/data/criteo-1tb \
#       --set embedding.sharding=row --set mesh.model=8 --out gs://BUCKET/runs/mlperf
#
# Every worker runs the same command with `distributed.initialize=true`;
# jax.distributed.initialize() finds the coordinator and the process ids from
# the TPU metadata, each host feeds its slice of every global batch, and
# process 0 alone writes metrics.jsonl and summary.json.  Orbax writes each
# host's shards of a checkpoint, so --out must be a place all workers see: a
# bucket (`--out gs://BUCKET/...`, written directly; no mount needed; the TPU
# VM's service account needs read and write on the bucket), or a shared mount.
# Prepared Criteo shards may be on the bucket too (`data.source=criteo:gs://...`):
# each host reads only its rows, by byte ranges.
#
# Environment: PROJECT (gcloud --project), REPO_DIR on the workers (default
# ~/dlrm-scaling), JAX_SPEC (default "jax[tpu]"), DRY_RUN=1 prints the
# gcloud command lines instead of running them.
set -euo pipefail

usage() { sed -n '2,7p' "$0" >&2; exit 2; }
[ $# -ge 3 ] || usage
action=$1 tpu=$2 zone=$3
shift 3
repo_dir=${REPO_DIR:-'~/dlrm-scaling'}
gcloud_args=(--zone "$zone")
[ -n "${PROJECT:-}" ] && gcloud_args+=(--project "$PROJECT")

run() {
  if [ "${DRY_RUN:-0}" = 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi
}

case "$action" in
  setup)
    here=$(cd "$(dirname "$0")/.." && pwd)
    tarball=$(mktemp -t dlrm-scaling.XXXXXX.tar.gz)
    trap 'rm -f "$tarball"' EXIT
    git -C "$here" archive --format=tar.gz -o "$tarball" HEAD
    run gcloud compute tpus tpu-vm scp "$tarball" "$tpu:/tmp/dlrm-scaling.tar.gz" --worker=all "${gcloud_args[@]}"
    run gcloud compute tpus tpu-vm ssh "$tpu" --worker=all "${gcloud_args[@]}" --command \
      "mkdir -p $repo_dir && tar -xzf /tmp/dlrm-scaling.tar.gz -C $repo_dir && cd $repo_dir && \
       python3 -m venv .venv && .venv/bin/pip install -q -U pip && \
       .venv/bin/pip install -q -e '.[gcs]' '${JAX_SPEC:-jax[tpu]}'"
    ;;
  run)
    [ "${1:-}" = "--" ] && shift
    [ $# -ge 1 ] || usage
    args=$(printf '%q ' "$@")
    run gcloud compute tpus tpu-vm ssh "$tpu" --worker=all "${gcloud_args[@]}" --command \
      "cd $repo_dir && .venv/bin/dlrm-scaling $args --set distributed.initialize=true"
    ;;
  *) usage ;;
esac
