#!/usr/bin/env bash
# GPUs: one node (local) or a SLURM job of N nodes, one process per node; --dry-run prints.
# Both check the command's memory plan (int-jax plan) on the node(s) first and stop if it
# does not fit (--skip-plan: launch anyway).
#   launch/gpu/job.sh local --node 8xh200 -- <int-jax command>
#   launch/gpu/job.sh slurm --node 8xh200 --nodes 2 [--partition P] [--account A] -- <int-jax command>
# See int_jax/launch/gpu.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec "${PYTHON:-.venv/bin/python}" -m int_jax.launch.gpu "$@"
