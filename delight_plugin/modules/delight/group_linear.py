"""Group linear transform (GLT) with optional feature shuffle, per-group norm, activation, dropout."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..dropout import Dropout
from .norms import build_activation, build_norm


class GroupLinear(nn.Module):
    """Splits N inputs into g contiguous groups and maps each with its own N/g x M/g matrix.

    All groups run in one ``torch.baddbmm``. With ``shuffle`` the outputs are interleaved across
    groups (channel shuffle: output j*g + i is feature j of group i) so the next GLT's groups see
    every group. The norm has M/g features and its affine weights are shared by the g groups, as in
    the reference. g = 1 is an ordinary linear layer (+ norm over M + activation + dropout).
    """

    def __init__(self, in_features: int, out_features: int, groups: int, shuffle: bool = False,
                 norm_type: str = "ln", act_type: str = "swish", dropout: float = 0.0):
        super().__init__()
        if in_features % groups or out_features % groups:
            raise ValueError(f"GLT sizes {in_features}->{out_features} must be divisible by {groups} groups")
        self.in_features, self.out_features, self.groups = in_features, out_features, groups
        self.shuffle = shuffle and groups > 1
        # [g, N/g, M/g]: xavier on this 3-D shape gives the reference's fan_in (N/g)(M/g), fan_out M.
        self.weight = nn.Parameter(torch.empty(groups, in_features // groups, out_features // groups))
        self.bias = nn.Parameter(torch.zeros(groups, 1, out_features // groups))
        nn.init.xavier_uniform_(self.weight[0] if groups == 1 else self.weight)  # g = 1: the reference's Linear
        self.norm = build_norm(norm_type, out_features // groups) if norm_type else None
        self.activation = build_activation(act_type) if act_type else None
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        if self.groups == 1:
            y = F.linear(x, self.weight[0].T, self.bias[0, 0])
        else:
            grouped = x.reshape(-1, self.groups, self.in_features // self.groups).transpose(0, 1)
            y = torch.baddbmm(self.bias, grouped, self.weight)  # [g, rows, M/g]
            # shuffle: [g, rows, M/g] -> [rows, M/g, g] read back as [rows, g, M/g]
            y = y.permute(1, 2, 0) if self.shuffle else y.transpose(0, 1)
            y = y.reshape(-1, self.groups, self.out_features // self.groups)
        if self.norm is not None:
            y = self.norm(y)
        if self.activation is not None:
            y = self.activation(y)
        y = y.reshape(*lead, self.out_features)
        # A DExTra unit has about ten of these: in eval, skip ten identity module calls per block and token.
        return self.dropout(y) if self.training else y

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, groups={self.groups}, shuffle={self.shuffle}"
