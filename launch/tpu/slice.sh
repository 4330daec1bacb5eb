#!/usr/bin/env bash
# A TPU VM slice from creation to teardown; every action takes --dry-run. create and run
# check the command's memory plan (int-jax plan) on the slice first and stop if it does
# not fit (--skip-plan: launch anyway).
#   launch/tpu/slice.sh create --name N --zone Z --project P --slice v5p-32 [--queued] -- <int-jax command>
#   launch/tpu/slice.sh setup  --name N --zone Z --project P --repo-url URL [--ref main]
#   launch/tpu/slice.sh run    --name N --zone Z --project P --slice v5p-32 -- <int-jax command>
#   launch/tpu/slice.sh upload|download --name N --zone Z --project P --run runs/X --bucket gs://B
#   launch/tpu/slice.sh delete --name N --zone Z --project P
# See int_jax/launch/tpu.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec "${PYTHON:-.venv/bin/python}" -m int_jax.launch.tpu "$@"
