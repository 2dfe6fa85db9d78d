"""BLEU for the translation recipe: sacreBLEU on detokenized text (with its signature) and the
tokenized BLEU that the En-Ro papers report.

The papers' tokenized BLEU is fairseq's BLEU-4 on Moses-tokenized text. Without Moses, both the
hypotheses and the references are tokenized here with sacreBLEU's ``intl`` tokenizer (it splits
off every Unicode punctuation mark and symbol, as Moses' aggressive mode mostly does) and scored
as already-tokenized text, like multi-bleu.perl. Expect it within a few tenths of the papers'
Moses-based number, not identical.

    python -m delight_plugin.recipes.bleu --hyp hyp.txt --ref ref.txt [--json scores.json]
"""
import argparse
import json


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def scores(hyps, refs):
    from sacrebleu.metrics import BLEU
    from sacrebleu.tokenizers.tokenizer_intl import TokenizerV14International
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    detok = BLEU()
    result = detok.corpus_score(hyps, [refs])
    tokenize = TokenizerV14International()
    tok = BLEU(tokenize="none", force=True).corpus_score([tokenize(h) for h in hyps], [[tokenize(r) for r in refs]])
    return {"sacrebleu": round(result.score, 2), "sacrebleu_line": str(result),
            "signature": str(detok.get_signature()), "tokenized_bleu": round(tok.score, 2)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hyp", required=True, help="detokenized hypotheses, one per line, in test-set order")
    parser.add_argument("--ref", required=True, help="references, one per line")
    parser.add_argument("--json", help="also write the scores here")
    args = parser.parse_args(argv)
    s = scores(read_lines(args.hyp), read_lines(args.ref))
    print(f"sacreBLEU (detokenized): {s['sacrebleu_line']}")
    print(f"sacreBLEU signature: {s['signature']}")
    print(f"tokenized BLEU (intl tokenization, as the papers' tokenized BLEU): {s['tokenized_bleu']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(s, f, indent=1)


if __name__ == "__main__":
    main()
