#!/usr/bin/env bash
# Train an En->Ro translation model with the recipe's hyperparameters.
set -euo pipefail
# shellcheck source=scripts/lib/recipe.sh
source "$(dirname "$0")/../lib/recipe.sh"

usage() {
  cat <<USAGE
usage: $0 ARCH [--d-m N] [--data DIR] [--save-dir DIR] [--gpus N] [--no-fp16] [--dry-run]
          [FAIRSEQ-TRAIN FLAGS...]

  ARCH        transformer (fairseq's Transformer-base baseline), delight_transformer_wmt16_en_ro or
              linformer_transformer_wmt16_en_ro (Transformer-base sizes, Linformer attention, the
              baseline's schedule)
  --d-m       DeLighT model width d_m (default 384; the reference ran 128, 256, 384, 640); the peak
              LR follows the reference: min(round(512/d_m * 7e-4, 4), 0.01)
  --data      binarised data (default: data-bin/wmt16_en_ro, made by prepare.sh)
  --save-dir  checkpoints (default: checkpoints/wmt16_en_ro/ARCH[_dmN])
  --gpus      GPUs to use (default: all visible); --update-freq keeps 32K tokens per update
  --no-fp16   train in fp32 even on a GPU
  --dry-run   print the command, run nothing
Flags after these go to fairseq-train last and override the recipe. An unfinished run resumes;
a finished one (SAVE_DIR/.done) is kept. Log: SAVE_DIR/train.log.
USAGE
}

[[ $# -ge 1 ]] || { usage >&2; die "ARCH is required"; }
[[ "$1" == -h || "$1" == --help ]] && { usage; exit 0; }
ARCH="$1"; shift
DATA="data-bin/wmt16_en_ro" SAVE="" GPUS="" D_M="" FP16=1 EXTRA=()
while (($#)); do
  case "$1" in
    --d-m) D_M="$2"; shift 2 ;;
    --data) DATA="$2"; shift 2 ;;
    --save-dir) SAVE="$2"; shift 2 ;;
    --gpus) GPUS="$2"; shift 2 ;;
    --no-fp16) FP16=0; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) EXTRA=("$@"); break ;;
  esac
done
SAVE="${SAVE:-checkpoints/wmt16_en_ro/$ARCH${D_M:+_dm$D_M}}"
need_python
need_tool fairseq-train "install fairseq (pip install -e '$REPO')"
[[ -f "$DATA/dict.en.txt" && -f "$DATA/train.en-ro.en.bin" ]] || ((DRY_RUN)) \
  || die "$DATA has no binarised En-Ro data (dict.en.txt, train.en-ro.en.bin): run scripts/wmt16_en_ro/prepare.sh"

step 1 2 "recipe flags for $ARCH"
VISIBLE=$(gpu_count)
GPUS="${GPUS:-$VISIBLE}"
mapfile -t FLAGS < <(recipe_flags mt --arch "$ARCH" --gpus "$((GPUS > 0 ? GPUS : 1))" ${D_M:+--d-m "$D_M"})
((${#FLAGS[@]})) || die "no recipe for ARCH $ARCH (see the error above)"
((GPUS > 0 && FP16)) && FLAGS+=(--fp16)
((GPUS > 0)) && FLAGS+=(--distributed-world-size "$GPUS")

step 2 2 "fairseq-train -> $SAVE"
if [[ -f "$SAVE/.done" ]]; then
  say "skip: $SAVE is finished (remove $SAVE/.done to train further)"
  exit 0
fi
claim_save_dir "$SAVE" "mt wmt16_en_ro $ARCH${D_M:+ d_m=$D_M}"
set_log "$SAVE/train.log"
((DRY_RUN)) || printf 'DATA=%q\nARCH=%q\n' "$DATA" "$ARCH" >"$SAVE/recipe.env"
[[ -f "$SAVE/checkpoint_last.pt" ]] && say "resuming from $SAVE/checkpoint_last.pt"
run fairseq-train "$DATA" --user-dir "$USER_DIR" "${FLAGS[@]}" --save-dir "$SAVE" "${EXTRA[@]}"
((DRY_RUN)) || touch "$SAVE/.done"
say "done: checkpoints in $SAVE (log: $SAVE/train.log)"
