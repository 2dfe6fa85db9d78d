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


def non_embedding_params(model) -> int:
    """Parameters outside the token embedding, the position embedding and the output projection."""
    decoder = model.decoder
    skip = set()
    for name in ("embed_tokens", "embed_positions", "output_projection", "adaptive_softmax"):
        module = getattr(decoder, name, None)
        if module is not None:
            skip |= {id(p) for p in module.parameters()}
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
