"""Attention with dropout on the attention weights, on the CPU's flash kernel.

On CPU, ``F.scaled_dot_product_attention`` with ``dropout_p > 0`` cannot use its flash kernel: it
falls back to the "math" path, which builds the T x T scores and a T x T dropout mask in every layer,
forward and backward (83% of a DeLighT LM training step at 8,192 tokens; docs/delight.md). With a
small p almost every weight is kept, so this computes the same function as

    out = (dropout(softmax(q k^T * scale + causal), p) v)  ==  (P v - (P * D) v) / (1 - p)

with P v from the flash kernel and the sparse correction over the dropped pairs D (about p of them)
gathered from its log-sum-exp: P_ij = exp(q_i . k_j * scale - lse_i). The backward pass is the flash
kernel's, given (P v - (P * D) v) as its output (which makes its row sums those of the dropped
softmax), plus sparse terms for the dropped pairs. Dropped pairs are i.i.d. with probability p over
the pairs (causal: j <= i) of every batch row and head, as in SDPA; only the random stream differs.
Besides causal self-attention it covers attention under a key padding mask (translation encoders and
encoder-decoder attention).
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_flash_backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
# Above this the dropped pairs are no longer sparse and SDPA's own dropout is cheaper.
SPARSE_DROPOUT_MAX = 0.2


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor] = None,
                                 is_causal: bool = False, dropout_p: float = 0.0) -> Tensor:
    """``F.scaled_dot_product_attention`` for [B, H, T, D] queries and [B, H, S, D] keys and values.
    With dropout on CPU, causal self-attention (no mask) and attention under a boolean key mask
    ([B or 1, 1, 1, S], True = attend) go through :class:`DroppedPairsAttention`: same function, flash kernel."""
    key_mask = attn_mask is not None and attn_mask.dtype == torch.bool and attn_mask.dim() == 4 \
        and attn_mask.shape[1:3] == (1, 1) and attn_mask.size(-1) == k.size(-2)
    if (0 < dropout_p <= SPARSE_DROPOUT_MAX and q.device.type == "cpu" and q.dim() == 4
            and ((is_causal and attn_mask is None and q.size(-2) == k.size(-2) > 1) or (not is_causal and
                                                                                 (attn_mask is None or key_mask)))):
        if torch.is_autocast_enabled("cpu"):  # what autocast does to SDPA's inputs
            q, k, v = (t.to(torch.get_autocast_dtype("cpu")) for t in (q, k, v))
        bias = None
        if attn_mask is not None:  # the flash kernel takes an additive mask of the query's dtype
            bias = torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~attn_mask, float("-inf"))
        query_rows, key_rows = sample_dropped_pairs(q.size(0) * q.size(1), q.size(-2), k.size(-2), dropout_p, is_causal)
        return DroppedPairsAttention.apply(q, k, v, dropout_p, query_rows, key_rows, is_causal, bias)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, dropout_p=dropout_p)


def sample_dropped_pairs(heads: int, num_queries: int, num_keys: int, p: float,
                         causal: bool) -> Tuple[Tensor, Tensor]:
    """The dropped pairs (query i, key j; causal: only j <= i, with num_queries == num_keys) of
    ``heads`` (batch x heads) attention matrices, each pair dropped independently with probability
    ``p``, as rows of the flattened [heads * num_queries] queries and [heads * num_keys] keys. Pairs are
    numbered head by head, row by row; the gaps between dropped ones are geometric, so no T x S mask is
    ever drawn."""
    per_head = num_queries * (num_queries + 1) // 2 if causal else num_queries * num_keys
    total = heads * per_head
    log_keep = math.log1p(-p)
    positions, last = [], -1
    while last < total:
        expected = (total - last) * p
        gaps = torch.floor(torch.log(1 - torch.rand(int(expected + 6 * expected ** 0.5) + 64, dtype=torch.float64))
                           / log_keep) + 1  # 1 - U lies in (0, 1]: log is finite
        drawn = last + torch.cumsum(gaps, 0).long()
        positions.append(drawn)
        last = int(drawn[-1])
    picked = torch.cat(positions)
    picked = picked[picked < total]
    flat_head, pair = picked // per_head, picked % per_head
    if causal:  # pair = i (i + 1) / 2 + j with 0 <= j <= i: invert the triangular numbers, fix the rounding
        i = ((torch.sqrt(8 * pair.double() + 1) - 1) / 2).floor().long()
        i = i - (i * (i + 1) // 2 > pair).long()
        i = i + ((i + 1) * (i + 2) // 2 <= pair).long()
        j = pair - i * (i + 1) // 2
    else:
        i, j = pair // num_keys, pair % num_keys
    return flat_head * num_queries + i, flat_head * num_keys + j


class DroppedPairsAttention(torch.autograd.Function):
    """Attention of q [B, H, T, D] over k, v [B, H, S, D] (causal, or under the additive mask ``bias``)
    with the weights of the listed pairs (rows of the flattened [B * H * T] queries and [B * H * S]
    keys, same head) set to 0 and the rest scaled by 1 / (1 - p)."""

    @staticmethod
    def forward(ctx, q, k, v, p: float, query_rows, key_rows, causal: bool = True, bias: Optional[Tensor] = None):
        scale = q.size(-1) ** -0.5
        full, lse = _flash(q, k, v, 0.0, causal, attn_mask=bias, scale=scale)
        flat = [t.reshape(-1, t.size(-1)) for t in (q, k, v)]
        pair_bias = None
        if bias is not None:  # a key mask [B or 1, 1, 1, S]: its value for each listed key row
            pair_bias = bias.expand(q.size(0), q.size(1), 1, k.size(-2)).reshape(-1).index_select(0, key_rows)
        weights = dropped_weights(*flat[:2], lse.reshape(-1), query_rows, key_rows, scale, pair_bias)
        correction = torch.zeros(full.numel() // full.size(-1), full.size(-1), dtype=weights.dtype)
        correction.index_add_(0, query_rows, flat[2].index_select(0, key_rows).to(weights.dtype) * weights[:, None])
        kept = full - correction.view(full.shape).to(full.dtype)  # (1 - p) x the output
        ctx.save_for_backward(q, k, v, kept, lse, query_rows, key_rows, weights, bias)
        ctx.p, ctx.scale, ctx.causal = p, scale, causal
        return kept / (1 - p)

    @staticmethod
    def backward(ctx, grad):
        q, k, v, kept, lse, query_rows, key_rows, weights, bias = ctx.saved_tensors
        grad = (grad / (1 - ctx.p)).contiguous()
        dense = _flash_backward(grad, q, k, v, kept, lse, 0.0, ctx.causal, attn_mask=bias, scale=ctx.scale)
        fq, fk, fv, fg = (t.reshape(-1, t.size(-1)) for t in (q, k, v, grad))
        g_rows = fg.index_select(0, query_rows).to(weights.dtype)
        # d loss / d logit_ij of a dropped pair, times the scale
        dot = weights * (g_rows * fv.index_select(0, key_rows).to(weights.dtype)).sum(-1) * -ctx.scale
        grads = []
        for full, rows, value in ((dense[0], query_rows, fk.index_select(0, key_rows).to(weights.dtype) * dot[:, None]),
                                  (dense[1], key_rows, fq.index_select(0, query_rows).to(weights.dtype) * dot[:, None]),
                                  (dense[2], key_rows, g_rows * -weights[:, None])):
            sparse = torch.zeros(full.numel() // full.size(-1), full.size(-1), dtype=weights.dtype)
            grads.append(full + sparse.index_add_(0, rows, value).view(full.shape).to(full.dtype))
        return (*grads, None, None, None, None, None)


def dropped_weights(q: Tensor, k: Tensor, lse: Tensor, query_rows: Tensor, key_rows: Tensor, scale: float,
                    pair_bias: Optional[Tensor] = None) -> Tensor:
    """Softmax weights P_ij of the listed pairs (rows of flattened q, k and lse), from the flash
    kernel's log-sum-exp, in float32 (float64 for float64 inputs)."""
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    logits = (q.index_select(0, query_rows).to(dtype) * k.index_select(0, key_rows).to(dtype)).sum(-1) * scale
    if pair_bias is not None:
        logits = logits + pair_bias.to(dtype)
    return torch.exp(logits - lse.index_select(0, query_rows).to(dtype))


__all__ = ["DroppedPairsAttention", "sample_dropped_pairs", "scaled_dot_product_attention"]
