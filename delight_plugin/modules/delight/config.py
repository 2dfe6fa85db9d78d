"""Turning DeLighT's ``--delight-*`` flags into modules, and refusing bad ones at build time.

Shared by ``delight_transformer`` (translation) and ``delight_transformer_lm``: both have the
``--delight-emb-*`` family and one ``--delight-{enc,dec}-*`` family per stack.
"""
import math
from typing import Callable, List, Tuple

from .block import BlockOptions, block_schedule
from .dextra import dextra_schedule
from .embedding import DExTraEmbedding

MIN_ELEMENTS_PER_GROUP = 32


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


def fill_max_groups(cfg, sides=("emb", "dec")) -> None:
    """Unset ``--delight-*-max-groups`` take the reference default for d_m."""
    for side in sides:
        name = f"delight_{side}_max_groups"
        if getattr(cfg, name) is None:
            setattr(cfg, name, default_max_groups(cfg.delight_emb_out_dim))


def stack_options(cfg, side: str, **overrides) -> BlockOptions:
    return BlockOptions(
        dim=cfg.delight_emb_out_dim, max_groups=getattr(cfg, f"delight_{side}_max_groups"),
        ffn_reduction=getattr(cfg, f"delight_{side}_ffn_red"), norm_type=cfg.norm_type, act_type=cfg.act_type,
        shuffle=not cfg.no_glt_shuffle, group_schedule=group_schedule(cfg), dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout, activation_dropout=cfg.activation_dropout,
        ffn_dropout=cfg.ffn_dropout, delight_dropout=cfg.delight_dropout, **overrides)


def stack_schedule(cfg, side: str) -> List[Tuple[int, float]]:
    return block_schedule(getattr(cfg, f"delight_{side}_scaling"), getattr(cfg, f"delight_{side}_layers"),
                          getattr(cfg, f"delight_{side}_min_depth"), getattr(cfg, f"delight_{side}_max_depth"),
                          getattr(cfg, f"delight_{side}_width_mult"))


def build_embedding_transform(cfg) -> DExTraEmbedding:
    return DExTraEmbedding(cfg.delight_emb_map_dim, cfg.delight_emb_out_dim, cfg.delight_emb_width_mult,
                           cfg.delight_emb_depth, cfg.delight_emb_max_groups, cfg.delight_emb_dropout,
                           cfg.norm_type, cfg.act_type, cfg.delight_dropout, not cfg.no_glt_shuffle,
                           group_schedule(cfg))


def _check_dextra(error: Callable, flag: str, groups_flag: str, in_features: int, in_proj: int, out: int,
                  width: float, depth: int, max_groups: int, schedule: str, where: str) -> None:
    if in_features % 2 or in_features % max_groups:
        raise error(groups_flag, max_groups, f"{where}: its input width {in_features} must be even and "
                                             f"divisible by the maximum number of groups")
    layers = dextra_schedule(in_features, in_proj, out, width, depth, max_groups, schedule)
    mixing = [g for _, _, g in layers[1:]] + [1]
    for (n_in, n_out, g), g_next in zip(layers, mixing):
        if n_in % g or n_out % g or in_proj % g_next or n_out % g_next:
            raise error(groups_flag, max_groups,
                        f"{where}: GLT {n_in}->{n_out} with {g} groups (next {g_next}) does not divide evenly; "
                        f"use fewer groups or a d_m (--delight-emb-out-dim) with more factors of 2")


def validate(cfg, error: Callable, sides=("dec",)) -> None:
    """Every check raises ``error(flag, value, allowed)`` (``config_error``) naming the flag."""
    dim, schedule = cfg.delight_emb_out_dim, group_schedule(cfg)
    if dim is None or dim < MIN_ELEMENTS_PER_GROUP or dim % MIN_ELEMENTS_PER_GROUP:
        raise error("delight_emb_out_dim", dim, f"d_m must be a positive multiple of {MIN_ELEMENTS_PER_GROUP}")
    if cfg.delight_emb_map_dim is None or cfg.delight_emb_map_dim < 2:
        raise error("delight_emb_map_dim", cfg.delight_emb_map_dim, "must be an even integer >= 2")
    for name in ("dropout", "attention_dropout", "activation_dropout", "ffn_dropout", "pe_dropout",
                 "delight_dropout", "delight_emb_dropout"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise error(name, getattr(cfg, name), "must be in [0, 1)")
    for name in ["delight_emb_max_groups", "delight_emb_width_mult"] + [
            f"delight_{s}_{k}" for s in sides for k in ("max_groups", "width_mult", "ffn_red", "layers")]:
        if getattr(cfg, name) is None or getattr(cfg, name) <= 0:
            raise error(name, getattr(cfg, name), "must be positive")
    if cfg.delight_emb_depth is None or cfg.delight_emb_depth < 2:
        raise error("delight_emb_depth", cfg.delight_emb_depth, "a DExTra unit needs at least 2 GLT layers")
    _check_dextra(error, "delight_emb_depth", "delight_emb_max_groups", cfg.delight_emb_map_dim, dim // 2, dim,
                  cfg.delight_emb_width_mult, cfg.delight_emb_depth, cfg.delight_emb_max_groups, schedule,
                  "the embedding DExTra")
    for side in sides:
        lo, hi = getattr(cfg, f"delight_{side}_min_depth"), getattr(cfg, f"delight_{side}_max_depth")
        if lo is None or lo < 2:
            raise error(f"delight_{side}_min_depth", lo, "a DExTra unit needs at least 2 GLT layers")
        if hi is None or hi < lo:
            raise error(f"delight_{side}_min_depth", lo,
                        f"must not exceed --delight-{side}-max-depth ({hi})")
        if getattr(cfg, f"delight_{side}_scaling") == "uniform" and lo != hi:
            raise error(f"delight_{side}_scaling", "uniform",
                        f"uniform scaling gives every block one depth: set --delight-{side}-min-depth "
                        f"equal to --delight-{side}-max-depth (got {lo} and {hi}), or use 'block'")
        red = getattr(cfg, f"delight_{side}_ffn_red")
        if dim % red:
            raise error(f"delight_{side}_ffn_red", red, f"the FFN reduction factor must divide d_m ({dim})")
        for b, (depth, width) in enumerate(stack_schedule(cfg, side)):
            _check_dextra(error, f"delight_{side}_max_depth", f"delight_{side}_max_groups", dim, dim // 2,
                          dim // 2, width, depth, getattr(cfg, f"delight_{side}_max_groups"), schedule,
                          f"block {b} ({side})")
