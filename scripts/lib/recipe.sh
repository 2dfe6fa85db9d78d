# shellcheck shell=bash disable=SC2034  # sourced by the recipe scripts, which use its variables
# Shared by the recipe scripts (source it): logging, dry-run, checks. Bash 4+, set -euo pipefail.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
USER_DIR="$REPO/delight_plugin"
PYTHON="${PYTHON:-python}"
DRY_RUN=0
LOG=/dev/null
RECIPE="$(basename "$(dirname "$0")")/$(basename "$0")"

say() { echo "[$RECIPE] $*"; [[ $LOG == /dev/null ]] || echo "[$(date '+%F %T')] $*" >>"$LOG"; }
die() { echo "[$RECIPE] error: $*" >&2; [[ $LOG == /dev/null ]] || echo "error: $*" >>"$LOG"; exit 1; }
step() { say "step $1/$2: $3"; }

# set_log FILE: where command output goes (created unless --dry-run).
set_log() {
  if ((DRY_RUN)); then LOG=/dev/null; return; fi
  mkdir -p "$(dirname "$1")"; LOG="$1"; : >>"$LOG"
}

need_tool() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH: $2"
}

need_python() {
  need_tool "$PYTHON" "set PYTHON=/path/to/python of the environment with fairseq and delight_plugin"
  ((DRY_RUN)) || "$PYTHON" -c "import fairseq, sentencepiece, sacrebleu" 2>/dev/null \
    || die "$PYTHON cannot import fairseq, sentencepiece and sacrebleu: pip install -e '$REPO' first"
}

quoted() { local out="" a; for a in "$@"; do out+="$(printf '%q' "$a") "; done; echo "${out% }"; }

# run CMD...: print it; unless --dry-run, run it with its output appended to $LOG.
run() {
  echo "+ $(quoted "$@")"
  ((DRY_RUN)) && return 0
  echo "+ $(quoted "$@")" >>"$LOG"
  "$@" >>"$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; die "command failed (exit $?): $1 ... (full log: $LOG)"; }
}

# run_io IN OUT CMD...: run CMD < IN > OUT, writing OUT atomically.
run_io() {
  local in="$1" out="$2"; shift 2
  echo "+ $(quoted "$@") < $(quoted "$in") > $(quoted "$out")"
  ((DRY_RUN)) && return 0
  echo "+ $(quoted "$@") < $in > $out" >>"$LOG"
  "$@" <"$in" >"$out.tmp" 2>>"$LOG" || { tail -n 20 "$LOG" >&2; die "command failed: $1 ... (full log: $LOG)"; }
  mv "$out.tmp" "$out"
}

# done_marker DIR: a finished step leaves DIR/.done; re-runs skip it.
is_done() { [[ -f "$1/.done" ]]; }
mark_done() { ((DRY_RUN)) || touch "$1/.done"; }

gpu_count() {
  ((DRY_RUN)) && { echo 0; return; }
  "$PYTHON" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0
}

# recipe_flags ARGS...: the recipe's fairseq-train flags (one source: delight_plugin/recipes/hyperparameters.py).
recipe_flags() {
  "$PYTHON" -m delight_plugin.recipes.hyperparameters "$@" || die "no recipe for: $*"
}

# claim_save_dir DIR KEY: refuse to train into DIR if another recipe owns it; never clobber.
claim_save_dir() {
  local dir="$1" key="$2"
  if [[ -f "$dir/recipe.key" && "$(cat "$dir/recipe.key")" != "$key" ]]; then
    die "$dir holds checkpoints of another run ($(cat "$dir/recipe.key")); pass a different --save-dir"
  fi
  ((DRY_RUN)) || { mkdir -p "$dir"; echo "$key" >"$dir/recipe.key"; }
}
