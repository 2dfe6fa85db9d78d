"""``plain_lm``: a pre-norm Transformer LM on the shared skeleton (the reference architecture).

It is what the conformance suite holds every other block to, and a fused-attention
baseline beside fairseq's own ``transformer_lm``. Its model is the base of the other multi-head
LMs (Primer EZ, Hourglass, Linformer): they replace its attention or its stack of blocks.
"""
from dataclasses import dataclass, field

from fairseq.dataclass import ChoiceEnum
from fairseq.models import register_model
from torch import nn

from ..modules.attention import CausalSelfAttention
from ..modules.blocks import PreNormBlock
from ..modules.feedforward import ACTIVATIONS, FeedForward
from ..presets import BASE, size_flags
from .efficient_lm import EfficientLanguageModel, EfficientLMConfig
from .validation import POSITIVE_INT, check, check_heads


@dataclass
class PlainLMConfig(EfficientLMConfig):
    decoder_ffn_embed_dim: int = field(default=BASE.decoder_ffn_embed_dim, metadata={"help": "FFN hidden width"})
    decoder_attention_heads: int = field(
        default=BASE.decoder_attention_heads,
        metadata={"help": "number of attention heads; must divide --decoder-embed-dim (an even head "
                          "dimension with rotary positions)"})
    activation_fn: ChoiceEnum(sorted(ACTIVATIONS)) = field(default="relu", metadata={"help": "FFN activation"})


@register_model("plain_lm", dataclass=PlainLMConfig)
class PlainLanguageModel(EfficientLanguageModel):
    presets = {"tiny": size_flags("tiny"), "small": size_flags("small"), "base": []}  # base: the defaults

    attention_cls = CausalSelfAttention  # what build_attention makes

    @classmethod
    def validate_config(cls, cfg):
        super().validate_config(cfg)
        check_heads(cfg, "decoder", error=cls.config_error)
        check(cfg, POSITIVE_INT, "decoder_ffn_embed_dim", error=cls.config_error)

    @classmethod
    def build_attention(cls, cfg, layer_index: int, attention_cls=None, **options) -> nn.Module:
        """Self-attention at the model's width and heads: ``attention_cls`` (default: the class's) with ``options``."""
        dim, heads = cfg.decoder_embed_dim, cfg.decoder_attention_heads
        return (attention_cls or cls.attention_cls)(dim, heads, dropout=cfg.attention_dropout,
                                                    rotary_dim=dim // heads if cfg.position_scheme == "rotary" else 0,
                                                    **options)

    @classmethod
    def build_ffn(cls, cfg) -> FeedForward:
        return FeedForward(cfg.decoder_embed_dim, cfg.decoder_ffn_embed_dim, cfg.activation_fn, cfg.activation_dropout)

    @classmethod
    def build_blocks(cls, cfg):
        return [cls._block(cfg, i) for i in range(cfg.decoder_layers)]

    @classmethod
    def _block(cls, cfg, layer_index: int) -> PreNormBlock:
        attention = cls.build_attention(cfg, layer_index)  # before the FFN: the order its weights are drawn in
        return PreNormBlock(cfg.decoder_embed_dim, attention, cls.build_ffn(cfg), cfg.dropout)
