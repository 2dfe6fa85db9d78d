"""Turn a word-level corpus (WikiText's ``*.txt``) into a character-level one for
``fairseq-preprocess``: one symbol per character, separated by spaces, with the space itself
written as ``SPACE`` so that fairseq's whitespace tokenizer keeps it. Each line stays a line
(fairseq ends it with ``<eos>``, the newline), so bits per token are bits per character.

WikiText lines begin and end with one space of formatting; those two are dropped.

    python -m delight_plugin.recipes.characters SRC_DIR DEST_DIR [--splits train valid test]
"""
import argparse
from pathlib import Path

SPACE = "\u2581"  # "▁", as sentencepiece writes a space


def characters(line: str) -> str:
    """``" The cat "`` -> ``"T h e ▁ c a t"``."""
    text = line.rstrip("\n")
    if text.startswith(" "):
        text = text[1:]
    if text.endswith(" "):
        text = text[:-1]
    if SPACE in text:
        raise ValueError(f"the corpus already contains {SPACE!r}, the symbol that stands for a space")
    return " ".join(SPACE if c == " " else c for c in text)


def convert(source: Path, destination: Path) -> int:
    """Write ``source`` as characters to ``destination``; returns the number of characters
    (newlines included, i.e. the tokens fairseq will count with one ``<eos>`` per line)."""
    count = 0
    with open(source, encoding="utf-8") as lines, open(destination, "w", encoding="utf-8") as out:
        for line in lines:
            chars = characters(line)
            out.write(chars + "\n")
            count += (len(chars) + 1) // 2 + 1 if chars else 1
    return count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="directory with train.txt, valid.txt, test.txt")
    parser.add_argument("destination", type=Path)
    parser.add_argument("--splits", nargs="+", default=["train", "valid", "test"])
    args = parser.parse_args(argv)
    args.destination.mkdir(parents=True, exist_ok=True)
    for split in args.splits:
        count = convert(args.source / f"{split}.txt", args.destination / f"{split}.txt")
        print(f"{split}: {count:,} characters (newlines included)")


if __name__ == "__main__":
    main()
