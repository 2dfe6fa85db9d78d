#!/usr/bin/env bash
# Perplexity of an LM checkpoint on WikiText valid and test with fairseq-eval-lm.
set -euo pipefail
# shellcheck source=scripts/lib/recipe.sh
source "$(dirname "$0")/../lib/recipe.sh"

usage() {
  cat <<USAGE
usage: $0 CHECKPOINT [--data DIR] [--tokens-per-sample N] [--context-window N] [--max-tokens N]
          [--subsets "valid test"] [--dry-run] [FAIRSEQ-EVAL-LM FLAGS...]

  CHECKPOINT          e.g. checkpoints/wikitext-103/plain_lm/checkpoint_best.pt
  --data              binarised data (default: the one train.sh recorded next to the checkpoint)
  --tokens-per-sample block length (default: 512, as in training)
  --context-window    tokens of context before each scored block (default: 400: each block scores
                      112 new tokens, as the DeLighT reference's evaluation)
  --max-tokens        tokens per batch (default: 8192)
  --subsets           (default: "valid test")
Refuses a --tokens-per-sample longer than a model with learned positions (or Linformer's compression)
was trained on, and checks that every token of the subset was scored. Prints "<subset> perplexity: X" per subset; writes CHECKPOINT_DIR/eval_<name>_<subset>.log and
CHECKPOINT_DIR/perplexity_<name>_tps<N>_cw<N>.txt. A subset already evaluated for this checkpoint is skipped.
USAGE
}

[[ $# -ge 1 ]] || { usage >&2; die "CHECKPOINT is required"; }
[[ "$1" == -h || "$1" == --help ]] && { usage; exit 0; }
CKPT="$1"; shift
DATA="" TPS=512 CONTEXT=400 MAX_TOKENS=8192 SUBSETS="valid test" EXTRA=()
while (($#)); do
  case "$1" in
    --data) DATA="$2"; shift 2 ;;
    --tokens-per-sample) TPS="$2"; shift 2 ;;
    --context-window) CONTEXT="$2"; shift 2 ;;
    --max-tokens) MAX_TOKENS="$2"; shift 2 ;;
    --subsets) SUBSETS="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) EXTRA=("$@"); break ;;
  esac
done
[[ -f "$CKPT" ]] || ((DRY_RUN)) || die "checkpoint $CKPT does not exist"
DIR="$(dirname "$CKPT")" NAME="$(basename "$CKPT" .pt)"
# shellcheck disable=SC1091  # recipe.env is written by train.sh
if [[ -z "$DATA" && -f "$DIR/recipe.env" ]]; then DATA="$(source "$DIR/recipe.env"; echo "$DATA")"; fi
[[ -n "$DATA" ]] || die "--data is required (no $DIR/recipe.env from train.sh)"
[[ -f "$DATA/dict.txt" ]] || ((DRY_RUN)) || die "$DATA has no dict.txt: pass the binarised data with --data"
((CONTEXT < TPS)) || die "--context-window ($CONTEXT) must be smaller than --tokens-per-sample ($TPS)"
need_python
need_tool fairseq-eval-lm "install fairseq (pip install -e '$REPO')"
RESULTS="$DIR/perplexity_${NAME}_tps${TPS}_cw${CONTEXT}.txt"
# A model with parameters per position cannot take longer samples than it was trained on, and
# fairseq-eval-lm would silently skip all of them ("Perplexity: 1.00"): refuse that here.
if ((!DRY_RUN)); then
  problem=$("$PYTHON" -m delight_plugin.recipes.eval_lm_checks window "$CKPT" "$TPS" 2>&1) || die "${problem#error: }"
fi

read -ra SPLITS <<<"$SUBSETS"
i=0
for subset in "${SPLITS[@]}"; do
  i=$((i + 1))
  step "$i" "${#SPLITS[@]}" "fairseq-eval-lm on $subset (context window $CONTEXT of $TPS)"
  if [[ -f "$RESULTS" && "$RESULTS" -nt "$CKPT" ]] && grep -q "^$subset " "$RESULTS"; then
    say "skip: already evaluated: $(grep "^$subset " "$RESULTS")"
  else
    set_log "$DIR/eval_${NAME}_$subset.log"
    ((DRY_RUN)) || : >"$LOG"
    # --required-batch-size-multiple 1: fairseq's default (8) drops a last batch that is not a multiple
    # of 8 (fairseq issue #5036), so the perplexity would leave out the end of the split.
    run fairseq-eval-lm "$DATA" --user-dir "$USER_DIR" --path "$CKPT" --gen-subset "$subset" \
      --tokens-per-sample "$TPS" --context-window "$CONTEXT" --max-tokens "$MAX_TOKENS" \
      --required-batch-size-multiple 1 "${EXTRA[@]}"
    ((DRY_RUN)) && continue
    line=$(grep -o 'Loss (base 2): [0-9.]*, Perplexity: [0-9.]*' "$LOG" | tail -n 1) \
      || die "no perplexity line in $LOG"
    ppl="${line##*Perplexity: }"
    evaluated=$(grep -o 'Evaluated [0-9,]* tokens' "$LOG" | tail -n 1 | tr -dc '0-9')
    expected=$("$PYTHON" -m delight_plugin.recipes.eval_lm_checks tokens "$DATA" "$subset" 2>>"$LOG") \
      || die "cannot count the tokens of $DATA/$subset"
    [[ "$evaluated" == "$expected" ]] || die "fairseq-eval-lm scored ${evaluated:-no} of the $expected tokens of \
$subset (it skips samples longer than the model's max positions): perplexity $ppl is not the split's"
    { grep -v "^$subset " "$RESULTS" 2>/dev/null || true; echo "$subset $ppl"; } >"$RESULTS.tmp" && mv "$RESULTS.tmp" "$RESULTS"
  fi
  ((DRY_RUN)) || say "$subset perplexity: $(awk -v s="$subset" '$1 == s {print $2}' "$RESULTS")"
done
