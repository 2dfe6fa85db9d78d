"""The DeLighT block and block-wise scaling.

Block = DExTra (d_m -> d_m/2) -> single-head self-attention -> out-projection to d_m, then
(decoders of translation models) encoder-decoder attention from the d_m stream, then the light FFN.
Each sub-layer is residual, with the norm before (pre-norm) or after (post-norm, the reference's
translation default) the residual add.
"""
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
from torch import Tensor, nn

from ..cache import DecodingContext
from ..dropout import Dropout
from .attention import SingleHeadCrossAttention, SingleHeadSelfAttention
from .dextra import DExTraUnit
from .ffn import LightFFN
from .norms import build_norm


@dataclass
class BlockOptions:
    """What every block of one stack shares (the per-block depth and width come from the schedule)."""
    dim: int
    max_groups: int
    ffn_reduction: int
    norm_type: str = "ln"
    act_type: str = "swish"
    normalize_before: bool = False
    shuffle: bool = True
    group_schedule: str = "reference"
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    ffn_dropout: float = 0.1
    delight_dropout: float = 0.0
    causal: bool = True
    cross_attention: bool = False
    rotary: bool = False


def block_schedule(scaling: str, num_blocks: int, min_depth: int, max_depth: int,
                   width_mult: float) -> List[Tuple[int, float]]:
    """(N_b, w_b) per block. ``block``: N_b = int(linspace(N_min, N_max, B)[b]) (truncated, as the
    reference) and w_b = round(linspace(w_m, w_m + N_max/N_min - 1, B)[b], 3): shallow and narrow
    near the input, deep and wide near the output. ``uniform``: every block gets (N_max, w_m)."""
    if scaling == "uniform":  # validated: min_depth == max_depth
        return [(max_depth, width_mult)] * num_blocks
    # numpy's linspace, so that the truncation lands exactly where the reference's does
    depths = np.linspace(min_depth, max_depth, num_blocks).astype(int)
    widths = np.linspace(width_mult, width_mult + max_depth / min_depth - 1.0, num_blocks)
    return [(int(n), round(float(w), 3)) for n, w in zip(depths, widths)]


class DeLighTBlock(nn.Module):
    def __init__(self, opts: BlockOptions, depth: int, width: float):
        super().__init__()
        dim, proj_dim = opts.dim, opts.dim // 2
        self.normalize_before = opts.normalize_before
        self.dextra = DExTraUnit(dim, proj_dim, proj_dim, width, depth, opts.max_groups, opts.norm_type,
                                 opts.act_type, opts.delight_dropout, opts.shuffle, opts.group_schedule)
        self.self_attn = SingleHeadSelfAttention(proj_dim, dim, opts.attention_dropout, opts.causal, opts.rotary)
        self.self_attn_norm = build_norm(opts.norm_type, dim)
        self.cross_attn = self.cross_attn_norm = None
        if opts.cross_attention:
            self.cross_attn = SingleHeadCrossAttention(dim, proj_dim, opts.attention_dropout)
            self.cross_attn_norm = build_norm(opts.norm_type, dim)
        self.ffn = LightFFN(dim, opts.ffn_reduction, opts.act_type, opts.activation_dropout, opts.ffn_dropout)
        self.ffn_norm = build_norm(opts.norm_type, dim)
        self.dropout = Dropout(opts.dropout)

    def _residual(self, x: Tensor, norm: nn.Module, sublayer) -> Tensor:
        if self.normalize_before:
            return x + sublayer(norm(x))
        return norm(x + sublayer(x))

    def forward(self, x: Tensor, ctx: DecodingContext) -> Tensor:
        """``ctx`` may carry ``padding_mask`` (encoder self-attention) and ``encoder_out`` [B, S, d_m]
        with ``encoder_padding_mask`` (decoder cross-attention); see :class:`Seq2SeqContext`."""
        return self.forward_with_alignment(x, ctx, need_weights=False)[0]

    def forward_with_alignment(self, x: Tensor, ctx: DecodingContext,
                               need_weights: bool = True) -> Tuple[Tensor, Optional[Tensor]]:
        """(output, cross-attention weights [B, T, S] or None): the weights when ``need_weights`` and
        the block has encoder-decoder attention."""
        padding_mask = getattr(ctx, "padding_mask", None)
        x = self._residual(x, self.self_attn_norm,
                           lambda h: self.dropout(self.self_attn(self.dextra(h), ctx, padding_mask)))
        weights = None
        if self.cross_attn is not None:
            def cross_attention(h):
                nonlocal weights
                out, weights = self.cross_attn(h, ctx.encoder_out, ctx.encoder_padding_mask, ctx.incremental_state,
                                               need_weights)
                return self.dropout(out)
            x = self._residual(x, self.cross_attn_norm, cross_attention)
        return self._residual(x, self.ffn_norm, self.ffn), weights

