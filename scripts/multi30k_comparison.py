#!/usr/bin/env python
"""Multi30k En->De for a fixed training-time budget: linformer_transformer, fairseq's transformer and
delight_transformer at comparable parameter counts, scored with sacreBLEU on test_2016_flickr.

A benchmark run, not a test. Every model gets the same data (joint sentencepiece BPE), batch,
optimiser, schedule, label smoothing and dropout, and trains until fairseq's cumulative training time
reaches --minutes (``--stop-time-hours``); then beam search (beam 5) on the test set, detokenised,
against the raw references.

    python scripts/multi30k_comparison.py --data ../shared/data/multi30k --work /tmp/multi30k \
        --minutes 25 --threads 1 [--models linformer_transformer transformer delight_transformer]

Writes WORK/results.json, and the table (parameters, updates reached, BLEU, signature) with the
command, date and machine to --results (default benchmarks/results/multi30k-en-de.{json,md}).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "delight_plugin"
# 128 wide, 3 + 3 layers: small enough that a CPU budget of minutes covers ~10 epochs (at 256 wide,
# 12 minutes on one core is 150 updates and BLEU 3).
SIZES = ["--encoder-embed-dim", "128", "--encoder-ffn-embed-dim", "512", "--encoder-layers", "3",
         "--encoder-attention-heads", "4", "--decoder-embed-dim", "128", "--decoder-ffn-embed-dim", "512",
         "--decoder-layers", "3", "--decoder-attention-heads", "4"]
MODELS = {
    # pre-norm, as linformer_transformer's blocks, so that the two differ only in the attention: 2.39M
    "transformer": ["--arch", "transformer", *SIZES, "--encoder-normalize-before", "--decoder-normalize-before"],
    "linformer_transformer": ["--arch", "linformer_transformer", *SIZES, "--linformer-k", "16"],  # 2.42M
    # d_m 160 (map dim 64), 4 + 4 blocks of depth 4 -> 8: 2.22M parameters (7% fewer: DeLighT's claim)
    "delight_transformer": ["--arch", "delight_transformer", "--delight-emb-map-dim", "64",
                            "--delight-emb-out-dim", "160", "--delight-enc-layers", "4", "--delight-dec-layers", "4",
                            "--delight-enc-min-depth", "4", "--delight-enc-max-depth", "8",
                            "--delight-dec-min-depth", "4", "--delight-dec-max-depth", "8", "--delight-emb-depth", "4",
                            "--share-decoder-input-output-embed"],
}
COMMON = ["--task", "translation", "--source-lang", "en", "--target-lang", "de", "--share-all-embeddings",
          "--max-source-positions", "128", "--max-target-positions", "128", "--skip-invalid-size-inputs-valid-test",
          "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--dropout", "0.1",
          "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", "0.001", "--lr-scheduler", "inverse_sqrt",
          "--warmup-updates", "100", "--warmup-init-lr", "1e-07", "--max-tokens", "4096", "--seed", "1",
          "--num-workers", "0", "--disable-validation", "--no-epoch-checkpoints", "--save-interval", "1000",
          "--log-format", "simple", "--log-interval", "50"]


def run(cmd, log: Path, env, stdin=None):
    with open(log, "w") as out:
        proc = subprocess.run([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT, env=env,
                              stdin=stdin)
    if proc.returncode:
        raise SystemExit(f"{cmd[:3]} failed ({proc.returncode}); see {log}")


def prepare(data: Path, work: Path, vocab: int, env):
    bin_dir = work / "bin"
    if (bin_dir / "dict.en.txt").exists():
        return bin_dir
    sys.path.insert(0, str(REPO))
    from delight_plugin.recipes import subwords
    import sentencepiece as spm
    spm_dir = work / "spm"
    spm_dir.mkdir(parents=True, exist_ok=True)
    subwords.train([str(data / "train.en"), str(data / "train.de")], str(spm_dir / "spm"), vocab)
    sp = spm.SentencePieceProcessor(model_file=str(spm_dir / "spm.model"))
    for split, name in (("train", "train"), ("valid", "val"), ("test", "test_2016_flickr")):
        for lang in ("en", "de"):
            lines = (data / f"{name}.{lang}").read_text(encoding="utf-8").splitlines()
            (spm_dir / f"{split}.{lang}").write_text(
                "".join(" ".join(sp.encode(line, out_type=str)) + "\n" for line in lines), encoding="utf-8")
    run([sys.executable, "-m", "fairseq_cli.preprocess", "--source-lang", "en", "--target-lang", "de",
         "--joined-dictionary", "--trainpref", spm_dir / "train", "--validpref", spm_dir / "valid",
         "--testpref", spm_dir / "test", "--destdir", bin_dir, "--workers", "1"], work / "preprocess.log", env)
    return bin_dir


def train_and_score(name, bin_dir: Path, data: Path, work: Path, minutes: float, env):
    save = work / name
    save.mkdir(parents=True, exist_ok=True)
    log = save / "train.log"
    if not (save / "checkpoint_last.pt").exists():
        start, cpu = time.time(), children_cpu_seconds()
        run([sys.executable, "-m", "fairseq_cli.train", bin_dir, "--user-dir", PLUGIN, *COMMON, *MODELS[name],
             "--stop-time-hours", str(minutes / 60), "--save-dir", save], log, env)
        (save / "wall_seconds").write_text(f"{time.time() - start:.0f}\n")
        # CPU seconds show whether the wall-clock budget was the process's alone (a busy machine shares it)
        (save / "cpu_seconds").write_text(f"{children_cpu_seconds() - cpu:.0f}\n")
    text = log.read_text()
    params = int(re.search(r"num\. shared model params: ([\d,]+)", text).group(1).replace(",", ""))
    updates = max(int(u) for u in re.findall(r"num_updates[ =:]+(\d+)", text))
    gen_log = save / "generate.log"
    run([sys.executable, "-m", "fairseq_cli.generate", bin_dir, "--user-dir", PLUGIN, "--path",
         save / "checkpoint_last.pt", "--gen-subset", "test", "--beam", "5", "--batch-size", "64",
         "--required-batch-size-multiple", "1", "--post-process", "sentencepiece", "--max-len-a", "1.2",
         "--max-len-b", "10"], gen_log, env)
    hyps = dict(re.findall(r"^D-(\d+)\t\S+\t(.*)$", gen_log.read_text(encoding="utf-8"), re.M))
    refs = (data / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()
    sys.path.insert(0, str(REPO))
    from delight_plugin.recipes.bleu import scores
    result = scores([hyps.get(str(i), "") for i in range(len(refs))], refs)
    return {"model": name, "params": params, "updates": updates, "missing": len(refs) - len(hyps),
            "train_wall_seconds": int((save / "wall_seconds").read_text()),
            "train_cpu_seconds": int((save / "cpu_seconds").read_text()), **result}


def children_cpu_seconds() -> float:
    import resource
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "multi30k"))
    parser.add_argument("--work", default="/tmp/multi30k")
    parser.add_argument("--minutes", type=float, default=25.0, help="training-time budget per model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "multi30k-en-de"),
                        help="stem of the committed results (.json and .md)")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONPATH": str(REPO)}
    data, work = Path(args.data), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    bin_dir = prepare(data, work, args.vocab_size, env)
    results = []
    for name in args.models:
        results.append(train_and_score(name, bin_dir, data, work, args.minutes, env))
        (work / "results.json").write_text(json.dumps(results, indent=1))
        print(json.dumps(results[-1]), flush=True)
    meta = {"command": "python scripts/multi30k_comparison.py " + " ".join(sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(), "threads": args.threads,
            "minutes_per_model": args.minutes, "vocab_size": args.vocab_size}
    table = markdown(results, meta)
    Path(args.results + ".json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    Path(args.results + ".md").write_text(table)
    print(table)


def markdown(results, meta) -> str:
    lines = [f"Command: `{meta['command']}`; {meta['date']}; {meta['machine']}, {meta['threads']} torch thread(s); "
             f"{meta['minutes_per_model']:g} minutes of training per model, then beam 5 on test_2016_flickr "
             f"(1,000 sentences), detokenised, against the raw references.", "",
             "| model | parameters | updates in budget | training wall / CPU seconds | sacreBLEU | tokenized BLEU (intl) "
             "| signature |", "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['updates']} | "
                     f"{r['train_wall_seconds']} / {r['train_cpu_seconds']} | {r['sacrebleu']} | "
                     f"{r['tokenized_bleu']} | `{r['signature']}` |")
    return "\n".join(lines) + "\n"


def machine() -> str:
    import platform
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    return f"{platform.machine()} {cpu}, {os.cpu_count()} cores"


if __name__ == "__main__":
    main()
