"""Write a benchmark result: the JSON itself, a markdown table per length, and log-log plots of
tokens/s and peak memory against sequence length. Everything here reads only the result dict,
so the results renderer (scripts/render_results.py) and a re-plot need no model."""
import json
from pathlib import Path
from typing import Dict, List, Optional

METRIC_TITLES = {
    "train_tokens_per_s": "training fwd+bwd tokens/s",
    "infer_tokens_per_s": "inference tokens/s",
    "generate_tokens_per_s": "generation from position 0 tokens/s (averaged)",
}
MEMORY_TITLES = {"train_peak_mb": "training peak memory (MiB)", "infer_peak_mb": "inference peak memory (MiB)"}
KIND_ORDER = {"baseline": 0, "ours": 1, "peer": 2}


def _number(value: Optional[float], digits: int = 0) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1e6:
        return f"{value / 1e6:,.{max(digits, 2)}f}M"
    return f"{value:,.{digits}f}"


def _with_ratio(row: dict, key: str, digits: int = 0) -> str:
    value = row.get(key)
    if value is None:
        error = row["errors"].get(key.replace("_tokens_per_s", "")) or row["errors"].get(key)
        return error_cell(error) if error else "-"
    ratio = row["ratio"].get(key)
    text = _number(value, digits)
    if key == "generate_tokens_per_s" and row.get("generate_steps") not in (None, row["length"]):
        text += f" (first {row['generate_steps']} tokens)"
    return text + (f" ({ratio:.2f}x)" if ratio is not None and row["kind"] != "baseline" else "")


def error_cell(error: str) -> str:
    short = error.replace("|", "/")
    if short.startswith("NotImplementedError"):
        return "n/a"
    return f"error: {short[:60]}"


def sorted_rows(rows: List[dict]) -> List[dict]:
    return sorted(rows, key=lambda r: (r["length"], KIND_ORDER.get(r["kind"], 3), r["name"]))


def _warmup_note(opts: dict) -> str:
    rounds = opts.get("warmup_rounds", 0)  # results written before warm-up rounds existed have none
    return f" after {rounds} untimed warm-up round{'s' if rounds > 1 else ''}" if rounds else ""


def markdown(result: dict) -> str:
    meta = result["meta"]
    opts = meta["options"]
    lines = [
        f"Size preset `{opts['size']}`, batch {opts['batch_size']}, vocabulary {opts['vocab_size']:,}, "
        f"{opts['dtype']} on {opts['device']}{' (' + meta['gpu'] + ')' if meta.get('gpu') else ''}; "
        f"median of {opts['repeats']} interleaved repeats{_warmup_note(opts)}; ratios are to `transformer_lm` in "
        f"the same run.",
        f"Machine: {meta['machine']}; torch {meta['torch']}; CPU allocator: {meta.get('allocator', 'default')}; "
        f"dense matmul {meta['matmul_gflops']:,.1f} GFLOP/s "
        f"(the MFU denominator). Date: {meta['date']}. Command: `{meta.get('command', '')}`.",
        "",
    ]
    for length in sorted({r["length"] for r in result["rows"]}):
        lines += [f"**Sequence length {length}**", "",
                  "| model | kind | params (non-emb.) | MACs/token | train tok/s | infer tok/s | generate from 0 tok/s "
                  "| train peak MiB | infer peak MiB | train MFU |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for row in sorted_rows([r for r in result["rows"] if r["length"] == length]):
            if "params" not in row:
                cause = row["errors"].get("build") or next(iter(row["errors"].values()), "not built")
                lines.append(f"| {row['name']} | {row['kind']} | {error_cell(cause)} |  |  |  |  |  |  |  |")
                continue
            mfu = row.get("train_mfu")
            lines.append(
                f"| {row['name']} | {row['kind']} | {_number(row['params'])} ({_number(row['non_embedding_params'])}) "
                f"| {_number(row.get('macs_per_token'))} | {_with_ratio(row, 'train_tokens_per_s')} "
                f"| {_with_ratio(row, 'infer_tokens_per_s')} | {_with_ratio(row, 'generate_tokens_per_s')} "
                f"| {_with_ratio(row, 'train_peak_mb', 1)} | {_with_ratio(row, 'infer_peak_mb', 1)} "
                f"| {'-' if mfu is None else f'{100 * mfu:.1f}%'} |")
        lines.append("")
    lines += ["`generate from 0 tok/s`: token-by-token decoding from position 0, averaged over the positions its "
              "budget reached (the short contexts where per-step overhead dominates); decoding at a fixed context "
              "is `--metrics decode` (`<stem>_decode.md`).", ""]
    notes = {r["name"]: r["notes"] for r in result["rows"] if r.get("notes")}
    if notes:
        lines += ["Peers: " + "; ".join(f"`{n}`: {t}" for n, t in sorted(notes.items())) + ".", ""]
    if meta.get("peers_skipped"):
        lines += ["Peers skipped: " + "; ".join(meta["peers_skipped"]) + ".", ""]
    return "\n".join(lines)


def round_ratios(row: dict, baseline: dict, metric: str = "train") -> List[float]:
    """The model's tokens/s over the baseline's, round by round (the samples of one round were
    taken minutes apart at most); [] unless both have a sample in every round."""
    ours, base = row.get("samples", {}).get(metric, []), baseline.get("samples", {}).get(metric, [])
    return [a / b for a, b in zip(ours, base)] if len(ours) == len(base) >= 2 and all(base) else []


def ratio_caption(key: str = "train_tokens_per_s") -> str:
    """The line above :func:`ratio_table`'s table."""
    what = "Training" if key.startswith("train") else "Inference"
    return f"{what} tokens/s relative to `transformer_lm` (median; in brackets the lowest and highest ratio of one round):"


def ratio_table(result: dict, key: str = "train_tokens_per_s") -> str:
    """One line per model: its ratio to the baseline for ``key`` at every length, with the range
    of the per-round ratios when there are several rounds (how much the machine's noise moves it)."""
    lengths = sorted({r["length"] for r in result["rows"]})
    by_name: Dict[str, Dict[int, dict]] = {}
    baselines = {r["length"]: r for r in result["rows"] if r["kind"] == "baseline"}
    for row in sorted_rows(result["rows"]):
        by_name.setdefault(row["name"], {})[row["length"]] = row
    lines = ["| model | " + " | ".join(f"{n}" for n in lengths) + " |", "|---|" + "---|" * len(lengths)]
    for name, per_length in by_name.items():
        cells = []
        for n in lengths:
            row = per_length.get(n, {})
            ratio = row.get("ratio", {}).get(key)
            spread = round_ratios(row, baselines.get(n, {}), key.split("_")[0]) if row.get("kind") != "baseline" else []
            cells.append("-" if ratio is None else f"{ratio:.2f}x" + (
                f" ({min(spread):.2f}-{max(spread):.2f})" if spread else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result: dict, output_dir: Path, stem: str = "benchmark") -> List[Path]:
    """``<stem>_throughput.png`` (one panel per tokens/s metric) and ``<stem>_memory.png``, log-log
    against length."""
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq's logging setup lets its DEBUG through
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for filename, titles, ylabel in (("throughput.png", METRIC_TITLES, "tokens/s"),
                                     ("memory.png", MEMORY_TITLES, "MiB")):
        fig, axes = plt.subplots(1, len(titles), figsize=(5.5 * len(titles), 4.5), squeeze=False)
        for ax, (key, title) in zip(axes[0], titles.items()):
            for name, points in _series(result["rows"], key).items():
                if points:
                    xs, ys = zip(*points)
                    style = "-" if name[1] != "peer" else ":"
                    ax.plot(xs, ys, style, marker="o", label=name[0], linewidth=2.5 if name[1] == "baseline" else 1.5)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("sequence length")
            ax.set_ylabel(ylabel)
            ax.set_title(title)
            ax.grid(True, which="both", alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        for ax in axes[0][1:]:
            for h, l in zip(*ax.get_legend_handles_labels()):
                if l not in labels:
                    handles.append(h)
                    labels.append(l)
        opts = result["meta"]["options"]
        fig.suptitle(f"size {opts['size']}, batch {opts['batch_size']}, {opts['dtype']} on {opts['device']}")
        fig.legend(handles, labels, loc="center right", fontsize=8)
        fig.tight_layout(rect=(0, 0, 0.82, 0.95))
        path = output_dir / f"{stem}_{filename}"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _series(rows: List[dict], key: str) -> Dict[tuple, list]:
    series: Dict[tuple, list] = {}
    for row in sorted_rows(rows):
        points = series.setdefault((row["name"], row["kind"]), [])
        if row.get(key) and not (key == "generate_tokens_per_s" and row.get("generate_steps") != row["length"]):
            points.append((row["length"], row[key]))
    return series


def write(result: dict, output_dir: Path, stem: str = "benchmark") -> List[Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / f"{stem}.json"
    json_path.write_text(json.dumps(result, indent=1, sort_keys=True))
    md_path = output_dir / f"{stem}.md"
    md_path.write_text(f"{markdown(result)}\n{ratio_caption()}\n\n{ratio_table(result)}\n")
    written = [json_path, md_path]
    try:
        written += plot(result, output_dir, stem)
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plots written")
    return written
