#!/usr/bin/env python
"""Throughput of ``delight_transformer_wmt16_en_ro`` (d_m = 384) against fairseq's ``transformer`` (base)
on the same batches of the bundled WMT'16 En-Ro slice: training target tokens/s (forward, backward,
Adam step, label-smoothed loss) and beam-5 generation sentences/s.

    python scripts/bench_delight_translation.py [--threads 2] [--train-batches 20] [--dim 384] \
        [--output benchmarks/results/delight_translation.md]

``--output`` also writes the table, with the command, machine and date, for
``scripts/render_results.py`` to put into benchmarks/results/RESULTS.md.

Weights are untrained, so both models decode to the length limit (source length + 10): the
generation numbers compare the cost of the same number of beam-search steps. Not a test.
"""
import argparse
import datetime
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

logging.disable(logging.WARNING)
import warnings  # noqa: E402

warnings.filterwarnings("ignore")

import torch  # noqa: E402

import delight_plugin  # noqa: E402,F401
from delight_plugin.building import PLUGIN_DIR, build_as_fairseq_train  # noqa: E402

SAMPLE = PLUGIN_DIR / "data" / "sample" / "wmt16-en-ro"


def preprocess(dest: Path) -> Path:
    subprocess.run([sys.executable, "-m", "fairseq_cli.preprocess", "--source-lang", "en", "--target-lang", "ro",
                    "--joined-dictionary", "--trainpref", SAMPLE / "train", "--validpref", SAMPLE / "valid",
                    "--destdir", dest, "--workers", "1"], check=True, capture_output=True)
    return dest


def build(data: Path, arch: str, flags):
    built = build_as_fairseq_train(arch, ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
                                          *flags], data, task="translation",
                                   task_flags=["--source-lang", "en", "--target-lang", "ro"], seed=0)
    built.task.load_dataset("train")
    built.task.load_dataset("valid")
    return built.task, built.model, built.task.build_criterion(built.cfg.criterion)


def batches(task, split: str, max_tokens=None, max_sentences=None):
    itr = task.get_batch_iterator(task.dataset(split), max_tokens=max_tokens, max_sentences=max_sentences, seed=1)
    return list(itr.next_epoch_itr(shuffle=False))


def train_tokens_per_second(task, model, criterion, samples) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98))
    model.train()
    loss, _, _ = criterion(model, samples[0])  # warm-up step, not timed
    loss.backward()
    start, tokens = time.perf_counter(), 0
    for sample in samples[1:]:
        optimizer.zero_grad()
        loss, _, _ = criterion(model, sample)
        loss.backward()
        optimizer.step()
        tokens += sample["ntokens"]
    return tokens / (time.perf_counter() - start)


@torch.no_grad()
def generate_sentences_per_second(task, model, samples, beam: int) -> float:
    model.eval()
    gen_args = argparse.Namespace(beam=beam, max_len_a=1.0, max_len_b=10, min_len=1)
    generator = task.build_generator([model], gen_args)
    task.inference_step(generator, [model], samples[0])  # warm-up
    start, sentences = time.perf_counter(), 0
    for sample in samples[1:]:
        task.inference_step(generator, [model], sample)
        sentences += sample["nsentences"]
    return sentences / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--dim", type=int, default=384, help="d_m of the DeLighT model")
    parser.add_argument("--train-batches", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--gen-batches", type=int, default=4)
    parser.add_argument("--gen-batch-size", type=int, default=32)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--output", help="also write the markdown table (with command, machine, date) here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = {
        f"delight_transformer_wmt16_en_ro (d_m={args.dim})":
            ("delight_transformer_wmt16_en_ro", ["--delight-emb-out-dim", str(args.dim)]),
        "transformer (base)": ("transformer", ["--share-all-embeddings"]),
    }
    with tempfile.TemporaryDirectory() as tmp:
        data = preprocess(Path(tmp))
        header = (f"threads={args.threads}, {args.train_batches} training batches of <= {args.max_tokens} tokens, "
                  f"{args.gen_batches} x {args.gen_batch_size} validation sentences at beam {args.beam}")
        lines = [f"| model | params | train tokens/s | beam-{args.beam} sentences/s |", "|---|---|---|---|"]
        print(header + "\n" + "\n".join(lines), flush=True)
        for name, (arch, flags) in models.items():
            task, model, criterion = build(data, arch, flags)
            train = batches(task, "train", max_tokens=args.max_tokens)[: args.train_batches + 1]
            valid = batches(task, "valid", max_sentences=args.gen_batch_size)[: args.gen_batches + 1]
            tps = train_tokens_per_second(task, model, criterion, train)
            sps = generate_sentences_per_second(task, model, valid, args.beam)
            params = sum(p.numel() for p in model.parameters())
            lines.append(f"| {name} | {params / 1e6:.1f}M | {tps:,.0f} | {sps:.1f} |")
            print(lines[-1], flush=True)
    if args.output:
        command = "python scripts/bench_delight_translation.py " + " ".join(sys.argv[1:])
        machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
        date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        Path(args.output).write_text(f"Measured by `{command}` on {machine}, {date}; {header}.\n\n"
                                     + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
