#!/usr/bin/env bash
# BLEU of an En->Ro checkpoint: fairseq-generate (beam 5), sentencepiece decoding, sacreBLEU
# (detokenized, with signature) and the tokenized BLEU the papers report.
set -euo pipefail
# shellcheck source=scripts/lib/recipe.sh
source "$(dirname "$0")/../lib/recipe.sh"

usage() {
  cat <<USAGE
usage: $0 CHECKPOINT [--data DIR] [--subset test|valid] [--beam N] [--lenpen X] [--batch-size N]
          [--average N] [--dry-run] [FAIRSEQ-GENERATE FLAGS...]

  CHECKPOINT    e.g. checkpoints/wmt16_en_ro/transformer/checkpoint_best.pt
  --data        binarised data with spm.model and SUBSET.ref.ro (default: recorded by train.sh)
  --subset      test (newstest2016, default) or valid (newsdev2016)
  --beam        beam size (default: 5); --lenpen length penalty (default: 1.0, as the reference)
  --average N   first average the last N epoch checkpoints next to CHECKPOINT and score that
  --dry-run     print the commands, run nothing
References are the normalised Romanian (diacritics removed unless prepare.sh --keep-diacritics),
as the model's training targets. Writes, next to the checkpoint: generate_<name>_<subset>.log,
hyp_<name>_<subset>.txt, bleu_<name>_<subset>.json; prints the sacreBLEU line and signature
and the tokenized BLEU.
USAGE
}

[[ $# -ge 1 ]] || { usage >&2; die "CHECKPOINT is required"; }
[[ "$1" == -h || "$1" == --help ]] && { usage; exit 0; }
CKPT="$1"; shift
DATA="" SUBSET=test BEAM=5 LENPEN=1.0 BATCH=128 AVERAGE=0 EXTRA=()
while (($#)); do
  case "$1" in
    --data) DATA="$2"; shift 2 ;;
    --subset) SUBSET="$2"; shift 2 ;;
    --beam) BEAM="$2"; shift 2 ;;
    --lenpen) LENPEN="$2"; shift 2 ;;
    --batch-size) BATCH="$2"; shift 2 ;;
    --average) AVERAGE="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) EXTRA=("$@"); break ;;
  esac
done
[[ $SUBSET == test || $SUBSET == valid ]] || die "--subset must be test or valid, got '$SUBSET'"
[[ "$AVERAGE" =~ ^[0-9]+$ ]] || die "--average must be a number of checkpoints, got '$AVERAGE'"
DIR="$(dirname "$CKPT")"
[[ -f "$CKPT" ]] || ((DRY_RUN)) || ((AVERAGE)) || die "checkpoint $CKPT does not exist"
# shellcheck disable=SC1091  # recipe.env is written by train.sh
if [[ -z "$DATA" && -f "$DIR/recipe.env" ]]; then DATA="$(source "$DIR/recipe.env"; echo "$DATA")"; fi
[[ -n "$DATA" ]] || die "--data is required (no $DIR/recipe.env from train.sh)"
((DRY_RUN)) || for f in spm.model dict.en.txt "$SUBSET.ref.ro"; do
  [[ -f "$DATA/$f" ]] || die "$DATA/$f is missing: pass the folder made by scripts/wmt16_en_ro/prepare.sh"
done
need_python
need_tool fairseq-generate "install fairseq (pip install -e '$REPO')"
STEPS=$((AVERAGE ? 3 : 2)) i=0

if ((AVERAGE)); then
  i=$((i + 1)); step $i $STEPS "average the last $AVERAGE epoch checkpoints"
  CKPT="$DIR/checkpoint_avg$AVERAGE.pt"
  set_log "$DIR/average.log"
  if [[ -f "$CKPT" ]]; then say "skip: $CKPT exists"
  else run "$PYTHON" -m delight_plugin.recipes.average --dir "$DIR" --last "$AVERAGE" --output "$CKPT"; fi
fi
NAME="$(basename "$CKPT" .pt)_$SUBSET"
GEN="$DIR/generate_$NAME.log" HYP="$DIR/hyp_$NAME.txt" SCORES="$DIR/bleu_$NAME.json"

i=$((i + 1)); step $i $STEPS "fairseq-generate $SUBSET, beam $BEAM, sentencepiece decoding"
set_log "$DIR/evaluate_$NAME.log"
if [[ -f "$HYP" && "$HYP" -nt "$CKPT" ]]; then
  say "skip: $HYP is newer than the checkpoint"
else
  # --required-batch-size-multiple 1: fairseq's default (8) drops a last batch that is not a multiple
  # of 8 (fairseq issue #5036), which left test sentences untranslated.
  run fairseq-generate "$DATA" --user-dir "$USER_DIR" --path "$CKPT" --gen-subset "$SUBSET" --source-lang en \
    --target-lang ro --beam "$BEAM" --lenpen "$LENPEN" --batch-size "$BATCH" --required-batch-size-multiple 1 \
    --post-process sentencepiece \
    --scoring sacrebleu --results-path "$DIR/gen_tmp_$NAME" "${EXTRA[@]}"
  if ((!DRY_RUN)); then
    mv "$DIR/gen_tmp_$NAME/generate-$SUBSET.txt" "$GEN" && rmdir "$DIR/gen_tmp_$NAME"
    # D-<id> lines: detokenized hypotheses, back in test-set order; a sentence fairseq-generate
    # left out scores as an empty hypothesis (and is reported).
    "$PYTHON" -c 'import sys
gen, ref, out = sys.argv[1:]
n = sum(1 for _ in open(ref, encoding="utf-8"))
hyps = {}
for line in open(gen, encoding="utf-8"):
    if line.startswith("D-"):
        head, _, text = line.rstrip("\n").split("\t", 2)
        hyps[int(head[2:])] = text
open(out, "w", encoding="utf-8").write("".join(hyps.get(i, "") + "\n" for i in range(n)))
if len(hyps) < n:
    print(f"warning: fairseq-generate gave no hypothesis for {n - len(hyps)} of {n} sentences; scored as empty")' \
      "$GEN" "$DATA/$SUBSET.ref.ro" "$HYP" | tee -a "$LOG"
  fi
fi

i=$((i + 1)); step $i $STEPS "BLEU against $DATA/$SUBSET.ref.ro"
if ((DRY_RUN)); then
  run "$PYTHON" "$USER_DIR/recipes/bleu.py" --hyp "$HYP" --ref "$DATA/$SUBSET.ref.ro" --json "$SCORES"
else
  echo "+ $PYTHON $USER_DIR/recipes/bleu.py --hyp $HYP --ref $DATA/$SUBSET.ref.ro --json $SCORES"
  "$PYTHON" "$USER_DIR/recipes/bleu.py" --hyp "$HYP" --ref "$DATA/$SUBSET.ref.ro" --json "$SCORES" | tee -a "$LOG"
  say "fairseq-generate's own score: $(grep -o 'BLEU = [0-9.]*' "$GEN" | tail -n 1 || echo none)"
fi
