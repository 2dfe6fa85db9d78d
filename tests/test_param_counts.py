"""Parameter counts of every registered architecture, at every size preset it defines, against
the committed table ``tests/data/param_counts.json``: a refactor must not change what a named
architecture builds. After a deliberate change, rewrite the table with
``PYTHONPATH=. python tests/test_param_counts.py --write`` and say why in the commit."""
import json
import sys
from pathlib import Path

import pytest

from harness import build, build_translation, lm_archs, seq2seq_archs
from delight_plugin.presets import SIZES, non_embedding_params, preset_flags, vocabulary_flags

TABLE = Path(__file__).parent / "data" / "param_counts.json"
VOCAB = 100


def lm_entries():
    for arch in ["transformer_lm"] + lm_archs():
        for size in (None,) + SIZES:
            try:
                flags = [] if size is None else preset_flags(arch, size)
            except ValueError:  # no such preset for this arch
                continue
            # adaptive_loss: the criterion an adaptive softmax needs (it does not change the model)
            yield f"{arch}@{size or 'registered'}", arch, flags + vocabulary_flags(arch, VOCAB) + ["--criterion", "adaptive_loss"]


def count(key: str) -> dict:
    arch, size = key.split("@")
    if size == "registered" and arch in seq2seq_archs():
        model, _ = build_translation(arch)
    else:
        flags = next(f for k, _, f in lm_entries() if k == key)
        model, _ = build(arch, flags, tokens_per_sample=512)
    return {"params": sum(p.numel() for p in model.parameters()),
            "non_embedding": non_embedding_params(model) if arch not in seq2seq_archs() else None}


def keys():
    return [k for k, _, _ in lm_entries()] + [f"{a}@registered" for a in seq2seq_archs()]


@pytest.mark.parametrize("key", keys())
def test_parameter_count_is_unchanged(key):
    table = json.loads(TABLE.read_text())
    assert key in table, f"{key} is not in {TABLE.name}: run this file with --write and commit the table"
    assert count(key) == table[key]


def test_the_table_names_only_registered_architectures():
    assert sorted(json.loads(TABLE.read_text())) == sorted(keys())


if __name__ == "__main__" and "--write" in sys.argv:
    TABLE.write_text(json.dumps({k: count(k) for k in keys()}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {TABLE}")
