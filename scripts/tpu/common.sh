# Shared settings for the Cloud TPU VM scripts. Override any of them in the environment.
#   TPU_NAME=bert-v4-32 ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 bash scripts/tpu/create.sh
: "${TPU_NAME:=bert-jax}"
: "${ZONE:=us-central2-b}"
: "${PROJECT:=$(gcloud config get-value project 2>/dev/null)}"
: "${ACCELERATOR_TYPE:=v4-8}"            # v4-8 is one host; v4-32 and up are pod slices (several hosts)
: "${RUNTIME_VERSION:=tpu-ubuntu2204-base}"
: "${REPO_URL:=https://github.com/YOUR_ORG/bert_jax.git}"
: "${REPO_REF:=main}"
: "${BUCKET:=gs://YOUR_BUCKET/bert_jax}" # data and workdirs live in GCS so every worker sees them
# Run a command on every worker of the slice (one ssh per host, in parallel).
tpu_ssh_all() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --project="$PROJECT" --worker=all --command="$1"
}
