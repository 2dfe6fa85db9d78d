"""The DExTra unit ("DeLighT transformation"): expand-then-reduce GLTs with an input mixer."""
import math
from typing import List, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from .group_linear import GroupLinear


class GLTLayer(NamedTuple):
    in_features: int
    out_features: int
    groups: int


def _round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple)) * multiple


def _linspace_int(start: float, stop: float, num: int) -> List[int]:
    """Evenly spaced and truncated, by numpy so the sizes equal the reference's to the unit."""
    return np.linspace(start, stop, num).astype(int).tolist()


def dextra_schedule(in_features: int, in_proj: int, out_features: int, width: float, depth: int, max_groups: int,
                    schedule: str = "reference") -> List[GLTLayer]:
    """GLT sizes and groups of one DExTra unit, (in, out, groups) per layer.

    ``reference``: groups min(2^l, g_max) for l = 1..ceil(N/2) (the code starts at 2 groups), sizes
    linearly from in_proj to in_features * width, then mirrored. ``paper``: the same with groups
    min(2^(l-1), g_max), i.e. starting at one group (the paper's equation). ``define``: the DeFINE
    (ICLR'20) schedule, groups 1, 2, 4, ... wrapping at g_max then reversed, sizes expand only.
    Every intermediate width is rounded up to a multiple of the groups on both sides (and of 8);
    layer l+1 also receives the unit's projected input (input mixer), hence ``out_l + in_proj``.
    """
    max_features = in_features * width
    if schedule == "define":
        groups, exponent = [], 0
        for _ in range(depth):
            g = 2 ** exponent
            exponent += 1
            if g > max_groups:
                g, exponent = 1, 1
            groups.append(g)
        groups = groups[::-1]
        sizes = _linspace_int(in_proj, max_features, depth)[1:]
    else:
        mid = int(math.ceil(depth / 2))
        first = 1 if schedule == "paper" else 2
        groups = [min(first * 2**i, max_groups) for i in range(mid)]
        sizes = _linspace_int(in_proj, max_features, mid)
        skip = 0 if depth % 2 == 0 else 1  # odd depth: the middle layer is not repeated
        groups = groups + groups[::-1][skip:]
        sizes = (sizes + sizes[::-1][skip:])[:-1]
    layers, n_in = [], in_proj
    for i in range(depth - 1):
        out = _round_up(sizes[i], max(groups[i], groups[i + 1], 8))
        layers.append(GLTLayer(n_in, out, groups[i]))
        n_in = out + in_proj
    layers.append(GLTLayer(n_in, out_features, groups[-1]))
    return layers


def mix_input(x: Tensor, y: Tensor, groups: int) -> Tensor:
    """Input mixer: concatenate the unit's input and the GLT output group by group,
    [x_1; y_1; x_2; y_2; ...], so each group of the next GLT sees its slice of both."""
    if groups == 1:
        return torch.cat([x, y], dim=-1)
    lead = x.shape[:-1]
    mixed = torch.cat([x.reshape(*lead, groups, -1), y.reshape(*lead, groups, -1)], dim=-1)
    return mixed.reshape(*lead, -1)


class DExTraUnit(nn.Module):
    """in_features -> Linear(in_proj) -> N GLTs with input mixing -> Linear(out_features).

    Every layer is followed by the norm, the activation and ``dropout`` (``--delight-dropout``).
    The input projection is in the reference code but not in the paper's figure.
    """

    def __init__(self, in_features: int, in_proj: int, out_features: int, width: float, depth: int,
                 max_groups: int, norm_type: str = "ln", act_type: str = "swish", dropout: float = 0.0,
                 shuffle: bool = True, schedule: str = "reference"):
        super().__init__()
        self.schedule = dextra_schedule(in_features, in_proj, out_features, width, depth, max_groups, schedule)
        layer = dict(norm_type=norm_type, act_type=act_type, dropout=dropout)
        self.input_layer = GroupLinear(in_features, in_proj, 1, **layer)
        self.glts = nn.ModuleList(
            GroupLinear(n_in, n_out, g, shuffle=shuffle and schedule != "define", **layer)
            for n_in, n_out, g in self.schedule)
        self.mix_groups = [g for _, _, g in self.schedule[1:]] + [1]
        self.output_layer = GroupLinear(out_features + in_proj, out_features, 1, **layer)

    def forward(self, x: Tensor) -> Tensor:
        x = self.input_layer(x)
        y = x
        # One iteration per GLT layer (N <= ~12), each a single batched matmul over all groups.
        for glt, groups in zip(self.glts, self.mix_groups):
            y = mix_input(x, glt(y), groups)
        return self.output_layer(y)
