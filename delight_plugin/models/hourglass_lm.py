"""``hourglass_lm``: the Hourglass hierarchical Transformer LM (Nawrot et al., 2021) on the shared skeleton.

``--hourglass-structure`` uses the paper's notation, layers@total-shortening per level:
``2@1,8@3,2@1`` is 2 full-resolution layers, 8 layers on a 3x shorter sequence, 2 full-resolution
layers; ``1@1,2@2,4@8,2@2,1@1`` nests a 4x shorter level inside a 2x one. The blocks are the
plain pre-norm Transformer blocks; the hierarchy lives in ``modules/hourglass.py``.
"""
from dataclasses import dataclass, field

from fairseq.dataclass import ChoiceEnum
from fairseq.models import register_model

from ..modules.hourglass import (
    ATTENTION_DOWN_BASES, ATTENTION_UP_BASES, DOWNSAMPLINGS, UPSAMPLINGS, AttentionPooling, AttentionUpsampling,
    AvgPooling, CrossAttentionBlock, HourglassLevel, LinearPooling, LinearUpsampling, RepeatUpsampling,
    parse_structure)
from ..presets import size_flags
from .plain_lm import PlainLanguageModel, PlainLMConfig


@dataclass
class HourglassLMConfig(PlainLMConfig):
    hourglass_structure: str = field(
        default="1@1,4@3,1@1", metadata={"help": "L@F = L layers at total shortening F, per level, comma separated, "
                                                 "e.g. 2@1,8@3,2@1 or nested 1@1,2@2,4@8,2@2,1@1 (replaces "
                                                 "--decoder-layers). Checked at build time: an odd number of levels "
                                                 ">= 3, the factors a palindrome starting and ending at 1, each "
                                                 "factor towards the middle a multiple > 1 of the previous one, at "
                                                 "least one layer in the middle, the largest factor below "
                                                 "--tokens-per-sample"})
    hourglass_downsampling: ChoiceEnum(DOWNSAMPLINGS) = field(
        default="avg", metadata={"help": "shortening by k: avg (window mean), linear (concatenate the k*C window, "
                                         "project to C), or attention (the pooled token attends to its own window, "
                                         "then an FFN)"})
    hourglass_upsampling: ChoiceEnum(UPSAMPLINGS) = field(
        default="linear", metadata={"help": "upsampling by k: repeat (copy each token k times), linear (C -> k*C), "
                                            "or attention (expansion, then attention over the shortened tokens j <= "
                                            "t // k, then an FFN)"})
    hourglass_attention_down_base: ChoiceEnum(ATTENTION_DOWN_BASES) = field(
        default="avg", metadata={"help": "the pooling inside --hourglass-downsampling attention"})
    hourglass_attention_up_base: ChoiceEnum(ATTENTION_UP_BASES) = field(
        default="linear", metadata={"help": "the expansion inside --hourglass-upsampling attention"})


def resampling_block(cfg) -> CrossAttentionBlock:
    return CrossAttentionBlock(cfg.decoder_embed_dim, cfg.decoder_attention_heads, cfg.decoder_ffn_embed_dim,
                               cfg.activation_fn, cfg.dropout, cfg.attention_dropout)


def build_shortening(cfg, factor: int):
    method = str(cfg.hourglass_downsampling)
    base = method if method != "attention" else str(cfg.hourglass_attention_down_base)
    pool = AvgPooling() if base == "avg" else LinearPooling(cfg.decoder_embed_dim, factor)
    return AttentionPooling(pool, resampling_block(cfg), cfg.decoder_embed_dim) if method == "attention" else pool


def build_upsampling(cfg, factor: int):
    """(expansion, optional attention refinement)."""
    method = str(cfg.hourglass_upsampling)
    base = method if method != "attention" else str(cfg.hourglass_attention_up_base)
    expand = RepeatUpsampling(factor) if base == "repeat" else LinearUpsampling(cfg.decoder_embed_dim, factor)
    return expand, (AttentionUpsampling(factor, resampling_block(cfg)) if method == "attention" else None)


@register_model("hourglass_lm", dataclass=HourglassLMConfig)
class HourglassLanguageModel(PlainLanguageModel):
    # Matched to transformer_lm's sizes (tests/test_hourglass.py checks the 10% band), the structure in place of
    # the depth: the shortened layers run at factor 3 and linear upsampling adds k*d^2 per level, so tiny trades
    # FFN width for its third layer. Base puts 4 of its 6 layers on the short sequence (2@1,2@3,2@1 has the same
    # size but only 1.4x the speed at 2048).
    presets = {
        "tiny": size_flags("tiny", decoder_ffn_embed_dim=96, decoder_layers=None)
        + ["--hourglass-structure", "1@1,1@3,1@1"],
        "small": size_flags("small", decoder_layers=None) + ["--hourglass-structure", "1@1,2@3,1@1"],
        "base": size_flags("base", decoder_layers=None) + ["--hourglass-structure", "1@1,4@3,1@1"],
    }

    @classmethod
    def validate_config(cls, cfg):
        super().validate_config(cfg)
        error = cls.config_error
        try:
            structure = parse_structure(cfg.hourglass_structure)
        except ValueError as e:
            raise error("hourglass_structure", cfg.hourglass_structure, str(e)) from None
        shortening = max(factor for _, factor in structure)
        if shortening >= cfg.max_target_positions:
            # the innermost level would hold one token, a summary of step 0 only: no hierarchy is left
            raise error("hourglass_structure", cfg.hourglass_structure,
                        f"the shortening {shortening} must be smaller than the sequence length "
                        f"--tokens-per-sample ({cfg.max_target_positions}): a level shortened that much "
                        "sees only the first token")

    @classmethod
    def build_blocks(cls, cfg):
        """Full-resolution pre layers, the (recursive) shortened hierarchy as one module, post layers."""
        return cls._around(cfg, parse_structure(cfg.hourglass_structure), 0)

    @classmethod
    def _around(cls, cfg, structure, depth: int) -> list:
        """Level ``depth``'s layers before the next shorter level, that level, and its layers after it
        (plain_lm's blocks, numbered within their level)."""
        pre, post = structure[depth][0], structure[-1 - depth][0]
        return ([cls._block(cfg, i) for i in range(pre)] + [cls.build_level(cfg, structure, depth + 1)]
                + [cls._block(cfg, pre + i) for i in range(post)])

    @classmethod
    def build_level(cls, cfg, structure, depth: int) -> HourglassLevel:
        middle = len(structure) // 2
        input_stride = structure[depth - 1][1]
        factor = structure[depth][1] // input_stride
        if depth == middle:
            layers = [cls._block(cfg, i) for i in range(structure[depth][0])]
        else:
            layers = cls._around(cfg, structure, depth)
        expand, up_attention = build_upsampling(cfg, factor)
        return HourglassLevel(cfg.decoder_embed_dim, factor, input_stride, layers, build_shortening(cfg, factor),
                              expand, up_attention, cfg.dropout)
