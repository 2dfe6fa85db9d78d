"""The quality study's results: read fairseq-train's json log and fairseq-eval-lm's output, then
aggregate runs into tables (mean and spread over seeds) and curves against training tokens,
training FLOPs and training seconds. ``study.py`` runs the study; this module only reads and writes.
"""
import json
import math
import re
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence

EVAL_LINE = re.compile(r"Loss \(base 2\): ([\d.]+), Perplexity: ([\d.]+)")
PARAMS_LINE = re.compile(r"num\. shared model params: ([\d,]+)")


def json_records(log: str, kind: str) -> List[dict]:
    """fairseq's ``--log-format json`` records of one kind (train_inner, valid, train)."""
    marker = f"| {kind} |"
    return [json.loads(line[line.index("{"):]) for line in log.splitlines() if marker in line and "{" in line]


def last_by_update(records: List[dict], key: str) -> Dict[int, dict]:
    """One record per update, the last one logged: a resumed run repeats the updates after its
    last checkpoint, and the repeat is what the finished model went through."""
    return {int(rec[key]): rec for rec in records}


def valid_curve(train_log: str, flops_per_token: float = 0.0) -> List[dict]:
    """One point per validation: training tokens, training seconds (fairseq's ``train_wall``,
    which leaves validation and checkpointing out) and FLOPs at the update it follows."""
    inner = last_by_update(json_records(train_log, "train_inner"), "num_updates")
    marks, tokens, seconds, last = [], 0.0, 0.0, 0
    for updates in sorted(inner):
        rec = inner[updates]
        tokens += float(rec["wpb"]) * (updates - last)
        seconds += float(rec["train_wall"])
        last = updates
        marks.append((updates, tokens, seconds))
    points = []
    for updates, rec in sorted(last_by_update(json_records(train_log, "valid"), "valid_num_updates").items()):
        before = [m for m in marks if m[0] <= updates]
        if before:
            _, seen, spent = before[-1]
            points.append({"updates": updates, "tokens": seen, "train_seconds": spent,
                           "flops": seen * flops_per_token, "valid_loss": float(rec["valid_loss"])})
    return points


def eval_score(output: str) -> Optional[dict]:
    """fairseq-eval-lm's last 'Loss (base 2): L, Perplexity: P' as {"loss": L, "ppl": P}."""
    match = EVAL_LINE.findall(output)
    return {"loss": float(match[-1][0]), "ppl": float(match[-1][1])} if match else None


def logged_params(train_log: str) -> Optional[int]:
    match = PARAMS_LINE.search(train_log)
    return int(match.group(1).replace(",", "")) if match else None


def reported(loss_base2: float, unit: str) -> float:
    """A base-2 loss as the regime reports it: word perplexity, or bits per character."""
    return 2 ** loss_base2 if unit == "ppl" else loss_base2


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------

def spread(values: List[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def summarise(runs: List[dict], unit: str, sweep_seed: Optional[int] = None) -> Dict[str, dict]:
    """Per variant: the sweep (lr -> valid) and the final runs' mean and spread over seeds."""
    summary: Dict[str, dict] = {}
    for run in runs:
        if not run.get("valid"):
            continue
        row = summary.setdefault(run["variant"], {"sweep": {}, "final": [], "params": run.get("params"),
                                                  "non_embedding_params": run.get("non_embedding_params"),
                                                  "macs_per_token": run.get("macs_per_token")})
        if run["phase"] == "sweep":
            if sweep_seed is None or run["seed"] == sweep_seed:  # a sweep at another seed is not the sweep
                row["sweep"][f"{run['lr']:g}"] = reported(run["valid"]["loss"], unit)
        else:
            row["final"].append(run)
    for row in summary.values():
        finals = row.pop("final")
        row["final_lr"] = finals[0]["lr"] if finals else None
        row["seeds"] = sorted(r["seed"] for r in finals)
        for split in ("valid", "test"):
            values = [reported(r[split]["loss"], unit) for r in finals if r.get(split)]
            row[split] = spread(values) if values else None
        seconds = [r["train_seconds"] for r in finals if r.get("train_seconds")]
        row["train_seconds"] = statistics.fmean(seconds) if seconds else None
        row["final_tokens"] = finals[0]["tokens"] if finals else None
    return summary


def build_result(runs: List[dict], meta: dict, baseline: str, also_against: Sequence[str] = ()) -> dict:
    regimes = meta.get("regimes", {})
    return {"meta": meta, "baseline": baseline, "also_against": list(also_against), "runs": runs,
            "summary": {name: summarise([r for r in runs if r["regime"] == name], regime["unit"], meta.get("sweep_seed"))
                        for name, regime in regimes.items()}}


# --------------------------------------------------------------------------------------------
# Markdown and figures
# --------------------------------------------------------------------------------------------

def _num(value, fmt="{:,.2f}"):
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def _with_spread(stats: Optional[dict], fmt: str) -> str:
    if not stats:
        return "-"
    if stats["n"] == 1:
        return f"{fmt.format(stats['mean'])} (1 seed)"
    return f"{fmt.format(stats['mean'])} ± {fmt.format(stats['std'])} ({fmt.format(stats['min'])}-{fmt.format(stats['max'])})"


def _sweep_lines(summary: dict, regime: dict, meta: dict, baseline: str, fmt: str) -> List[str]:
    lines = [f"Learning-rate sweep: valid {regime['unit']} after {regime['sweep_tokens']:,} training tokens, seed "
             f"{meta.get('sweep_seed', meta.get('seeds', [1])[0])} (fairseq-eval-lm on the whole validation set, no context window).", ""]
    lrs = sorted({lr for row in summary.values() for lr in row["sweep"]}, key=float)
    if not lrs:
        return lines + ["(no run has finished yet)", ""]
    lines += ["| variant | " + " | ".join(f"lr {lr}" for lr in lrs) + " |", "|---" * (len(lrs) + 1) + "|"]
    for variant, row in sorted(summary.items(), key=lambda kv: (kv[0] != baseline, kv[0])):
        best = min(row["sweep"], key=row["sweep"].get) if row["sweep"] else None
        cells = [(f"**{fmt.format(row['sweep'][lr])}**" if lr == best else fmt.format(row["sweep"][lr]))
                 if lr in row["sweep"] else "-" for lr in lrs]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return lines + [""]


def _final_lines(finals: dict, regime: dict, references: Sequence[str], fmt: str) -> List[str]:
    unit = regime["unit"]
    lines = [f"Final runs: {regime['final_tokens']:,} training tokens at the best sweep learning rate; "
             f"mean ± standard deviation (lowest-highest) over seeds; fairseq-eval-lm with a context window "
             f"of {regime['tokens_per_sample'] // 2} tokens.", ""]
    if not finals:
        return lines + ["(no final run has finished yet)", ""]
    bases = {name: finals[name]["test"] for name in references if finals.get(name, {}).get("test")}
    lines += [f"| variant | non-embedding params | MACs/token | lr | seeds | valid {unit} | test {unit} | "
              + "".join(f"test vs {name} | " for name in bases) + "train s |", "|---" * (8 + len(bases)) + "|"]
    for variant, row in sorted(finals.items(), key=lambda kv: kv[1]["test"]["mean"] if kv[1]["test"] else 1e9):
        ratios = "".join((f"{row['test']['mean'] / base['mean']:.3f}x" if row["test"] else "-") + " | "
                         for base in bases.values())
        lines.append(f"| {variant} | {_num(row['non_embedding_params'], '{:,}')} | "
                     f"{_num(row['macs_per_token'] / 1e6 if row['macs_per_token'] else None, '{:.2f}M')} | "
                     f"{row['final_lr']:g} | {len(row['seeds'])} | {_with_spread(row['valid'], fmt)} | "
                     f"{_with_spread(row['test'], fmt)} | {ratios}{_num(row['train_seconds'], '{:,.0f}')} |")
    return lines + [""]


def markdown(result: dict, headline: bool = False) -> str:
    """Per regime, the learning-rate sweep's table, then the final runs'. ``headline`` (the README's
    summary): without the sweep's table once a final run has finished."""
    meta, baseline = result["meta"], result.get("baseline", "transformer_lm")
    invocation = f" (rendered by `{meta['invocation']}`)" if meta.get("invocation") else ""
    lines = [f"Command: `{meta.get('command', '')}`{invocation}; {meta.get('date', '?')}; {meta.get('machine', '?')}, "
             f"{meta.get('threads_per_run', '?')} torch thread(s) per run, {meta.get('jobs', 1)} run(s) at a time. "
             f"Size preset `{meta.get('size', '?')}`; Adam (0.9, 0.98), weight decay 0.01, inverse-sqrt schedule with "
             f"{meta.get('warmup_updates', '?')} warm-up updates, dropout {meta.get('dropout', '?')}, "
             f"every variant at the same token budget.", ""]
    for name, summary in result["summary"].items():
        regime = meta["regimes"][name]
        fmt = "{:.1f}" if regime["unit"] == "ppl" else "{:.3f}"
        what = "word perplexity" if regime["unit"] == "ppl" else "bits per character"
        lines += [f"#### {name} level: WikiText-2, {regime['tokens_per_sample']} tokens per sample, {what}", ""]
        finals = {v: row for v, row in summary.items() if row["valid"]}
        if not (headline and finals):
            lines += _sweep_lines(summary, regime, meta, baseline, fmt)
        if any(row["sweep"] for row in summary.values()):
            lines += _final_lines(finals, regime, [baseline, *result.get("also_against", [])], fmt)
    return "\n".join(lines) + "\n"


def plot(result: dict, regime: str, path: Path) -> Optional[Path]:
    """Valid loss of every final run (sweep runs where a variant has no final run yet) against
    training tokens, training FLOPs and training seconds."""
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq's logging setup lets its DEBUG through
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unit = result["meta"]["regimes"][regime]["unit"]
    runs = [r for r in result["runs"] if r["regime"] == regime and r["curve"]]
    if not runs:
        return None
    finals = {r["variant"] for r in runs if r["phase"] == "final"}
    runs = [r for r in runs if r["phase"] == "final" or r["variant"] not in finals]
    best_sweep = {}
    for r in runs:
        if r["phase"] == "sweep" and r.get("valid"):
            if r["variant"] not in best_sweep or r["valid"]["loss"] < best_sweep[r["variant"]]["valid"]["loss"]:
                best_sweep[r["variant"]] = r
    runs = [r for r in runs if r["phase"] == "final" or best_sweep.get(r["variant"]) is r]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), sharey=True)
    colours = {}
    for run in runs:
        colour = colours.setdefault(run["variant"], f"C{len(colours) % 10}")
        label = run["variant"] if run["seed"] == min(r["seed"] for r in runs if r["variant"] == run["variant"]) else None
        width = 2.5 if run["variant"] == result.get("baseline") else 1.3
        ys = [reported(p["valid_loss"], unit) for p in run["curve"]]
        for ax, key in zip(axes, ("tokens", "flops", "train_seconds")):
            ax.plot([p[key] for p in run["curve"]], ys, color=colour, linewidth=width, label=label,
                    linestyle="-" if run["phase"] == "final" else "--")
    for ax, xlabel in zip(axes, ("training tokens", "training FLOPs (6 x MACs per token)", "training seconds")):
        ax.set_xlabel(xlabel)
        ax.grid(True, which="both", alpha=0.3)
        if unit == "ppl":
            ax.set_yscale("log")
    axes[0].set_ylabel(f"validation {unit} (first {result['meta']['regimes'][regime]['valid_head_tokens']:,} tokens)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"WikiText-2 {regime} level: final runs (solid, every seed) or best sweep run (dashed)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_results(runs: List[dict], meta: dict, out_dir: Path, stem: str, baseline: str,
                  also_against: Sequence[str] = ()) -> str:
    """``also_against``: variants the final runs are compared with besides ``baseline``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = build_result(runs, meta, baseline, also_against)
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1, sort_keys=True))
    text = markdown(result)
    (out_dir / f"{stem}.md").write_text(text)
    for regime in result["summary"]:
        plot(result, regime, out_dir / f"{stem}-{regime}.png")
    return text
