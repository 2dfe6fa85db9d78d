"""DeLighT's flags: the fields both DeLighT models have, one view per stack, the checks, and the
modules built from them.

Shared by ``delight_transformer`` (translation) and ``delight_transformer_lm``: both have the
``--delight-emb-*`` family and one ``--delight-{enc,dec}-*`` family per stack (:class:`StackConfig`).
The modules in ``modules/delight/`` take plain values: only this file reads these flags for them.
"""
import math
from dataclasses import dataclass, field, fields
from typing import List, Optional, Sequence, Tuple

from fairseq.dataclass import ChoiceEnum
from torch import nn

from ..modules.delight import (ACT_TYPES, NORM_TYPES, BlockOptions, DeLighTBlock, DExTraEmbedding, block_schedule,
                               dextra_schedule)
from .validation import POSITIVE, PROBABILITY, check, config_error

MIN_ELEMENTS_PER_GROUP = 32


@dataclass
class DeLighTCommonConfig:
    """Flags that the translation model and the LM share (reference names)."""
    delight_emb_map_dim: int = field(
        default=64, metadata={"help": "width of the look-up table (map layer); in the LM also the skeleton's input "
                                      "and output width"})
    delight_emb_out_dim: int = field(default=128, metadata={"help": "output width of the DeLighT embedding: d_m, "
                                                                    "the model width (multiple of 32)"})
    delight_emb_width_mult: float = field(default=2.0, metadata={"help": "expansion factor of the embedding DExTra"})
    delight_emb_max_groups: Optional[int] = field(
        default=None, metadata={"help": "maximum groups g_max in the embedding GLTs (default: the reference's "
                                        "2^ceil(log2(d_m/32)))"})
    delight_emb_dropout: float = field(default=0.1, metadata={"help": "time-shared dropout on looked-up vectors"})
    delight_emb_depth: int = field(
        default=4, metadata={"help": "GLT layers in the embedding DExTra (>= 2)"})
    no_glt_shuffle: bool = field(default=False, metadata={"help": "do not shuffle features between GLT groups"})
    define_iclr: bool = field(default=False, metadata={"help": "DeFINE (ICLR'20) group schedule; no shuffling"})
    glt_paper_schedule: bool = field(
        default=False, metadata={"help": "GLT groups min(2^(l-1), g_max) (the paper: starts at 1 group) instead of "
                                         "the reference code's min(2^l, g_max)"})
    norm_type: ChoiceEnum(NORM_TYPES) = field(
        default="ln", metadata={"help": "normalisation (gn = bn, as in the reference, where every norm has one group)"})
    act_type: ChoiceEnum(ACT_TYPES) = field(default="swish", metadata={"help": "activation in DExTra and the FFN"})
    delight_dropout: float = field(default=0.0, metadata={"help": "dropout after every layer inside DExTra"})
    ffn_dropout: float = field(default=0.1, metadata={"help": "dropout after the second FFN layer"})
    pe_dropout: float = field(
        default=0.1, metadata={"help": "time-shared dropout after adding positions (without positions: --dropout "
                                       "instead)"})


@dataclass(frozen=True)
class StackConfig:
    """One stack's ``--delight-{side}-*`` flags (side ``enc`` or ``dec``), read once."""
    side: str
    scaling: str
    layers: int
    min_depth: int
    max_depth: int
    width_mult: float
    ffn_red: int
    max_groups: Optional[int]

    @classmethod
    def of(cls, cfg, side: str) -> "StackConfig":
        return cls(side, **{f.name: getattr(cfg, f"delight_{side}_{f.name}") for f in fields(cls) if f.name != "side"})

    def flag(self, name: str) -> str:
        """The config field of this stack's ``name`` (``delight_dec_layers``), as errors name it."""
        return f"delight_{self.side}_{name}"

    def schedule(self) -> List[Tuple[int, float]]:
        """(depth N_b, width multiplier w_b) of each block."""
        return block_schedule(self.scaling, self.layers, self.min_depth, self.max_depth, self.width_mult)


def default_max_groups(dim: int) -> int:
    """The reference's g_max: 2^ceil(log2(d_m / 32)) (the paper says ceil(d_m / 32))."""
    return 2 ** math.ceil(math.log2(max(dim // MIN_ELEMENTS_PER_GROUP, 1)))


def scaled_dropout(base: float, dim: int, reference_dim: int, cap: float) -> float:
    """The named archs' d_m-scaled dropouts, in the reference's floating-point order:
    clip(round(base / (reference_dim / d_m), 2), 0, cap). ``round(base * d_m / reference_dim, 2)`` is the
    same number on paper but not in floating point (0.22 instead of 0.23 for 0.3 at d_m 768 of 1024)."""
    return max(0.0, min(cap, round(base / (reference_dim / dim), 2)))


def group_schedule(cfg) -> str:
    if cfg.define_iclr:
        return "define"
    return "paper" if cfg.glt_paper_schedule else "reference"


def fill_max_groups(cfg, sides: Sequence[str]) -> None:
    """Unset ``--delight-{emb,enc,dec}-max-groups`` take the reference default for d_m."""
    for side in sides:
        name = f"delight_{side}_max_groups"
        if getattr(cfg, name) is None:
            setattr(cfg, name, default_max_groups(cfg.delight_emb_out_dim))


def build_stack(cfg, side: str, **options) -> List[DeLighTBlock]:
    """The blocks of stack ``side``; ``options``: the model's own :class:`BlockOptions` (norm placement,
    causality, cross-attention, rotary positions)."""
    stack = StackConfig.of(cfg, side)
    opts = BlockOptions(
        dim=cfg.delight_emb_out_dim, max_groups=stack.max_groups, ffn_reduction=stack.ffn_red, norm_type=cfg.norm_type,
        act_type=cfg.act_type, shuffle=not cfg.no_glt_shuffle, group_schedule=group_schedule(cfg), dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout, activation_dropout=cfg.activation_dropout,
        ffn_dropout=cfg.ffn_dropout, delight_dropout=cfg.delight_dropout, **options)
    return [DeLighTBlock(opts, depth, width) for depth, width in stack.schedule()]


def build_embedding_transform(cfg) -> DExTraEmbedding:
    return DExTraEmbedding(cfg.delight_emb_map_dim, cfg.delight_emb_out_dim, cfg.delight_emb_width_mult,
                           cfg.delight_emb_depth, cfg.delight_emb_max_groups, cfg.delight_emb_dropout,
                           cfg.norm_type, cfg.act_type, cfg.delight_dropout, not cfg.no_glt_shuffle,
                           group_schedule(cfg))


def build_map_projection(cfg) -> Optional[nn.Linear]:
    """d_m -> the map width where they differ: the output layer works at the map width, so that it can
    be tied to the look-up table (or, in the LM, to the adaptive input)."""
    dim, map_dim = cfg.delight_emb_out_dim, cfg.delight_emb_map_dim
    return nn.Linear(dim, map_dim, bias=False) if dim != map_dim else None


def _check_dextra(groups_flag: str, in_features: int, in_proj: int, out: int, width: float, depth: int,
                  max_groups: int, schedule: str, where: str) -> None:
    if in_features % 2 or in_features % max_groups:
        raise config_error(groups_flag, max_groups, f"{where}: its input width {in_features} must be even and "
                                                    f"divisible by the maximum number of groups")
    layers = dextra_schedule(in_features, in_proj, out, width, depth, max_groups, schedule)
    mixing = [g for _, _, g in layers[1:]] + [1]
    for (n_in, n_out, g), g_next in zip(layers, mixing):
        if n_in % g or n_out % g or in_proj % g_next or n_out % g_next:
            raise config_error(groups_flag, max_groups,
                               f"{where}: GLT {n_in}->{n_out} with {g} groups (next {g_next}) does not divide "
                               f"evenly; use fewer groups or a d_m (--delight-emb-out-dim) with more factors of 2")


def validate(cfg, sides: Sequence[str]) -> None:
    """Refuse bad DeLighT flags (``config_error``, naming the flag); ``sides``: the model's stacks."""
    dim, schedule = cfg.delight_emb_out_dim, group_schedule(cfg)
    if dim is None or dim < MIN_ELEMENTS_PER_GROUP or dim % MIN_ELEMENTS_PER_GROUP:
        raise config_error("delight_emb_out_dim", dim, f"d_m must be a positive multiple of {MIN_ELEMENTS_PER_GROUP}")
    if cfg.delight_emb_map_dim is None or cfg.delight_emb_map_dim < 2:
        raise config_error("delight_emb_map_dim", cfg.delight_emb_map_dim, "must be an even integer >= 2")
    check(cfg, PROBABILITY, "dropout", "attention_dropout", "activation_dropout", "ffn_dropout", "pe_dropout",
          "delight_dropout", "delight_emb_dropout")
    stacks = [StackConfig.of(cfg, side) for side in sides]
    check(cfg, POSITIVE, "delight_emb_max_groups", "delight_emb_width_mult",
          *(stack.flag(name) for stack in stacks for name in ("max_groups", "width_mult", "ffn_red", "layers")))
    if cfg.delight_emb_depth is None or cfg.delight_emb_depth < 2:
        raise config_error("delight_emb_depth", cfg.delight_emb_depth, "a DExTra unit needs at least 2 GLT layers")
    _check_dextra("delight_emb_max_groups", cfg.delight_emb_map_dim, dim // 2, dim, cfg.delight_emb_width_mult,
                  cfg.delight_emb_depth, cfg.delight_emb_max_groups, schedule, "the embedding DExTra")
    for stack in stacks:
        side, lo, hi = stack.side, stack.min_depth, stack.max_depth
        if lo is None or lo < 2:
            raise config_error(stack.flag("min_depth"), lo, "a DExTra unit needs at least 2 GLT layers")
        if hi is None or hi < lo:
            raise config_error(stack.flag("min_depth"), lo, f"must not exceed --delight-{side}-max-depth ({hi})")
        if stack.scaling == "uniform" and lo != hi:
            raise config_error(stack.flag("scaling"), "uniform",
                               f"uniform scaling gives every block one depth: set --delight-{side}-min-depth "
                               f"equal to --delight-{side}-max-depth (got {lo} and {hi}), or use 'block'")
        if dim % stack.ffn_red:
            raise config_error(stack.flag("ffn_red"), stack.ffn_red,
                               f"the FFN reduction factor must divide d_m ({dim})")
        for b, (depth, width) in enumerate(stack.schedule()):
            _check_dextra(stack.flag("max_groups"), dim, dim // 2, dim // 2, width, depth, stack.max_groups, schedule,
                          f"block {b} ({side})")
