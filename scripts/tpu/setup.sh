#!/usr/bin/env bash
# Install bert_jax with the TPU build of JAX on every worker of the slice.
set -euo pipefail
source "$(dirname "$0")/common.sh"
tpu_ssh_all "set -e
  sudo apt-get update -q && sudo apt-get install -y -q python3-venv git
  [ -d bert_jax ] || git clone $REPO_URL bert_jax
  cd bert_jax && git fetch -q && git checkout -q $REPO_REF && git pull -q || true
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.txt
  .venv/bin/pip install -q 'jax[tpu]==0.10.2' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
  .venv/bin/python -c 'import jax; print(jax.process_index(), jax.device_count(), jax.devices()[0].device_kind)'"
