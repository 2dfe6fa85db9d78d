"""Joint sentencepiece subwords for the translation recipe (the Python package; no spm_train needed).

    python -m delight_plugin.recipes.subwords train --model-prefix P --vocab-size 32000 FILE...
    python -m delight_plugin.recipes.subwords encode --model P.model < text > pieces
    python -m delight_plugin.recipes.subwords decode --model P.model < pieces > text
"""
import argparse
import sys


def train(files, model_prefix: str, vocab_size: int, model_type: str = "bpe"):
    import sentencepiece as spm
    spm.SentencePieceTrainer.train(
        input=",".join(files), model_prefix=model_prefix, vocab_size=vocab_size, model_type=model_type,
        character_coverage=1.0, input_sentence_size=10_000_000, shuffle_input_sentence=True,
        # fairseq's dictionary adds its own <s> <pad> </s> <unk>; a small corpus may not reach the size.
        hard_vocab_limit=False, minloglevel=2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("files", nargs="+")
    t.add_argument("--model-prefix", required=True)
    t.add_argument("--vocab-size", type=int, required=True)
    t.add_argument("--model-type", default="bpe", choices=["bpe", "unigram"])
    for name in ("encode", "decode"):
        sub.add_parser(name).add_argument("--model", required=True)
    args = parser.parse_args(argv)
    if args.command == "train":
        train(args.files, args.model_prefix, args.vocab_size, args.model_type)
        return
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=args.model)
    for line in sys.stdin:
        line = line.rstrip("\n")
        out = " ".join(sp.encode(line, out_type=str)) if args.command == "encode" else sp.decode(line.split())
        sys.stdout.write(out + "\n")


if __name__ == "__main__":
    main()
