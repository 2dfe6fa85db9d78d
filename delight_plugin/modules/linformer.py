"""Causal Linformer attention: keys and values compressed along the sequence into k slots, where
the query at position i reads only the compression of positions 0..i.

Linformer (Wang et al. 2020) attends over K_bar = E K and V_bar = F V, E, F in R^{k x n}. Every
slot mixes all n positions, so masking slots (the reference package's ``causal`` flag) leaks the
future. Here the compressed memory is a prefix sum (Peng et al. 2022, "ABC", option 2 of
docs/variants.md):

    K~_i = sum_{s<=i} E[:, s] k_s^T,   V~_i = sum_{s<=i} F[:, s] v_s^T          (k x d_head)
    out_i = sum_j w_ij V~_i[j] * scale_ij,  w_i = softmax_j(scale_ij q_i . K~_i[j] / sqrt(d_head))

Nothing at a position after i enters row i, so it is causal by construction. Training computes it
chunk-wise in O(n k d) time and memory (``prefix_compressed_attention``); decoding keeps K~, V~ as a
fixed-size state per head.

Translation encoders (and the compressed encoder-decoder attention) are not causal: every query of
a sentence of n real tokens reads the memory at its last position, K~_{n-1} and V~_{n-1}
(``compressed_memory``, ``BidirectionalLinformerAttention``). Pads add nothing to it.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import CausalSelfAttention
from .cache import DecodingContext
from .dropout import dropout as apply_dropout
from .prefix_sum import accumulator, exclusive_prefix_sum

PROJECTION_METHODS = ("learnable", "convolution", "no-params")


def prefix_compressed_attention(
    q: Tensor, k: Tensor, v: Tensor, e: Tensor, f: Tensor, scale: Tensor, visible: Optional[Tensor],
    chunk_size: int, state: Optional[Tuple[Tensor, Tensor]] = None, dropout: float = 0.0,
) -> Tuple[Tensor, Tensor, Tuple[Tensor, Tensor]]:
    """The formula of the module docstring, exact, in O(T k d) with batched matmuls.

    q, k, v: [B, H, T, D]. e, f: [H or 1, S, T], the slot weights of these T positions.
    scale: [T, S] or [T, 1]. visible: [T, S] bool (False = slot still empty) or None.
    state: (K~, V~) [B, H, S, D] summed over the positions before these T (None = none), float32.
    Returns out [B, H, T, D], the slot weights [B, H, T, S] and the state after the T positions.

    Positions are split into chunks of ``chunk_size``. A chunk's queries read the memory of all
    earlier chunks (an exclusive cumulative sum of per-chunk sums) plus, for the positions of their
    own chunk, the same sums written as a masked matrix product: q_i . sum_{s<=i} E[j,s] k_s =
    sum_s [s<=i] (q_i . k_s) E[j,s]. The slot scores are not additive across chunks (a softmax
    follows), so both parts are added before the softmax.
    """
    bsz, heads, length, dim = q.shape
    slots = e.size(-2)
    chunk = min(chunk_size, length)
    chunks = -(-length // chunk)
    pad = chunks * chunk - length
    if pad:  # zero keys/values/slot weights at the end add nothing; their query rows are dropped
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        e, f = F.pad(e, (0, pad)), F.pad(f, (0, pad))
        scale = F.pad(scale, (0, 0, 0, pad), value=1.0)
        visible = None if visible is None else F.pad(visible, (0, 0, 0, pad), value=True)
    # A per-query scale (one column, the non-convolution methods) scales whole rows of the scores
    # and of the output: it is applied to q and to out, narrower than the scores and the weights.
    row_scale = scale.size(-1) == 1
    scale = scale.view(chunks, chunk, -1)
    q, k, v = (t.unflatten(2, (chunks, chunk)) for t in (q, k, v))  # [B, H, C, c, D]
    if row_scale:
        q = q * (scale / math.sqrt(dim))
    # Contiguous [B*H*C, c, D]: q, k, v arrive as head-transposed views, which every product would copy.
    q, k, v = (t.reshape(-1, chunk, dim) for t in (q, k, v))
    # [B*H*C, S, c], materialised once: each product below would otherwise expand shared weights again.
    e, f = (w.view(-1, slots, chunks, chunk).transpose(1, 2).expand(bsz, heads, -1, -1, -1)
            .reshape(-1, slots, chunk) for w in (e, f))

    key_sums = torch.bmm(e, k).view(bsz * heads, chunks, slots, dim)  # each chunk's contribution to K~
    value_sums = torch.bmm(f, v).view(bsz * heads, chunks, slots, dim)
    key_before = exclusive_prefix_sum(key_sums)  # over chunks
    value_before = exclusive_prefix_sum(value_sums)
    if state is not None:
        key_before = key_before + state[0].to(key_before.dtype).flatten(0, 1).unsqueeze(1)
        value_before = value_before + state[1].to(value_before.dtype).flatten(0, 1).unsqueeze(1)
    key_before, value_before = key_before.flatten(0, 1), value_before.flatten(0, 1)

    own_chunk = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    local = torch.bmm(q, k.transpose(1, 2)).masked_fill_(~own_chunk, 0.0)  # [B*H*C, c, c]
    scores = torch.baddbmm(torch.bmm(q, key_before.transpose(1, 2)), local, e.transpose(1, 2))  # [B*H*C, c, S]
    if not row_scale:
        scores = (scores.view(-1, chunks, chunk, slots) * (scale / math.sqrt(dim))).flatten(0, 1)
    if visible is not None:
        scores = scores.view(-1, chunks, chunk, slots).masked_fill(~visible.view(chunks, chunk, slots), float("-inf"))
        scores = scores.flatten(0, 1)
    weights = scores.softmax(dim=-1)
    read = apply_dropout(weights, dropout) if dropout else weights
    if not row_scale:
        read = (read.view(-1, chunks, chunk, slots) * scale).flatten(0, 1)
    mixing = torch.bmm(read, f).masked_fill_(~own_chunk, 0.0)  # [B*H*C, c, c]: weight of v_s in out_i
    out = torch.baddbmm(torch.bmm(read, value_before), mixing, v)
    if row_scale:
        out = (out.view(-1, chunks, chunk, dim) * scale).flatten(0, 1)

    # The state is a running sum over every position decoded so far: float32, whatever the model's
    # dtype (a bfloat16 one drifts as it grows: 4.6% off after 1,500 random steps, test_half_precision.py).
    key_state, value_state = (accumulator(t).sum(1).view(bsz, heads, slots, dim) for t in (key_sums, value_sums))
    if state is not None:
        key_state, value_state = key_state + state[0], value_state + state[1]
    out = out.view(bsz, heads, chunks * chunk, dim)[:, :, :length]
    weights = weights.view(bsz, heads, chunks * chunk, slots)[:, :, :length]
    return out, weights, (key_state, value_state)


def compressed_attention_step(
    q: Tensor, k: Tensor, v: Tensor, e: Tensor, f: Tensor, scale, visible: Optional[Tensor],
    state: Optional[Tuple[Tensor, Tensor]], dropout: float = 0.0,
) -> Tuple[Tensor, Tensor, Tuple[Tensor, Tensor]]:
    """``prefix_compressed_attention`` for a single position (a decoding step), without its chunks,
    masks and prefix sums: the state gains the outer products e k^T and f v^T, then the query reads it.

    q, k, v: [B, H, 1, D]; e, f: [H or 1, S, 1]; scale: a float (the per-query factor of the
    non-convolution methods) or [1, S]; visible: [1, S] or None; state as there (None = none)."""
    dim = q.size(-1)
    if state is None:
        key_state, value_state = accumulator(e * k), accumulator(f * v)  # [B, H, S, D]
    else:
        key_state, value_state = torch.addcmul(state[0], e, k), torch.addcmul(state[1], f, v)
    row_scale = not torch.is_tensor(scale)
    scores = torch.matmul(q * (scale / math.sqrt(dim)) if row_scale else q,
                          key_state.to(q.dtype).transpose(-1, -2))  # [B, H, 1, S]
    if not row_scale:
        scores = scores * (scale / math.sqrt(dim))
    if visible is not None:
        scores = scores.masked_fill(~visible, float("-inf"))
    weights = scores.softmax(dim=-1)
    read = apply_dropout(weights, dropout) if dropout else weights
    if row_scale:
        out = torch.matmul(read, value_state.to(q.dtype)).mul_(scale)
    else:
        out = torch.matmul(read * scale, value_state.to(q.dtype))
    return out, weights, (key_state, value_state)


class SequenceCompression(nn.Module):
    """E in R^{k x N}: the weight with which position s enters each of the k slots.

    ``learnable``: a parameter; ``no-params``: a fixed random buffer; ``convolution``: the
    reference's Conv1d(d_head, d_head, kernel = stride = N/k), i.e. slot j pools block j of
    positions after a channel mixing that depends on the offset inside the block, written here as
    a 0/1 block matrix E plus ``mix_channels``. ``matrices`` is the number of heads that own a
    separate E (1 when heads share it).
    """

    def __init__(self, method: str, slots: int, max_positions: int, head_dim: int, matrices: int = 1,
                 length_flag: str = "--tokens-per-sample"):
        super().__init__()
        self.length_flag = length_flag  # the flag that set max_positions, for the error on longer inputs
        if method not in PROJECTION_METHODS:
            raise ValueError(f"--linformer-method must be one of {list(PROJECTION_METHODS)}, got {method!r}")
        self.method, self.max_positions = method, max_positions
        self.block = -(-max_positions // slots) if method == "convolution" else 0
        self.slots = -(-max_positions // self.block) if self.block else slots
        if method == "learnable":
            # N(0, 1) entries: with the 1/sqrt(i+1) prefix scale, logits and values start at the
            # size ordinary attention has.
            self.weight = nn.Parameter(torch.randn(matrices, slots, max_positions))
        elif method == "no-params":
            self.register_buffer("weight", torch.randn(matrices, slots, max_positions))
        else:
            blocks = torch.arange(max_positions) // self.block
            self.register_buffer("weight", (blocks == torch.arange(self.slots)[:, None]).float()[None],
                                 persistent=False)
            self.mix = nn.Parameter(torch.randn(matrices, self.block, head_dim, head_dim) * head_dim**-0.5)

    def check_length(self, end: int) -> None:
        if end > self.max_positions:
            raise ValueError(
                f"got a sequence of {end} tokens but the Linformer compression covers at most "
                f"{self.max_positions} positions ({self.length_flag} at build time); retrain with "
                f"{self.length_flag} >= {end} or feed at most {self.max_positions} tokens")

    def matrix(self, start: int, length: int) -> Tensor:
        """[matrices, S, length]: the columns of E for positions start..start+length-1."""
        return self.weight[:, :, start:start + length]

    def mix_channels(self, x: Tensor, start: int) -> Tensor:
        """Convolution method: apply the kernel tap of each position's offset in its block to
        x [B, H, T, D] (one batched matmul over whole blocks); identity for the other methods."""
        if not self.block:
            return x
        lead = start % self.block
        length = x.size(2)
        tail = -(lead + length) % self.block
        blocks = F.pad(x, (0, 0, lead, tail)).unflatten(2, (-1, self.block))  # [B, H, blocks, block, D]
        mixed = torch.einsum("bhnod,hode->bhnoe", blocks, self.mix)
        return mixed.flatten(2, 3)[:, :, lead:lead + length]

    def step_scale(self, position: int, positions: Tensor, dtype: torch.dtype):
        """``slot_scale`` of the single query at ``position`` (``positions`` = [position]), as a float
        where it is one factor per query (no block): a decoding step then needs no tensor for it."""
        if not self.block:
            return (position + 1) ** -0.5, None
        return self.slot_scale(positions, dtype)

    def slot_scale(self, positions: Tensor, dtype: torch.dtype) -> Tuple[Tensor, Optional[Tensor]]:
        """Per query and slot: the factor on its scores and values, and which slots are non-empty.
        ``positions`` [T]: each query's position (the last one it sees).

        Random/learned E: sums of i+1 random terms grow like sqrt(i+1) (the logit-scale pitfall),
        so divide by it. Convolution: slot j is the mean of the part of block j seen so far; blocks
        that have not started are hidden.
        """
        positions = positions.to(torch.float64)[:, None]
        if not self.block:
            return (positions + 1).rsqrt().to(dtype), None
        first = torch.arange(self.slots, device=positions.device, dtype=torch.float64) * self.block
        seen = (positions - first + 1).clamp(1, self.block)
        return seen.reciprocal().to(dtype), positions >= first


class CausalLinformerAttention(CausalSelfAttention):
    """Multi-head attention over k prefix-compressed slots; q/k/v/out projections and rotary as in
    :class:`CausalSelfAttention`. ``value_compression`` may be ``key_compression`` (kv sharing), and
    both may be shared by several layers (layerwise sharing)."""

    def __init__(self, dim: int, num_heads: int, key_compression: SequenceCompression,
                 value_compression: SequenceCompression, chunk_size: int = 128, dropout: float = 0.0,
                 rotary_dim: int = 0):
        super().__init__(dim, num_heads, dropout=dropout, rotary_dim=rotary_dim)
        self.key_compression, self.value_compression = key_compression, value_compression
        self.chunk_size = chunk_size
        self.record_weights = False  # set by scripts/plot_linformer_heads.py
        self.last_weights: Optional[Tensor] = None

    def forward(self, x: Tensor, ctx: DecodingContext) -> Tensor:
        length, start = x.size(1), ctx.offset
        self.key_compression.check_length(start + length)
        cache = self.get_cache(ctx.incremental_state)
        q, k, v = self.split_heads(x, ctx, cache)
        k = self.key_compression.mix_channels(k, start)
        v = self.value_compression.mix_channels(v, start)
        state = (cache["keys"], cache["values"]) if "keys" in cache else None
        e = self.key_compression.matrix(start, length).to(q.dtype)
        f = self.value_compression.matrix(start, length).to(q.dtype)
        dropout = self.dropout if self.training else 0.0
        if length == 1 and ctx.incremental_state is not None:
            scale, visible = self.key_compression.step_scale(start, ctx.positions, q.dtype)
            out, weights, (keys, values) = compressed_attention_step(q, k, v, e, f, scale, visible, state, dropout)
        else:
            scale, visible = self.key_compression.slot_scale(ctx.positions, q.dtype)
            out, weights, (keys, values) = prefix_compressed_attention(
                q, k, v, e, f, scale, visible, self.chunk_size, state=state, dropout=dropout)
        if ctx.incremental_state is not None:
            self.set_cache(ctx.incremental_state, {"keys": keys, "values": values})
        if self.record_weights:
            self.last_weights = weights.detach()
        return self.merge_heads(out)


def compressed_memory(k: Tensor, v: Tensor, key_compression: SequenceCompression,
                      value_compression: SequenceCompression, padding_mask: Optional[Tensor]
                      ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """The whole-sentence memory that every query of a non-causal Linformer reads.

    k, v: [B, H, S, D] of *left-aligned* rows (row b's n_b real tokens at positions 0..n_b-1, pads
    after them); padding_mask [B, S] (True = pad) or None. Returns the slots scaled as the causal
    formula scales them at position n_b - 1, c_b ⊙ (E K) and c_b ⊙ (F V) [B, H, S', D], and which
    slots are non-empty [B, S'] (None: all). Softmax attention over these slots is the causal
    Linformer's output at the last real position, for every query.

    A pad's key and value rows are zeroed after the projections (zeroing the input instead, as
    linformer-pytorch's input_mask does, lets the projection bias through) and the scale counts real
    tokens only, so a sentence's memory does not depend on the padding of its batch.
    """
    bsz, _, length, _ = k.shape
    key_compression.check_length(length)
    k, v = key_compression.mix_channels(k, 0), value_compression.mix_channels(v, 0)
    if padding_mask is not None and padding_mask.any():
        keep = (~padding_mask)[:, None, :, None].to(k.dtype)
        k, v = k * keep, v * keep
        last = ((~padding_mask).sum(1) - 1).clamp(min=0)
    else:
        last = torch.full((bsz,), length - 1, device=k.device)
    scale, visible = key_compression.slot_scale(last, k.dtype)  # [B, 1 or S'], [B, S'] or None
    scale = scale[:, None, :, None]
    keys = torch.matmul(key_compression.matrix(0, length).to(k.dtype), k) * scale  # [H or 1, S', S] @ [B, H, S, D]
    values = torch.matmul(value_compression.matrix(0, length).to(v.dtype), v) * scale
    return keys, values, visible


class BidirectionalLinformerAttention(CausalLinformerAttention):
    """A translation encoder's Linformer self-attention: every query attends to the k slots of the
    compressed sentence (``compressed_memory``). Rows must be left-aligned; the padding mask comes from
    ``ctx.padding_mask`` (a ``Seq2SeqContext``). Projections, rotary and sharing as the causal module."""

    def forward(self, x: Tensor, ctx: DecodingContext) -> Tensor:
        q, k, v = self.split_heads(x, ctx, {})
        keys, values, visible = compressed_memory(k, v, self.key_compression, self.value_compression,
                                                  getattr(ctx, "padding_mask", None))
        out = F.scaled_dot_product_attention(q, keys, values,
                                             attn_mask=None if visible is None else visible[:, None, None, :],
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.merge_heads(out)
