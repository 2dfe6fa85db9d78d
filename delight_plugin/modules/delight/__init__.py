"""DeLighT (Mehta et al., ICLR 2021) building blocks: group linear transforms, the DExTra unit,
single-head attention, the light-weight FFN, the DeLighT block and embedding, and recurrent dropout
(the reference-rule parameter/MAC counter is ``delight_plugin/reporting/macs.py``)."""
from .attention import SingleHeadCrossAttention, SingleHeadSelfAttention
from .block import BlockOptions, DeLighTBlock, block_schedule
from .dextra import DExTraUnit, dextra_schedule
from .embedding import DExTraEmbedding
from .group_linear import GroupLinear
from .norms import ACT_TYPES, NORM_TYPES, RecurrentDropout, build_activation, build_norm

__all__ = [
    "ACT_TYPES", "NORM_TYPES", "BlockOptions", "DExTraEmbedding", "DExTraUnit", "DeLighTBlock", "GroupLinear",
    "RecurrentDropout", "SingleHeadCrossAttention", "SingleHeadSelfAttention", "block_schedule", "build_activation",
    "build_norm", "dextra_schedule",
]
