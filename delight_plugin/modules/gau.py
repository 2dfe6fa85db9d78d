"""Gated attention unit (GAU) and FLASH's mixed chunk attention (Hua et al., 2022).

A GAU replaces one attention + FFN pair: from the normalised input, a SiLU projection gives the
gate U and value V (width e) and a shared low-dimensional Z (width s); per-dimension scales and
offsets turn Z into queries and keys; the attention weights are relu(q.k * scale + bias)^2 (or
Mega's Laplace function) with a single head and no softmax; the output is (U * AV) W_o + x.

Two attentions:
  * ``QuadAttention`` (FLASH-Quad): full causal quadratic attention, keys/values cached.
  * ``ChunkedAttention`` (FLASH): exact quadratic attention inside groups of C tokens plus causal
    linear attention across groups through an exclusive cumulative sum of per-group k^T v. O(n C).
    Whole sequences go through ``group_attention`` (its own backward; group_attention.py) unless
    the weights get dropout; decoding and the dropout case use the autograd code here.

Scale (fixed per layer, never the sequence length, so a prefix's outputs do not depend on what
follows, unlike the reference's 1/n): logits are q.k / C in chunked mode (the linear part is
divided by C as well), and q.k / L in quad mode with L = ``--gau-quad-scale-length`` (default 512,
the paper's 1/n at its 512-token training length).
"""
import math
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import causal_mask
from .cache import CachedModule, DecodingContext, append_rows
from .dropout import Dropout, dropout as apply_dropout
from .group_attention import group_attention, laplace
from .prefix_sum import accumulator, exclusive_prefix_sum
from .positions import RotaryEmbedding

GAU_MODES = ("quad", "chunked")


def relu_squared(x: Tensor) -> Tensor:
    return F.relu(x).square()


ATTENTION_FNS: Dict[str, Callable[[Tensor], Tensor]] = {"relu_squared": relu_squared, "laplace": laplace}


class BucketLookup(torch.autograd.Function):
    """``table[buckets]`` whose backward sums the gradient per bucket with one ``bincount`` pass
    (an embedding's backward sorts its T x T indices first: 8% of a FLASH-Quad training step)."""

    @staticmethod
    def forward(ctx, table: Tensor, buckets: Tensor) -> Tensor:
        ctx.save_for_backward(buckets)
        ctx.size = table.numel()
        return table[buckets]

    @staticmethod
    def backward(ctx, grad: Tensor):
        (buckets,) = ctx.saved_tensors
        weights = grad.reshape(-1).to(torch.float64 if grad.dtype == torch.float64 else torch.float32)
        return torch.bincount(buckets.reshape(-1), weights, ctx.size).to(grad.dtype), None


class CausalRelativeBias(nn.Module):
    """T5-style scalar bias of the distance i - j >= 0, in log-spaced buckets beyond num_buckets/2."""

    def __init__(self, num_buckets: int = 32, max_distance: int = 128):
        super().__init__()
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.bias = nn.Embedding(num_buckets, 1)
        self._reversed_buckets: Optional[Tensor] = None  # see ``reversed_buckets``
        # The paper's initializer, N(0, 0.02). Not zero: at initialisation q.k / L is ~1e-6, so
        # relu^2 attention and every gradient through it would vanish (relu^2 has zero slope at 0)
        # and the GAU would start, and under Adam's eps stay, switched off.
        nn.init.normal_(self.bias.weight, std=0.02)

    def bucket(self, distance: Tensor) -> Tensor:
        exact = self.num_buckets // 2
        distance = distance.clamp(min=0)
        log_ratio = torch.log(distance.clamp(min=1).float() / exact) / math.log(self.max_distance / exact)
        far = (exact + (log_ratio * (self.num_buckets - exact)).long()).clamp(max=self.num_buckets - 1)
        return torch.where(distance < exact, distance, far)

    def upgrade_state_dict_named(self, state_dict, name):
        """Checkpoints from before the bias was on by default have none: a zero bias is no bias."""
        key = f"{name}.bias.weight" if name else "bias.weight"
        state_dict.setdefault(key, torch.zeros_like(self.bias.weight))

    def lookup(self, buckets: Tensor) -> Tensor:
        table = self.bias.weight.view(-1)
        if torch.is_grad_enabled() and table.requires_grad:
            return BucketLookup.apply(table, buckets)
        return table.index_select(0, buckets.reshape(-1)).view(buckets.shape)  # inference: no Function needed

    def reversed_buckets(self, count: int) -> Tensor:
        """Buckets of the distances n - 1, ..., 0 for some n >= count (kept, grown by doubling)."""
        table, device = self._reversed_buckets, self.bias.weight.device
        if table is None or len(table) < count or table.device != device:
            n = max(count, 256, 2 * len(table) if table is not None else 0)
            table = self._reversed_buckets = self.bucket(torch.arange(n - 1, -1, -1, device=device))
        return table

    def buckets(self, query_positions: Tensor, key_positions: Tensor) -> Tensor:
        """[Tq, Tk] buckets of the distances query - key (0 where the key comes after the query: masked
        anyway), read from the kept table: three passes over Tq x Tk instead of the formula's dozen."""
        table = self.reversed_buckets(int(query_positions.max()) - int(key_positions.min()) + 1)
        last = len(table) - 1  # the table's entry for distance d is table[last - d]
        index = (last - query_positions)[:, None] + key_positions[None, :]
        return table[index.clamp_(max=last)]

    def forward(self, query_positions: Tensor, key_positions: Tensor) -> Tensor:
        """[Tq, Tk] bias for absolute positions (entries with key after query are masked anyway)."""
        return self.lookup(self.buckets(query_positions, key_positions))

    def causal(self, ctx: DecodingContext, key_count: int) -> Tensor:
        """[T, key_count] bias of the pass's queries (``ctx.positions``) for the keys 0, ..., key_count - 1.
        The buckets depend on the positions alone, so every layer of the pass shares them."""
        def make():
            return self.buckets(ctx.positions, torch.arange(key_count, device=ctx.positions.device))
        return self.lookup(ctx.shared(("relative_buckets", self.num_buckets, self.max_distance, key_count), make))

    def latest(self, count: int) -> Tensor:
        """[count] bias of one query for the ``count`` keys up to its own position, oldest first
        (distances count - 1, ..., 0): a decoding step slices the kept buckets."""
        table = self.reversed_buckets(count)
        return self.lookup(table[len(table) - count:])


def masked_attention(q: Tensor, k: Tensor, v: Tensor, scale: float, attention_fn, mask: Optional[Tensor],
                     bias: Optional[Tensor] = None, dropout_p: float = 0.0, training: bool = False) -> Tensor:
    """attention_fn(q k^T * scale + bias), zeroed where ``mask`` is False, times v (batched matmuls).

    The mask zeroes the weights, not the logits, because the Laplace function is not 0 at 0; in place,
    which autograd allows because neither function needs its output for the backward pass."""
    if bias is not None and q.dim() == 3:  # one fused product (the bias is broadcast)
        logits = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=scale)
    else:
        logits = torch.matmul(q * scale, k.transpose(-1, -2))  # scaling q: fewer elements than the logits
        if bias is not None:
            logits = logits + bias
    weights = attention_fn(logits)
    if mask is not None:
        weights = weights.masked_fill_(~mask, 0.0)
    if training and dropout_p:
        weights = apply_dropout(weights, dropout_p, training)
    # bmm for 3-D: matmul would add expand and view ops, a measurable part of a decoding step
    return torch.bmm(weights, v) if weights.dim() == 3 and v.dim() == 3 else torch.matmul(weights, v)


class QuadAttention(CachedModule):
    """FLASH-Quad: causal quadratic attention; decoding caches the keys and values."""

    QUERY_BLOCK = 512

    def __init__(self, scale_length: int, attention_fn: str, relative_bias: Optional[CausalRelativeBias],
                 dropout: float):
        super().__init__()
        self.scale, self.attention_fn = 1.0 / scale_length, ATTENTION_FNS[attention_fn]
        self.relative_bias, self.dropout = relative_bias, dropout

    def forward(self, q: Tensor, k: Tensor, v: Tensor, ctx: DecodingContext) -> Tensor:
        k, v = self.cached_keys_values(ctx.incremental_state, k, v, dim=1)
        if q.size(1) == 1:  # one query, after all the keys
            bias = None if self.relative_bias is None else self.relative_bias.latest(k.size(1))
            return masked_attention(q, k, v, self.scale, self.attention_fn, None, bias, self.dropout, self.training)
        bias = None if self.relative_bias is None else self.relative_bias.causal(ctx, k.size(1))
        # Causal: queries in blocks of QUERY_BLOCK rows, each against the keys up to its last query only.
        # 4 blocks at 2048 tokens skip 3/8 of the T x T products, half of a FLASH-Quad training step.
        past, outputs = k.size(1) - q.size(1), []
        for start in range(0, q.size(1), self.QUERY_BLOCK):
            end = min(start + self.QUERY_BLOCK, q.size(1))
            keys = past + end
            outputs.append(masked_attention(
                q[:, start:end], k[:, :keys], v[:, :keys], self.scale, self.attention_fn,
                causal_mask(end - start, keys, q.device), None if bias is None else bias[start:end, :keys],
                self.dropout, self.training))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)


class ChunkedAttention(CachedModule):
    """FLASH: quadratic attention within groups of ``group_size`` plus causal linear attention
    across groups (exclusive cumulative sum of the groups' lin_k^T v).

    Decoding keeps the s x e sum over completed groups (in float32: a running sum) and the current
    group's keys and values (fewer than ``group_size`` rows), so a token costs O(group_size), not O(n).
    """

    def __init__(self, group_size: int, attention_fn: str, relative_bias: Optional[CausalRelativeBias],
                 dropout: float):
        super().__init__()
        self.group_size, self.scale = group_size, 1.0 / group_size
        self.attention_fn_name, self.attention_fn = attention_fn, ATTENTION_FNS[attention_fn]
        self.relative_bias, self.dropout = relative_bias, dropout

    def forward(self, quad_q: Tensor, quad_k: Tensor, lin_q: Tensor, lin_k: Tensor, v: Tensor,
                ctx: DecodingContext) -> Tensor:
        if ctx.incremental_state is None:
            return self.parallel(quad_q, quad_k, lin_q, lin_k, v)
        return self.step(quad_q, quad_k, lin_q, lin_k, v, ctx)

    def local_bias(self, query_positions: Tensor, key_positions: Tensor) -> Optional[Tensor]:
        return None if self.relative_bias is None else self.relative_bias(query_positions, key_positions)

    def parallel(self, quad_q, quad_k, lin_q, lin_k, v) -> Tensor:
        """All groups at once. Inputs [B, n, *]; n is padded at the end to a multiple of C, which is
        safe: padded keys come after every real query of the last group and later groups are all padding.
        Without dropout on the weights this is ``group_attention`` (same formula, own backward)."""
        bsz, seq_len, _ = v.shape
        size = self.group_size
        pad = (-seq_len) % size
        groups = (seq_len + pad) // size
        offsets = torch.arange(size, device=v.device)
        if not (self.training and self.dropout > 0):
            grouped = [(F.pad(t, (0, 0, 0, pad)) if pad else t).reshape(bsz * groups, size, t.size(-1))
                       for t in (quad_q, quad_k, lin_q, lin_k, v)]
            out = group_attention(*grouped, self.local_bias(offsets, offsets), groups, self.scale,
                                  self.attention_fn_name)
            return out.view(bsz, groups * size, -1)[:, :seq_len]
        quad_q, quad_k, lin_q, lin_k, v = (
            (F.pad(t, (0, 0, 0, pad)) if pad else t).reshape(bsz, groups, size, t.size(-1))
            for t in (quad_q, quad_k, lin_q, lin_k, v))
        local = masked_attention(quad_q, quad_k, v, self.scale, self.attention_fn, causal_mask(size, size, v.device),
                                 self.local_bias(offsets, offsets), self.dropout, self.training)
        group_kv = torch.matmul(lin_k.transpose(-1, -2), v)  # [B, G, s, e]
        earlier_kv = exclusive_prefix_sum(group_kv)
        out = torch.baddbmm(local.flatten(0, 1), lin_q.flatten(0, 1), earlier_kv.flatten(0, 1), alpha=self.scale)
        return out.reshape(bsz, groups * size, -1)[:, :seq_len]

    def step(self, quad_q, quad_k, lin_q, lin_k, v, ctx: DecodingContext) -> Tensor:
        """New tokens [B, T, *] after the cached prefix: one token (decoding) or a prompt (prefill)."""
        cache = self.get_cache(ctx.incremental_state)
        if v.size(1) > 1:
            out, cache = self.read_prompt(quad_q, quad_k, lin_q, lin_k, v, ctx.offset, cache)
        else:
            out, cache = self.read_token(quad_q, quad_k, lin_q, lin_k, v, ctx, cache)
        self.set_cache(ctx.incremental_state, cache)
        return out

    def read_token(self, quad_q, quad_k, lin_q, lin_k, v, ctx: DecodingContext, cache):
        """One token: attend to the current group's cached rows, add the sum over earlier groups."""
        # The current group's rows, this one written in place after the cached ones.
        keys, values, lin_keys = (append_rows(cache, name, t, 1, self.group_size)
                                  for name, t in (("group_k", quad_k), ("group_v", v), ("group_lin_k", lin_k)))
        bias = None if self.relative_bias is None else self.relative_bias.latest(keys.size(1))
        out = masked_attention(quad_q, keys, values, self.scale, self.attention_fn, None, bias, self.dropout,
                               self.training)
        if "earlier_kv" in cache:
            out = torch.baddbmm(out, lin_q, cache["earlier_kv"].to(out.dtype), alpha=self.scale)
        if keys.size(1) == self.group_size:  # the group is complete: fold it into the running sum
            group_kv = accumulator(torch.matmul(lin_keys.transpose(-1, -2), values))
            cache["earlier_kv"] = cache["earlier_kv"] + group_kv if "earlier_kv" in cache else group_kv
            for name in ("group_k", "group_v", "group_lin_k"):  # the buffers start the next group
                cache[name + "_rows"] = 0
        return out, cache

    def read_prompt(self, quad_q, quad_k, lin_q, lin_k, v, offset: int, cache):
        """T > 1 tokens at once with the parallel formula. When ``offset`` is inside a group, that
        group's cached rows go in front (with zero queries, whose outputs are dropped) so that the
        groups line up with the absolute ones; the cached sum over earlier groups reaches every new
        query alike. Then every group completed here is folded into the sum in one product and the
        rows of the unfinished group are kept."""
        in_group = offset % self.group_size
        if in_group:
            quad_q, lin_q = (F.pad(t, (0, 0, in_group, 0)) for t in (quad_q, lin_q))
            quad_k, lin_k, v = (torch.cat([cache[name][:, :in_group], t], dim=1)
                                for name, t in (("group_k", quad_k), ("group_lin_k", lin_k), ("group_v", v)))
        out = self.parallel(quad_q, quad_k, lin_q, lin_k, v)[:, in_group:]
        earlier_kv = cache.get("earlier_kv")
        if earlier_kv is not None:
            out = torch.baddbmm(out, lin_q[:, in_group:], earlier_kv.to(out.dtype), alpha=self.scale)
        complete = v.size(1) // self.group_size * self.group_size
        cache = {}
        if complete:
            done_kv = accumulator(torch.matmul(lin_k[:, :complete].transpose(-1, -2), v[:, :complete]))
            earlier_kv = done_kv if earlier_kv is None else earlier_kv + done_kv
        if earlier_kv is not None:
            cache["earlier_kv"] = earlier_kv
        for name, t in (("group_k", quad_k), ("group_v", v), ("group_lin_k", lin_k)):
            append_rows(cache, name, t[:, complete:], 1, self.group_size)
        return out, cache


def shift_tokens(x: Tensor, history: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """Token shift (RWKV): the first half of the channels take the previous step's values (zeros
    before the first token; ``history`` [B, 1, D/2] when decoding). Returns the shifted x and the
    new history."""
    half = x.size(-1) // 2
    if history is None:
        history = x.new_zeros(x.size(0), 1, half)
    moved = torch.cat([history, x[..., :half]], dim=1)
    return torch.cat([moved[:, :-1], x[..., half:]], dim=-1), moved[:, -1:]


class GAUBlock(CachedModule):
    """x + Dropout((U * Attention(Q, K, V)) W_o), all of it from LayerNorm(x) (pre-norm)."""

    def __init__(self, dim: int, expansion_dim: int, qk_dim: int, mode: str = "quad", group_size: int = 256,
                 quad_scale_length: int = 512, attention_fn: str = "relu_squared", rotary: bool = True,
                 relative_bias: bool = False, token_shift: bool = False, dropout: float = 0.0,
                 attention_dropout: float = 0.0, activation_dropout: float = 0.0, norm: Optional[nn.Module] = None):
        super().__init__()
        if mode not in GAU_MODES:
            raise ValueError(f"GAU mode must be one of {GAU_MODES}, got {mode!r}")
        self.expansion_dim, self.qk_dim, self.mode, self.token_shift = expansion_dim, qk_dim, mode, token_shift
        self.norm = norm if norm is not None else nn.LayerNorm(dim)
        self.hidden_proj = nn.Linear(dim, 2 * expansion_dim + qk_dim)  # U | V | Z, one matmul
        # Per-dimension scale and offset of Z: quad q, k (and linear q, k in chunked mode).
        num_qk = 2 if mode == "quad" else 4
        self.qk_scale = nn.Parameter(torch.empty(num_qk, qk_dim).normal_(std=0.02))
        self.qk_offset = nn.Parameter(torch.zeros(num_qk, qk_dim))
        self.out_proj = nn.Linear(expansion_dim, dim)
        self.rotary = RotaryEmbedding(qk_dim) if rotary else None
        bias = CausalRelativeBias() if relative_bias else None
        self.attention = (QuadAttention(quad_scale_length, attention_fn, bias, attention_dropout) if mode == "quad"
                          else ChunkedAttention(group_size, attention_fn, bias, attention_dropout))
        self.activation_dropout = Dropout(activation_dropout, module_name=type(self).__name__)
        self.dropout = Dropout(dropout, module_name=type(self).__name__)

    def forward(self, x: Tensor, ctx: DecodingContext) -> Tensor:
        h = self.norm(x)
        if self.token_shift:
            cache = self.get_cache(ctx.incremental_state)
            h, history = shift_tokens(h, cache.get("shift_history"))
            self.set_cache(ctx.incremental_state, {"shift_history": history})
        hidden = self.activation_dropout(F.silu(self.hidden_proj(h)))
        u, v, z = torch.split_with_sizes(hidden, [self.expansion_dim, self.expansion_dim, self.qk_dim], dim=-1)
        qk = torch.addcmul(self.qk_offset[:, None], z.unsqueeze(1), self.qk_scale[:, None])  # [B, num_qk, T, s]
        if self.rotary is not None:
            qk = self.rotary(qk, ctx.positions, ctx)
        attended = self.attention(*qk.unbind(1), v, ctx)  # quad: (q, k, v); chunked: (q, k, lin_q, lin_k, v)
        return x + self.dropout(self.out_proj(u * attended))
