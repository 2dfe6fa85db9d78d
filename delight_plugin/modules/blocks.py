"""The pre-norm Transformer block: the reference every other block is tested against, and the
block of the Primer, Hourglass and Linformer LMs and of the Linformer translation model."""
from typing import Optional

from torch import Tensor, nn

from .cache import DecodingContext
from .dropout import Dropout
from .recompute import recomputed


class PreNormBlock(nn.Module):
    """x + Dropout(Attn(LN(x))), then, in a translation decoder (``add_source_attention``),
    x + Dropout(SourceAttn(LN(x))), then x + Dropout(FFN(LN(x))) unless ``ffn`` is None.

    ``checkpoint_sublayers`` recomputes each sublayer in the backward pass (while training).
    """

    def __init__(self, dim: int, attention: nn.Module, ffn: Optional[nn.Module], dropout: float,
                 checkpoint_sublayers: bool = False):
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attention = attention
        self.ffn_norm = nn.LayerNorm(dim) if ffn is not None else None
        self.ffn = ffn
        self.dropout = Dropout(dropout, module_name=type(self).__name__)
        self.checkpoint_sublayers = checkpoint_sublayers
        self.source_norm = self.source_attention = None

    def add_source_attention(self, attention: nn.Module) -> None:
        """Make this a translation decoder block: ``attention(x, ctx)`` reads ``ctx.encoder_out``."""
        self.source_norm = nn.LayerNorm(self.attn_norm.normalized_shape[0])
        self.source_attention = attention

    def _attend(self, x: Tensor, ctx: DecodingContext) -> Tensor:
        return self.attention(self.attn_norm(x), ctx)

    def _attend_source(self, x: Tensor, ctx: DecodingContext) -> Tensor:
        return self.source_attention(self.source_norm(x), ctx)

    def _feed_forward(self, x: Tensor) -> Tensor:
        return self.ffn(self.ffn_norm(x))

    def forward(self, x: Tensor, ctx: DecodingContext) -> Tensor:
        def sublayer(fn, *args):
            return self.dropout(recomputed(self, ctx, fn, *args) if self.checkpoint_sublayers else fn(*args))

        x = x + sublayer(self._attend, x, ctx)
        if self.source_attention is not None:
            x = x + sublayer(self._attend_source, x, ctx)
        return x if self.ffn is None else x + sublayer(self._feed_forward, x)
