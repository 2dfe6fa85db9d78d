#!/usr/bin/env python
"""Parameters and MACs of a DeLighT model (or fairseq's ``transformer``) by the DeLighT reference's
counting rules, without data: the model is built from a synthetic dictionary of ``--vocab-size``.

    python scripts/count_params_macs.py --arch delight_transformer_wmt14_en_de --delight-emb-out-dim 512 \
        --vocab-size 43740
    python scripts/count_params_macs.py --arch delight_transformer_lm_wiki103 --vocab-size 267744 \
        --delight-emb-out-dim 1024 --delight-dec-max-depth 12
    python scripts/count_params_macs.py --sweep --vocab-size 34976     # the docs/delight.md table (WMT'16 En-Ro)

Any other flag is passed to the architecture. Joined dictionaries are assumed for translation.
"""
import argparse
import logging
import sys
import tempfile
from pathlib import Path

logging.disable(logging.WARNING)
import warnings  # noqa: E402

warnings.filterwarnings("ignore")

import delight_plugin  # noqa: E402,F401
from fairseq.models import ARCH_MODEL_REGISTRY, FairseqEncoderDecoderModel  # noqa: E402

from delight_plugin.building import build_as_fairseq_train, synthetic_dictionary  # noqa: E402
from delight_plugin.reporting import macs  # noqa: E402


def build(arch: str, vocab_size: int, flags, workdir: Path):
    """``arch`` built exactly as fairseq-train would, over a dictionary of ``vocab_size`` symbols."""
    if issubclass(ARCH_MODEL_REGISTRY[arch], FairseqEncoderDecoderModel):
        data = synthetic_dictionary(vocab_size, workdir, langs=("src", "tgt"))
        task, task_flags = "translation", ["--source-lang", "src", "--target-lang", "tgt"]
    else:
        data, task, task_flags = synthetic_dictionary(vocab_size, workdir), "language_modeling", []
    return build_as_fairseq_train(arch, flags, data, task=task, task_flags=task_flags, adaptive_loss=True).model


def rows_for(model, src_len: int, tgt_len: int):
    if hasattr(model, "stats_rows"):
        return model.stats_rows(src_len, tgt_len)
    if isinstance(model, FairseqEncoderDecoderModel):  # fairseq's transformer
        return macs.transformer_rows(model, src_len, tgt_len)
    return macs.decoder_rows(model.decoder, tgt_len)  # delight_transformer_lm


def summary(arch, vocab_size, flags, src_len, tgt_len):
    with tempfile.TemporaryDirectory() as tmp:
        model = build(arch, vocab_size, flags, Path(tmp))
    rows = rows_for(model, src_len, tgt_len)
    total = macs.totals(rows)
    assert total.params + total.emb_params == sum(p.numel() for p in model.parameters()), "counter misses params"
    return model, rows, total


def sweep(vocab_size: int, src_len: int, tgt_len: int):
    print(f"| model | d_m | embedding params | non-embedding params | total params | MACs ({src_len}/{tgt_len} tokens) |")
    print("|---|---|---|---|---|---|")
    for dim in (128, 256, 384, 512, 640):
        _, _, t = summary("delight_transformer_wmt16_en_ro", vocab_size, ["--delight-emb-out-dim", str(dim)],
                          src_len, tgt_len)
        print(f"| delight_transformer_wmt16_en_ro | {dim} | {t.emb_params / 1e6:.2f}M | {t.params / 1e6:.2f}M | "
              f"{(t.params + t.emb_params) / 1e6:.2f}M | {t.macs / 1e9:.2f}B |")
    _, _, t = summary("transformer", vocab_size, ["--share-all-embeddings"], src_len, tgt_len)
    print(f"| transformer (base, shared embeddings) | 512 | {t.emb_params / 1e6:.2f}M | {t.params / 1e6:.2f}M | "
          f"{(t.params + t.emb_params) / 1e6:.2f}M | {t.macs / 1e9:.2f}B |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="delight_transformer_wmt16_en_ro")
    parser.add_argument("--vocab-size", type=int, default=34976, help="dictionary size, special symbols included")
    parser.add_argument("--src-len", type=int, default=20, help="source tokens (the reference's --src-len-ps)")
    parser.add_argument("--tgt-len", type=int, default=20, help="target tokens (the reference's --tgt-len-ps)")
    parser.add_argument("--sweep", action="store_true", help="the docs/delight.md table: En-Ro archs at d_m 128..640")
    args, model_flags = parser.parse_known_args(argv)
    if args.sweep:
        sweep(args.vocab_size, args.src_len, args.tgt_len)
        return
    model, rows, total = summary(args.arch, args.vocab_size, model_flags, args.src_len, args.tgt_len)
    print(macs.format_table(rows, f"{args.arch} {' '.join(model_flags)} | vocabulary {args.vocab_size} | "
                                  f"{args.src_len} source / {args.tgt_len} target tokens"))


if __name__ == "__main__":
    sys.exit(main())
