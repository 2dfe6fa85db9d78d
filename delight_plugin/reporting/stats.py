"""Parameter and MAC report per block and in total, for any model built on the LM skeleton.

MACs come from torch's ``FlopCounterMode`` on one forward pass (FLOPs / 2), so every
architecture is counted by the same rules without per-block formulas: matrix products,
convolutions and attention count; element-wise ops, norms and look-ups count zero.
Causal attention is counted as full attention (the usual convention).
"""
from dataclasses import dataclass
from typing import List

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _baddbmm_flops(input_shape, a_shape, b_shape, *args, **kwargs) -> int:
    batch, rows, inner = a_shape
    return 2 * batch * rows * inner * b_shape[-1]


# torch counts the CUDA attention kernels but not the CPU one, and baddbmm but not its in-place
# form (FLASH's group_attention accumulates into its output with it).
_EXTRA_FLOP_RULES = {torch.ops.aten.baddbmm_: _baddbmm_flops}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _EXTRA_FLOP_RULES[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu_flops


@dataclass
class StatRow:
    name: str
    params: int
    macs_per_token: float


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _count_macs(run, modules: dict):
    """Run ``run()`` under a FLOP counter and attribute MACs to each named top-level module."""
    macs = {name: 0 for name in modules}
    with FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_RULES) as counter:
        handles = []
        for name, module in modules.items():
            start = {}
            handles.append(module.register_forward_pre_hook(lambda m, a, s=start: s.update(f=counter.get_total_flops())))
            handles.append(module.register_forward_hook(
                lambda m, a, o, s=start, n=name: macs.__setitem__(n, macs[n] + (counter.get_total_flops() - s["f"]) / 2)))
        try:
            run()
        finally:
            for h in handles:
                h.remove()
        total = counter.get_total_flops() / 2
    return macs, total


@torch.no_grad()
def lm_report(decoder, seq_len: int) -> List[StatRow]:
    """Rows for the embedding, every block, and the output layer of an ``EfficientLMDecoder``."""
    was_training = decoder.training
    decoder.eval()
    tokens = torch.full((1, seq_len), decoder.dictionary.eos(), dtype=torch.long,
                        device=next(decoder.parameters()).device)
    parts = {"embedding": decoder.embedding_modules()}
    parts.update({f"layers.{i}": layer for i, layer in enumerate(decoder.layers)})
    flat = {}
    for name, mods in parts.items():
        for j, m in enumerate(mods if isinstance(mods, list) else [mods]):
            flat[(name, j)] = m
    macs, total = _count_macs(
        lambda: decoder.get_normalized_probs(decoder(tokens), log_probs=True), flat)
    rows = []
    seen = 0
    for name, mods in parts.items():
        mods = mods if isinstance(mods, list) else [mods]
        m = sum(macs[(name, j)] for j in range(len(mods)))
        p = sum(count_params(x) for x in mods)
        rows.append(StatRow(name, p, m / seq_len))
        seen += m
    rows.append(StatRow("final norm + output", count_params(decoder) - sum(r.params for r in rows),
                        (total - seen) / seq_len))
    decoder.train(was_training)
    return rows


@torch.no_grad()
def seq2seq_report(model, src_len: int, tgt_len: int) -> List[StatRow]:
    """Rows for the embeddings and every block of an encoder-decoder whose encoder and decoder have
    ``layers`` and ``embedding_modules()``: one forward pass over ``src_len`` source and ``tgt_len``
    target tokens, MACs per target token (the encoder's included). A table shared by both sides is
    counted once, in the encoder's row."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    src = torch.full((1, src_len), model.encoder.dictionary.eos(), dtype=torch.long, device=device)
    tgt = torch.full((1, tgt_len), model.decoder.dictionary.eos(), dtype=torch.long, device=device)
    parts = {}
    for side in ("encoder", "decoder"):
        stack = getattr(model, side)
        parts[f"{side} embedding"] = stack.embedding_modules()
        parts.update({f"{side}.layers.{i}": [layer] for i, layer in enumerate(stack.layers)})
    flat = {(name, j): m for name, mods in parts.items() for j, m in enumerate(mods)}
    macs, total = _count_macs(lambda: model.get_normalized_probs(model(src, torch.tensor([src_len]), tgt),
                                                                 log_probs=True), flat)
    rows, counted, seen_macs = [], set(), 0
    for name, mods in parts.items():
        params = {id(p): p.numel() for m in mods for p in m.parameters() if id(p) not in counted}
        counted |= set(params)
        part_macs = sum(macs[(name, j)] for j in range(len(mods)))
        rows.append(StatRow(name, sum(params.values()), part_macs / tgt_len))
        seen_macs += part_macs
    rest = sum(p.numel() for p in model.parameters() if id(p) not in counted)
    rows.append(StatRow("final norms + output", rest, (total - seen_macs) / tgt_len))
    model.train(was_training)
    return rows


def format_report(rows: List[StatRow], title: str = "") -> str:
    lines = [title] if title else []
    lines.append(f"{'part':<24}{'params':>14}{'MACs/token':>16}")
    for r in rows:
        lines.append(f"{r.name:<24}{r.params:>14,}{r.macs_per_token:>16,.0f}")
    lines.append(f"{'total':<24}{sum(r.params for r in rows):>14,}{sum(r.macs_per_token for r in rows):>16,.0f}")
    return "\n".join(lines)
