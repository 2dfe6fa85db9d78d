"""``delight_transformer_lm``: the DeLighT decoder-only LM (Mehta et al., ICLR 2021) on the shared skeleton.

The skeleton's look-up table is the DeLighT map layer (width ``--delight-emb-map-dim``), its input
transform is the embedding DExTra (-> d_m = ``--delight-emb-out-dim``), its blocks are DeLighT blocks
with block-wise scaling, and its tied output first projects d_m back to the map width. The skeleton's
width/depth fields are not flags here: they follow the ``--delight-*`` flags (see the ``II`` fields),
so no two flags mean the same thing.
"""
from dataclasses import dataclass, field
from typing import Optional

from fairseq.dataclass import ChoiceEnum
from fairseq.models import register_model, register_model_architecture
from fairseq.utils import safe_getattr
from omegaconf import II

from ..modules.delight import RecurrentDropout, build_norm
from ..modules.delight.adaptive_input import BandScaledAdaptiveInput
from ..modules.dropout import Dropout
from ..reporting import macs
from . import delight_config
from .delight_config import DeLighTCommonConfig, scaled_dropout
from .efficient_lm import EfficientLanguageModel, EfficientLMConfig, cutoffs


@dataclass
class DeLighTLMConfig(EfficientLMConfig, DeLighTCommonConfig):
    delight_dec_scaling: ChoiceEnum(["block", "uniform"]) = field(
        default="block", metadata={"help": "block-wise scaling (N_b, w_b grow with depth) or uniform (every block "
                                           "N_max: needs min depth = max depth)"})
    delight_dec_layers: int = field(default=8, metadata={"help": "number of DeLighT blocks B"})
    delight_dec_min_depth: int = field(
        default=4, metadata={"help": "N_min: GLT layers in the first block (>= 2)"})
    delight_dec_max_depth: int = field(default=8, metadata={"help": "N_max: GLT layers in the last block"})
    delight_dec_width_mult: float = field(default=2.0, metadata={"help": "w_m: DExTra width multiplier"})
    delight_dec_ffn_red: int = field(
        default=4, metadata={"help": "light FFN reduction factor r (d_m -> d_m/r -> d_m); must divide d_m"})
    delight_dec_max_groups: Optional[int] = field(
        default=None, metadata={"help": "maximum GLT groups in the blocks (default: 2^ceil(log2(d_m/32)))"})
    tgt_len_ps: int = field(
        default=20, metadata={"help": "tokens for --print-stats, which logs the reference-rule params/MACs table "
                                      "(decoder summed over t = 1..N)"})
    delight_dropout: float = field(default=0.1, metadata={"help": "dropout after every layer inside DExTra"})
    attention_dropout: float = field(default=0.1, metadata={"help": "dropout on attention weights"})
    adaptive_input_factor: float = field(default=2, metadata={"help": "adaptive input dimension reduction factor"})
    adaptive_softmax_factor: float = field(default=2, metadata={"help": "adaptive softmax dimension reduction factor"})
    adaptive_softmax_dropout: float = field(default=0.1, metadata={"help": "dropout in the adaptive softmax tails"})
    # Skeleton fields that DeLighT flags determine: interpolations without help are not command-line flags.
    decoder_embed_dim: int = II("model.delight_emb_out_dim")
    decoder_input_dim: Optional[int] = II("model.delight_emb_map_dim")
    decoder_output_dim: Optional[int] = II("model.delight_emb_map_dim")
    decoder_layers: int = II("model.delight_dec_layers")
    stats_seq_len: int = II("model.tgt_len_ps")


@register_model("delight_transformer_lm", dataclass=DeLighTLMConfig)
class DeLighTLanguageModel(EfficientLanguageModel):
    """Pre-norm DeLighT blocks (the reference forces pre-norm for the LM: post-norm does not train)."""

    presets = {
        "tiny": ["--delight-emb-map-dim", "32", "--delight-emb-out-dim", "64", "--delight-dec-layers", "4"],
        "small": ["--delight-emb-map-dim", "128", "--delight-emb-out-dim", "256"],
        "base": ["--delight-emb-map-dim", "128", "--delight-emb-out-dim", "512"],
    }
    # The skeleton's fields that the --delight-* flags set (see DeLighTLMConfig): errors name the flag.
    field_flags = {"decoder_embed_dim": "delight_emb_out_dim", "decoder_input_dim": "delight_emb_map_dim",
                   "decoder_output_dim": "delight_emb_map_dim", "decoder_layers": "delight_dec_layers",
                   "stats_seq_len": "tgt_len_ps"}

    @classmethod
    def validate_config(cls, cfg):
        super().validate_config(cfg)
        delight_config.validate(cfg, sides=("dec",))

    @classmethod
    def build_model(cls, cfg, task):
        delight_config.fill_max_groups(cfg, ("emb", "dec"))
        model = super().build_model(cfg, task)
        for name, buffer in model.named_buffers():
            if name.endswith("_float_tensor"):
                # fairseq's adaptive modules keep an uninitialised dtype marker in the checkpoint; zero it
                # so that identical training gives identical checkpoints.
                buffer.zero_()
        return model

    @classmethod
    def build_adaptive_input(cls, cfg, vocab_size, padding_idx, input_dim):
        """The reference's adaptive input: band i scaled by sqrt(its width) unless --no-scale-embedding."""
        return BandScaledAdaptiveInput(vocab_size, padding_idx, input_dim, cfg.adaptive_input_factor, input_dim,
                                       cutoffs(cfg.adaptive_input_cutoff), scale=not cfg.no_scale_embedding)

    @classmethod
    def embedding_scale(cls, cfg):
        """1 with adaptive input: the bands scale themselves (BandScaledAdaptiveInput), as the reference."""
        return 1.0 if cfg.adaptive_input else super().embedding_scale(cfg)

    @classmethod
    def build_project_out_dim(cls, cfg):
        """d_m -> the map width whenever they differ: the skeleton (like fairseq) drops this projection when
        adaptive weights are tied, but DeLighT's tied adaptive softmax works at the map width."""
        return delight_config.build_map_projection(cfg)

    @classmethod
    def build_input_transform(cls, cfg):
        return delight_config.build_embedding_transform(cfg)

    @classmethod
    def build_embedding_dropout(cls, cfg):
        if cfg.position_scheme in ("learned", "sinusoidal"):
            return RecurrentDropout(cfg.pe_dropout)
        return Dropout(cfg.dropout)  # the reference's fallback when there are no position embeddings

    @classmethod
    def build_norm(cls, cfg, dim):
        return build_norm(cfg.norm_type, dim)

    @classmethod
    def build_blocks(cls, cfg):
        return delight_config.build_stack(cfg, "dec", normalize_before=True, rotary=cfg.position_scheme == "rotary")

    def stats_table(self, seq_len: int) -> str:
        """The reference's compute_macs_params table (decoder summed over t = 1..seq_len)."""
        rows = macs.decoder_rows(self.decoder, seq_len)
        return macs.format_table(rows, f"{type(self).__name__}: params and MACs for t = 1..{seq_len}")


# ``--arch delight_transformer_lm`` is the config's defaults (the reference's base_lm_architecture).


@register_model_architecture("delight_transformer_lm", "delight_transformer_lm_wiki103")
def delight_transformer_lm_wiki103(args):
    """WikiText-103: adaptive input + tied adaptive softmax, no final norm, d_m-scaled dropouts.

    The reference forces layers = max depth, embedding depth = min depth and embedding width =
    block width; here those are defaults and an explicit flag wins.
    """
    args.delight_emb_map_dim = safe_getattr(args, "delight_emb_map_dim", 128)
    dim = args.delight_emb_out_dim = safe_getattr(args, "delight_emb_out_dim", 512)
    min_depth = args.delight_dec_min_depth = safe_getattr(args, "delight_dec_min_depth", 4)
    max_depth = args.delight_dec_max_depth = safe_getattr(args, "delight_dec_max_depth", 8)
    width = args.delight_dec_width_mult = safe_getattr(args, "delight_dec_width_mult", 2.0)
    args.delight_dec_layers = safe_getattr(args, "delight_dec_layers", max_depth)
    args.delight_emb_depth = safe_getattr(args, "delight_emb_depth", min_depth)
    args.delight_emb_width_mult = safe_getattr(args, "delight_emb_width_mult", width)
    args.adaptive_input = safe_getattr(args, "adaptive_input", True)
    args.tie_adaptive_weights = safe_getattr(args, "tie_adaptive_weights", True)
    args.tie_adaptive_proj = safe_getattr(args, "tie_adaptive_proj", True)
    args.adaptive_input_cutoff = safe_getattr(args, "adaptive_input_cutoff", "20000,60000")
    args.adaptive_softmax_cutoff = safe_getattr(args, "adaptive_softmax_cutoff", "20000,60000")
    args.no_decoder_final_norm = safe_getattr(args, "no_decoder_final_norm", True)
    args.dropout = safe_getattr(args, "dropout", scaled_dropout(0.1, dim, 1024, 0.3))
    args.ffn_dropout = safe_getattr(args, "ffn_dropout", scaled_dropout(0.1, dim, 1024, 0.3))
    args.attention_dropout = safe_getattr(args, "attention_dropout", scaled_dropout(0.1, dim, 1024, 0.1))
    args.delight_dropout = safe_getattr(args, "delight_dropout", scaled_dropout(0.1, dim, 1024, 0.1))
