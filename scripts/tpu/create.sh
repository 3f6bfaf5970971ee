#!/usr/bin/env bash
# Create a TPU VM (or pod slice). Preemptible/spot capacity is cheaper; bert_jax resumes by itself.
#   ACCELERATOR_TYPE=v4-32 TPU_NAME=bert-v4-32 bash scripts/tpu/create.sh [--spot]
set -euo pipefail
source "$(dirname "$0")/common.sh"
gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" --project="$PROJECT" \
  --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" "$@"
