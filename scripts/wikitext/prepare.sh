#!/usr/bin/env bash
# Download (or copy from --source) WikiText-2 / WikiText-103 and binarise it for fairseq.
set -euo pipefail
# shellcheck source=scripts/lib/recipe.sh
source "$(dirname "$0")/../lib/recipe.sh"

usage() {
  cat <<USAGE
usage: $0 --dataset wikitext-2|wikitext-103 [--source DIR] [--raw-dir DIR] [--dest DIR] [--workers N] [--dry-run]

  --dataset     which corpus (the tokenized wiki.*.tokens release)
  --source DIR  take the text from DIR instead of downloading: wiki.{train,valid,test}.tokens
                or {train,valid,test}.txt (e.g. ../shared/data/wikitext-2)
  --raw-dir     where the text is kept (default: data/DATASET)
  --dest        binarised output for fairseq (default: data-bin/DATASET)
  --workers     fairseq-preprocess workers (default: 4)
  --dry-run     print the commands, run nothing

Steps (each skipped when already finished): 1 get the text, 2 fairseq-preprocess --only-source.
Log: DEST/prepare.log.
USAGE
}

DATASET="" SOURCE="" RAW="" DEST="" WORKERS=4
while (($#)); do
  case "$1" in
    --dataset) DATASET="$2"; shift 2 ;;
    --source) SOURCE="$2"; shift 2 ;;
    --raw-dir) RAW="$2"; shift 2 ;;
    --dest) DEST="$2"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
case "$DATASET" in
  wikitext-2) URL="https://wikitext.smerity.com/wikitext-2-v1.zip" ;;
  wikitext-103) URL="https://wikitext.smerity.com/wikitext-103-v1.zip" ;;
  "") usage >&2; die "--dataset is required (wikitext-2 or wikitext-103)" ;;
  *) die "--dataset must be wikitext-2 or wikitext-103, got '$DATASET'" ;;
esac
RAW="${RAW:-data/$DATASET}" DEST="${DEST:-data-bin/$DATASET}"
need_python
need_tool fairseq-preprocess "install fairseq (pip install -e '$REPO')"
set_log "$DEST/prepare.log"

step 1 2 "text of $DATASET -> $RAW"
if is_done "$RAW"; then
  say "skip: $RAW is complete"
elif [[ -n "$SOURCE" ]]; then
  [[ -d "$SOURCE" ]] || die "--source $SOURCE is not a directory"
  run mkdir -p "$RAW"
  for split in train valid test; do
    found=""
    for name in "wiki.$split.tokens" "$split.txt" "$DATASET/wiki.$split.tokens"; do
      [[ -f "$SOURCE/$name" ]] && { found="$SOURCE/$name"; break; }
    done
    [[ -n "$found" ]] || die "--source $SOURCE has no wiki.$split.tokens or $split.txt"
    run cp "$found" "$RAW/wiki.$split.tokens"
  done
  mark_done "$RAW"
else
  need_tool unzip "install unzip, or pass --source DIR with the text files"
  if command -v curl >/dev/null; then fetch=(curl -fL --retry 3 -o); else need_tool wget "install curl or wget"; fetch=(wget -O); fi
  run mkdir -p "$RAW"
  run "${fetch[@]}" "$RAW/$DATASET.zip" "$URL"
  run unzip -o -j "$RAW/$DATASET.zip" -d "$RAW"
  mark_done "$RAW"
fi

step 2 2 "fairseq-preprocess --only-source -> $DEST"
if is_done "$DEST"; then
  say "skip: $DEST is complete"
else
  run fairseq-preprocess --only-source --trainpref "$RAW/wiki.train.tokens" --validpref "$RAW/wiki.valid.tokens" \
    --testpref "$RAW/wiki.test.tokens" --destdir "$DEST" --workers "$WORKERS"
  mark_done "$DEST"
fi
((DRY_RUN)) || say "done: $DEST ($(wc -l <"$DEST/dict.txt") dictionary entries)"
