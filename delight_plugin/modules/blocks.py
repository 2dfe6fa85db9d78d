"""The plain pre-norm Transformer block: the reference every other block is tested against."""
from fairseq.modules import FairseqDropout
from torch import Tensor, nn

from .attention import CausalSelfAttention
from .cache import DecodingContext
from .feedforward import FeedForward


class PreNormBlock(nn.Module):
    """x + Dropout(Attn(LN(x))), then x + Dropout(FFN(LN(x)))."""

    def __init__(self, dim: int, attention: nn.Module, ffn: nn.Module, dropout: float):
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attention = attention
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = ffn
        self.dropout = FairseqDropout(dropout, module_name=type(self).__name__)

    def forward(self, x: Tensor, ctx: DecodingContext) -> Tensor:
        x = x + self.dropout(self.attention(self.attn_norm(x), ctx))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


def plain_block(cfg, attention_cls=CausalSelfAttention) -> PreNormBlock:
    """A pre-norm attention + FFN block from the usual ``decoder_*`` fields of a config."""
    rotary_dim = cfg.decoder_embed_dim // cfg.decoder_attention_heads if cfg.position_scheme == "rotary" else 0
    attention = attention_cls(cfg.decoder_embed_dim, cfg.decoder_attention_heads,
                              dropout=cfg.attention_dropout, rotary_dim=rotary_dim)
    ffn = FeedForward(cfg.decoder_embed_dim, cfg.decoder_ffn_embed_dim, cfg.activation_fn, cfg.activation_dropout)
    return PreNormBlock(cfg.decoder_embed_dim, attention, ffn, cfg.dropout)
