"""Incremental-decoding state, written once for every block.

A module that caches anything between decoding steps subclasses :class:`CachedModule`,
reads its state with ``self.get_cache(incremental_state)`` and writes it back with
``self.set_cache(incremental_state, state)``. The state is a flat ``dict`` of tensors whose
first dimension is the batch, so beam search can reorder all of them generically (and of plain
ints, which it leaves alone). Histories that grow by a row per step use ``append_rows``; attention
keys and values ``cached_keys_values``.
"""
from typing import Any, Callable, Dict, Hashable, Optional, Tuple

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

    def cached_keys_values(self, incremental_state: Optional[State], keys: Tensor, values: Tensor, dim: int,
                           cache: Optional[Dict[str, Tensor]] = None) -> Tuple[Tensor, Tensor]:
        """Decoding: the cached keys and values with these appended along ``dim`` (``append_rows``),
        stored back; ``cache``: this module's state if already read. Otherwise ``keys, values``."""
        if incremental_state is None:
            return keys, values
        cache = self.get_cache(incremental_state) if cache is None else cache
        keys, values = append_rows(cache, "k", keys, dim), append_rows(cache, "v", values, dim)
        self.set_cache(incremental_state, cache)
        return keys, values


def append_rows(cache: Dict[str, Tensor], name: str, new: Tensor, dim: int, limit: Optional[int] = None) -> Tensor:
    """Add ``new`` to the history ``cache[name]`` along ``dim`` and return all of it.

    The history lives in a buffer with spare room (a quarter more, at least 256 rows), so a decoding
    step writes its rows in place instead of copying the whole history as ``torch.cat`` would;
    the rows in use are ``cache[name + "_rows"]`` (a plain int: beam search reorders only tensors).
    The returned history is a view of the buffer. ``limit``: the most rows it will ever hold (the room
    stops there)."""
    buffer, used = cache.get(name), cache.get(name + "_rows", 0)
    total = used + new.size(dim)
    if buffer is None or total > buffer.size(dim):
        shape = list(new.shape)
        shape[dim] = total + max(256, total // 4) if limit is None else max(total, limit)
        grown = new.new_empty(shape)
        if used:
            grown.narrow(dim, 0, used).copy_(buffer.narrow(dim, 0, used))
        buffer = grown
    buffer.narrow(dim, used, new.size(dim)).copy_(new)
    cache[name], cache[name + "_rows"] = buffer, total
    return buffer.narrow(dim, 0, total)


class DecodingContext:
    """What every block needs besides its input: absolute positions and the decoding state.

    ``positions`` [T] are the absolute positions of the T input steps (they start at the number
    of tokens already decoded when ``incremental_state`` is given).
    """

    __slots__ = ("positions", "incremental_state", "_offset", "_shared")

    def __init__(self, positions: Tensor, incremental_state: Optional[State] = None, offset: Optional[int] = None):
        self.positions = positions
        self.incremental_state = incremental_state
        self._offset = offset
        self._shared: Dict[Hashable, Any] = {}

    def shared(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """``make()``, computed once per forward pass for all the blocks that ask with the same ``key``:
        for what depends only on the positions (rotary cos/sin), which every block would recompute."""
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]

    @property
    def offset(self) -> int:
        """The first position, read once (every block asks; each read of a tensor element costs a sync)."""
        if self._offset is None:
            self._offset = int(self.positions[0]) if self.positions.numel() else 0
        return self._offset


class Seq2SeqContext(DecodingContext):
    """A :class:`DecodingContext` that also carries what encoder and decoder blocks of a translation
    model need: the source padding mask [B, S] (True = pad; encoder self-attention) and, for
    decoders, the encoder output [B, S, C] with its padding mask (encoder-decoder attention)."""

    __slots__ = ("padding_mask", "encoder_out", "encoder_padding_mask")

    def __init__(self, positions: Tensor, incremental_state: Optional[State] = None,
                 padding_mask: Optional[Tensor] = None, encoder_out: Optional[Tensor] = None,
                 encoder_padding_mask: Optional[Tensor] = None, offset: Optional[int] = None):
        super().__init__(positions, incremental_state, offset)
        self.padding_mask = padding_mask
        self.encoder_out = encoder_out
        self.encoder_padding_mask = encoder_padding_mask
