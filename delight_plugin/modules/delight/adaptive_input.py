"""The DeLighT reference's adaptive input: fairseq's ``AdaptiveInput`` with every band scaled.

The reference forks fairseq's ``AdaptiveInput`` so that band i's looked-up vectors (width
``initial_dim / factor**i``) are multiplied by sqrt(width) before their projection, unless
``--no-scale-embedding`` (its DeLighT embedding then uses ``embed_scale = 1``). The projections have
no bias, so scaling a band's projected output is the same map; this subclass does that per token.
"""
import math

import torch
from torch import Tensor

from ..adaptive_input import AdaptiveInputAnyDtype


class BandScaledAdaptiveInput(AdaptiveInputAnyDtype):
    """``AdaptiveInput`` whose band i output is multiplied by ``sqrt(dim_i)`` (1 with ``scale=False``)."""

    def __init__(self, vocab_size: int, padding_idx: int, initial_dim: int, factor: float, output_dim: int,
                 cutoff, scale: bool = True):
        super().__init__(vocab_size, padding_idx, initial_dim, factor, output_dim, list(cutoff), 0.0, 8)
        band_widths = [band[0].embedding_dim for band in self.embeddings]
        self.band_scales = [math.sqrt(width) if scale else 1.0 for width in band_widths]
        self.register_buffer("band_ends", torch.tensor(self.cutoff), persistent=False)

    def band_of(self, tokens: Tensor) -> Tensor:
        """Index of the band that holds each token id (band i holds ids in [cutoff[i-1], cutoff[i]))."""
        return torch.bucketize(tokens, self.band_ends, right=True)

    def forward(self, tokens: Tensor) -> Tensor:
        vectors = super().forward(tokens)
        # a fresh table in the output's dtype: a float buffer would keep float32 rounding after .double()
        table = torch.tensor(self.band_scales, dtype=vectors.dtype, device=vectors.device)
        scale = table[self.band_of(tokens)]
        return vectors * scale.unsqueeze(-1)
