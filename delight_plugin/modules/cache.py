"""Incremental-decoding state, written once for every block.

A module that caches anything between decoding steps subclasses :class:`CachedModule`,
reads its state with ``self.get_cache(incremental_state)`` and writes it back with
``self.set_cache(incremental_state, state)``. The state is a flat ``dict`` of tensors whose
first dimension is the batch, so beam search can reorder all of them generically.
"""
from typing import Dict, Optional

import torch
from fairseq.incremental_decoding_utils import with_incremental_state
from torch import Tensor, nn

State = Dict[str, Dict[str, Optional[Tensor]]]


@with_incremental_state
class CachedModule(nn.Module):
    _CACHE_KEY = "cache"

    def get_cache(self, incremental_state: Optional[State]) -> Dict[str, Tensor]:
        if incremental_state is None:
            return {}
        return self.get_incremental_state(incremental_state, self._CACHE_KEY) or {}

    def set_cache(self, incremental_state: Optional[State], cache: Dict[str, Tensor]) -> None:
        if incremental_state is not None:
            self.set_incremental_state(incremental_state, self._CACHE_KEY, cache)

    def reorder_incremental_state(self, incremental_state: State, new_order: Tensor):
        """Called by fairseq's beam search: keep the batch rows of the surviving hypotheses."""
        cache = self.get_cache(incremental_state)
        if cache:
            cache = {
                k: (v.index_select(0, new_order) if torch.is_tensor(v) and v.dim() > 0 else v)
                for k, v in cache.items()
            }
            self.set_cache(incremental_state, cache)
        return incremental_state


class DecodingContext:
    """What every block needs besides its input: absolute positions and the decoding state.

    ``positions`` [T] are the absolute positions of the T input steps (they start at the number
    of tokens already decoded when ``incremental_state`` is given).
    """

    __slots__ = ("positions", "incremental_state")

    def __init__(self, positions: Tensor, incremental_state: Optional[State] = None):
        self.positions = positions
        self.incremental_state = incremental_state

    @property
    def offset(self) -> int:
        return int(self.positions[0]) if self.positions.numel() else 0


class Seq2SeqContext(DecodingContext):
    """A :class:`DecodingContext` that also carries what encoder and decoder blocks of a translation
    model need: the source padding mask [B, S] (True = pad; encoder self-attention) and, for
    decoders, the encoder output [B, S, C] with its padding mask (encoder-decoder attention)."""

    __slots__ = ("padding_mask", "encoder_out", "encoder_padding_mask")

    def __init__(self, positions: Tensor, incremental_state: Optional[State] = None,
                 padding_mask: Optional[Tensor] = None, encoder_out: Optional[Tensor] = None,
                 encoder_padding_mask: Optional[Tensor] = None):
        super().__init__(positions, incremental_state)
        self.padding_mask = padding_mask
        self.encoder_out = encoder_out
        self.encoder_padding_mask = encoder_padding_mask
