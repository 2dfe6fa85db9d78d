"""Quality per compute: read the fairseq-train and fairseq-eval-lm logs that
``scripts/quality_per_compute.sh`` writes (one directory per architecture), and turn them into
a JSON, a markdown table, one figure of validation perplexity against wall time and against
tokens seen, all architectures together, and the TensorBoard curves of the same runs.

    python -m delight_plugin.benchmark.quality --runs-dir RUNS --output-dir OUT [--budget-minutes M]
"""
import argparse
import json
import math
import re
from pathlib import Path
from typing import Dict, List, Optional

EVAL_LINE = re.compile(r"Loss \(base 2\): ([\d.]+), Perplexity: ([\d.]+)")


def json_records(log: str, kind: str) -> List[dict]:
    """fairseq's ``--log-format json`` records of one kind (train_inner, valid, train)."""
    marker = f"| {kind} |"
    return [json.loads(line[line.index("{"):]) for line in log.splitlines() if marker in line and "{" in line]


def valid_curve(train_log: str) -> List[dict]:
    """One point per validation: wall seconds and tokens seen at the update it was run after.

    Wall time comes from the last ``train_inner`` record at or before the validation's update
    (run with ``--log-interval`` equal to ``--validate-interval-updates``), tokens seen from the
    sum of the words per batch of every logged interval."""
    marks, tokens, last_update = [], 0.0, 0
    for rec in json_records(train_log, "train_inner"):
        updates = int(rec["num_updates"])
        tokens += float(rec["wpb"]) * (updates - last_update)
        last_update = updates
        marks.append((updates, float(rec["wall"]), tokens))
    points = {}  # by update: the end-of-training validation may repeat the last interval's
    for rec in json_records(train_log, "valid"):
        updates = int(rec["valid_num_updates"])
        before = [m for m in marks if m[0] <= updates]
        if before:
            _, wall, seen = before[-1]
            points[updates] = {"updates": updates, "wall_seconds": wall, "tokens": seen,
                               "valid_ppl": float(rec["valid_ppl"])}
    return [points[u] for u in sorted(points)]


def eval_ppl(log_path: Path) -> Optional[float]:
    if not log_path.exists():
        return None
    match = EVAL_LINE.findall(log_path.read_text())
    return float(match[-1][1]) if match else None


def collect(runs_dir: Path, archs: Optional[List[str]] = None) -> List[dict]:
    """One record per run directory (only those named in ``archs`` when given: the directory may
    hold runs of an earlier invocation)."""
    runs = []
    for run in sorted(p for p in runs_dir.iterdir() if (p / "train.log").exists() and (archs is None or p.name in archs)):
        log = (run / "train.log").read_text()
        params = re.search(r"num\. shared model params: ([\d,]+)", log)
        curve = valid_curve(log)
        inner = json_records(log, "train_inner")
        runs.append({
            "arch": run.name,
            "params": int(params.group(1).replace(",", "")) if params else None,
            "updates": int(inner[-1]["num_updates"]) if inner else 0,
            "wall_seconds": float(inner[-1]["wall"]) if inner else None,
            "tokens": curve[-1]["tokens"] if curve else None,
            "best_valid_ppl": min((p["valid_ppl"] for p in curve), default=None),
            "valid_ppl": eval_ppl(run / "eval_valid.log"),
            "test_ppl": eval_ppl(run / "eval_test.log"),
            "curve": curve,
            "failed": (run / "FAILED").read_text().strip() if (run / "FAILED").exists() else None,
        })
    return runs


def markdown(result: dict) -> str:
    meta = result["meta"]
    lines = [f"{meta.get('corpus', 'WikiText-2')}, {meta.get('budget_minutes', '?')} minutes of fairseq-train per "
             f"architecture (`--stop-time-hours`), size preset `{meta.get('size', '?')}`, on {meta.get('machine', '?')}; "
             f"perplexity by fairseq-eval-lm on checkpoint_best.pt. Date: {meta.get('date', '?')}. "
             f"Command: `{meta.get('command', '')}`.", "",
             "| arch | params | updates | tokens seen | valid ppl | test ppl |", "|---|---|---|---|---|---|"]
    for run in sorted(result["runs"], key=lambda r: (r["test_ppl"] is None, r["test_ppl"] or 0)):
        def num(v, fmt="{:,.1f}"):
            return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)
        lines.append(f"| {run['arch']} | {num(run['params'], '{:,}')} | {run['updates']:,} | "
                     f"{num(run['tokens'], '{:,.0f}')} | {num(run['valid_ppl'])} | "
                     f"{num(run['test_ppl']) if not run['failed'] else 'failed: ' + run['failed'][:60]} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> Path:
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq's logging setup lets its DEBUG through
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_time, by_tokens) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in result["runs"]:
        if not run["curve"]:
            continue
        width = 2.5 if run["arch"] == "transformer_lm" else 1.5
        by_time.plot([p["wall_seconds"] / 60 for p in run["curve"]], [p["valid_ppl"] for p in run["curve"]],
                     marker=".", linewidth=width, label=run["arch"])
        by_tokens.plot([p["tokens"] for p in run["curve"]], [p["valid_ppl"] for p in run["curve"]],
                       marker=".", linewidth=width, label=run["arch"])
    for ax, xlabel in ((by_time, "wall time (minutes)"), (by_tokens, "training tokens seen")):
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation perplexity")
        ax.grid(True, which="both", alpha=0.3)
    by_time.legend(fontsize=8)
    fig.suptitle(f"{result['meta'].get('corpus', 'WikiText-2')}: equal wall-clock budget "
                 f"({result['meta'].get('budget_minutes', '?')} min per arch)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", required=True, help="one sub-directory per arch with train.log, eval_*.log")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--stem", default="quality")
    parser.add_argument("--meta", default="{}", help="JSON object of run facts (budget, corpus, command, ...)")
    parser.add_argument("--archs", nargs="*", help="report only these runs (default: every run directory)")
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = {"meta": json.loads(args.meta), "runs": collect(Path(args.runs_dir), args.archs)}
    (out / f"{args.stem}.json").write_text(json.dumps(result, indent=1, sort_keys=True))
    (out / f"{args.stem}.md").write_text(markdown(result))
    try:
        plot(result, out / f"{args.stem}.png")
        from .tensorboard import plot_runs

        logdirs = {p.parent.name: p for p in sorted(Path(args.runs_dir).glob("*/tensorboard"))
                   if args.archs is None or p.parent.name in args.archs}
        if logdirs:
            plot_runs(logdirs, out / f"{args.stem}_tensorboard.png")
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot written")
    print(markdown(result))


if __name__ == "__main__":
    main()
