#!/usr/bin/env bash
# The main job, end to end, offline, on real data (11 min wall on 2 idle cores: 8.5 of them pre-training):
#   1. train a WordPiece vocabulary on the Python docs (1.4M words of English prose),
#   2. build BERT pre-training data (MLM + NSP) from them,
#   3. pre-train a tiny BERT (2 layers, hidden 128) for a few thousand steps,
#   4. fine-tune it on Rotten Tomatoes movie reviews (movie-disjoint split), and the same model from
#      random init, and print both accuracies.
# Everything lands in $OUT (default runs/main): TensorBoard events, checkpoints, results.json files.
#   bash scripts/setup.sh && bash scripts/main_job.sh           # PRETRAIN_STEPS=... to change the budget
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-runs/main}
DOCS=${DOCS:-/usr/share/doc/python3.11/html/_sources}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-2000}
FINETUNE_EPOCHS=${FINETUNE_EPOCHS:-2}
export TF_CPP_MIN_LOG_LEVEL=2 TOKENIZERS_PARALLELISM=false
if [ ! -d "$DOCS" ]; then
  echo "main_job: $DOCS is missing; install the corpus with: apt-get install python3.11-doc" >&2; exit 1
fi
mkdir -p "$OUT"
step() { echo; echo "=== $* ($(date +%H:%M:%S))"; }

# Held-out documents for the pre-training eval: the FAQ; everything else trains.
TRAIN_DOCS=$(ls -d "$DOCS"/* | grep -v '/faq$' | paste -sd, -)

step "1/5 WordPiece vocabulary (8k) from the Python docs"
[ -f "$OUT/tokenizer/vocab.txt" ] || $PY scripts/train_tokenizer.py --wordpiece --lowercase --vocab_size=8000 \
  --input_file="$DOCS/**/*.rst.txt" --output_prefix="$OUT/tokenizer"

step "2/5 pre-training data (seq 128, 20 predictions, NSP, 5 dupes)"
for split in train eval; do
  if [ "$split" = train ]; then inputs=$TRAIN_DOCS; dupe=5; else inputs="$DOCS/faq"; dupe=1; fi
  [ -f "$OUT/data/$split/summary.json" ] || $PY scripts/create_pretraining_data.py --input_file="$inputs" \
    --input_format=documents --output_dir="$OUT/data/$split" --num_output_shards=4 \
    --tokenizer="$OUT/tokenizer/vocab.txt" --do_lower_case=True --max_seq_length=128 \
    --max_predictions_per_seq=20 --dupe_factor=$dupe --random_seed=12345
done

step "3/5 pre-train a tiny BERT for $PRETRAIN_STEPS steps (resumes if interrupted)"
$PY scripts/pretrain.py --config=bert_jax/configs/pretrain.py:size=tiny --workdir="$OUT/pretrain" \
  --config.train_files="$OUT/data/train/*.tfrecord" --config.eval_files="$OUT/data/eval/*.tfrecord" \
  --config.tokenizer="$OUT/tokenizer/vocab.txt" --config.num_train_steps=$PRETRAIN_STEPS \
  --config.global_batch_size=32 --config.learning_rate=1e-3 --config.warmup_steps=$((PRETRAIN_STEPS / 10)) \
  --config.log_every_steps=100 --config.eval_every_steps=500 --config.eval_batches=20 \
  --config.checkpoint_every_steps=500 --config.rng_impl=unsafe_rbg

for init in pretrained scratch; do
  step "$([ $init = pretrained ] && echo 4 || echo 5)/5 fine-tune on Rotten Tomatoes from $init"
  ckpt=""; [ $init = pretrained ] && ckpt="$OUT/pretrain"
  $PY experiments/classification/main.py --config=experiments/classification/config.py:task=rotten_tomatoes \
    --workdir="$OUT/finetune_$init" --config.init_checkpoint="$ckpt" \
    --config.tokenizer="$OUT/tokenizer/vocab.txt" --config.model_size=tiny --config.max_seq_length=64 \
    --config.global_batch_size=32 --config.learning_rate=3e-4 --config.num_epochs=$FINETUNE_EPOCHS --config.seeds=0
done

step "result"
$PY - "$OUT" <<'PYEOF'
import json, os, sys
out = sys.argv[1]
pre = json.load(open(os.path.join(out, "pretrain", "results.json")))
print(f"pre-training ({pre['step']} steps): eval MLM accuracy {pre['eval'].get('mlm_accuracy', float('nan')):.3f}, "
      f"NSP accuracy {pre['eval'].get('nsp_accuracy', float('nan')):.3f}")
for init in ("pretrained", "scratch"):
    r = json.load(open(os.path.join(out, f"finetune_{init}", "results.json")))
    print(f"Rotten Tomatoes, tiny BERT from {init:10s}: dev accuracy {r['metrics']['accuracy']:.3f}, "
          f"test accuracy {r['test_metrics']['accuracy']:.3f}  ({r['data_sizes']['train']} train reviews)")
PYEOF
