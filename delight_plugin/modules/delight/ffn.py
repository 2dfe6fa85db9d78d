"""The light-weight FFN: d_m -> d_m/r -> d_m (r = 4 gives 16x fewer weights than a 4*d_m FFN)."""
from torch import Tensor, nn

from ..dropout import Dropout
from .norms import build_activation


class LightFFN(nn.Module):
    def __init__(self, dim: int, reduction: int, act_type: str = "swish", activation_dropout: float = 0.0,
                 ffn_dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim // reduction)
        self.fc2 = nn.Linear(dim // reduction, dim)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)
        self.activation = build_activation(act_type)
        self.activation_dropout = Dropout(activation_dropout)
        self.ffn_dropout = Dropout(ffn_dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.ffn_dropout(self.fc2(self.activation_dropout(self.activation(self.fc1(x)))))
