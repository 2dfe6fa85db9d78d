"""``linformer_lm``: a causal Linformer language model (Wang et al. 2020) on the shared skeleton.

Keys and values are compressed along the sequence into k slots with prefix sums, so the model is
causal by construction and decodes with a fixed-size state (see ``modules/linformer.py`` and
docs/linformer.md). The flags mirror the linformer-pytorch reference: k, projection method,
parameter sharing, k reduced per layer, checkpoint level, full attention, optional FFN and an
intermediate output-projection width.
"""
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from fairseq.dataclass import ChoiceEnum
from fairseq.models import register_model
from torch import nn

from ..modules.blocks import PreNormBlock
from ..modules.linformer import PROJECTION_METHODS, CausalLinformerAttention, SequenceCompression
from .plain_lm import PlainLanguageModel, PlainLMConfig
from .validation import CHOICES_NOTE, POSITIVE_INT, check, config_error

SHARING_MODES = ("none", "headwise", "kv", "layerwise")
# The reference's C2 (checkpoint every head separately) needs a Python loop over heads; C1 already
# recomputes all heads of a sublayer at once. Whole-block checkpointing: --checkpoint-activations.
CHECKPOINT_LEVELS = ("C0", "C1")


@dataclass
class LinformerLMConfig(PlainLMConfig):
    linformer_k: int = field(
        default=256, metadata={"help": "compressed key/value slots k per head, 1 <= k <= --tokens-per-sample "
                                       "(linformer-pytorch: dim_k)"})
    linformer_method: ChoiceEnum(PROJECTION_METHODS) = field(
        default="learnable", metadata={"help": "how positions are compressed into slots: learnable, E is a k x N "
                                               "parameter; convolution, slot j pools block j of ceil(N/k) positions "
                                               "after a per-offset d_head x d_head channel mixing (Conv1d, kernel = "
                                               "stride = N/k); no-params, E is a fixed N(0, 1) buffer, saved in the "
                                               "checkpoint (linformer-pytorch: method)"})
    linformer_sharing: ChoiceEnum(SHARING_MODES) = field(
        default="layerwise", metadata={"help": "which compressions are shared: none (E and F per head and layer), "
                                               "headwise (one E and one F per layer), kv (E = F, one per layer), "
                                               "layerwise (one E for K and V of every layer): 2LH, 2L, L or 1 "
                                               "matrices for L layers of H heads (linformer-pytorch: "
                                               "parameter_sharing)"})
    linformer_k_reduce_by_layer: int = field(
        default=0, metadata={"help": "layer i uses max(1, k - i * this) slots; refused with layerwise sharing "
                                     "(linformer-pytorch's k_reduce_by_layer, which it silently ignores there)"})
    linformer_chunk_size: int = field(
        default=128, metadata={"help": "positions per chunk of the training-time prefix sum (speed/memory "
                                      "trade-off only; results are the same)"})
    linformer_full_attention: bool = field(
        default=False, metadata={"help": "exact causal softmax attention (SDPA) in every block instead, for "
                                         "comparison (linformer-pytorch: full_attention)"})
    linformer_no_ffn: bool = field(
        default=False, metadata={"help": "blocks without the feed-forward sublayer (linformer-pytorch: "
                                         "include_ff=False)"})
    linformer_out_proj_dim: Optional[int] = field(
        default=None, metadata={"help": "factor the attention output projection d -> m -> d through this width m "
                                        "(linformer-pytorch: w_o_intermediate_dim)"})
    linformer_checkpoint_level: ChoiceEnum(CHECKPOINT_LEVELS) = field(
        default="C0", metadata={"help": "C1: recompute the attention and FFN sublayers in backward "
                                        "(--checkpoint-activations recomputes whole blocks); linformer-pytorch's C2, "
                                        "each head on its own, is not offered: it needs a Python loop over heads, "
                                        "and C1 recomputes all heads at once (linformer-pytorch: checkpoint_level)",
                                CHOICES_NOTE: "(C2, per-head checkpointing, is not offered)"})


def layer_slots(cfg, layer_index: int, slots: Optional[int] = None) -> int:
    """Layer i's slots: max(1, k - i * --linformer-k-reduce-by-layer), k = ``slots`` or --linformer-k."""
    return max(1, (slots or cfg.linformer_k) - layer_index * cfg.linformer_k_reduce_by_layer)


def validate_linformer(cfg, max_positions: int, limit: str) -> None:
    """The Linformer flags' own rules (``check_choices`` covers their choices); ``limit`` names what
    bounds --linformer-k (at most ``max_positions``)."""
    if not 1 <= cfg.linformer_k <= max_positions:
        raise config_error("linformer_k", cfg.linformer_k, f"must be between 1 and {limit}")
    if cfg.linformer_k_reduce_by_layer < 0:
        raise config_error("linformer_k_reduce_by_layer", cfg.linformer_k_reduce_by_layer, "must be >= 0")
    if cfg.linformer_k_reduce_by_layer and cfg.linformer_sharing == "layerwise":
        raise config_error("linformer_k_reduce_by_layer", cfg.linformer_k_reduce_by_layer,
                           "needs one compression per layer: use --linformer-sharing none, headwise or kv")
    check(cfg, POSITIVE_INT, "linformer_chunk_size")
    if cfg.linformer_out_proj_dim is not None:
        check(cfg, POSITIVE_INT, "linformer_out_proj_dim")


@register_model("linformer_lm", dataclass=LinformerLMConfig)
class LinformerLanguageModel(PlainLanguageModel):
    # plain_lm's sizes; k is small enough that the layerwise-shared k x N compression stays within
    # the 10% parameter budget at --tokens-per-sample 512.
    presets = {size: PlainLanguageModel.presets[size] + ["--linformer-k", k]
               for size, k in (("tiny", "16"), ("small", "128"), ("base", "256"))}

    # What build_attention makes (attention_cls: with --linformer-full-attention); a translation
    # encoder's builder swaps in the non-causal modules.
    linformer_attention_cls = CausalLinformerAttention
    length_flag = "--tokens-per-sample"  # named when an input is longer than the compression

    @classmethod
    def validate_config(cls, cfg):
        super().validate_config(cfg)
        length = cfg.max_target_positions
        validate_linformer(cfg, length, f"the sequence length --tokens-per-sample ({length})")

    @classmethod
    def trained_length_limit(cls, cfg) -> Optional[int]:
        """The compression E (k x N) covers the N training positions, whatever --linformer-method."""
        if not cfg.linformer_full_attention:
            return cfg.max_target_positions or cfg.tokens_per_sample
        return super().trained_length_limit(cfg)

    @classmethod
    def build_blocks(cls, cfg) -> List[nn.Module]:
        """``--linformer-sharing layerwise``: one compression, built first, for every layer."""
        layerwise = cfg.linformer_sharing == "layerwise" and not cfg.linformer_full_attention
        shared = cls.build_compression(cfg, 0, matrices=1) if layerwise else None
        return [cls._block(cfg, i, shared) for i in range(cfg.decoder_layers)]

    @classmethod
    def _block(cls, cfg, layer_index: int, shared: Optional[SequenceCompression] = None) -> PreNormBlock:
        """``shared``: the one compression of --linformer-sharing layerwise (built here if None)."""
        ffn = None if cfg.linformer_no_ffn else cls.build_ffn(cfg)  # before the attention: the order of its weights
        return PreNormBlock(cfg.decoder_embed_dim, cls.build_attention(cfg, layer_index, shared), ffn, cfg.dropout,
                            checkpoint_sublayers=cfg.linformer_checkpoint_level == "C1")

    @classmethod
    def build_compression(cls, cfg, layer_index: int, matrices: int) -> SequenceCompression:
        head_dim = cfg.decoder_embed_dim // cfg.decoder_attention_heads
        return SequenceCompression(cfg.linformer_method, layer_slots(cfg, layer_index), cfg.max_target_positions,
                                   head_dim, matrices, length_flag=cls.length_flag)

    @classmethod
    def key_value_compressions(cls, cfg, layer_index: int, shared: Optional[SequenceCompression], build
                             ) -> Tuple[SequenceCompression, SequenceCompression]:
        """One layer's key and value compressions under --linformer-sharing; ``build(cfg, layer_index,
        matrices)`` makes one, ``shared`` is the layerwise one (built here if None)."""
        if cfg.linformer_sharing == "layerwise":
            keys = shared if shared is not None else build(cfg, 0, matrices=1)
            return keys, keys
        matrices = cfg.decoder_attention_heads if cfg.linformer_sharing == "none" else 1
        keys = build(cfg, layer_index, matrices)
        return keys, keys if cfg.linformer_sharing == "kv" else build(cfg, layer_index, matrices)

    @classmethod
    def build_attention(cls, cfg, layer_index: int, shared: Optional[SequenceCompression] = None) -> nn.Module:
        dim = cfg.decoder_embed_dim
        if cfg.linformer_full_attention:
            attention = super().build_attention(cfg, layer_index)
        else:
            keys, values = cls.key_value_compressions(cfg, layer_index, shared, cls.build_compression)
            attention = super().build_attention(cfg, layer_index, cls.linformer_attention_cls, key_compression=keys,
                                                value_compression=values, chunk_size=cfg.linformer_chunk_size)
        if cfg.linformer_out_proj_dim:
            attention.out_proj = nn.Sequential(nn.Linear(dim, cfg.linformer_out_proj_dim),
                                               nn.Linear(cfg.linformer_out_proj_dim, dim))
        return attention
