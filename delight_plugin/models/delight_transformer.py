"""``delight_transformer``: the DeLighT encoder-decoder for translation (Mehta et al., ICLR 2021).

Encoder and decoder are stacks of the same :class:`DeLighTBlock` (non-causal with a padding mask /
causal with encoder-decoder attention), fed by DeLighT embeddings (look-up table of width
``--delight-emb-map-dim`` -> DExTra -> d_m). Incremental state lives in the blocks' attention modules
(``CachedModule``), so fairseq's beam search reorders it generically.
"""
import logging
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import (FairseqEncoder, FairseqEncoderDecoderModel, FairseqIncrementalDecoder,
                            register_model, register_model_architecture)
from fairseq.utils import safe_getattr
from omegaconf import II
from torch import Tensor, nn

from ..modules.cache import Seq2SeqContext
from ..modules.delight import RecurrentDropout, build_norm
from ..modules.dropout import Dropout
from ..modules.positions import build_positions
from ..modules.recompute import block_stack
from ..reporting import macs
from . import delight_config
from .build_checks import check_adaptive_softmax_criterion, check_cutoffs_fit_vocabulary
from .delight_config import DeLighTCommonConfig
from .efficient_lm import build_embedding, build_output_layer
from .validation import POSITIVE_INT, check, check_choices, config_error

logger = logging.getLogger(__name__)


@dataclass
class DeLighTTransformerConfig(FairseqDataclass, DeLighTCommonConfig):
    delight_emb_map_dim: int = field(default=128, metadata={"help": "width of the look-up table (map layer)"})
    delight_emb_out_dim: int = field(default=128, metadata={"help": "d_m: output width of the DeLighT embedding "
                                                                    "and model width (multiple of 32)"})
    delight_enc_scaling: ChoiceEnum(["block", "uniform"]) = field(
        default="block", metadata={"help": "encoder: block-wise scaling (N_b, w_b grow with depth) or uniform (every "
                                           "block N_max: needs min depth = max depth)"})
    delight_enc_layers: int = field(default=8, metadata={"help": "encoder: number of blocks B"})
    delight_enc_min_depth: int = field(
        default=4, metadata={"help": "encoder: N_min, GLT layers of the first block (>= 2)"})
    delight_enc_max_depth: int = field(default=8, metadata={"help": "encoder: N_max, GLT layers of the last block"})
    delight_enc_width_mult: float = field(default=2.0, metadata={"help": "encoder: DExTra width multiplier w_m"})
    delight_enc_ffn_red: int = field(
        default=4, metadata={"help": "encoder: light FFN reduction factor r (d_m -> d_m/r -> d_m); must divide d_m"})
    delight_enc_max_groups: Optional[int] = field(
        default=None, metadata={"help": "encoder: maximum GLT groups g_max (default: the reference's "
                                        "2^ceil(log2(d_m/32)))"})
    delight_dec_scaling: ChoiceEnum(["block", "uniform"]) = field(
        default="block", metadata={"help": "decoder: block-wise scaling (N_b, w_b grow with depth) or uniform (every "
                                           "block N_max: needs min depth = max depth)"})
    delight_dec_layers: int = field(default=8, metadata={"help": "decoder: number of blocks B"})
    delight_dec_min_depth: int = field(
        default=4, metadata={"help": "decoder: N_min, GLT layers of the first block (>= 2)"})
    delight_dec_max_depth: int = field(default=8, metadata={"help": "decoder: N_max, GLT layers of the last block"})
    delight_dec_width_mult: float = field(default=2.0, metadata={"help": "decoder: DExTra width multiplier w_m"})
    delight_dec_ffn_red: int = field(
        default=4, metadata={"help": "decoder: light FFN reduction factor r (d_m -> d_m/r -> d_m); must divide d_m"})
    delight_dec_max_groups: Optional[int] = field(
        default=None, metadata={"help": "decoder: maximum GLT groups g_max (default: the reference's "
                                        "2^ceil(log2(d_m/32)))"})
    delight_dropout: float = field(default=0.1, metadata={"help": "dropout after every layer inside DExTra"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on attention outputs (residual branches)"})
    attention_dropout: float = field(default=0.1, metadata={"help": "dropout on attention weights"})
    activation_dropout: float = field(default=0.0, metadata={"help": "dropout after the FFN activation"})
    encoder_normalize_before: bool = field(
        default=False, metadata={"help": "pre-norm encoder blocks (default: post-norm, as the reference)"})
    decoder_normalize_before: bool = field(
        default=False, metadata={"help": "pre-norm decoder blocks (default: post-norm, as the reference)"})
    share_decoder_input_output_embed: bool = field(
        default=False, metadata={"help": "tie the output layer to the decoder look-up table (the output works at the "
                                         "map width)"})
    share_all_embeddings: bool = field(
        default=False, metadata={"help": "one look-up table for source, target and output (needs fairseq-preprocess "
                                         "--joined-dictionary)"})
    encoder_learned_pos: bool = field(default=False, metadata={"help": "learned source positions"})
    decoder_learned_pos: bool = field(default=False, metadata={"help": "learned target positions"})
    no_token_positional_embeddings: bool = field(default=False, metadata={"help": "no position embeddings"})
    no_scale_embedding: bool = field(default=False, metadata={"help": "do not scale looked-up vectors by "
                                                                      "sqrt(map dim)"})
    adaptive_input: bool = field(default=False, metadata={"help": "not supported for translation (as the "
                                                                  "reference): refused"})
    adaptive_softmax_cutoff: Optional[str] = field(
        default=None, metadata={"help": "untied adaptive softmax cutoffs, e.g. 10000,20000 (with --criterion "
                                        "adaptive_loss)"})
    adaptive_softmax_dropout: float = field(default=0.0, metadata={"help": "adaptive softmax tail dropout"})
    adaptive_softmax_factor: float = field(default=4, metadata={"help": "adaptive softmax reduction factor"})
    tie_adaptive_weights: bool = field(default=False, metadata={"help": "needs adaptive input: refused"})
    tie_adaptive_proj: bool = field(default=False, metadata={"help": "needs adaptive input: refused"})
    checkpoint_activations: bool = field(
        default=False, metadata={"help": "recompute each block's activations in the backward pass (saves memory)"})
    print_stats: bool = field(
        default=False, metadata={"help": "log the params/MACs table by the reference's counting rules when the model "
                                         "is built"})
    src_len_ps: int = field(default=20, metadata={"help": "source tokens for --print-stats"})
    tgt_len_ps: int = field(default=20, metadata={"help": "target tokens for --print-stats"})
    max_source_positions: int = II("task.max_source_positions")
    max_target_positions: int = II("task.max_target_positions")


def source_positions(padding_mask: Tensor) -> Tensor:
    """Positions that skip (left) padding, so a sentence is encoded the same in any batch."""
    return ((~padding_mask).long().cumsum(dim=1) - 1).clamp(min=0)


class DeLighTEmbedder(nn.Module):
    """Look-up (scaled by sqrt(map dim)) -> DExTra embedding -> + positions -> time-shared dropout."""

    def __init__(self, cfg, lookup: nn.Embedding, learned_pos: bool, max_positions: int):
        super().__init__()
        self.embed_tokens = lookup
        self.embed_scale = 1.0 if cfg.no_scale_embedding else math.sqrt(cfg.delight_emb_map_dim)
        self.input_transform = delight_config.build_embedding_transform(cfg)
        scheme = "none" if cfg.no_token_positional_embeddings else ("learned" if learned_pos else "sinusoidal")
        self.embed_positions = build_positions(scheme, cfg.delight_emb_out_dim, max_positions + 1)
        self.dropout = RecurrentDropout(cfg.pe_dropout) if self.embed_positions is not None \
            else Dropout(cfg.dropout)

    def forward(self, tokens: Tensor, positions: Tensor) -> Tensor:
        x = self.input_transform(self.embed_scale * self.embed_tokens(tokens))
        if self.embed_positions is not None:
            x = x + self.embed_positions(positions)
        return self.dropout(x)


class DeLighTEncoder(FairseqEncoder):
    def __init__(self, cfg, dictionary, lookup: nn.Embedding):
        super().__init__(dictionary)
        self.cfg = cfg
        self.padding_idx = dictionary.pad()
        self.embedder = DeLighTEmbedder(cfg, lookup, cfg.encoder_learned_pos, cfg.max_source_positions)
        blocks = delight_config.build_stack(cfg, "enc", normalize_before=cfg.encoder_normalize_before, causal=False)
        self.layers = block_stack(blocks, cfg.checkpoint_activations)
        self.layer_norm = build_norm(cfg.norm_type, cfg.delight_emb_out_dim) if cfg.encoder_normalize_before else None

    @property
    def embed_tokens(self):
        return self.embedder.embed_tokens

    @property
    def input_transform(self):
        return self.embedder.input_transform

    def forward(self, src_tokens: Tensor, src_lengths: Optional[Tensor] = None, **unused):
        padding_mask = src_tokens.eq(self.padding_idx)
        x = self.embedder(src_tokens, source_positions(padding_mask))
        ctx = Seq2SeqContext(torch.arange(src_tokens.size(1), device=src_tokens.device), padding_mask=padding_mask)
        for layer in self.layers:
            x = layer(x, ctx)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return {
            "encoder_out": [x.transpose(0, 1)],  # fairseq's [S, B, C] convention
            "encoder_padding_mask": [padding_mask],
            "encoder_embedding": [], "encoder_states": [], "src_tokens": [], "src_lengths": [],
        }

    def reorder_encoder_out(self, encoder_out: Dict[str, List[Tensor]], new_order: Tensor):
        return {
            **encoder_out,
            "encoder_out": [encoder_out["encoder_out"][0].index_select(1, new_order)],
            "encoder_padding_mask": [encoder_out["encoder_padding_mask"][0].index_select(0, new_order)],
        }

    def max_positions(self):
        return self.cfg.max_source_positions


class DeLighTDecoder(FairseqIncrementalDecoder):
    def __init__(self, cfg, dictionary, lookup: nn.Embedding):
        super().__init__(dictionary)
        self.cfg = cfg
        self.embedder = DeLighTEmbedder(cfg, lookup, cfg.decoder_learned_pos, cfg.max_target_positions)
        blocks = delight_config.build_stack(cfg, "dec", normalize_before=cfg.decoder_normalize_before,
                                            cross_attention=True)
        # the decoder calls forward_with_alignment (for the alignment weights), so that is what recomputes
        self.layers = block_stack(blocks, cfg.checkpoint_activations, method="forward_with_alignment")
        self.layer_norm = build_norm(cfg.norm_type, cfg.delight_emb_out_dim) if cfg.decoder_normalize_before else None
        self.project_out_dim = delight_config.build_map_projection(cfg)
        # the LM skeleton's output layer (adaptive input and its tying are refused for translation)
        self.adaptive_softmax, self.output_projection = build_output_layer(cfg, len(dictionary),
                                                                           cfg.delight_emb_map_dim, lookup)

    @property
    def embed_tokens(self):
        return self.embedder.embed_tokens

    @property
    def input_transform(self):
        return self.embedder.input_transform

    def forward(self, prev_output_tokens, encoder_out=None, incremental_state=None, features_only: bool = False,
                alignment_layer: Optional[int] = None, **unused):
        x, extra = self.extract_features(prev_output_tokens, encoder_out, incremental_state, alignment_layer)
        return (x if features_only else self.output_layer(x)), extra

    def extract_features(self, prev_output_tokens, encoder_out=None, incremental_state=None,
                         alignment_layer: Optional[int] = None, **unused):
        """``extra["attn"]`` is ``[weights]``: the cross-attention of block ``alignment_layer`` (default: the
        last, as fairseq's transformer) [B, T, S], single-head so nothing to average; what fairseq-generate's
        --print-alignment and beam search read. It is computed in eval mode or when ``alignment_layer`` is
        given; training without one returns ``[None]`` (no criterion reads it)."""
        offset = 0
        if incremental_state is not None:  # fairseq passes the whole prefix; earlier steps are cached
            offset = prev_output_tokens.size(1) - 1
            prev_output_tokens = prev_output_tokens[:, -1:]
        positions = torch.arange(offset, offset + prev_output_tokens.size(1), device=prev_output_tokens.device)
        x = self.embedder(prev_output_tokens, positions)
        ctx = Seq2SeqContext(positions, incremental_state,
                             encoder_out=encoder_out["encoder_out"][0].transpose(0, 1),
                             encoder_padding_mask=encoder_out["encoder_padding_mask"][0])
        align_at = self.alignment_index(alignment_layer) if alignment_layer is not None or not self.training else None
        attn = None
        for index, layer in enumerate(self.layers):
            x, weights = layer.forward_with_alignment(x, ctx, need_weights=index == align_at)
            if index == align_at:
                attn = weights
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        if self.project_out_dim is not None:
            x = self.project_out_dim(x)
        return x, {"attn": [attn], "inner_states": None}

    def alignment_index(self, alignment_layer: Optional[int]) -> int:
        layers = len(self.layers)
        if alignment_layer is None:
            return layers - 1
        if not -layers <= alignment_layer < layers:
            raise ValueError(f"--alignment-layer={alignment_layer} is invalid: this decoder has {layers} blocks "
                             f"(0..{layers - 1}, or negative from the last)")
        return alignment_layer % layers

    def output_layer(self, features: Tensor) -> Tensor:
        return features if self.adaptive_softmax is not None else self.output_projection(features)

    def max_positions(self):
        return self.cfg.max_target_positions


@register_model("delight_transformer", dataclass=DeLighTTransformerConfig)
class DeLighTTransformerModel(FairseqEncoderDecoderModel):
    @classmethod
    def validate_config(cls, cfg, task) -> None:
        check_choices(cfg)
        delight_config.validate(cfg, sides=("enc", "dec"))
        if cfg.adaptive_input or cfg.tie_adaptive_weights or cfg.tie_adaptive_proj:
            flag = "adaptive_input" if cfg.adaptive_input else "tie_adaptive_weights"
            raise config_error(flag, True, "adaptive input is not supported for translation (as in the reference)")
        if cfg.share_decoder_input_output_embed and cfg.adaptive_softmax_cutoff is not None:
            raise config_error("share_decoder_input_output_embed", True, "cannot be tied to an adaptive softmax")
        if cfg.share_all_embeddings and task.source_dictionary != task.target_dictionary:
            raise config_error("share_all_embeddings", True, "needs a joined dictionary "
                                                             "(fairseq-preprocess --joined-dictionary)")
        check(cfg, POSITIVE_INT, "src_len_ps", "tgt_len_ps")
        check_cutoffs_fit_vocabulary(cfg, len(task.target_dictionary), getattr(cfg, "_name", "delight_transformer"),
                                     config_error)
        check_adaptive_softmax_criterion(cfg, config_error)

    @classmethod
    def build_model(cls, cfg, task):
        delight_config.fill_max_groups(cfg, ("emb", "enc", "dec"))
        cls.validate_config(cfg, task)

        def lookup(dictionary):
            return build_embedding(len(dictionary), cfg.delight_emb_map_dim, dictionary.pad())

        encoder_lookup = lookup(task.source_dictionary)
        decoder_lookup = encoder_lookup if cfg.share_all_embeddings else lookup(task.target_dictionary)
        model = cls(DeLighTEncoder(cfg, task.source_dictionary, encoder_lookup),
                    DeLighTDecoder(cfg, task.target_dictionary, decoder_lookup))
        if cfg.print_stats:
            logger.info("\n" + model.stats_table(cfg.src_len_ps, cfg.tgt_len_ps))
        return model

    def stats_rows(self, src_len: int, tgt_len: int) -> List[macs.Row]:
        """compute_macs_params: encoder at ``src_len`` tokens, decoder summed over t = 1..``tgt_len``."""
        shared = self.decoder.embed_tokens.weight is self.encoder.embed_tokens.weight
        return macs.encoder_rows(self.encoder, src_len) + macs.decoder_rows(self.decoder, tgt_len, src_len, shared)

    def stats_table(self, src_len: int, tgt_len: int) -> str:
        return macs.format_table(self.stats_rows(src_len, tgt_len),
                                 f"{type(self).__name__}: {src_len} source tokens, t = 1..{tgt_len} target tokens")


# ``--arch delight_transformer`` is the config's defaults (the reference's base_architecture).

def _named(args, dim_default: int, dropout_base: float, dropout_ref: int, delight_scaled: bool,
           share_all: bool = True):
    """The reference's named translation archs. It forces layers = max depth, embedding depth = min
    depth and embedding width = encoder width; here those are defaults and an explicit flag wins."""
    args.delight_emb_map_dim = safe_getattr(args, "delight_emb_map_dim", 128)
    dim = args.delight_emb_out_dim = safe_getattr(args, "delight_emb_out_dim", dim_default)
    for side in ("enc", "dec"):
        setattr(args, f"delight_{side}_min_depth", safe_getattr(args, f"delight_{side}_min_depth", 4))
        setattr(args, f"delight_{side}_max_depth", safe_getattr(args, f"delight_{side}_max_depth", 8))
        setattr(args, f"delight_{side}_width_mult", safe_getattr(args, f"delight_{side}_width_mult", 2.0))
        setattr(args, f"delight_{side}_layers",
                safe_getattr(args, f"delight_{side}_layers", getattr(args, f"delight_{side}_max_depth")))
    args.delight_emb_depth = safe_getattr(args, "delight_emb_depth", args.delight_dec_min_depth)
    args.delight_emb_width_mult = safe_getattr(args, "delight_emb_width_mult", args.delight_enc_width_mult)
    if share_all:
        args.share_all_embeddings = True
    args.share_decoder_input_output_embed = True
    args.delight_emb_dropout = safe_getattr(args, "delight_emb_dropout", 0.1)
    args.pe_dropout = safe_getattr(args, "pe_dropout", 0.1)
    args.activation_dropout = safe_getattr(args, "activation_dropout", 0.0)
    scaled = delight_config.scaled_dropout
    args.dropout = safe_getattr(args, "dropout", scaled(dropout_base, dim, dropout_ref, dropout_base))
    args.ffn_dropout = safe_getattr(args, "ffn_dropout", scaled(dropout_base, dim, dropout_ref, dropout_base))
    args.attention_dropout = safe_getattr(args, "attention_dropout", scaled(0.1, dim, dropout_ref, 0.1))
    args.delight_dropout = safe_getattr(args, "delight_dropout", scaled(0.1, dim, 512, 0.1) if delight_scaled else 0.0)


# Each pair of names is registered twice, as the reference does (the reverse direction is an alias).
@register_model_architecture("delight_transformer", "delight_transformer_wmt16_en_ro")
@register_model_architecture("delight_transformer", "delight_transformer_wmt16_ro_en")
def delight_transformer_wmt16_en_ro(args):
    _named(args, 512, 0.3, 1024, delight_scaled=True)


@register_model_architecture("delight_transformer", "delight_transformer_wmt14_en_de")
@register_model_architecture("delight_transformer", "delight_transformer_wmt14_de_en")
def delight_transformer_wmt14_en_de(args):
    _named(args, 512, 0.3, 1024, delight_scaled=False)


@register_model_architecture("delight_transformer", "delight_transformer_wmt14_en_fr")
@register_model_architecture("delight_transformer", "delight_transformer_wmt14_fr_en")
def delight_transformer_wmt14_en_fr(args):
    _named(args, 512, 0.1, 1024, delight_scaled=False)


@register_model_architecture("delight_transformer", "delight_transformer_iwslt_de_en")
@register_model_architecture("delight_transformer", "delight_transformer_iwslt_en_de")
def delight_transformer_iwslt_de_en(args):
    _named(args, 512, 0.3, 512, delight_scaled=True, share_all=False)
