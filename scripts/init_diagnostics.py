#!/usr/bin/env python
"""How every LM architecture starts: its loss before any update (in bits, against a uniform guess)
and the gradient norms of its blocks' weight matrices after one backward pass on real text. A block
whose gradients are far below the others' (or below Adam's eps, 1e-8) starts switched off.

    python scripts/init_diagnostics.py --data DATA_BIN [--size small] [--length 512] [--archs A B ...]

DATA_BIN is a fairseq-preprocess'ed directory (for instance the quality study's data-word); the
first 2 x (length + 1) training tokens are the batch. Dropout is off, the embeddings are tied.
"""
import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from delight_plugin.benchmark.study import first_tokens  # noqa: E402
from delight_plugin.benchmark.subjects import build_fairseq_lm  # noqa: E402
from delight_plugin.presets import BASELINE_ARCH, plugin_lm_archs, preset_flags  # noqa: E402


def diagnose(arch: str, flags, data: Path, length: int) -> dict:
    torch.manual_seed(0)
    model, vocab = build_fairseq_lm(arch, preset_flags(arch, "small" if not flags else flags[0]) + list(flags[1:]),
                                    length, data)
    model.train()
    tokens = first_tokens(data, 2 * (length + 1)).view(2, length + 1)
    log_probs = torch.log_softmax(model(tokens[:, :-1])[0].float(), dim=-1)
    loss = -log_probs.gather(-1, tokens[:, 1:, None]).mean()
    loss.backward()
    norms = sorted(p.grad.norm().item() for name, p in model.named_parameters()
                   if p.grad is not None and ".layers." in f".{name}" and p.dim() == 2)
    return {"bits": loss.item() / math.log(2), "uniform_bits": math.log2(vocab),
            "min": norms[0], "median": norms[len(norms) // 2], "max": norms[-1]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--size", default="small")
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--archs", nargs="+")
    parser.add_argument("--flags", nargs=argparse.REMAINDER, default=[], help="more model flags, for every arch")
    args = parser.parse_args()
    torch.set_num_threads(1)
    archs = args.archs or [BASELINE_ARCH] + plugin_lm_archs(default_only=True) + ["gau_lm_flash"]
    print("| arch | loss before training, bits (uniform guess) | block weight-matrix gradient norms: min / median / max |")
    print("|---|---|---|")
    for arch in archs:
        flags = [args.size, "--dropout", "0", "--share-decoder-input-output-embed", *args.flags]
        row = diagnose(arch, flags, args.data, args.length)
        print(f"| {arch} | {row['bits']:.2f} (uniform {row['uniform_bits']:.2f}) | "
              f"{row['min']:.1e} / {row['median']:.1e} / {row['max']:.1e} |", flush=True)


if __name__ == "__main__":
    main()
