"""Named model sizes, as command-line flags, matched across architectures.

Benchmarks, the demo and the recipes ask for ``--size tiny|small|base``. fairseq's own
``transformer_lm`` defines each size; every architecture of ours defines flags for the same
name (its model class's ``presets``) that land within about 10% of the baseline's
non-embedding parameter count (``non_embedding_params``).
"""
import dataclasses
from typing import Dict, List, Optional

from fairseq.models import ARCH_MODEL_REGISTRY, register_model_architecture
from fairseq.utils import safe_getattr

BASELINE_ARCH = "transformer_lm"
SIZES = ("tiny", "small", "base")
WIKITEXT103_VOCAB = 267744  # the vocabulary the wiki103 arch's adaptive cutoffs are sized for


@dataclasses.dataclass(frozen=True)
class Size:
    """A multi-head Transformer LM's shape, as its ``decoder_*`` fields."""
    decoder_embed_dim: Optional[int]
    decoder_ffn_embed_dim: Optional[int]
    decoder_layers: Optional[int]
    decoder_attention_heads: Optional[int]

    def flags(self, **changes) -> List[str]:
        """Its command-line flags; ``changes`` replace fields by name (None: leave the flag out)."""
        fields = dataclasses.asdict(dataclasses.replace(self, **changes))
        return [item for name, value in fields.items() if value is not None
                for item in ("--" + name.replace("_", "-"), str(value))]


# The one table of sizes: transformer_lm's base (its defaults) and gpt (transformer_lm_gpt), and our
# tiny and small. The plain, Primer, Hourglass and Linformer LMs take their defaults, presets and
# named archs from it.
TRANSFORMER_SIZES: Dict[str, Size] = {
    "tiny": Size(64, 256, 2, 4),
    "small": Size(256, 1024, 4, 4),
    "base": Size(512, 2048, 6, 8),
    "gpt": Size(768, 3072, 12, 12),
}
BASE = TRANSFORMER_SIZES["base"]
# Archs registered at a size of the table beyond the presets (register_sized_arch): arch -> size.
SIZED_ARCHS: Dict[str, str] = {}


def size_flags(size: str, **changes) -> List[str]:
    return TRANSFORMER_SIZES[size].flags(**changes)


def register_sized_arch(model: str, arch: str, size: str, **defaults):
    """Register ``arch``: ``model`` at ``TRANSFORMER_SIZES[size]`` with ``defaults`` for other fields;
    what the command line sets wins."""
    values = {**dataclasses.asdict(TRANSFORMER_SIZES[size]), **defaults}

    def fill(args):
        for name, value in values.items():
            setattr(args, name, safe_getattr(args, name, value))

    SIZED_ARCHS[arch] = size
    return register_model_architecture(model, arch)(fill)


def _baseline_preset(size: str) -> List[str]:
    # transformer_lm keeps 512-wide input/output dims unless told: keep them at the model width.
    width = str(TRANSFORMER_SIZES[size].decoder_embed_dim)
    return size_flags(size) + ["--decoder-input-dim", width, "--decoder-output-dim", width]


BASELINE_PRESETS = {"tiny": _baseline_preset("tiny"), "small": _baseline_preset("small"),
                    "base": []}  # transformer_lm's defaults: BASE


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

