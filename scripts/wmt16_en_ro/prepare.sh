#!/usr/bin/env bash
# WMT'16 English-Romanian: get the data, normalise, joint sentencepiece, binarise (joined dictionary).
set -euo pipefail
# shellcheck source=scripts/lib/recipe.sh
source "$(dirname "$0")/../lib/recipe.sh"

usage() {
  cat <<USAGE
usage: $0 [--source DIR] [--train-prefixes "P1 P2"] [--work DIR] [--dest DIR] [--vocab-size N]
          [--keep-diacritics] [--workers N] [--dry-run]

  --source DIR      plain-text, line-aligned files instead of downloading: newsdev2016.{en,ro},
                    newstest2016.{en,ro} and training pairs PREFIX.{en,ro}
                    (e.g. ../shared/data/wmt16-en-ro)
  --train-prefixes  training pairs in --source (default: every PREFIX.en/PREFIX.ro pair except the
                    dev and test sets)
  --work            intermediate text and the sentencepiece model (default: data/wmt16_en_ro)
  --dest            binarised output for fairseq (default: data-bin/wmt16_en_ro)
  --vocab-size      joint sentencepiece BPE vocabulary (default: 32000)
  --keep-diacritics keep Romanian diacritics (default: remove them, as the En-Ro papers do)
  --workers         fairseq-preprocess workers (default: 4)
  --dry-run         print the commands, run nothing

Without --source it downloads Europarl v8 and SETIMES2 (training) and newsdev2016/newstest2016
(through sacrebleu). Steps (each skipped when finished): 1 raw text, 2 normalise (punctuation;
Romanian cedillas and diacritics), drop empty and over-long training pairs, 3 train sentencepiece,
4 encode, 5 fairseq-preprocess --joined-dictionary. Log: DEST/prepare.log.
USAGE
}

SOURCE="" PREFIXES="" WORK="data/wmt16_en_ro" DEST="data-bin/wmt16_en_ro" VOCAB=32000 DIACRITICS=0 WORKERS=4
while (($#)); do
  case "$1" in
    --source) SOURCE="$2"; shift 2 ;;
    --train-prefixes) PREFIXES="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    --dest) DEST="$2"; shift 2 ;;
    --vocab-size) VOCAB="$2"; shift 2 ;;
    --keep-diacritics) DIACRITICS=1; shift ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[[ "$VOCAB" =~ ^[0-9]+$ ]] || die "--vocab-size must be a positive integer, got '$VOCAB'"
need_python
need_tool fairseq-preprocess "install fairseq (pip install -e '$REPO')"
set_log "$DEST/prepare.log"
RAW="$WORK/raw" NORM="$WORK/norm" SPM="$WORK/spm"
SETS=(train valid test)

step 1 5 "raw text -> $RAW"
if is_done "$RAW"; then
  say "skip: $RAW is complete"
else
  run mkdir -p "$RAW"
  if [[ -n "$SOURCE" ]]; then
    [[ -d "$SOURCE" ]] || die "--source $SOURCE is not a directory"
    for f in newsdev2016 newstest2016; do
      for l in en ro; do [[ -f "$SOURCE/$f.$l" ]] || die "--source $SOURCE has no $f.$l"; done
    done
    if [[ -z "$PREFIXES" ]]; then
      for f in "$SOURCE"/*.en; do
        p="$(basename "$f" .en)"
        [[ $p == newsdev2016 || $p == newstest2016 || ! -f "$SOURCE/$p.ro" ]] || PREFIXES+="$p "
      done
    fi
    [[ -n "${PREFIXES// /}" ]] || die "--source $SOURCE has no training pair PREFIX.en/PREFIX.ro"
    for l in en ro; do
      files=()
      for p in $PREFIXES; do
        [[ -f "$SOURCE/$p.$l" ]] || die "training file $SOURCE/$p.$l does not exist"
        files+=("$SOURCE/$p.$l")
      done
      run_io /dev/null "$RAW/train.$l" cat "${files[@]}"
      run cp "$SOURCE/newsdev2016.$l" "$RAW/valid.$l"
      run cp "$SOURCE/newstest2016.$l" "$RAW/test.$l"
    done
  else
    need_tool tar "install tar"; need_tool unzip "install unzip"
    if command -v curl >/dev/null; then fetch=(curl -fL --retry 3 -o); else need_tool wget "install curl or wget"; fetch=(wget -O); fi
    run "${fetch[@]}" "$RAW/europarl.tgz" "https://www.statmt.org/europarl/v8/ro-en.tgz"
    run tar -xzf "$RAW/europarl.tgz" -C "$RAW"
    run "${fetch[@]}" "$RAW/setimes.zip" "https://object.pouta.csc.fi/OPUS-SETIMES/v2/moses/en-ro.txt.zip"
    run unzip -o "$RAW/setimes.zip" -d "$RAW"
    for l in en ro; do
      run_io /dev/null "$RAW/train.$l" cat "$RAW/europarl-v8.ro-en.$l" "$RAW/SETIMES.en-ro.$l"
      side=$([[ $l == en ]] && echo src || echo ref)
      run_io /dev/null "$RAW/valid.$l" sacrebleu -t wmt16/dev -l en-ro --echo "$side"
      run_io /dev/null "$RAW/test.$l" sacrebleu -t wmt16 -l en-ro --echo "$side"
    done
  fi
  mark_done "$RAW"
fi

step 2 5 "normalise -> $NORM (Romanian diacritics: $( ((DIACRITICS)) && echo kept || echo removed))"
if is_done "$NORM"; then
  say "skip: $NORM is complete"
else
  run mkdir -p "$NORM"
  for s in "${SETS[@]}"; do
    run_io "$RAW/$s.en" "$NORM/$s.en" "$PYTHON" "$USER_DIR/recipes/romanian.py" --lang en
    if ((DIACRITICS)); then
      run_io "$RAW/$s.ro" "$NORM/$s.ro" "$PYTHON" "$USER_DIR/recipes/romanian.py" --lang ro
    else
      run_io "$RAW/$s.ro" "$NORM/$s.ro" "$PYTHON" "$USER_DIR/recipes/romanian.py" --lang ro --remove-diacritics
    fi
  done
  # Training pairs with an empty side or more than 250 words (Moses' clean-corpus-n limits).
  run "$PYTHON" -c 'import sys
en, ro = (open(f"{sys.argv[1]}.{l}", encoding="utf-8").read().split("\n")[:-1] for l in ("en", "ro"))
assert len(en) == len(ro), f"train.en has {len(en)} lines, train.ro {len(ro)}"
keep = [(a, b) for a, b in zip(en, ro) if 0 < len(a.split()) <= 250 and 0 < len(b.split()) <= 250]
for i, l in enumerate(("en", "ro")):
    open(f"{sys.argv[1]}.{l}", "w", encoding="utf-8").write("".join(p[i] + "\n" for p in keep))
print(f"kept {len(keep)} of {len(en)} training pairs")' "$NORM/train"
  mark_done "$NORM"
fi

step 3 5 "joint sentencepiece BPE, vocabulary $VOCAB -> $SPM/spm.model"
if [[ -f "$SPM/spm.model" ]]; then
  say "skip: $SPM/spm.model exists"
else
  run mkdir -p "$SPM"
  run "$PYTHON" "$USER_DIR/recipes/subwords.py" train --model-prefix "$SPM/spm" --vocab-size "$VOCAB" \
    "$NORM/train.en" "$NORM/train.ro"
fi

step 4 5 "encode -> $SPM"
if is_done "$SPM"; then
  say "skip: $SPM is complete"
else
  for s in "${SETS[@]}"; do
    for l in en ro; do
      run_io "$NORM/$s.$l" "$SPM/$s.$l" "$PYTHON" "$USER_DIR/recipes/subwords.py" encode --model "$SPM/spm.model"
    done
  done
  mark_done "$SPM"
fi

step 5 5 "fairseq-preprocess --joined-dictionary -> $DEST"
if is_done "$DEST"; then
  say "skip: $DEST is complete"
else
  run fairseq-preprocess --source-lang en --target-lang ro --joined-dictionary --trainpref "$SPM/train" \
    --validpref "$SPM/valid" --testpref "$SPM/test" --destdir "$DEST" --workers "$WORKERS"
  # What evaluate.sh needs: the subword model and the (normalised) test references.
  run cp "$SPM/spm.model" "$DEST/spm.model"
  for s in valid test; do run cp "$NORM/$s.ro" "$DEST/$s.ref.ro"; run cp "$RAW/$s.ro" "$DEST/$s.raw.ro"; done
  mark_done "$DEST"
fi
((DRY_RUN)) || say "done: $DEST ($(wc -l <"$DEST/dict.en.txt") joined dictionary entries)"
