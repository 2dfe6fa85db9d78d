"""WMT'16 En-Ro text normalisation, as the standard preprocessing (Sennrich et al.'s wmt16-scripts):
Moses-style punctuation normalisation for both languages; for Romanian also cedilla -> comma-below
(ş ţ -> ș ț) and then diacritic removal (ș ț ă â î -> s t a a i), which the En-Ro papers apply.

Written from the rules' descriptions; no Moses download. Filter: stdin -> stdout::

    python -m delight_plugin.recipes.romanian --lang ro --remove-diacritics < in > out
"""
import argparse
import re
import sys

# Quotes, dashes, spaces: one ASCII form each (the effect of Moses' normalize-punctuation.perl).
_CHARS = str.maketrans({
    "\u201e": '"', "\u201c": '"', "\u201d": '"', "\u00ab": '"', "\u00bb": '"', "\u201f": '"',
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u00b4": "'", "`": "'",
    "\u2013": "-", "\u2010": "-", "\u2011": "-", "\u2212": "-",
    "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u200b": "", "\r": "",
})
_RULES = [
    (re.compile(r"\u2014"), " - "),  # em dash
    (re.compile(r"\u2026"), "..."),
    (re.compile(r"''"), '"'),
    (re.compile(r" +"), " "),
    (re.compile(r" ([%:;?!])"), r"\1"),  # no space before these (French spacing)
    (re.compile(r"\( "), "("),
    (re.compile(r" \)"), ")"),
    (re.compile(r"(\d) (?=%)"), r"\1"),
]
_CEDILLA_TO_COMMA = str.maketrans("şŞţŢ", "șȘțȚ")
_NO_DIACRITICS = str.maketrans("șȘțȚăĂâÂîÎ", "sStTaAaAiI")


def normalise_punctuation(line: str) -> str:
    line = line.translate(_CHARS)
    for pattern, repl in _RULES:
        line = pattern.sub(repl, line)
    return line.strip()


def normalise_romanian(line: str) -> str:
    """Cedilla forms (common in Europarl) to the correct comma-below letters."""
    return line.translate(_CEDILLA_TO_COMMA)


def remove_diacritics(line: str) -> str:
    return normalise_romanian(line).translate(_NO_DIACRITICS)


def normalise(line: str, lang: str, diacritics: bool = True) -> str:
    line = normalise_punctuation(line)
    if lang == "ro":
        line = normalise_romanian(line) if diacritics else remove_diacritics(line)
    return line


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lang", required=True, choices=["en", "ro"])
    parser.add_argument("--remove-diacritics", action="store_true", help="Romanian: ș ț ă â î -> s t a a i")
    args = parser.parse_args(argv)
    for line in sys.stdin:
        sys.stdout.write(normalise(line, args.lang, diacritics=not args.remove_diacritics) + "\n")


if __name__ == "__main__":
    main()
