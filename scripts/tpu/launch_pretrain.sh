#!/usr/bin/env bash
# Launch pre-training on all workers at once. On a TPU VM every process finds the others by itself
# (no --coordinator_address needed); each host reads its own slice of the TFRecords.
#   SIZE=base STEPS=1000000 BATCH=256 bash scripts/tpu/launch_pretrain.sh [extra --config.x=y flags]
# Re-running the same command after a preemption resumes from the newest checkpoint in WORKDIR.
set -euo pipefail
source "$(dirname "$0")/common.sh"
: "${SIZE:=base}"
: "${WORKDIR:=$BUCKET/runs/bert-$SIZE}"
: "${TRAIN_FILES:=$BUCKET/data/seq128/*.tfrecord}"
: "${TRAIN_FILES_512:=$BUCKET/data/seq512/*.tfrecord}"
: "${EVAL_FILES:=$BUCKET/data/eval128/*.tfrecord}"
: "${TOKENIZER:=$BUCKET/data/vocab.txt}"
EXTRA="$*"
tpu_ssh_all "cd bert_jax && nohup .venv/bin/python scripts/pretrain.py \
  --config=bert_jax/configs/pretrain.py:size=$SIZE --workdir=$WORKDIR \
  --config.train_files='$TRAIN_FILES' --config.train_files_512='$TRAIN_FILES_512' \
  --config.eval_files='$EVAL_FILES' --config.tokenizer=$TOKENIZER \
  --config.dtype=bfloat16 --config.parallelism=${PARALLELISM:-pmap} $EXTRA \
  > pretrain.log 2>&1 &
  sleep 5; tail -n 3 pretrain.log"
echo "Follow with: gcloud compute tpus tpu-vm ssh $TPU_NAME --zone=$ZONE --worker=0 --command='tail -f bert_jax/pretrain.log'"
