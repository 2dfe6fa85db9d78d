#!/usr/bin/env python
"""Profile decoding steps at a fixed context: reach C (prefill, or the baseline's hooked forward; see
delight_plugin/benchmark/decode.py), then run torch.profiler over --steps single-token steps and
print ms/step and the ops by self CPU time. Example:
    python scripts/profile_decode.py --archs transformer_lm gau_lm_flash --size small --context 1024"""
import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=["transformer_lm", "gau_lm_flash"])
    p.add_argument("--size", default="small")
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--rows", type=int, default=25, help="ops listed per arch")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    sys.path.insert(0, str(REPO))
    import torch
    from torch.profiler import ProfilerActivity, profile

    from delight_plugin.benchmark import decode
    from delight_plugin.benchmark.subjects import fairseq_subjects

    if args.threads:
        torch.set_num_threads(args.threads)
    opts = decode.DecodeOptions(contexts=[args.context], steps=args.steps)
    subjects = fairseq_subjects(args.archs, args.size, opts.vocab_size, torch.device("cpu"), torch.float32)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(4, opts.vocab_size, (args.batch_size, args.context + 4 + args.steps), generator=g)
    for subject in subjects:
        if subject.name not in args.archs:
            continue
        module = subject.build(tokens.size(1)).module.eval()
        with torch.no_grad():
            state = decode.reach_context(module, tokens, args.context, opts)
            for t in range(4):
                module.decoder(tokens[:, : args.context + t + 1], incremental_state=state)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                start = time.perf_counter()
                for t in range(4, 4 + args.steps):
                    module.decoder(tokens[:, : args.context + t + 1], incremental_state=state)
                seconds = time.perf_counter() - start
        print(f"\n== {subject.name} at C = {args.context}, batch {args.batch_size}: "
              f"{seconds * 1000 / args.steps:.2f} ms/step under the profiler")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
