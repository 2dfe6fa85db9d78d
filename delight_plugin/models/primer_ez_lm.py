"""``primer_ez_lm``: Primer EZ (So et al., 2021) on the shared skeleton.

Two changes to the pre-norm Transformer LM: a squared-ReLU FFN and multi-DConv-head attention
(``modules/dconv.py``). Named sizes: ``primer_ez_lm`` (the config defaults) has fairseq ``transformer_lm``'s sizes,
``primer_ez_lm_gpt`` those of ``transformer_lm_gpt`` (768 wide, 12 layers, 12 heads, FFN 3072).
"""
from dataclasses import dataclass, field

from fairseq.dataclass import ChoiceEnum
from fairseq.models import register_model

from ..modules.dconv import CONV_VARIANTS, MultiDConvHeadAttention
from ..modules.feedforward import ACTIVATIONS
from ..presets import SIZES, register_sized_arch, size_flags
from .plain_lm import PlainLanguageModel, PlainLMConfig
from .validation import POSITIVE_INT, check


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
class PrimerEZLanguageModel(PlainLanguageModel):
    # The depthwise kernels add 3 * dim * K parameters per layer: the plain sizes still match. Base is
    # spelled out so that it also sizes primer_ez_lm_gpt down.
    presets = {size: size_flags(size) for size in SIZES}

    attention_cls = MultiDConvHeadAttention

    @classmethod
    def validate_config(cls, cfg):
        super().validate_config(cfg)
        check(cfg, POSITIVE_INT, "primer_conv_kernel_size")
        if cfg.primer_conv_kernel_size > cfg.max_target_positions:
            # taps further back than the sample is long only ever multiply the causal padding: never trained
            raise cls.config_error("primer_conv_kernel_size", cfg.primer_conv_kernel_size,
                                   f"must be at most the sequence length --tokens-per-sample ({cfg.max_target_positions})")

    @classmethod
    def build_attention(cls, cfg, layer_index):
        return super().build_attention(cfg, layer_index, kernel_size=cfg.primer_conv_kernel_size,
                                       conv_variant=str(cfg.primer_conv_variant))


register_sized_arch("primer_ez_lm", "primer_ez_lm_gpt", "gpt", activation_fn="relu_squared")  # transformer_lm_gpt
