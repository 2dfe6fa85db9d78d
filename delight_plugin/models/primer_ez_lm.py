"""``primer_ez_lm``: Primer EZ (So et al., 2021) on the shared skeleton.

Two changes to the pre-norm Transformer LM: a squared-ReLU FFN and multi-DConv-head attention
(``modules/dconv.py``). Named sizes: ``primer_ez_lm`` (the config defaults) has fairseq ``transformer_lm``'s sizes,
``primer_ez_lm_gpt`` those of ``transformer_lm_gpt`` (768 wide, 12 layers, 12 heads, FFN 3072).
"""
import functools
from dataclasses import dataclass, field

from fairseq.dataclass import ChoiceEnum
from fairseq.models import register_model, register_model_architecture
from fairseq.utils import safe_getattr

from ..modules.blocks import plain_block
from ..modules.dconv import CONV_VARIANTS, MultiDConvHeadAttention
from ..modules.feedforward import ACTIVATIONS
from .efficient_lm import EfficientLanguageModel, config_error
from .plain_lm import PlainLMConfig, validate_ffn, validate_heads


@dataclass
class PrimerEZConfig(PlainLMConfig):
    activation_fn: ChoiceEnum(sorted(ACTIVATIONS)) = field(
        default="relu_squared", metadata={"help": "FFN activation (Primer: relu_squared)"})
    primer_conv_kernel_size: int = field(
        default=3, metadata={"help": "width K of the causal depthwise convolution after the q, k, v projections, 1 "
                                     "to --tokens-per-sample (taps further back than a sample only ever multiply "
                                     "padding)"})
    primer_conv_variant: ChoiceEnum(CONV_VARIANTS) = field(
        default="per-channel", metadata={"help": "kernel sharing: per-channel (one per channel of every head, "
                                                 "official Primer), per-head-dim (one per head dimension, shared "
                                                 "across heads), shared (one kernel per projection); q, k and v "
                                                 "always have their own: 3 d K, 3 d_head K or 3 K weights per layer"})


@register_model("primer_ez_lm", dataclass=PrimerEZConfig)
class PrimerEZLanguageModel(EfficientLanguageModel):
    # The depthwise kernels add 3 * dim * K parameters per layer: the plain sizes still match.
    presets = {
        "tiny": ["--decoder-embed-dim", "64", "--decoder-ffn-embed-dim", "256", "--decoder-layers", "2",
                 "--decoder-attention-heads", "4"],
        "small": ["--decoder-embed-dim", "256", "--decoder-ffn-embed-dim", "1024", "--decoder-layers", "4",
                  "--decoder-attention-heads", "4"],
        "base": ["--decoder-embed-dim", "512", "--decoder-ffn-embed-dim", "2048", "--decoder-layers", "6",
                 "--decoder-attention-heads", "8"],
    }

    @classmethod
    def validate_config(cls, cfg):
        super().validate_config(cfg)
        validate_heads(cfg)
        validate_ffn(cfg)
        if cfg.primer_conv_kernel_size is None or cfg.primer_conv_kernel_size < 1:
            raise config_error("primer_conv_kernel_size", cfg.primer_conv_kernel_size, "must be a positive integer")
        if cfg.primer_conv_kernel_size > cfg.max_target_positions:
            # taps further back than the sample is long only ever multiply the causal padding: never trained
            raise config_error("primer_conv_kernel_size", cfg.primer_conv_kernel_size,
                               f"must be at most the sequence length --tokens-per-sample ({cfg.max_target_positions})")
        if cfg.primer_conv_variant not in CONV_VARIANTS:
            raise config_error("primer_conv_variant", cfg.primer_conv_variant, f"choose one of {list(CONV_VARIANTS)}")

    @classmethod
    def build_block(cls, cfg, layer_index):
        attention = functools.partial(MultiDConvHeadAttention, kernel_size=cfg.primer_conv_kernel_size,
                                      conv_variant=str(cfg.primer_conv_variant))
        return plain_block(cfg, attention_cls=attention)


def _set_sizes(args, dim: int, ffn: int, layers: int, heads: int):
    """Fill in whatever the user did not set on the command line."""
    args.decoder_embed_dim = safe_getattr(args, "decoder_embed_dim", dim)
    args.decoder_ffn_embed_dim = safe_getattr(args, "decoder_ffn_embed_dim", ffn)
    args.decoder_layers = safe_getattr(args, "decoder_layers", layers)
    args.decoder_attention_heads = safe_getattr(args, "decoder_attention_heads", heads)
    args.activation_fn = safe_getattr(args, "activation_fn", "relu_squared")


@register_model_architecture("primer_ez_lm", "primer_ez_lm_gpt")
def primer_ez_lm_gpt(args):
    _set_sizes(args, dim=768, ffn=3072, layers=12, heads=12)  # fairseq transformer_lm_gpt
