#!/usr/bin/env bash
# Run one int-jax command on every worker of a TPU VM slice.
#
#   TPU_NAME=my-v5p-64 ZONE=us-east5-a launch/tpu/run.sh sft --config=configs/sft.py:qwen3_4b_instruct_2507
#
# The repo must already be cloned at $REPO_DIR on every worker (use --setup to
# clone-or-pull and install). All workers run the same command; JAX's
# multi-controller runtime joins them through jax.distributed.initialize().
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
REPO_DIR=${REPO_DIR:-int-jax}
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}

if [[ "${1:-}" == "--setup" ]]; then
  shift
  : "${REPO_URL:?set REPO_URL to clone from}"
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" $PROJECT_FLAG --worker=all --command \
    "set -e; [ -d $REPO_DIR ] || git clone $REPO_URL $REPO_DIR; cd $REPO_DIR && git pull --ff-only && make install && .venv/bin/pip install -q 'jax[tpu]'"
fi

[[ $# -ge 1 ]] || { echo "usage: $0 [--setup] <int-jax command> [flags...]" >&2; exit 2; }
args=$(printf '%q ' "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" $PROJECT_FLAG --worker=all --command \
  "cd $REPO_DIR && .venv/bin/int-jax $args --config.model.distributed=True"
