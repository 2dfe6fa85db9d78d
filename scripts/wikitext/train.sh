#!/usr/bin/env bash
# Train one LM architecture on WikiText with the recipe's hyperparameters.
set -euo pipefail
# shellcheck source=scripts/lib/recipe.sh
source "$(dirname "$0")/../lib/recipe.sh"

usage() {
  cat <<USAGE
usage: $0 ARCH [--dataset wikitext-103] [--data DIR] [--save-dir DIR] [--gpus N] [--d-m N]
          [--no-fp16] [--dry-run] [FAIRSEQ-TRAIN FLAGS...]

  ARCH        transformer_lm or any LM architecture of the plugin
              (list: python -m delight_plugin.recipes.hyperparameters list)
  --dataset   wikitext-2 or wikitext-103 (default: wikitext-103)
  --data      binarised data (default: data-bin/DATASET, made by prepare.sh)
  --save-dir  checkpoints (default: checkpoints/DATASET/ARCH)
  --gpus      GPUs to use (default: all visible); --update-freq keeps the recipe's tokens per update
  --d-m       DeLighT width d_m (delight_transformer_lm_wiki103; default 1024)
  --no-fp16   train in fp32 even on a GPU (fp16 is used whenever a GPU is visible)
  --dry-run   print the command, run nothing
Flags after these go to fairseq-train last, so they override the recipe (e.g. --max-update 1000).
An unfinished run resumes from SAVE_DIR/checkpoint_last.pt; a finished one (SAVE_DIR/.done) is kept.
Log: SAVE_DIR/train.log.
USAGE
}

[[ $# -ge 1 ]] || { usage >&2; die "ARCH is required"; }
[[ "$1" == -h || "$1" == --help ]] && { usage; exit 0; }
ARCH="$1"; shift
DATASET=wikitext-103 DATA="" SAVE="" GPUS="" D_M="" FP16=1 EXTRA=()
while (($#)); do
  case "$1" in
    --dataset) DATASET="$2"; shift 2 ;;
    --data) DATA="$2"; shift 2 ;;
    --save-dir) SAVE="$2"; shift 2 ;;
    --gpus) GPUS="$2"; shift 2 ;;
    --d-m) D_M="$2"; shift 2 ;;
    --no-fp16) FP16=0; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) EXTRA=("$@"); break ;;
  esac
done
DATA="${DATA:-data-bin/$DATASET}" SAVE="${SAVE:-checkpoints/$DATASET/$ARCH}"
need_python
need_tool fairseq-train "install fairseq (pip install -e '$REPO')"
[[ -f "$DATA/dict.txt" && -f "$DATA/train.bin" ]] || ((DRY_RUN)) \
  || die "$DATA has no binarised WikiText (dict.txt, train.bin): run scripts/wikitext/prepare.sh --dataset $DATASET"

step 1 2 "recipe flags for $ARCH on $DATASET"
VISIBLE=$(gpu_count)
GPUS="${GPUS:-$VISIBLE}"
mapfile -t FLAGS < <(recipe_flags lm --arch "$ARCH" --dataset "$DATASET" --gpus "$((GPUS > 0 ? GPUS : 1))" ${D_M:+--d-m "$D_M"})
((${#FLAGS[@]})) || die "no recipe for --arch $ARCH --dataset $DATASET (see the error above)"
((GPUS > 0 && FP16)) && FLAGS+=(--fp16)
((GPUS > 0)) && FLAGS+=(--distributed-world-size "$GPUS")

step 2 2 "fairseq-train -> $SAVE"
if [[ -f "$SAVE/.done" ]]; then
  say "skip: $SAVE is finished (remove $SAVE/.done to train further)"
  exit 0
fi
claim_save_dir "$SAVE" "lm $DATASET $ARCH${D_M:+ d_m=$D_M}"
set_log "$SAVE/train.log"
((DRY_RUN)) || printf 'DATA=%q\nDATASET=%q\nARCH=%q\n' "$DATA" "$DATASET" "$ARCH" >"$SAVE/recipe.env"
[[ -f "$SAVE/checkpoint_last.pt" ]] && say "resuming from $SAVE/checkpoint_last.pt"
run fairseq-train "$DATA" --user-dir "$USER_DIR" "${FLAGS[@]}" --save-dir "$SAVE" "${EXTRA[@]}"
((DRY_RUN)) || touch "$SAVE/.done"
say "done: checkpoints in $SAVE (log: $SAVE/train.log)"
