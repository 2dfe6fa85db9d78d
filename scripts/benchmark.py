#!/usr/bin/env python
"""Benchmark every LM architecture of the plugin, fairseq's transformer_lm (always included, the
reference of every ratio) and the PyPI peers at a matched size preset: training fwd+bwd tokens/s,
inference tokens/s, incremental generation tokens/s from position 0, peak memory, parameters, MACs
per token and training MFU, at each --lengths; and ms per decoding step at fixed contexts
(--decode-contexts, reached by prefill). Writes <output-dir>/<stem>.{json,md}, <stem>_throughput.png and
<stem>_memory.png (stem: benchmark). Example: python scripts/benchmark.py --size tiny --lengths 256 512"""
import argparse
import logging
import shlex
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="small", help="size preset for every model: tiny, small or base (default small)")
    p.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 8192], help="sequence lengths")
    p.add_argument("--archs", nargs="+", help="subset of our LM archs (default: every registered one); "
                                              "transformer_lm is always included")
    p.add_argument("--peers", nargs="+", default=["all"],
                   help="PyPI peers to include: all (default), none, or names among x_transformers flash_pytorch "
                        "hourglass_pytorch linformer linformer_pytorch")
    p.add_argument("--batch-size", type=int, default=1, help="sequences per step (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats; medians are reported (default 3)")
    p.add_argument("--output-dir", default=str(REPO / "bench-output"), help="where the JSON, markdown and PNGs go")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="parameter and activation dtype (bfloat16/float16 are meant for GPUs)")
    p.add_argument("--vocab-size", type=int, default=10000, help="synthetic vocabulary size (default 10000)")
    p.add_argument("--time-budget", type=float, default=60.0,
                   help="seconds one training or inference sample (and its warm-up) may take (default 60); past "
                        "it the cell reports a timeout and longer lengths are skipped for that model")
    p.add_argument("--generate-budget", type=float, default=20.0,
                   help="seconds of token-by-token decoding per generation sample (default 20); decoding stops "
                        "there and the table says how many tokens were reached")
    p.add_argument("--generate-repeats", type=int, default=1,
                   help="generation samples per model and length (default 1: decoding a sequence is long)")
    p.add_argument("--memory-limit-gb", type=float, default=None,
                   help="CPU only: extra address space the run may take (default: the memory available at "
                        "the start less 2 GiB); an allocation past it gives an out-of-memory cell instead of "
                        "the kernel's OOM killer. 0 disables")
    p.add_argument("--malloc", choices=["keep", "default"], default="keep",
                   help="CPU only: keep (default) makes glibc reuse freed memory across steps instead of "
                        "unmapping every block over 32 MiB and faulting it in again on the next step; default "
                        "leaves glibc as it is. The same setting applies to every model of the run")
    p.add_argument("--warmup-rounds", type=int, default=1,
                   help="untimed rounds of training and inference samples before the timed ones (default 1): "
                        "a run's first samples are slower than the rest")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--stem", default="benchmark", help="file name stem of the JSON and markdown")
    p.add_argument("--metrics", choices=["all", "throughput", "decode"], default="all",
                   help="throughput: training/inference/generation per length; decode: ms/token at fixed "
                        "contexts (<stem>_decode.{json,md,png}); all (default): both")
    p.add_argument("--decode-contexts", type=int, nargs="+", default=[1024, 4096, 8192, 16384, 32768],
                   help="contexts C at which decoding is timed (the cache holds C tokens)")
    p.add_argument("--decode-batch-sizes", type=int, nargs="+", default=[1, 8], help="decode batch sizes (default 1 8)")
    p.add_argument("--decode-steps", type=int, default=64, help="timed single-token steps per sample (default 64)")
    p.add_argument("--decode-repeats", type=int, default=None, help="decode samples per cell (default: --repeats)")
    p.add_argument("--decode-budget", type=float, default=300.0,
                   help="seconds one decode sample (reaching C and the steps) may take (default 300)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    sys.path.insert(0, str(REPO))
    import torch

    import delight_plugin  # noqa: F401  (registers every architecture)
    from delight_plugin.benchmark import measure, peers, report
    from delight_plugin.benchmark.runner import Benchmark, Options
    from delight_plugin.benchmark.subjects import baseline_shape, fairseq_subjects
    from delight_plugin.presets import plugin_lm_archs

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is visible to torch")
    if args.dtype != "float32" and not args.device.startswith("cuda"):
        print(f"note: --dtype {args.dtype} on CPU is slow and not what the results table reports")

    registered = plugin_lm_archs()
    unknown = sorted(set(args.archs or []) - set(registered) - {"transformer_lm"})
    if unknown:
        sys.exit(f"--archs: {unknown} are not registered LM archs; choose from {registered}")
    memory_limit_gb = measure.default_memory_limit_gb() if args.memory_limit_gb is None else args.memory_limit_gb
    options = Options(size=args.size, lengths=args.lengths, batch_size=args.batch_size, repeats=args.repeats,
                      device=args.device, dtype=args.dtype, vocab_size=args.vocab_size, time_budget=args.time_budget,
                      generate_budget=args.generate_budget, generate_repeats=args.generate_repeats,
                      memory_limit_gb=memory_limit_gb or None, keep_freed_memory=args.malloc == "keep",
                      warmup_rounds=args.warmup_rounds)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    device = torch.device(args.device)

    subjects = fairseq_subjects(args.archs or registered, args.size, args.vocab_size, device, dtype)
    names = [] if args.peers == ["none"] else (sorted(peers.BUILDERS) if args.peers == ["all"] else args.peers)
    peer_list, skipped = peers.peer_subjects(names, baseline_shape(args.size, args.vocab_size), args.vocab_size,
                                             device, dtype)
    for line in skipped:
        print(f"peer skipped: {line}")

    command = "python scripts/benchmark.py " + " ".join(map(shlex.quote, sys.argv[1:] if argv is None else argv))
    if args.metrics in ("all", "throughput"):
        result = Benchmark(subjects + peer_list, options, log=lambda s: print(s, flush=True)).run()
        result["meta"]["command"] = command
        result["meta"]["peers_skipped"] = skipped
        for path in report.write(result, Path(args.output_dir), args.stem):
            print(f"wrote {path}")
        print("\n" + report.ratio_table(result))
    if args.metrics in ("all", "decode"):
        from delight_plugin.benchmark import decode

        decode_options = decode.DecodeOptions(
            contexts=args.decode_contexts, batch_sizes=args.decode_batch_sizes, steps=args.decode_steps,
            repeats=args.decode_repeats or args.repeats, vocab_size=args.vocab_size, device=args.device,
            time_budget=args.decode_budget)
        with measure.memory_limit((memory_limit_gb or None) if device.type == "cpu" else None):
            started = time.time()
            rows = decode.DecodeBenchmark(subjects, decode_options, log=lambda s: print(s, flush=True)).run()
        for path in decode.write(rows, decode_options, Path(args.output_dir), args.stem, command, time.time() - started):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
