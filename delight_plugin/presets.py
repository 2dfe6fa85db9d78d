"""Named model sizes, as command-line flags, matched across architectures.

Benchmarks, the demo and the recipes ask for ``--size tiny|small|base``. fairseq's own
``transformer_lm`` defines each size; every architecture of ours defines flags for the same
name (its model class's ``presets``) that land within about 10% of the baseline's
non-embedding parameter count (``non_embedding_params``).
"""
from typing import List

from fairseq.models import ARCH_MODEL_REGISTRY

BASELINE_ARCH = "transformer_lm"
SIZES = ("tiny", "small", "base")
WIKITEXT103_VOCAB = 267744  # the vocabulary the wiki103 arch's adaptive cutoffs are sized for

BASELINE_PRESETS = {
    # transformer_lm keeps 512-wide input/output dims unless told: keep them at the model width.
    "tiny": ["--decoder-embed-dim", "64", "--decoder-ffn-embed-dim", "256", "--decoder-layers", "2",
             "--decoder-attention-heads", "4", "--decoder-input-dim", "64", "--decoder-output-dim", "64"],
    "small": ["--decoder-embed-dim", "256", "--decoder-ffn-embed-dim", "1024", "--decoder-layers", "4",
              "--decoder-attention-heads", "4", "--decoder-input-dim", "256", "--decoder-output-dim", "256"],
    "base": [],  # transformer_lm's defaults: 512 wide, 2048 FFN, 6 layers, 8 heads
}


def preset_flags(arch: str, size: str) -> List[str]:
    if size not in SIZES:
        raise ValueError(f"--size must be one of {list(SIZES)}, got {size!r}")
    if arch == BASELINE_ARCH:
        return list(BASELINE_PRESETS[size])
    presets = getattr(ARCH_MODEL_REGISTRY[arch], "presets", {})
    if size not in presets:
        raise ValueError(f"architecture {arch!r} defines no {size!r} preset")
    return list(presets[size])


def embedding_parameter_ids(model) -> set:
    """ids of a fairseq LM's token/position embedding and output-layer parameters."""
    decoder = model.decoder
    skip = set()
    for name in ("embed_tokens", "embed_positions", "output_projection", "adaptive_softmax"):
        module = getattr(decoder, name, None)
        if module is not None:
            skip |= {id(p) for p in module.parameters()}
    return skip


def non_embedding_params(model) -> int:
    """Parameters outside the token embedding, the position embedding and the output projection."""
    skip = embedding_parameter_ids(model)
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def plugin_lm_archs(default_only: bool = False) -> List[str]:
    """Language-model architectures this plugin registers (one per model with ``default_only``)."""
    from fairseq.models import MODEL_REGISTRY, FairseqLanguageModel

    ours = {a: m for a, m in ARCH_MODEL_REGISTRY.items()
            if m.__module__.startswith("delight_plugin.") and issubclass(m, FairseqLanguageModel)}
    if default_only:
        model_names = {name for name, m in MODEL_REGISTRY.items() if m in ours.values()}
        return sorted(a for a in ours if a in model_names)
    return sorted(ours)


def vocabulary_flags(arch: str, vocab_size: int) -> List[str]:
    """Adaptive input/softmax cutoffs scaled to ``vocab_size`` when the arch's own do not fit it
    (``delight_transformer_lm_wiki103``'s 20K/60K are sized for WikiText-103's 267K words), keeping
    their proportion of a WikiText-103 vocabulary; [] when the arch has none or they fit."""
    from argparse import Namespace

    from fairseq.models import ARCH_CONFIG_REGISTRY

    defaults = Namespace()
    if arch in ARCH_CONFIG_REGISTRY:
        ARCH_CONFIG_REGISTRY[arch](defaults)
    flags = []
    for name in ("adaptive_input_cutoff", "adaptive_softmax_cutoff"):
        cutoffs = [int(c) for c in str(getattr(defaults, name, None) or "").split(",") if c]
        if cutoffs and max(cutoffs) >= vocab_size:
            scaled = [max(1, c * vocab_size // WIKITEXT103_VOCAB) for c in cutoffs]
            flags += ["--" + name.replace("_", "-"), ",".join(map(str, scaled))]
    return flags

