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
    # one token more than the timed steps need: --floor counts the ops of the step after them
    tokens = torch.randint(4, opts.vocab_size, (args.batch_size, args.context + 5 + args.steps), generator=g)
    for subject in subjects:
        if subject.name not in args.archs:
            continue
        module = subject.build(tokens.size(1)).module.eval()
        with torch.no_grad():
            state = decode.reach_context(module, tokens, args.context, opts)
            for t in range(4):
                module.decoder(tokens[:, : args.context + t + 1], incremental_state=state)
            if args.floor:
                step, floor = step_and_floor(module, tokens, state, args.context + 4, args.steps)
                ops = ops_per_step(module, tokens[:, : args.context + 5 + args.steps], state)
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


def step_and_floor(module, tokens, state, first: int, steps: int):
    """Median ms of ``steps`` decoding steps after the ``first`` cached tokens of ``state`` and of the
    same step's matrix products alone (a zero token through every nn.Linear, the output projection
    included), alternated step by step so that load affects both alike."""
    import statistics

    import torch
    import torch.nn.functional as F

    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    weights = [(m.weight, m.bias) for m in linears]
    if not isinstance(getattr(module.decoder, "output_projection", None), torch.nn.Linear):
        weights.append((module.decoder.embed_tokens.weight, None))  # a projection tied as a parameter
    inputs = [torch.zeros(tokens.size(0), 1, w.size(1)) for w, _ in weights]
    step_ms, floor_ms = [], []
    for t in range(first, first + steps):
        start = time.perf_counter()
        module.decoder(tokens[:, : t + 1], incremental_state=state)
        middle = time.perf_counter()
        for (weight, bias), x in zip(weights, inputs):
            F.linear(x, weight, bias)
        step_ms.append((middle - start) * 1000)
        floor_ms.append((time.perf_counter() - middle) * 1000)
    return statistics.median(step_ms), statistics.median(floor_ms)


def ops_per_step(module, prefix, state) -> int:
    """How many aten operators (views included) the decoding step of ``prefix``'s last token
    dispatches after ``state``: what per-op overhead multiplies."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    with Count():
        module.decoder(prefix, incremental_state=state)
    return Count.calls


if __name__ == "__main__":
    main()
