#!/usr/bin/env bash
# Half precision on a GPU: for every LM architecture, fairseq-train a few updates with --fp16 and
# with --bf16 on the bundled WikiText-2 slice and check that every logged loss is finite and that
# fp16's loss scaler never reached its minimum; then the benchmark at 2048 and 8192 tokens on the
# GPU. Writes a summary table; exits 1 if any run failed.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python}"

usage() {
  cat <<USAGE
usage: $0 [--archs "A B ..."] [--updates N] [--size tiny|small|base] [--precisions "fp16 bf16"]
          [--lengths "2048 8192"] [--bench-dtypes "bfloat16 float16"] [--device cuda] [--no-benchmark]
          [--output-dir DIR] [-- FAIRSEQ-TRAIN FLAGS...]

  --archs         architectures (default: every LM arch of the plugin, and transformer_lm)
  --updates       updates per training run (default 100)
  --size          size preset of every arch (default small)
  --precisions    fairseq-train precision flags to try (default "fp16 bf16")
  --lengths       benchmark lengths (default "2048 8192")
  --bench-dtypes  benchmark dtypes (default "bfloat16 float16")
  --device        torch device of the benchmark (default cuda)
  --no-benchmark  only the training runs
  --cpu           no GPU: train on the CPU (fairseq-train --cpu; --bf16 only) to test this script itself
  --output-dir    logs, summary and benchmark results (default bench-output/gpu-check)
Flags after -- go to every fairseq-train run last and override the defaults.
USAGE
}

ARCHS="" UPDATES=100 SIZE=small PRECISIONS="fp16 bf16" LENGTHS="2048 8192" BENCH_DTYPES="bfloat16 float16"
DEVICE=cuda BENCHMARK=1 CPU=() OUT="$REPO/bench-output/gpu-check" EXTRA=()
while (($#)); do
  case "$1" in
    --archs) ARCHS="$2"; shift 2 ;;
    --updates) UPDATES="$2"; shift 2 ;;
    --size) SIZE="$2"; shift 2 ;;
    --precisions) PRECISIONS="$2"; shift 2 ;;
    --lengths) LENGTHS="$2"; shift 2 ;;
    --bench-dtypes) BENCH_DTYPES="$2"; shift 2 ;;
    --device) DEVICE="$2"; shift 2 ;;
    --no-benchmark) BENCHMARK=0; shift ;;
    --cpu) CPU=(--cpu); DEVICE=cpu; shift ;;
    --output-dir) OUT="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) usage >&2; echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
[[ "$UPDATES" =~ ^[1-9][0-9]*$ ]] || { echo "--updates must be a positive integer, got '$UPDATES'" >&2; exit 2; }
for precision in $PRECISIONS; do
  [[ "$precision" == fp16 || "$precision" == bf16 ]] || { echo "--precisions: fp16 or bf16, got '$precision'" >&2; exit 2; }
done

if ((${#CPU[@]} == 0)); then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "no CUDA device visible to torch: this check needs a GPU (--cpu tests the script itself)" >&2; exit 2; }
fi

export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT/logs"
DATA="$OUT/data-bin"
SAMPLE="$REPO/delight_plugin/data/sample/wikitext-2"
if [[ ! -f "$DATA/dict.txt" ]]; then
  "$PY" -m fairseq_cli.preprocess --only-source --trainpref "$SAMPLE/train.txt" --validpref "$SAMPLE/valid.txt" \
    --testpref "$SAMPLE/test.txt" --destdir "$DATA" --workers 2 --thresholdsrc 2 >"$OUT/logs/preprocess.log" 2>&1
fi
VOCAB=$(($(wc -l <"$DATA/dict.txt") + 4))  # fairseq adds bos, pad, eos and unk
if [[ -z "$ARCHS" ]]; then
  ARCHS="transformer_lm $("$PY" -c "import delight_plugin; from delight_plugin.presets import plugin_lm_archs; print(*plugin_lm_archs())")"
fi

# fairseq 0.12's options.py turns --bf16 into --tpu (torch_xla), so fairseq-train --bf16 cannot run on
# a GPU (facebookresearch/fairseq#4696). This runs fairseq-train's main with the TPU flag cleared: the
# trainer then does what --bf16 says (model.to(bfloat16), fp32 master weights) on the CUDA device.
train() {
  "$PY" - "$@" <<'TRAIN'
import sys
from fairseq import distributed_utils, options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq_cli.train import main

args = options.parse_args_and_arch(options.get_training_parser(), sys.argv[1:])
args.tpu = False
distributed_utils.call_main(convert_namespace_to_omegaconf(args), main)
TRAIN
}

# Every logged loss finite, the last update reached, and no "Minimum loss scale reached".
check_log() {
  "$PY" - "$1" "$UPDATES" <<'CHECK'
import json, math, sys
log, updates = open(sys.argv[1]).read(), int(sys.argv[2])
if "minimum loss scale reached" in log.lower():
    sys.exit("minimum loss scale reached")
losses = {}
for line in log.splitlines():
    if "train_inner" in line and "{" in line:
        record = json.loads(line[line.index("{"):])
        losses[int(record["num_updates"])] = float(record["loss"])
if not losses:
    sys.exit("no training loss logged")
bad = {u: l for u, l in losses.items() if not math.isfinite(l)}
if bad:
    sys.exit(f"non-finite loss at updates {sorted(bad)[:5]}")
if max(losses) < updates:
    sys.exit(f"stopped at update {max(losses)} of {updates}")
print(f"loss {losses[min(losses)]:.3f} -> {losses[max(losses)]:.3f}")
CHECK
}

SUMMARY="$OUT/gpu_check.md"
{
  echo "# GPU half-precision check ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  echo
  echo "$("$PY" -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU',
                                        '| torch', torch.__version__)")," \
    "--size $SIZE, $UPDATES updates, WikiText-2 slice ($VOCAB symbols)"
  echo
  echo "| arch | precision | result |"
  echo "|---|---|---|"
} >"$SUMMARY"

failures=0
for arch in $ARCHS; do
  read -r -a flags <<<"$("$PY" -c "import sys, delight_plugin
from delight_plugin.presets import preset_flags, vocabulary_flags
print(*preset_flags(sys.argv[1], sys.argv[2]), *vocabulary_flags(sys.argv[1], int(sys.argv[3])))" "$arch" "$SIZE" "$VOCAB")"
  for precision in $PRECISIONS; do
    log="$OUT/logs/$arch-$precision.log"
    echo "== $arch --$precision (log: $log)"
    status=0
    train "$DATA" --user-dir "$REPO/delight_plugin" --task language_modeling --arch "$arch" \
      "${flags[@]}" --tokens-per-sample 512 --max-tokens 4096 --optimizer adam --adam-betas "(0.9, 0.98)" \
      --lr 5e-4 --lr-scheduler inverse_sqrt --warmup-updates 20 --clip-norm 1.0 --max-update "$UPDATES" \
      "--$precision" --seed 1 --log-format json --log-interval 1 --no-save --disable-validation \
      --num-workers 0 "${CPU[@]}" "${EXTRA[@]}" >"$log" 2>&1 || status=$?
    if ((status)); then
      result="FAIL: fairseq-train exited $status ($(grep -m1 -E 'Error|error' "$log" | cut -c1-160 || true))"
    elif ! result="$(check_log "$log" 2>&1)"; then
      result="FAIL: $result"
    fi
    [[ "$result" == FAIL* ]] && failures=$((failures + 1))
    echo "$result"
    echo "| $arch | --$precision | $result |" >>"$SUMMARY"
  done
done

if ((BENCHMARK)); then
  read -r -a lengths <<<"$LENGTHS"
  for dtype in $BENCH_DTYPES; do
    echo "== benchmark --device $DEVICE --dtype $dtype --lengths $LENGTHS"
    if ! "$PY" "$REPO/scripts/benchmark.py" --device "$DEVICE" --dtype "$dtype" --size "$SIZE" \
        --lengths "${lengths[@]}" --peers none --output-dir "$OUT" --stem "benchmark-gpu-$dtype" \
        >"$OUT/logs/benchmark-$dtype.log" 2>&1; then
      failures=$((failures + 1))
      echo "| benchmark | $dtype | FAIL: see logs/benchmark-$dtype.log |" >>"$SUMMARY"
    else
      echo "| benchmark | $dtype | ok: benchmark-gpu-$dtype.md |" >>"$SUMMARY"
    fi
  done
fi

echo
cat "$SUMMARY"
if ((failures)); then
  echo "$failures run(s) failed" >&2
  exit 1
fi
