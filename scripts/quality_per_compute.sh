#!/usr/bin/env bash
# Quality per compute: train every LM architecture of the plugin (one per model) and fairseq's
# transformer_lm on WikiText-2 for the same wall-clock budget, score valid and test perplexity
# with fairseq-eval-lm, and plot validation perplexity against wall time and tokens seen.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python}"

usage() {
  cat <<USAGE
usage: $0 [--minutes M] [--corpus sample|shared|DIR] [--size tiny|small|base] [--archs "A B ..."]
          [--tokens-per-sample N] [--max-tokens N] [--warmup-updates N] [--validate-every N]
          [--output-dir DIR] [--results-dir DIR] [-- FAIRSEQ-TRAIN FLAGS...]

  --minutes            wall-clock training budget per architecture (default 3: sized for 2 CPU cores)
  --corpus             sample: the bundled WikiText-2 slice (default); shared: ../shared/data/wikitext-2
                       (the full corpus); or a directory with train.txt, valid.txt, test.txt
  --size               size preset of every arch, matched to transformer_lm (default tiny)
  --archs              architectures (default: one per model of the plugin); transformer_lm is always run
  --tokens-per-sample  training and evaluation length (default 256)
  --max-tokens         tokens per update (default 2048)
  --warmup-updates     inverse-sqrt warm-up (default 100: the recipe's 1000 is longer than a CPU budget)
  --validate-every     updates between validations, the points of the curves (default 25)
  --output-dir         runs, checkpoints and logs (default bench-output/quality)
  --results-dir        where quality.{json,md,png} go (default benchmarks/results)
Everything else is the WikiText-2 recipe (python -m delight_plugin.recipes.hyperparameters lm ...);
flags after -- go to fairseq-train last and override it.
USAGE
}

MINUTES=3 CORPUS=sample SIZE=tiny ARCHS="" TPS=256 MAX_TOKENS=2048 WARMUP=100 EVERY=25
OUT="$REPO/bench-output/quality" RESULTS="$REPO/benchmarks/results" EXTRA=()
COMMAND="scripts/quality_per_compute.sh $*"
while (($#)); do
  case "$1" in
    --minutes) MINUTES="$2"; shift 2 ;;
    --corpus) CORPUS="$2"; shift 2 ;;
    --size) SIZE="$2"; shift 2 ;;
    --archs) ARCHS="$2"; shift 2 ;;
    --tokens-per-sample) TPS="$2"; shift 2 ;;
    --max-tokens) MAX_TOKENS="$2"; shift 2 ;;
    --warmup-updates) WARMUP="$2"; shift 2 ;;
    --validate-every) EVERY="$2"; shift 2 ;;
    --output-dir) OUT="$2"; shift 2 ;;
    --results-dir) RESULTS="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) usage >&2; echo "unknown option: $1" >&2; exit 2 ;;
  esac
done

case "$CORPUS" in
  sample) TEXT="$REPO/delight_plugin/data/sample/wikitext-2"; THRESHOLD=2; NAME="WikiText-2 (bundled slice)" ;;
  shared) TEXT="$REPO/../shared/data/wikitext-2"; THRESHOLD=0; NAME="WikiText-2" ;;
  *) TEXT="$CORPUS"; THRESHOLD=0; NAME="$CORPUS" ;;
esac
[[ -f "$TEXT/train.txt" ]] || { echo "--corpus: no train.txt in $TEXT" >&2; exit 2; }

mkdir -p "$OUT"
DATA="$OUT/data-bin-$CORPUS"
[[ "$CORPUS" == sample || "$CORPUS" == shared ]] || DATA="$OUT/data-bin-custom"
if [[ ! -f "$DATA/dict.txt" ]]; then
  echo "binarising $TEXT -> $DATA"
  $PY -m fairseq_cli.preprocess --only-source --trainpref "$TEXT/train.txt" --validpref "$TEXT/valid.txt" \
    --testpref "$TEXT/test.txt" --destdir "$DATA" --workers 2 --thresholdsrc "$THRESHOLD" > "$OUT/preprocess.log" 2>&1
fi

if [[ -z "$ARCHS" ]]; then
  ARCHS="$($PY -c 'import delight_plugin; from delight_plugin.presets import plugin_lm_archs; print(*plugin_lm_archs(default_only=True))' 2>/dev/null)"
fi
LIST="transformer_lm"  # the baseline first, once
for A in $ARCHS; do [[ "$A" == transformer_lm ]] || LIST="$LIST $A"; done
ARCHS="$LIST"
HOURS="$($PY -c "print($MINUTES / 60)")"
RUNS="$OUT/runs-$CORPUS-$SIZE"
mkdir -p "$RUNS"

for ARCH in $ARCHS; do
  RUN="$RUNS/$ARCH"
  rm -rf "$RUN"; mkdir -p "$RUN"
  mapfile -t RECIPE < <($PY -m delight_plugin.recipes.hyperparameters lm --arch "$ARCH" --dataset wikitext-2 2>/dev/null)
  mapfile -t PRESET < <($PY -c "import sys, delight_plugin; from delight_plugin.presets import preset_flags; print(*preset_flags(sys.argv[1], sys.argv[2]), sep='\n')" "$ARCH" "$SIZE" 2>/dev/null)
  echo "[$ARCH] training for $MINUTES min ..."
  if ! $PY -m fairseq_cli.train "$DATA" --user-dir "$REPO/delight_plugin" "${RECIPE[@]}" "${PRESET[@]}" \
      --tokens-per-sample "$TPS" --max-tokens "$MAX_TOKENS" --update-freq 1 --warmup-updates "$WARMUP" \
      --stop-time-hours "$HOURS" --max-update 10000000 --validate-interval-updates "$EVERY" \
      --log-interval "$EVERY" --log-format json --save-dir "$RUN/checkpoints" --no-epoch-checkpoints \
      --save-interval-updates "$EVERY" --keep-interval-updates 1 --num-workers 0 \
      --tensorboard-logdir "$RUN/tensorboard" "${EXTRA[@]}" \
      > "$RUN/train.log" 2>&1; then
    echo "fairseq-train failed (see $RUN/train.log)" > "$RUN/FAILED"; echo "[$ARCH] training failed"; continue
  fi
  for SPLIT in valid test; do
    $PY -m fairseq_cli.eval_lm "$DATA" --user-dir "$REPO/delight_plugin" --path "$RUN/checkpoints/checkpoint_best.pt" \
      --gen-subset "$SPLIT" --tokens-per-sample "$TPS" --context-window "$((TPS / 2))" --max-tokens 4096 \
      --required-batch-size-multiple 1 --num-workers 0 > "$RUN/eval_$SPLIT.log" 2>&1 || echo "fairseq-eval-lm $SPLIT failed" >> "$RUN/FAILED"
  done
  grep -h "Perplexity" "$RUN"/eval_*.log | sed "s/^/[$ARCH] /" || true
  rm -f "$RUN"/checkpoints/checkpoint_[0-9]*.pt
done

META="$($PY - "$MINUTES" "$NAME" "$SIZE" "$COMMAND" <<'PYEOF'
import json, platform, sys, time, torch
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(json.dumps({"budget_minutes": float(sys.argv[1]), "corpus": sys.argv[2], "size": sys.argv[3], "command": sys.argv[4],
                  "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "torch": torch.__version__,
                  "machine": f"{platform.machine()} {cpu}, {torch.get_num_threads()} torch threads"}))
PYEOF
)"
$PY -m delight_plugin.benchmark.quality --runs-dir "$RUNS" --output-dir "$RESULTS" --meta "$META" --archs $ARCHS
