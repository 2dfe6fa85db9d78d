#!/usr/bin/env bash
# Data-parallel fairseq-train on CPU: one process per rank, gloo, legacy DDP.
# (`--distributed-world-size N` alone spawns nothing on CPU and exits 0, so ranks are started here.)
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/train_ddp_cpu.sh [--nprocs N] [--port PORT] [--log-dir DIR] -- FAIRSEQ_TRAIN_ARGS...

Starts N fairseq-train processes (ranks 0..N-1) on this machine with
  --cpu --ddp-backend legacy_ddp --distributed-backend gloo --distributed-no-spawn
  --distributed-init-method tcp://127.0.0.1:PORT --distributed-world-size N --distributed-rank R
and waits for all of them. Rank R logs to DIR/rank_R.log (default DIR: ./ddp-logs). Each rank
reads --max-tokens tokens per step, so an update sees N times as many.

Example:
  scripts/train_ddp_cpu.sh --nprocs 2 -- data-bin/wikitext-2 --user-dir delight_plugin \
      --task language_modeling --arch plain_lm --max-tokens 2048 --optimizer adam --lr 5e-4 --max-update 100
USAGE
}

nprocs=2
port=$((20000 + RANDOM % 20000))
log_dir=ddp-logs
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nprocs) nprocs="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --log-dir) log_dir="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) echo "error: unknown option $1 (put fairseq-train arguments after --)" >&2; usage >&2; exit 2 ;;
  esac
done
[[ $# -gt 0 ]] || { echo "error: no fairseq-train arguments given after --" >&2; usage >&2; exit 2; }
[[ "$nprocs" =~ ^[1-9][0-9]*$ ]] || { echo "error: --nprocs must be a positive integer, got '$nprocs'" >&2; exit 2; }
command -v fairseq-train >/dev/null || { echo "error: fairseq-train not found; activate the environment (make install)" >&2; exit 127; }

mkdir -p "$log_dir"
echo "starting $nprocs ranks (world size $nprocs, tcp://127.0.0.1:$port), logs in $log_dir/"
pids=()
for ((rank = 0; rank < nprocs; rank++)); do
  fairseq-train "$@" --cpu --ddp-backend legacy_ddp --distributed-backend gloo --distributed-no-spawn \
    --distributed-init-method "tcp://127.0.0.1:$port" --distributed-world-size "$nprocs" \
    --distributed-rank "$rank" --device-id 0 >"$log_dir/rank_$rank.log" 2>&1 &
  pids+=($!)
done
status=0
for rank in "${!pids[@]}"; do
  if ! wait "${pids[$rank]}"; then
    echo "rank $rank failed; see $log_dir/rank_$rank.log" >&2
    status=1
  fi
done
[[ $status -eq 0 ]] && echo "all $nprocs ranks finished"
exit $status
