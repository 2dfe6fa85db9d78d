"""``plain_lm``: a pre-norm Transformer LM on the shared skeleton (the reference architecture).

It is what the conformance suite holds every other block to, and a fused-attention
baseline beside fairseq's own ``transformer_lm``.
"""
from dataclasses import dataclass, field

from fairseq.dataclass import ChoiceEnum
from fairseq.models import register_model

from ..modules.blocks import plain_block
from ..modules.feedforward import ACTIVATIONS
from .efficient_lm import EfficientLanguageModel, EfficientLMConfig, config_error


@dataclass
class PlainLMConfig(EfficientLMConfig):
    decoder_ffn_embed_dim: int = field(default=2048, metadata={"help": "FFN hidden width"})
    decoder_attention_heads: int = field(
        default=8, metadata={"help": "number of attention heads; must divide --decoder-embed-dim (an even head "
                                     "dimension with rotary positions)"})
    activation_fn: ChoiceEnum(sorted(ACTIVATIONS)) = field(default="relu", metadata={"help": "FFN activation"})


def validate_ffn(cfg) -> None:
    if cfg.decoder_ffn_embed_dim is None or cfg.decoder_ffn_embed_dim < 1:
        raise config_error("decoder_ffn_embed_dim", cfg.decoder_ffn_embed_dim, "must be a positive integer")
    if cfg.activation_fn not in ACTIVATIONS:
        raise config_error("activation_fn", cfg.activation_fn, f"choose one of {sorted(ACTIVATIONS)}")


def validate_heads(cfg) -> None:
    if cfg.decoder_attention_heads < 1 or cfg.decoder_embed_dim % cfg.decoder_attention_heads:
        raise config_error("decoder_attention_heads", cfg.decoder_attention_heads,
                           f"must be a positive divisor of --decoder-embed-dim ({cfg.decoder_embed_dim})")
    if cfg.position_scheme == "rotary" and (cfg.decoder_embed_dim // cfg.decoder_attention_heads) % 2:
        raise config_error("position_scheme", "rotary", "needs an even head dimension")


@register_model("plain_lm", dataclass=PlainLMConfig)
class PlainLanguageModel(EfficientLanguageModel):
    presets = {
        "tiny": ["--decoder-embed-dim", "64", "--decoder-ffn-embed-dim", "256", "--decoder-layers", "2",
                 "--decoder-attention-heads", "4"],
        "small": ["--decoder-embed-dim", "256", "--decoder-ffn-embed-dim", "1024", "--decoder-layers", "4",
                  "--decoder-attention-heads", "4"],
        "base": [],
    }

    @classmethod
    def validate_config(cls, cfg):
        super().validate_config(cfg)
        validate_heads(cfg)
        validate_ffn(cfg)

    @classmethod
    def build_block(cls, cfg, layer_index):
        return plain_block(cfg)

