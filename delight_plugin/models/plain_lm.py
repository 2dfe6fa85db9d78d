"""``plain_lm``: a pre-norm Transformer LM on the shared skeleton (the reference architecture).

It is what the conformance suite holds every other block to, and a fused-attention
baseline beside fairseq's own ``transformer_lm``.
"""
from dataclasses import dataclass, field

from fairseq.dataclass import ChoiceEnum
from fairseq.models import register_model

from ..modules.blocks import plain_block
from ..modules.feedforward import ACTIVATIONS
from .efficient_lm import EfficientLanguageModel, EfficientLMConfig
from .validation import POSITIVE_INT, check, check_heads


@dataclass
class PlainLMConfig(EfficientLMConfig):
    decoder_ffn_embed_dim: int = field(default=2048, metadata={"help": "FFN hidden width"})
    decoder_attention_heads: int = field(default=8, metadata={"help": "number of attention heads"})
    activation_fn: ChoiceEnum(sorted(ACTIVATIONS)) = field(default="relu", metadata={"help": "FFN activation"})


def validate_ffn(cfg) -> None:
    check(cfg, POSITIVE_INT, "decoder_ffn_embed_dim")


def validate_heads(cfg) -> None:
    check_heads(cfg, "decoder")


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

