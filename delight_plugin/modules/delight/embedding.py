"""The DeLighT embedding: a narrow look-up table (width map_dim) widened to d_m by a DExTra unit."""
from torch import Tensor, nn

from .dextra import DExTraUnit
from .norms import RecurrentDropout


class DExTraEmbedding(nn.Module):
    """map_dim -> (time-shared dropout, ``--delight-emb-dropout``) -> DExTra(in_proj = d_m/2, out = d_m).

    It transforms already looked-up (and scaled) vectors, so it is the LM skeleton's input transform
    and follows the look-up table in the translation model. Its DExTra uses ``--delight-dropout``.
    """

    def __init__(self, map_dim: int, dim: int, width: float, depth: int, max_groups: int, emb_dropout: float,
                 norm_type: str = "ln", act_type: str = "swish", delight_dropout: float = 0.0,
                 shuffle: bool = True, group_schedule: str = "reference"):
        super().__init__()
        self.dropout = RecurrentDropout(emb_dropout)
        self.dextra = DExTraUnit(map_dim, dim // 2, dim, width, depth, max_groups, norm_type, act_type,
                                 delight_dropout, shuffle, group_schedule)

    def forward(self, x: Tensor) -> Tensor:
        return self.dextra(self.dropout(x))
