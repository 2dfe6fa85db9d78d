"""Position schemes: learned, sinusoidal (added to embeddings) and rotary (applied to q/k)."""
import math
from typing import Tuple

import torch
from torch import Tensor, nn

POSITION_SCHEMES = ("learned", "sinusoidal", "rotary", "none")


def sinusoidal_table(num_positions: int, dim: int) -> Tensor:
    """The tensor2tensor/fairseq table: sin in the first half of the channels, cos in the second."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000.0) / max(half - 1, 1)))
    angles = torch.arange(num_positions, dtype=torch.float)[:, None] * freq[None, :]
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2 == 1:
        table = torch.cat([table, torch.zeros(num_positions, 1)], dim=1)
    return table


class SinusoidalPositions(nn.Module):
    def __init__(self, dim: int, max_positions: int):
        super().__init__()
        self.dim = dim
        self.register_buffer("table", sinusoidal_table(max_positions, dim), persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        if int(positions.max()) >= self.table.size(0):
            self.table = sinusoidal_table(int(positions.max()) + 1, self.dim).to(self.table)
        return self.table[positions]


class LearnedPositions(nn.Embedding):
    def __init__(self, dim: int, max_positions: int):
        super().__init__(max_positions, dim)
        nn.init.normal_(self.weight, mean=0.0, std=dim**-0.5)

    def forward(self, positions: Tensor) -> Tensor:
        if int(positions.max()) >= self.num_embeddings:
            raise ValueError(
                f"position {int(positions.max())} exceeds the {self.num_embeddings} learned "
                "positions; raise --tokens-per-sample (or --max-target-positions)"
            )
        return super().forward(positions)


def build_positions(scheme: str, dim: int, max_positions: int):
    """Additive position module for the embedding layer, or None (rotary and none add nothing)."""
    if scheme == "learned":
        return LearnedPositions(dim, max_positions)
    if scheme == "sinusoidal":
        return SinusoidalPositions(dim, max_positions)
    return None


def rotate_pairs(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Turn each channel pair (i, i + h) of x [..., T, C] by the angles whose cos and sin [T, h] are
    given: (x_i cos - x_{i+h} sin, x_{i+h} cos + x_i sin). Channels from 2h on are copied. Written
    into a new contiguous tensor half by half, without the swapped copy of x."""
    half = cos.size(-1)
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    first, second = x[..., :half], x[..., half : 2 * half]
    torch.mul(first, cos, out=out[..., :half]).addcmul_(second, sin, value=-1.0)
    torch.mul(second, cos, out=out[..., half : 2 * half]).addcmul_(first, sin)
    if x.size(-1) > 2 * half:
        out[..., 2 * half :] = x[..., 2 * half :]
    return out


def rotate_one_position(x: Tensor, cos2: Tensor, sin2: Tensor) -> Tensor:
    """``rotate_pairs`` of x [..., 1, 2h] (no copied channels) given [cos, cos] and [-sin, sin] [1, 2h]:
    x * cos2 + roll(x, h) * sin2, the same products and sums in three kernels. For a decoding step:
    there the half-by-half writes cost more in views than they save (40 us against 15 us a call on
    CPU for [1, 4, 1, 128]), for whole sequences they are 4x faster."""
    return torch.addcmul(x * cos2, x.roll(x.size(-1) // 2, -1), sin2)


class PairRotation(torch.autograd.Function):
    """``rotate_pairs`` with its own backward: a rotation's gradient is the rotation by the opposite
    angles, so the backward saves only cos and sin and costs what the forward does."""

    @staticmethod
    def forward(ctx, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        ctx.save_for_backward(cos, sin)
        return rotate_pairs(x, cos, sin)

    @staticmethod
    def backward(ctx, grad: Tensor):
        cos, sin = ctx.saved_tensors
        return PairRotation.apply(grad, cos, -sin), None, None


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al.) on the first ``dim`` channels of q and k; channel i is
    paired with channel i + dim/2 (the GPT-NeoX layout)."""

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"rotary dimension must be even, got {dim}")
        self.dim, self.base = dim, base
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def cos_sin(self, positions: Tensor, dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
        """cos and sin [T, dim/2] of each pair's angle at ``positions`` [T]."""
        angles = positions.to(self.inv_freq.dtype)[:, None] * self.inv_freq[None, :]
        return angles.cos().to(dtype), angles.sin().to(dtype)

    def tables(self, positions: Tensor, dtype: torch.dtype, ctx=None, doubled: bool = False) -> Tuple[Tensor, Tensor]:
        """``cos_sin`` (``doubled``: [cos, cos] and [-sin, sin], for ``rotate_one_position``), computed once
        for all blocks of a forward pass when ``positions`` are those of its DecodingContext ``ctx``."""
        def make():
            cos, sin = self.cos_sin(positions, dtype)
            return (torch.cat([cos, cos], -1), torch.cat([-sin, sin], -1)) if doubled else (cos, sin)

        if ctx is None or positions is not ctx.positions:
            return make()
        return ctx.shared(("rotary", self.dim, self.base, self.inv_freq.dtype, self.inv_freq.device, dtype, doubled),
                          make)

    def forward(self, x: Tensor, positions: Tensor, ctx=None) -> Tensor:
        """Rotate ``x`` of shape [..., T, C] (C >= dim) by the angles of ``positions`` [T]. ``ctx``: the
        DecodingContext these positions are from; every block of its forward pass then shares one cos/sin
        (a decoding step would otherwise compute them in each block, for a single position)."""
        if torch.is_grad_enabled() and x.requires_grad:
            return PairRotation.apply(x, *self.tables(positions, x.dtype, ctx))
        # Without grad (decoding) the Function's bookkeeping is overhead.
        if x.size(-2) == 1 and x.size(-1) == self.dim:
            return rotate_one_position(x, *self.tables(positions, x.dtype, ctx, doubled=True))
        return rotate_pairs(x, *self.tables(positions, x.dtype, ctx))
