"""Attention with dropout on the attention weights, on the CPU's flash kernel.

On CPU, ``F.scaled_dot_product_attention`` with ``dropout_p > 0`` cannot use its flash kernel: it
falls back to the "math" path, which builds the T x T scores and a T x T dropout mask in every layer,
forward and backward (83% of a DeLighT LM training step at 8,192 tokens; docs/delight.md). With a
small p almost every weight is kept, so this computes the same function as

    out = (dropout(softmax(q k^T * scale + causal), p) v)  ==  (P v - (P * D) v) / (1 - p)

with P v from the flash kernel and the sparse correction over the dropped pairs D (about p of them)
as sparse matrix products, their weights from the kernel's log-sum-exp: P_ij = exp(q_i . k_j * scale -
lse_i). The backward pass is the flash kernel's, given (P v - (P * D) v) as its output (which makes its
row sums those of the dropped softmax), plus sparse terms for the dropped pairs. Dropped pairs are
i.i.d. with probability p over the pairs (causal: j <= i) of every batch row and head, as in SDPA; only
the random stream differs. Besides causal self-attention it covers attention under a key padding mask
(translation encoders and encoder-decoder attention).
"""
import math
import warnings
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_flash_backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
# Above this the dropped pairs are no longer sparse and SDPA's own dropout is cheaper.
SPARSE_DROPOUT_MAX = 0.2
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")  # used as documented


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
    ``p``, as rows of the flattened [heads * num_queries] queries and [heads * num_keys] keys, sorted by
    query row. Pairs are numbered head by head, row by row; the gaps between dropped ones are
    geometric, so no T x S mask is ever drawn. The rows are 32-bit where they fit: the sparse
    products' kernels take 32-bit indices, and convert 64-bit ones on every call."""
    rows = heads * num_queries
    index_dtype = torch.int32 if heads * max(num_queries, num_keys) < 2 ** 31 else torch.int64
    row = torch.arange(rows)
    in_head = row % num_queries
    # Number of each (head, query row)'s first pair, and where its keys start among the key rows.
    start = (row // num_queries) * (num_queries * (num_queries + 1) // 2 if causal else num_queries * num_keys) \
        + (in_head * (in_head + 1) // 2 if causal else in_head * num_keys)
    total = int(start[-1]) + (num_queries if causal else num_keys)
    key_offset = start - (row // num_queries) * num_keys  # pair number - key row, per query row
    per_log_keep = 1.0 / math.log1p(-p)
    positions, last = [], -1
    while last < total:
        expected = (total - last) * p
        # Gaps floor(log(1 - U) / log(1 - p)) + 1 in float32, as exact as a float32 Bernoulli mask:
        # U is a multiple of 2^-24, so 1 - U in (0, 1] is exact and its log finite.
        uniform = torch.rand(int(expected + 6 * expected ** 0.5) + 64)
        gaps = uniform.neg_().add_(1).log_().mul_(per_log_keep).floor_().add_(1)
        drawn = torch.cumsum(gaps, 0, dtype=torch.int64).add_(last)
        positions.append(drawn)
        last = int(drawn[-1])
    picked = torch.cat(positions) if len(positions) > 1 else positions[0]
    picked = picked[: int(torch.searchsorted(picked, total))]
    # positions are sorted: each query row's pairs are the run between its first pair and the next row's
    counts = torch.diff(torch.searchsorted(picked, start), append=torch.tensor([len(picked)]))
    query_rows = torch.repeat_interleave(row.to(index_dtype), counts)
    return query_rows, (picked - key_offset.index_select(0, query_rows)).to(index_dtype)


class DroppedPairsAttention(torch.autograd.Function):
    """Attention of q [B, H, T, D] over k, v [B, H, S, D] (causal, or under the additive mask ``bias``)
    with the weights of the listed pairs (rows of the flattened [B * H * T] queries and [B * H * S]
    keys, same head; sorted by query row) set to 0 and the rest scaled by 1 / (1 - p).

    The dropped pairs are a sparse [B*H*T, B*H*S] matrix (CSR, block-diagonal by head): their
    logits are one sampled matrix product (SDDMM) and their correction one sparse-dense product
    (SpMM), so no pair's q, k or v row is ever gathered."""

    @staticmethod
    def forward(ctx, q, k, v, p: float, query_rows, key_rows, causal: bool = True, bias: Optional[Tensor] = None):
        scale = q.size(-1) ** -0.5
        full, lse = _flash(q, k, v, 0.0, causal, attn_mask=bias, scale=scale)
        dtype = torch.float64 if q.dtype == torch.float64 else torch.float32  # of the sparse terms
        fq, fk, fv = (t.reshape(-1, t.size(-1)).to(dtype) for t in (q, k, v))
        pairs = DroppedPairs(query_rows, key_rows, fq.size(0), fk.size(0))
        logits = pairs.sampled_product(fq, fk, scale)
        if bias is not None:  # a key mask [B or 1, 1, 1, S]: its value for each listed key row
            logits = logits + bias.expand(q.size(0), q.size(1), 1, k.size(-2)).reshape(-1).index_select(
                0, key_rows).to(dtype)
        weights = torch.exp(logits - lse.reshape(-1).index_select(0, query_rows).to(dtype))
        kept = full - pairs.times(weights, fv).view(full.shape).to(full.dtype)  # (1 - p) x the output
        ctx.save_for_backward(q, k, v, kept, lse, weights, bias)
        ctx.pairs, ctx.p, ctx.scale, ctx.causal = pairs, p, scale, causal
        return kept / (1 - p)

    @staticmethod
    def backward(ctx, grad):
        q, k, v, kept, lse, weights, bias = ctx.saved_tensors
        pairs = ctx.pairs
        grad = (grad / (1 - ctx.p)).contiguous()
        dense = _flash_backward(grad, q, k, v, kept, lse, 0.0, ctx.causal, attn_mask=bias, scale=ctx.scale)
        fq, fk, fv, fg = (t.reshape(-1, t.size(-1)).to(weights.dtype) for t in (q, k, v, grad))
        # d loss / d logit_ij of a dropped pair, times the scale
        dot = weights * pairs.sampled_product(fg, fv, -ctx.scale)
        sparse = (pairs.times(dot, fk), pairs.transposed_times(dot, fq), pairs.transposed_times(-weights, fg))
        grads = (full + extra.view(full.shape).to(full.dtype) for full, extra in zip(dense[:3], sparse))
        return (*grads, None, None, None, None, None)


class DroppedPairs:
    """The pattern of the dropped pairs as CSR indices, by query row and (built when first needed,
    for the backward pass) by key row."""

    def __init__(self, query_rows: Tensor, key_rows: Tensor, num_queries: int, num_keys: int):
        if query_rows.dtype != key_rows.dtype:
            raise TypeError(f"query and key rows need one index dtype, got {query_rows.dtype} and {key_rows.dtype}")
        self.query_rows, self.key_rows, self.shape = query_rows, key_rows, (num_queries, num_keys)
        self.crow = _row_starts(query_rows, num_queries)
        self._by_key = None

    def sampled_product(self, a: Tensor, b: Tensor, alpha: float) -> Tensor:
        """alpha * (a_i . b_j) for every pair (i, j), in pair order."""
        pattern = self._csr(self.crow, self.key_rows, a.new_zeros(len(self.key_rows)), self.shape)
        with _full_precision():
            return torch.sparse.sampled_addmm(pattern, a, b.t(), beta=0.0, alpha=alpha).values()

    def times(self, values: Tensor, dense: Tensor) -> Tensor:
        """sum over pairs (i, j) of values_ij * dense_j, per query row i: [num_queries, D]."""
        with _full_precision():
            return self._csr(self.crow, self.key_rows, values, self.shape) @ dense

    def transposed_times(self, values: Tensor, dense: Tensor) -> Tensor:
        """sum over pairs (i, j) of values_ij * dense_i, per key row j: [num_keys, D]."""
        if self._by_key is None:  # a stable radix sort, of 32-bit indices where they fit
            fits = self.shape[1] < 2 ** 31
            keys, order = torch.sort(self.key_rows.int() if fits else self.key_rows, stable=True)
            keys = keys.to(self.key_rows.dtype)
            self._by_key = (order, _row_starts(keys, self.shape[1]), self.query_rows.index_select(0, order))
        order, crow, cols = self._by_key
        with _full_precision():
            return self._csr(crow, cols, values.index_select(0, order), self.shape[::-1]) @ dense

    @staticmethod
    def _csr(crow: Tensor, cols: Tensor, values: Tensor, shape) -> Tensor:
        return torch.sparse_csr_tensor(crow, cols, values, shape, check_invariants=False)


def _full_precision():
    """Autocast would cast the sparse products to bfloat16, which they do not support (and the sums need fp32)."""
    return torch.autocast("cpu", enabled=False)


def _row_starts(rows: Tensor, count: int) -> Tensor:
    """CSR row pointers of sorted row indices: where each of the rows 0, ..., count starts (of the rows' dtype,
    as the CSR format needs)."""
    return torch.searchsorted(rows, torch.arange(count + 1, dtype=rows.dtype), out_int32=rows.dtype == torch.int32)


__all__ = ["DroppedPairsAttention", "sample_dropped_pairs", "scaled_dot_product_attention"]
