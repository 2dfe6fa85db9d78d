#!/usr/bin/env python
"""Profile decoding steps at a fixed context: reach C (prefill, or the baseline's hooked forward; see
delight_plugin/benchmark/decode.py), then run torch.profiler over --steps single-token steps and
print ms/step and the ops by self CPU time. --floor instead times each step (no profiler) against the
model's weight matrices alone (every nn.Linear and the output projection applied to one token: the
bytes a step must stream at batch 1), alternated, and prints both medians. Example:
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
    p.add_argument("--floor", action="store_true", help="median step vs weight matrices alone, no profiler")
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
            if args.floor:
                step, floor = step_and_floor(module, tokens, args.context, args.steps, opts)
                ops = ops_per_step(module, tokens, args.context, opts)
                print(f"{subject.name} at C = {args.context}, batch {args.batch_size}: step {step:.2f} ms, "
                      f"weight matrices alone {floor:.2f} ms (medians of {args.steps}), {ops} aten ops per step")
                continue
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                start = time.perf_counter()
                for t in range(4, 4 + args.steps):
                    module.decoder(tokens[:, : args.context + t + 1], incremental_state=state)
                seconds = time.perf_counter() - start
        print(f"\n== {subject.name} at C = {args.context}, batch {args.batch_size}: "
              f"{seconds * 1000 / args.steps:.2f} ms/step under the profiler")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


def step_and_floor(module, tokens, context: int, steps: int, opts):
    """Median ms of a decoding step and of its matrix products alone (a zero token through every
    nn.Linear and the output projection), alternated step by step so that load affects both alike."""
    import statistics

    import torch
    import torch.nn.functional as F

    from delight_plugin.benchmark import decode

    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    projection = getattr(module.decoder, "output_projection", None)
    output = projection.weight if isinstance(projection, torch.nn.Linear) else module.decoder.embed_tokens.weight
    inputs = [torch.zeros(tokens.size(0), 1, m.in_features) for m in linears]
    output_input = torch.zeros(tokens.size(0), 1, output.size(1))
    state = decode.reach_context(module, tokens, context, opts)
    step_ms, floor_ms = [], []
    for t in range(4 + steps):
        start = time.perf_counter()
        module.decoder(tokens[:, : context + t + 1], incremental_state=state)
        middle = time.perf_counter()
        for linear, x in zip(linears, inputs):
            F.linear(x, linear.weight, linear.bias)
        if not (isinstance(projection, torch.nn.Linear) and projection in linears):
            F.linear(output_input, output)
        end = time.perf_counter()
        if t >= 4:
            step_ms.append((middle - start) * 1000)
            floor_ms.append((end - middle) * 1000)
    return statistics.median(step_ms), statistics.median(floor_ms)


def ops_per_step(module, tokens, context: int, opts) -> int:
    """How many aten operators (views included) one decoding step dispatches: what per-op overhead
    multiplies."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from delight_plugin.benchmark import decode

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    state = decode.reach_context(module, tokens, context, opts)
    module.decoder(tokens[:, : context + 1], incremental_state=state)
    with Count():
        module.decoder(tokens[:, : context + 2], incremental_state=state)
    return Count.calls


if __name__ == "__main__":
    main()
