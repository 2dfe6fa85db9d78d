"""Position-wise feed-forward network and the activations our configs name."""
import torch.nn.functional as F
from torch import Tensor, nn

from .dropout import Dropout

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "silu": F.silu,
    "swish": F.silu,
    "relu_squared": lambda x: F.relu(x).square(),
    "tanh": lambda x: x.tanh(),
}


def get_activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"--activation-fn must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, activation: str = "relu", activation_dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.activation = get_activation(activation)
        self.activation_dropout = Dropout(activation_dropout, module_name=type(self).__name__)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.activation_dropout(self.activation(self.fc1(x))))
