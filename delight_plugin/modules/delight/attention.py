"""Single-head attention of the DeLighT block: self-attention on the DExTra output (d_m/2 wide) and
encoder-decoder attention from the d_m-wide stream, both on scaled dot-product attention (causal
self-attention with dropout on CPU: dropout_attention.py)."""
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..attention import causal_mask, keep_mask
from ..cache import CachedModule, DecodingContext
from ..dropout_attention import scaled_dot_product_attention
from ..positions import RotaryEmbedding


def _attend(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], causal: bool, dropout: float) -> Tensor:
    """[B, T, C] x [B, S, C] -> [B, T, C] with one head (scale C^-1/2, softmax in float in SDPA)."""
    out = scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1),
                                       attn_mask=mask, is_causal=causal, dropout_p=dropout)
    return out.squeeze(1)


class SingleHeadSelfAttention(CachedModule):
    """One Linear makes q, k, v (in that order); out_proj maps the head back to ``out_dim``.

    ``causal`` (decoders) masks future keys and caches k/v for incremental decoding; the encoder's
    version masks padded keys instead.
    """

    def __init__(self, dim: int, out_dim: int, dropout: float = 0.0, causal: bool = True, rotary: bool = False):
        super().__init__()
        self.dim, self.dropout, self.causal = dim, dropout, causal
        self.qkv_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, out_dim)
        self.rotary = RotaryEmbedding(dim) if rotary else None
        for proj in (self.qkv_proj, self.out_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self, x: Tensor, ctx: DecodingContext, padding_mask: Optional[Tensor] = None) -> Tensor:
        q, k, v = self.qkv_proj(x).chunk(3, dim=-1)
        if self.rotary is not None:
            q, k = self.rotary(q, ctx.positions, ctx), self.rotary(k, ctx.positions, ctx)
        dropout = self.dropout if self.training else 0.0
        if not self.causal:
            return self.out_proj(_attend(q, k, v, keep_mask(padding_mask), False, dropout))
        k, v = self.cached_keys_values(ctx.incremental_state, k, v, dim=1)
        seq_len, past = x.size(1), k.size(1) - x.size(1)
        mask = causal_mask(seq_len, k.size(1), x.device) if past else None
        return self.out_proj(_attend(q, k, v, mask, past == 0 and seq_len > 1, dropout))


class SingleHeadCrossAttention(CachedModule):
    """Encoder-decoder attention: q from the decoder stream (d_m -> d_m/2), k and v from the encoder
    output (d_m -> 2 x d_m/2). During incremental decoding k and v are computed once and cached."""

    def __init__(self, dim: int, proj_dim: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, proj_dim)
        self.kv_proj = nn.Linear(dim, 2 * proj_dim)
        self.out_proj = nn.Linear(proj_dim, dim)
        for proj in (self.q_proj, self.kv_proj, self.out_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self, x: Tensor, encoder_out: Tensor, encoder_padding_mask: Optional[Tensor],
                incremental_state=None, need_weights: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
        """(output, weights): ``weights`` [B, T, S] are the attention probabilities (before dropout),
        the alignment fairseq expects, when ``need_weights``; else None."""
        cache = self.get_cache(incremental_state)
        if "k" in cache:
            k, v = cache["k"], cache["v"]
        else:
            k, v = self.kv_proj(encoder_out).chunk(2, dim=-1)
            self.set_cache(incremental_state, {"k": k, "v": v})
        dropout = self.dropout if self.training else 0.0
        q = self.q_proj(x)
        out = self.out_proj(_attend(q, k, v, keep_mask(encoder_padding_mask), False, dropout))
        return out, (attention_weights(q, k, encoder_padding_mask) if need_weights else None)


@torch.no_grad()
def attention_weights(q: Tensor, k: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
    """softmax(q k^T / sqrt(C)) over the source, padded keys at 0: what SDPA computes inside, which it
    does not return. Only read by alignment, so no gradient."""
    scores = torch.bmm(q.float(), k.float().transpose(1, 2)) * q.size(-1) ** -0.5
    if padding_mask is not None:
        scores = scores.masked_fill(padding_mask[:, None, :], float("-inf"))
    return scores.softmax(dim=-1)
