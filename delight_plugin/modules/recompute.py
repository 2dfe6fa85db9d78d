"""Activation checkpointing, written once: ``--checkpoint-activations`` (whole blocks, applied by
:func:`block_stack` where a stack is built) and blocks that recompute their sublayers (``PreNormBlock``)."""
import functools
from typing import Iterable

import torch.utils.checkpoint
from torch import nn


def recomputed(module: nn.Module, ctx, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, its activations recomputed in the backward pass (with the same dropout
    masks) while ``module`` trains; a call with incremental state passes straight through: a decoding
    step has no backward pass, and a rerun would write its cache twice."""
    if module.training and ctx.incremental_state is None:
        return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False, **kwargs)
    return fn(*args, **kwargs)


def _recomputed_method(method, block: nn.Module, x, ctx, *args, **kwargs):
    return recomputed(block, ctx, method, block, x, ctx, *args, **kwargs)


def block_stack(blocks: Iterable[nn.Module], recompute: bool, method: str = "forward") -> nn.ModuleList:
    """One stack's blocks; ``recompute``: each block's ``method(x, ctx, ...)`` is :func:`recomputed`.

    The method is replaced on the block itself, as fairseq's ``checkpoint_wrapper`` does, rather than
    the block wrapped in a module: a wrapper would add a level to every parameter name, and existing
    checkpoints would no longer load. The partial holds the class's function and the block (not a
    closure), so that ``copy.deepcopy`` (fairseq's EMA) rebinds it to the copy."""
    blocks = nn.ModuleList(blocks)
    if recompute:
        for block in blocks:
            setattr(block, method, functools.partial(_recomputed_method, getattr(type(block), method), block))
    return blocks
