"""Multi-head encoder-decoder (source) attention: full softmax attention over the source tokens, or
over k slots of the compressed source (the non-causal Linformer memory of ``compressed_memory``).

The source keys and values (or their compressed slots: k per head instead of S) are computed once
per sentence and cached during incremental decoding; beam search reorders them by batch rows with
the rest of the decoding state (``CachedModule``).
"""
from typing import Dict, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from .attention import keep_mask
from .cache import CachedModule, Seq2SeqContext
from .linformer import SequenceCompression, compressed_memory


class SourceAttention(CachedModule):
    """Queries from the decoder stream (``dim`` wide), keys and values from the encoder output
    (``source_dim`` wide). With ``key_compression`` / ``value_compression`` the source is compressed
    to their slots; the encoder output must then be left-aligned (as ``LinformerEncoder`` returns it)."""

    def __init__(self, dim: int, source_dim: int, num_heads: int, dropout: float = 0.0,
                 key_compression: Optional[SequenceCompression] = None,
                 value_compression: Optional[SequenceCompression] = None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} must be divisible by the number of heads {num_heads}")
        self.dim, self.num_heads, self.head_dim, self.dropout = dim, num_heads, dim // num_heads, dropout
        self.q_proj = nn.Linear(dim, dim)
        self.kv_proj = nn.Linear(source_dim, 2 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.key_compression, self.value_compression = key_compression, value_compression
        for proj in (self.q_proj, self.kv_proj):  # the self-attention's initialisation
            nn.init.xavier_uniform_(proj.weight, gain=2**-0.5)
        nn.init.xavier_uniform_(self.out_proj.weight)

    def memory(self, encoder_out: Tensor, padding_mask: Optional[Tensor]) -> Dict[str, Tensor]:
        """What every decoding step reads: keys and values [B, H, S or k, D] and, where some are
        hidden, the SDPA keep mask [B, 1, 1, S or k]."""
        bsz, length, _ = encoder_out.shape
        k, v = (t.view(bsz, length, self.num_heads, self.head_dim).transpose(1, 2)
                for t in self.kv_proj(encoder_out).chunk(2, dim=-1))
        if self.key_compression is None:
            mask = keep_mask(padding_mask)
        else:
            k, v, visible = compressed_memory(k, v, self.key_compression, self.value_compression, padding_mask)
            mask = None if visible is None else visible[:, None, None, :]
        return {"keys": k, "values": v, **({} if mask is None else {"mask": mask})}

    def forward(self, x: Tensor, ctx: Seq2SeqContext) -> Tensor:
        memory = self.get_cache(ctx.incremental_state)
        if "keys" not in memory:
            memory = self.memory(ctx.encoder_out, ctx.encoder_padding_mask)
            self.set_cache(ctx.incremental_state, memory)
        bsz, length, _ = x.shape
        q = self.q_proj(x).view(bsz, length, self.num_heads, self.head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, memory["keys"], memory["values"], attn_mask=memory.get("mask"),
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(bsz, length, self.dim))
