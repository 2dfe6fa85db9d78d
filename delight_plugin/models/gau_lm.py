"""``gau_lm``: a stack of gated attention units (Hua et al., 2022) on the shared skeleton.

``gau_lm`` is FLASH-Quad (full causal quadratic attention); ``gau_lm_flash`` is FLASH (quadratic
attention within groups of 256 plus causal linear attention across groups). A GAU has about
6 d^2 parameters, half a Transformer layer, so the defaults stack 12 GAUs where fairseq's
``transformer_lm`` has 6 layers. The block and both attentions live in ``modules/gau.py``.
"""
from dataclasses import dataclass, field

from fairseq.dataclass import ChoiceEnum
from fairseq.models import register_model, register_model_architecture
from fairseq.utils import safe_getattr

from ..modules.gau import ATTENTION_FNS, GAU_MODES, GAUBlock
from ..modules.positions import POSITION_SCHEMES
from .efficient_lm import EfficientLanguageModel, EfficientLMConfig, config_error
from .validation import POSITIVE_INT, check


@dataclass
class GAUConfig(EfficientLMConfig):
    decoder_layers: int = field(default=12, metadata={"help": "number of GAUs (two per Transformer layer)"})
    position_scheme: ChoiceEnum(POSITION_SCHEMES) = field(
        default="rotary", metadata={"help": "rotary (the paper's default) rotates all s dims of every query and key; "
                                            "learned / sinusoidal add to the embeddings instead; none"})
    gau_mode: ChoiceEnum(GAU_MODES) = field(
        default="quad", metadata={"help": "quad: full causal quadratic attention (FLASH-Quad); chunked: exact "
                                          "attention within groups plus linear attention across them (FLASH)"})
    gau_group_size: int = field(
        default=256, metadata={"help": "group (chunk) length C in chunked mode, unused in quad mode; chunked logits "
                                       "and the linear part are divided by C. Longer than --tokens-per-sample is "
                                       "accepted: a sample is then one padded group (exact attention with the 1/C "
                                       "scale), and the linear attention across groups only joins, untrained, on "
                                       "longer inputs"})
    gau_expansion_factor: float = field(default=2.0, metadata={"help": "width of U and V as a multiple of the "
                                                                      "model width (e = factor * d)"})
    gau_qk_dim: int = field(
        default=128, metadata={"help": "width s of the shared query/key representation Z (even with rotary positions)"})
    gau_attention_fn: ChoiceEnum(sorted(ATTENTION_FNS)) = field(
        default="relu_squared", metadata={"help": "attention weight function: relu_squared, or Mega's laplace "
                                                  "0.5 (1 + erf((x - sqrt(1/2)) / (sigma sqrt(2)))), sigma^2 = 1/(4 pi)"})
    gau_quad_scale_length: int = field(
        default=512, metadata={"help": "quad mode divides q.k by this fixed length L (the paper divides by the "
                                       "sequence length n, which breaks causal prefix consistency; the default is "
                                       "its n at its 512-token training length)"})
    gau_no_relative_bias: bool = field(
        default=False, metadata={"help": "leave out the relative position bias b of the paper's relu^2(q.k / L + b) "
                                         "(T5-style: 32 buckets, max distance 128, one scalar per bucket per GAU, "
                                         "initialised N(0, 0.02)); without it the GAUs start switched off "
                                         "(docs/gau.md)"})
    gau_token_shift: bool = field(
        default=False, metadata={"help": "RWKV token shift: the first half of the normalised channels take the "
                                         "previous token's values"})


def expansion_dim(cfg) -> int:
    return int(round(cfg.gau_expansion_factor * cfg.decoder_embed_dim))


@register_model("gau_lm", dataclass=GAUConfig)
class GAULanguageModel(EfficientLanguageModel):
    # Two GAUs per baseline layer; s shrinks with the width so that tiny/small stay within 10%.
    presets = {
        "tiny": ["--decoder-embed-dim", "64", "--decoder-layers", "4", "--gau-qk-dim", "16"],
        "small": ["--decoder-embed-dim", "256", "--decoder-layers", "8", "--gau-qk-dim", "64"],
        "base": ["--decoder-embed-dim", "512", "--decoder-layers", "12", "--gau-qk-dim", "128"],
    }

    @classmethod
    def validate_config(cls, cfg):
        super().validate_config(cfg)
        check(cfg, POSITIVE_INT, "gau_group_size", "gau_qk_dim", "gau_quad_scale_length")
        if cfg.gau_expansion_factor is None or expansion_dim(cfg) < 1:
            raise config_error("gau_expansion_factor", cfg.gau_expansion_factor,
                               "must be positive (U and V are expansion * --decoder-embed-dim wide)")
        if cfg.position_scheme == "rotary" and cfg.gau_qk_dim % 2:
            raise config_error("gau_qk_dim", cfg.gau_qk_dim, "must be even with --position-scheme rotary")

    @classmethod
    def build_blocks(cls, cfg):
        return [cls._block(cfg) for _ in range(cfg.decoder_layers)]

    @classmethod
    def _block(cls, cfg) -> GAUBlock:
        return GAUBlock(
            cfg.decoder_embed_dim, expansion_dim(cfg), cfg.gau_qk_dim, mode=str(cfg.gau_mode),
            group_size=cfg.gau_group_size, quad_scale_length=cfg.gau_quad_scale_length,
            attention_fn=str(cfg.gau_attention_fn), rotary=cfg.position_scheme == "rotary",
            relative_bias=not cfg.gau_no_relative_bias, token_shift=cfg.gau_token_shift, dropout=cfg.dropout,
            attention_dropout=cfg.attention_dropout, activation_dropout=cfg.activation_dropout,
            norm=cls.build_norm(cfg, cfg.decoder_embed_dim))


@register_model_architecture("gau_lm", "gau_lm_flash")
def gau_lm_flash(args):
    """FLASH with the paper's defaults: groups of 256, s = 128, e = 2d, relu^2, rotary."""
    args.gau_mode = safe_getattr(args, "gau_mode", "chunked")
    args.gau_group_size = safe_getattr(args, "gau_group_size", 256)
