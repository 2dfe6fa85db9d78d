#!/usr/bin/env python
"""The demo: binarise the bundled WikiText-2 slice, train every registered LM architecture of
the plugin (each at the matched ``tiny`` size) and fairseq's ``transformer_lm`` for the same
number of updates with fairseq-train, and print arch, parameters, valid perplexity and training
tokens/s. Runs in about 8 minutes on 2 CPU cores; needs nothing outside this repository."""
import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "delight_plugin"
SAMPLE = PLUGIN / "data" / "sample" / "wikitext-2"


def fairseq(tool, *args, log: Path):
    cmd = [sys.executable, "-m", f"fairseq_cli.{tool}", *map(str, args)]
    with open(log, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed; see {log}")
    return log.read_text()


def extra_flags(arch, data: Path):
    """An arch's adaptive cutoffs scaled to the sample's vocabulary, and the criterion they need."""
    from delight_plugin.presets import vocabulary_flags
    from delight_plugin.recipes.hyperparameters import ADAPTIVE_LOSS

    with open(data / "dict.txt") as words:
        vocab = 4 + sum(1 for _ in words)  # fairseq adds bos, pad, eos and unk
    flags = vocabulary_flags(arch, vocab)
    return flags + ADAPTIVE_LOSS if flags else []


def parse_run(log: str):
    params = int(re.search(r"num\. shared model params: ([\d,]+)", log).group(1).replace(",", ""))
    records = [json.loads(l[l.index("{"):]) for l in log.splitlines() if "| valid |" in l or "| train |" in l]
    valid = [r for r in records if "valid_ppl" in r][-1]
    train = [r for r in records if "train_wps" in r][-1]
    return params, float(valid["valid_ppl"]), float(train["train_wps"])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output-dir", default=str(REPO / "demo-output"))
    parser.add_argument("--size", default="tiny", help="preset size for every arch (default: tiny)")
    parser.add_argument("--max-update", type=int, default=150)
    parser.add_argument("--archs", nargs="*", help="subset of architectures (default: all, plus transformer_lm)")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    import delight_plugin  # noqa: F401
    from delight_plugin.presets import BASELINE_ARCH, plugin_lm_archs, preset_flags

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data-bin"
    if not (data / "dict.txt").exists():
        print(f"binarising {SAMPLE} -> {data}")
        fairseq("preprocess", "--only-source", "--trainpref", SAMPLE / "train.txt", "--validpref", SAMPLE / "valid.txt",
                "--testpref", SAMPLE / "test.txt", "--destdir", data, "--workers", "2", "--thresholdsrc", "2",
                log=out / "preprocess.log")

    archs = [BASELINE_ARCH] + (args.archs or plugin_lm_archs())
    rows = []
    for arch in archs:
        save = out / arch
        start = time.time()
        print(f"training {arch} ({args.max_update} updates) ...", flush=True)
        try:
            log = fairseq("train", data, "--user-dir", PLUGIN, "--task", "language_modeling", "--arch", arch,
                          *preset_flags(arch, args.size), *extra_flags(arch, data), "--tokens-per-sample", "128", "--max-tokens", "2048",
                          "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", "0.002",
                          "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "30", "--dropout", "0.1",
                          "--max-update", args.max_update, "--save-dir", save, "--no-save", "--seed", "1",
                          "--log-format", "json", "--num-workers", "0", log=out / f"{arch}.log")
            params, ppl, wps = parse_run(log)
            rows.append((arch, f"{params:,}", f"{ppl:,.1f}", f"{wps:,.0f}", f"{time.time() - start:.0f}s"))
        except Exception as err:  # one broken arch must not hide the others' rows
            rows.append((arch, "-", "-", "-", f"failed: {err}"))

    header = ("arch", "parameters", "valid ppl", "train tokens/s", "wall")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
    print(f"\nWikiText-2 sample, size preset '{args.size}', {args.max_update} updates each:\n")
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    if any(r[1] == "-" for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
