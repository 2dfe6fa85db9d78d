"""Hourglass (Nawrot et al., 2021): shorten the sequence, run layers on it, upsample it back.

One :class:`HourglassLevel` shifts its input right by ``k - 1``, pools windows of ``k`` steps
into one shortened token, runs the inner layers (which may contain a nested level) on the
shortened sequence, and adds the upsampled result to its input (the residual).

Why it is causal: after the shift, window ``j`` holds input steps ``jk-k+1 .. jk``, so
shortened token ``j`` summarises steps ``<= jk``; step ``t`` reads shortened token ``t // k``,
and ``(t // k) * k <= t``. The inner layers are causal among shortened tokens, so nothing from
after step ``t`` reaches it. Lengths that are not multiples of ``k`` need no padding: the shift
pads the front, and the last window ends at step ``(m-1)k <= n-1``.

Decoding keeps a cache per level: the last ``k - 1`` inputs (the window being filled) and the
latest shortened output. A new shortened token, and a step of the inner layers, happens only
on the steps ``t`` with ``t % k == 0``; the steps in between reuse the latest one.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cache import CachedModule, DecodingContext
from .feedforward import FeedForward
from .dropout import Dropout

DOWNSAMPLINGS = ("avg", "linear", "attention")
UPSAMPLINGS = ("repeat", "linear", "attention")
ATTENTION_DOWN_BASES = ("avg", "linear")  # the pooling S inside attention downsampling
ATTENTION_UP_BASES = ("repeat", "linear")  # the expansion inside attention upsampling


def parse_structure(text: str) -> List[Tuple[int, int]]:
    """``"2@1,8@3,2@1"`` -> [(2, 1), (8, 3), (2, 1)]: (layers, total shortening) per level.

    Raises ValueError saying what is wrong: the factors must read the same backwards, start at
    1, grow towards the middle with each dividing the next, and the middle needs a layer.
    """
    entries = []
    for part in str(text).replace(" ", "").split(","):
        layers, sep, factor = part.partition("@")
        if not sep or not layers.isdigit() or not factor.isdigit():
            raise ValueError(f"entry {part!r} is not LAYERS@FACTOR (e.g. 2@1,8@3,2@1)")
        entries.append((int(layers), int(factor)))
    factors = [f for _, f in entries]
    if len(entries) < 3 or len(entries) % 2 == 0:
        raise ValueError("needs an odd number (>= 3) of entries: full-resolution layers, shortened levels, "
                         "full-resolution layers, e.g. 2@1,8@3,2@1")
    if factors != factors[::-1]:
        raise ValueError(f"the shortening factors {factors} must be a palindrome")
    if factors[0] != 1:
        raise ValueError(f"the first and last entries run at full resolution: their factor must be 1, not {factors[0]}")
    middle = len(entries) // 2
    for outer, inner in zip(factors[:middle], factors[1:middle + 1]):
        if inner <= outer or inner % outer:
            raise ValueError(f"factor {inner} must be a multiple (> 1x) of the enclosing factor {outer}")
    if entries[middle][0] < 1:
        raise ValueError("the innermost (most shortened) level needs at least one layer")
    return entries


# --- shortening: windows [B, m, k, C] of shifted steps -> shortened tokens [B, m, C] -------------

class AvgPooling(nn.Module):
    def forward(self, windows: Tensor) -> Tensor:
        return windows.mean(dim=2)


class LinearPooling(nn.Module):
    """Concatenate the k steps of a window and project k*C -> C."""

    def __init__(self, dim: int, factor: int):
        super().__init__()
        self.proj = nn.Linear(factor * dim, dim)

    def forward(self, windows: Tensor) -> Tensor:
        return self.proj(windows.flatten(2))


# --- upsampling: shortened tokens [B, n, C] -> [B, n*k, C], one row per step ----------------------

class RepeatUpsampling(nn.Module):
    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor

    def forward(self, tokens: Tensor) -> Tensor:
        return tokens.repeat_interleave(self.factor, dim=1)


class LinearUpsampling(nn.Module):
    """Project C -> k*C: a separate vector for each of the k steps a token covers."""

    def __init__(self, dim: int, factor: int):
        super().__init__()
        self.factor = factor
        self.proj = nn.Linear(dim, factor * dim)

    def forward(self, tokens: Tensor) -> Tensor:
        bsz, count, dim = tokens.shape
        return self.proj(tokens).view(bsz, count * self.factor, dim)


# --- attention resampling -------------------------------------------------------------------------

class CrossAttentionBlock(nn.Module):
    """x + Attn(Q=LN(x), K=V=memory), then x + FFN(LN(x)). Keys/values come from ``memory()``."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, activation: str, dropout: float,
                 attention_dropout: float):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.attention_dropout = attention_dropout
        self.query_norm = nn.LayerNorm(dim)
        self.q_proj = nn.Linear(dim, dim)
        self.kv_proj = nn.Linear(dim, 2 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, activation)
        self.dropout = Dropout(dropout, module_name=type(self).__name__)

    def heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(-3, -2)

    def memory(self, tokens: Tensor) -> Tuple[Tensor, Tensor]:
        """[..., S, C] -> keys and values [..., H, S, head_dim]."""
        keys, values = self.kv_proj(tokens).chunk(2, dim=-1)
        return self.heads(keys), self.heads(values)

    def forward(self, x: Tensor, keys: Tensor, values: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        q = self.heads(self.q_proj(self.query_norm(x)))
        out = F.scaled_dot_product_attention(
            q, keys, values, attn_mask=mask, dropout_p=self.attention_dropout if self.training else 0.0)
        x = x + self.dropout(self.out_proj(out.transpose(-3, -2).flatten(-2)))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class AttentionPooling(nn.Module):
    """x' = S(window) + Attn(Q=S(window), K=V=window), then x' + FFN(x').

    Each pooled token attends to the k shifted steps of its own window (block-local, as in
    lucidrains' implementation): they are exactly the steps it already summarises, so this is
    causal and costs O(n k) instead of O(n^2 / k).
    """

    def __init__(self, pool: nn.Module, block: CrossAttentionBlock, dim: int):
        super().__init__()
        self.pool = pool
        self.window_norm = nn.LayerNorm(dim)
        self.block = block

    def forward(self, windows: Tensor) -> Tensor:
        bsz, count, factor, dim = windows.shape
        pooled = self.pool(windows).reshape(bsz * count, 1, dim)
        keys, values = self.block.memory(self.window_norm(windows).reshape(bsz * count, factor, dim))
        return self.block(pooled, keys, values).view(bsz, count, dim)


class AttentionUpsampling(CachedModule):
    """After the base expansion U = x + Up(x'): U + Attn(Q=U, K=V=shortened), then + FFN.

    Step t may read shortened tokens j <= t // k (the ones that summarise steps <= t). Keys and
    values of the shortened tokens are cached for decoding.
    """

    def __init__(self, factor: int, block: CrossAttentionBlock):
        super().__init__()
        self.factor = factor
        self.block = block

    def forward(self, x: Tensor, new_tokens: Tensor, start: int, ctx: DecodingContext) -> Tensor:
        keys, values = self.block.memory(new_tokens)
        keys, values = self.cached_keys_values(ctx.incremental_state, keys, values, dim=2)
        steps = torch.arange(start, start + x.size(1), device=x.device)
        mask = torch.arange(keys.size(2), device=x.device)[None, :] <= (steps // self.factor)[:, None]
        return self.block(x, keys, values, mask)


# --- one level -------------------------------------------------------------------------------------

class HourglassLevel(CachedModule):
    """Shift right by k-1, shorten by k, inner layers, upsample, add to the input.

    ``input_stride`` is the total shortening of this level's input (1 at full resolution):
    the level reads its step index from ``ctx.positions // input_stride`` and gives the inner
    layers positions ``j * input_stride * k``, so rotary attention there sees distances in
    original tokens (relative positions scaled by the cumulative pooling).
    """

    def __init__(self, dim: int, factor: int, input_stride: int, layers: List[nn.Module], shorten: nn.Module,
                 upsample: nn.Module, up_attention: Optional[AttentionUpsampling], dropout: float):
        super().__init__()
        self.factor, self.input_stride = factor, input_stride
        self.shorten = shorten
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(dim)
        self.upsample = upsample
        self.up_attention = up_attention
        self.dropout = Dropout(dropout, module_name=type(self).__name__)

    def forward(self, x: Tensor, ctx: DecodingContext) -> Tensor:
        bsz, length, dim = x.shape
        k = self.factor
        cache = self.get_cache(ctx.incremental_state)
        start = ctx.offset // self.input_stride  # this level's index of x[:, 0]
        # stream[:, i] is step start-(k-1)+i; the zeros before step 0 are the shift right by k-1.
        history = cache.get("history", x.new_zeros(bsz, k - 1, dim))
        stream = torch.cat([history, x], dim=1)

        # Windows that end inside this call: shortened tokens first..last, window j = steps jk-k+1..jk.
        first, last = -(-start // k), (start + length - 1) // k
        count = last - first + 1
        begin = first * k - start
        new = x.new_zeros(bsz, 0, dim)
        if count > 0:
            new = self.shorten(stream[:, begin:begin + count * k].reshape(bsz, count, k, dim))
            inner_ctx = DecodingContext(
                torch.arange(first, last + 1, device=x.device) * (self.input_stride * k), ctx.incremental_state)
            for layer in self.layers:
                new = layer(new, inner_ctx)
            new = self.norm(new)
        # Tokens start//k .. last; the first was made by an earlier call when start is inside a window.
        tokens = torch.cat([cache["latest"], new], dim=1) if start % k else new

        offset = start % k
        x = x + self.dropout(self.upsample(tokens)[:, offset:offset + length])
        if self.up_attention is not None:
            x = self.up_attention(x, new, start, ctx)
        self.set_cache(ctx.incremental_state, {"history": stream[:, stream.size(1) - (k - 1):],
                                               "latest": tokens[:, -1:]})
        return x
