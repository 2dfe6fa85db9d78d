"""Multi-head self-attention on scaled dot-product attention (dropout_attention.py): causal with a key/value cache
(decoders, LMs), or over the whole sequence with a padding mask (translation encoders)."""
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from .cache import CachedModule, DecodingContext
from .dropout_attention import scaled_dot_product_attention
from .positions import RotaryEmbedding


def causal_mask(num_queries: int, num_keys: int, device) -> Optional[Tensor]:
    """Boolean [T, P+T] mask for T new queries after P cached keys (None when T == 1)."""
    if num_queries == 1:
        return None
    past = num_keys - num_queries
    keys = torch.arange(num_keys, device=device)
    queries = torch.arange(num_queries, device=device) + past
    return keys[None, :] <= queries[:, None]


def keep_mask(padding_mask: Optional[Tensor]) -> Optional[Tensor]:
    """fairseq's [B, S] padding mask (True = pad) -> SDPA's [B, 1, 1, S] keep mask (None: no pads)."""
    return None if padding_mask is None or not padding_mask.any() else ~padding_mask[:, None, None, :]


class CausalSelfAttention(CachedModule):
    """Causal self-attention. Subclasses change how q, k, v are made by overriding ``project_qkv``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        dropout: float = 0.0,
        rotary_dim: int = 0,
        bias: bool = True,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} must be divisible by the number of heads {num_heads}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.dropout = dropout
        self.qkv_proj = nn.Linear(dim, 3 * dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.rotary = RotaryEmbedding(rotary_dim) if rotary_dim else None
        nn.init.xavier_uniform_(self.qkv_proj.weight, gain=2**-0.5)
        nn.init.xavier_uniform_(self.out_proj.weight)

    def project_qkv(self, x: Tensor, ctx: DecodingContext, cache: Dict[str, Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """[B, T, dim] -> q, k, v each [B, T, dim]. ``cache`` may be read and updated."""
        return self.qkv_proj(x).chunk(3, dim=-1)

    def split_heads(self, x: Tensor, ctx: DecodingContext, cache: Dict[str, Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """q, k, v [B, H, T, head_dim] of x [B, T, dim] (``project_qkv``), rotated under rotary positions."""
        bsz, seq_len, _ = x.shape
        q, k, v = (t.view(bsz, seq_len, self.num_heads, self.head_dim).transpose(1, 2)
                   for t in self.project_qkv(x, ctx, cache))
        if self.rotary is not None:
            q, k = self.rotary(q, ctx.positions, ctx), self.rotary(k, ctx.positions, ctx)
        return q, k, v

    def merge_heads(self, out: Tensor) -> Tensor:
        """The heads' outputs [B, H, T, head_dim] -> the output projection [B, T, dim]."""
        bsz, _, seq_len, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(bsz, seq_len, self.dim))

    def forward(self, x: Tensor, ctx: DecodingContext) -> Tensor:
        seq_len = x.size(1)
        cache = self.get_cache(ctx.incremental_state)
        q, k, v = self.split_heads(x, ctx, cache)
        k, v = self.cached_keys_values(ctx.incremental_state, k, v, dim=2, cache=cache)
        past = k.size(2) - seq_len
        out = scaled_dot_product_attention(
            q, k, v,
            attn_mask=causal_mask(seq_len, k.size(2), x.device) if past else None,
            is_causal=past == 0 and seq_len > 1,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.merge_heads(out)


class BidirectionalSelfAttention(CausalSelfAttention):
    """Every position attends to every non-pad position of its sentence (a translation encoder's
    full attention). Reads the padding mask from ``ctx.padding_mask`` (a ``Seq2SeqContext``)."""

    def forward(self, x: Tensor, ctx: DecodingContext) -> Tensor:
        q, k, v = self.split_heads(x, ctx, {})
        out = scaled_dot_product_attention(q, k, v, attn_mask=keep_mask(getattr(ctx, "padding_mask", None)),
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.merge_heads(out)
