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


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al.) on the first ``dim`` channels of q and k."""

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"rotary dimension must be even, got {dim}")
        self.dim = dim
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def cos_sin(self, positions: Tensor, dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
        """cos and sin [T, dim] of each pair's angle; the sin of the first half negated, so that
        rotate(x) = x * cos + swap_halves(x) * sin."""
        angles = positions.to(self.inv_freq.dtype)[:, None] * self.inv_freq[None, :]
        cos, sin = angles.cos(), angles.sin()
        return torch.cat([cos, cos], dim=-1).to(dtype), torch.cat([-sin, sin], dim=-1).to(dtype)

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        """Rotate ``x`` of shape [..., T, C] (C >= dim) by the angles of ``positions`` [T]."""
        cos, sin = self.cos_sin(positions, x.dtype)
        rot, rest = x[..., : self.dim], x[..., self.dim :]
        x1, x2 = rot.chunk(2, dim=-1)
        rotated = torch.addcmul(rot * cos, torch.cat([x2, x1], dim=-1), sin)
        return torch.cat([rotated, rest], dim=-1) if rest.size(-1) else rotated
