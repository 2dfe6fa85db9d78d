"""The normalisations, activations and time-shared dropout that DeLighT's ``--norm-type``,
``--act-type`` and ``--pe-dropout``/``--delight-emb-dropout`` name."""
from torch import Tensor, nn

from ..dropout import keep_mask

NORM_TYPES = ("ln", "bn", "gn")
ACT_TYPES = ("relu", "leaky", "selu", "elu", "celu", "prelu", "sigmoid", "tanh", "gelu", "swish")


class BatchNormLastDim(nn.BatchNorm1d):
    """BatchNorm over the last dimension of a tensor of any rank (statistics over all other dims).

    In training its statistics mix time steps, so it is only causal in eval mode (as in the reference)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.reshape(-1, x.size(-1))).view_as(x)


def build_norm(norm_type: str, dim: int) -> nn.Module:
    # The reference builds every norm with one group, and its ``gn`` with one group falls back to
    # BatchNorm, so ``gn`` means ``bn`` everywhere (kept for command-line compatibility).
    if norm_type == "ln":
        return nn.LayerNorm(dim)
    if norm_type in ("bn", "gn"):
        return BatchNormLastDim(dim)
    raise ValueError(f"--norm-type must be one of {list(NORM_TYPES)}, got {norm_type!r}")


def build_activation(act_type: str) -> nn.Module:
    factories = {
        "relu": nn.ReLU, "leaky": lambda: nn.LeakyReLU(0.1), "selu": nn.SELU, "elu": nn.ELU, "celu": nn.CELU,
        "prelu": nn.PReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU, "swish": nn.SiLU,
    }
    if act_type not in factories:
        raise ValueError(f"--act-type must be one of {list(ACT_TYPES)}, got {act_type!r}")
    return factories[act_type]()


class RecurrentDropout(nn.Module):
    """Variational dropout: one mask per sequence and channel, shared by every time step."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:  # x: [batch, time, channels]
        if not self.training or self.p == 0:
            return x
        return x * keep_mask((x.size(0), 1, x.size(-1)), self.p, x.dtype, x.device)

    def extra_repr(self) -> str:
        return f"p={self.p}"
