"""Primer's multi-DConv-head attention: a causal depthwise convolution along time after the
q, k and v projections (So et al., 2021), applied as ONE grouped ``conv1d`` over the
concatenated q|k|v channels.

Causality: the input is padded on the left only (with the cached last ``kernel_size - 1``
pre-convolution rows when decoding), so output t mixes rows t-K+1..t and never a later one.
"""
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import CausalSelfAttention
from .cache import DecodingContext

CONV_VARIANTS = ("per-channel", "per-head-dim", "shared")


class CausalDepthwiseConv(nn.Module):
    """Depthwise causal convolution over ``num_projections`` stacked projections of ``dim``
    channels each (``dim = num_heads * head_dim``).

    Kernels, by variant (each projection q, k, v always has its own kernels):
      * ``per-channel``: one kernel per channel of every head (the official Primer code);
      * ``per-head-dim``: one kernel per head dimension, shared by all heads;
      * ``shared``: one kernel for all channels of the projection.
    """

    def __init__(self, num_projections: int, num_heads: int, head_dim: int, kernel_size: int = 3,
                 variant: str = "per-channel"):
        super().__init__()
        if variant not in CONV_VARIANTS:
            raise ValueError(f"conv variant must be one of {CONV_VARIANTS}, got {variant!r}")
        if kernel_size < 1:
            raise ValueError(f"kernel size must be >= 1, got {kernel_size}")
        self.num_projections, self.num_heads, self.head_dim = num_projections, num_heads, head_dim
        self.kernel_size, self.variant = kernel_size, variant
        self.channels = num_projections * num_heads * head_dim
        kernels_per_projection = {"per-channel": num_heads * head_dim, "per-head-dim": head_dim, "shared": 1}[variant]
        # weight[..., -1] multiplies the current step, weight[..., -1 - j] the step j earlier.
        self.weight = nn.Parameter(torch.empty(num_projections, kernels_per_projection, kernel_size))
        self.reset_parameters()

    def reset_parameters(self):
        # The official Primer initialisation: 0.5 on the current step, 0.5 / K on each earlier one.
        with torch.no_grad():
            self.weight.fill_(0.5 / self.kernel_size)
            self.weight[..., -1] = 0.5

    def full_weight(self) -> Tensor:
        """The [channels, 1, K] weight of the grouped conv1d, with the variant's sharing expanded."""
        p, k = self.num_projections, self.kernel_size
        w = self.weight
        if self.variant == "per-head-dim":
            w = w[:, None].expand(p, self.num_heads, self.head_dim, k)
        elif self.variant == "shared":
            w = w.expand(p, self.num_heads * self.head_dim, k)
        return w.reshape(self.channels, 1, k)

    def forward(self, x: Tensor, history: Tensor = None) -> Tuple[Tensor, Tensor]:
        """x: [B, T, channels]; history: the previous K-1 input rows [B, K-1, channels] or None
        (= zeros: nothing precedes the sequence). Returns the output and the new history."""
        context = self.kernel_size - 1
        if context == 0:
            return x * self.full_weight().view(1, 1, -1), x[:, :0]
        if history is None:
            padded = F.pad(x.transpose(1, 2), (context, 0))
        else:
            padded = torch.cat([history, x], dim=1).transpose(1, 2)
        out = F.conv1d(padded, self.full_weight(), groups=self.channels)
        # Back to a contiguous [B, T, C]: heads split from it must have a unit-stride last dimension,
        # otherwise SDPA falls back to its slow (T x T materialising) kernel.
        return out.transpose(1, 2).contiguous(), padded[:, :, -context:].transpose(1, 2)


class MultiDConvHeadAttention(CausalSelfAttention):
    """Causal self-attention whose q, k, v pass through a causal depthwise convolution.

    The decoding cache keeps, besides the usual keys/values, the last K-1 pre-convolution
    q|k|v projections ("qkv_history"), so a new token costs one projection row and one conv step.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, rotary_dim: int = 0, bias: bool = True,
                 kernel_size: int = 3, conv_variant: str = "per-channel"):
        super().__init__(dim, num_heads, dropout=dropout, rotary_dim=rotary_dim, bias=bias)
        self.conv = CausalDepthwiseConv(3, num_heads, self.head_dim, kernel_size, conv_variant)

    def project_qkv(self, x: Tensor, ctx: DecodingContext, cache: Dict[str, Tensor]):
        qkv, history = self.conv(self.qkv_proj(x), cache.get("qkv_history"))
        if ctx.incremental_state is not None:
            cache["qkv_history"] = history
        return qkv.chunk(3, dim=-1)
