#!/usr/bin/env python
"""Write the flag tables of docs/<arch>.md from the models' config dataclasses, so that no flag,
default or meaning is restated by hand: the help text in the dataclass is the source of truth.

Each table sits between ``<!-- flags:NAME:begin -->`` and ``<!-- flags:NAME:end -->`` in its doc
(NAME: a registered model of the plugin, or ``efficient_lm`` for the flags every LM shares). A
model's table lists what it adds to, or changes in, the model it is built on (the LM skeleton,
``plain_lm``, ``linformer_lm``), the skeleton flags it does not take, and what each named
architecture fills in for a flag that is not given.

    python scripts/make_flag_docs.py            # rewrite the tables in docs/
    python scripts/make_flag_docs.py --check    # exit 1 if a committed table differs
"""
import argparse
import logging
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKELETON = "efficient_lm"
# doc -> the tables it holds, in order
DOCS = {
    "docs/plain_lm.md": [SKELETON, "plain_lm"],
    "docs/delight.md": ["delight_transformer", "delight_transformer_lm"],
    "docs/linformer.md": ["linformer_lm", "linformer_transformer"],
    "docs/hourglass.md": ["hourglass_lm"],
    "docs/gau.md": ["gau_lm"],
    "docs/primer_ez.md": ["primer_ez_lm"],
}
DOCS_OF = {name: doc for doc, names in DOCS.items() for name in names}


def _setup():
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import delight_plugin  # noqa: F401  (registers the models)


def dataclass_of(name: str):
    from fairseq.models import MODEL_DATACLASS_REGISTRY

    if name == SKELETON:
        from delight_plugin.models.efficient_lm import EfficientLMConfig
        return EfficientLMConfig
    return MODEL_DATACLASS_REGISTRY[name]


def documented() -> dict:
    """dataclass -> (table name, doc) for every table."""
    return {dataclass_of(name): (name, doc) for doc, names in DOCS.items() for name in names}


def base_of(dataclass):
    """The nearest documented dataclass that ``dataclass`` is built on (None for none)."""
    tables = documented()
    return next((cls for cls in dataclass.__mro__[1:] if cls in tables), None)


class Flag:
    def __init__(self, action, raw_default):
        self.flag = action.option_strings[0]
        self.dest = action.dest
        self.help = action.help or ""
        self.choices = list(action.choices) if action.choices else None
        self.raw_default = raw_default

    def key(self):
        return self.raw_default, self.help, self.choices


def flags_of(dataclass) -> dict:
    """dest -> Flag, as fairseq turns the dataclass into command-line flags (its own function)."""
    from fairseq.dataclass.utils import gen_parser_from_dataclass

    parser = argparse.ArgumentParser(add_help=False)
    instance = dataclass()
    gen_parser_from_dataclass(parser, instance)
    return {a.dest: Flag(a, getattr(instance, a.dest)) for a in parser._actions if a.option_strings}


def interpolated(dataclass) -> dict:
    """Fields that are not flags: their value follows another one (an ``II`` interpolation)."""
    instance = dataclass()
    return {name: getattr(instance, name) for name in dataclass.__dataclass_fields__
            if isinstance(getattr(instance, name), str) and getattr(instance, name).startswith("${")}


def follows(interpolation: str) -> str:
    group, name = interpolation[2:-1].split(".", 1)
    flag = f"`--{name.replace('_', '-')}`"
    return flag if group == "model" else f"the task's {flag}"


def show_default(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "unset"
    if isinstance(value, str):
        return f"= {follows(value)}" if value.startswith("${") else f"`{value}`"
    return str(value)


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(rows) -> list:
    lines = ["| flag | default | meaning |", "|---|---|---|"]
    for f in rows:
        meaning = f.help
        if f.choices:
            meaning += ". Choices: " + ", ".join(f"`{c}`" for c in f.choices) + "."
        lines.append(f"| `{f.flag}` | {cell(show_default(f.raw_default))} | {cell(meaning)} |")
    return lines


def named_arch_settings(model: str, flags: dict):
    """(arch, [(Flag, value)]) for every named architecture of ``model``: the values its architecture
    function fills in, at the defaults of every other flag, where they differ from the dataclass's."""
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY, ARCH_MODEL_REGISTRY, FairseqEncoderDecoderModel

    from delight_plugin.building import training_args

    out = []
    for arch in sorted(a for a, m in ARCH_MODEL_NAME_REGISTRY.items() if m == model and a != model):
        seq2seq = issubclass(ARCH_MODEL_REGISTRY[arch], FairseqEncoderDecoderModel)
        args = training_args("data-bin", ["--task", "translation" if seq2seq else "language_modeling", "--arch", arch])
        changed = [(f, getattr(args, f.dest)) for f in flags.values()
                   if hasattr(args, f.dest) and getattr(args, f.dest) != f.raw_default]
        out.append((arch, changed))
    return out


def show_setting(flag, value) -> str:
    if value is True:
        return f"`{flag.flag}`"
    if value is False or value is None:
        return f"`{flag.flag}` {show_default(value)}"
    return f"`{flag.flag} {value}`"


def render(name: str) -> str:
    """The markdown of one table, without its markers."""
    dataclass = dataclass_of(name)
    flags = flags_of(dataclass)
    source = f"`{dataclass.__name__}` ({Path(sys.modules[dataclass.__module__].__file__).relative_to(REPO)})"
    lines = [f"Generated by `python scripts/make_flag_docs.py` from the help text of {source}: edit that, "
             "then run the script.", ""]
    base = base_of(dataclass)
    rows = list(flags.values())
    if base is not None:
        base_name, base_doc = documented()[base]
        base_flags = flags_of(base)
        rows = [f for f in rows if f.dest not in base_flags or f.key() != base_flags[f.dest].key()]
        where = "" if base_doc == DOCS_OF[name] else f" ([{Path(base_doc).name}]({Path(base_doc).name}))"
        what = "The flags every language model shares" if base_name == SKELETON else f"Every flag of `{base_name}`"
        lines += [f"{what}{where}, and these, which it adds or whose default or meaning it changes:", ""]
        dropped = [(dest, value) for dest, value in interpolated(dataclass).items() if dest in base_flags]
    else:
        dropped = []
    lines += table(rows)
    if dropped:
        lines += ["", "Not flags of this model (their value follows another flag): "
                  + ", ".join(f"`{base_flags[d].flag}` (= {follows(v)})" for d, v in dropped) + "."]
    settings = named_arch_settings(name, flags) if name != SKELETON else []
    if settings:
        lines += ["", "What each named architecture fills in for a flag you do not give (at the other flags' "
                  "defaults; an explicit flag wins):", "", "| `--arch` | sets |", "|---|---|"]
        lines += [f"| `{arch}` | {cell(', '.join(show_setting(f, v) for f, v in changed) or 'nothing')} |"
                  for arch, changed in settings]
    return "\n".join(lines) + "\n"


def markers(name: str):
    return f"<!-- flags:{name}:begin -->", f"<!-- flags:{name}:end -->"


def rendered_docs() -> dict:
    """doc path -> its text with every table rendered afresh."""
    _setup()
    out = {}
    for doc, names in DOCS.items():
        text = (REPO / doc).read_text()
        for name in names:
            begin, end = markers(name)
            if begin not in text or end not in text:
                raise SystemExit(f"{doc} has no {begin} ... {end} markers for the {name} flag table")
            head, rest = text.split(begin, 1)
            _, tail = rest.split(end, 1)
            text = f"{head}{begin}\n{render(name)}{end}{tail}"
        out[doc] = text
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    stale = [doc for doc, text in rendered_docs().items() if (REPO / doc).read_text() != text]
    if args.check:
        for doc in stale:
            print(f"{doc}: its flag tables differ from the dataclasses' help text")
        if stale:
            sys.exit("run `python scripts/make_flag_docs.py` and commit docs/")
        print("the flag tables in docs/ are up to date")
        return
    for doc, text in rendered_docs().items():
        (REPO / doc).write_text(text)
    print(f"{len(DOCS)} docs: {len(stale)} rewritten")


if __name__ == "__main__":
    main()
