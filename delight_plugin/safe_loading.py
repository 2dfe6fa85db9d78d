"""Let fairseq checkpoints load under ``torch.load(weights_only=True)``, securely.

torch >= 2.6 refuses every pickled global that is not allowlisted, so checkpoints whose
config is an ``argparse.Namespace`` (all argparse-era models, such as ``transformer``) fail
in ``fairseq-generate``. We allowlist exactly the plain-data classes fairseq writes into a
checkpoint, never callables, and never fall back to ``weights_only=False``: a pickle that
names anything else (``os.system`` through ``__reduce__``, say) is still refused.
"""
import argparse
import collections
import typing

import torch

# Classes whose instances fairseq stores in a checkpoint's "args"/"cfg"/"extra_state".
# Each one rebuilds from plain data (``__setstate__``/``__dict__``); none runs code on load.
_FAIRSEQ_CHECKPOINT_GLOBALS = [
    argparse.Namespace,
    collections.OrderedDict,
    collections.defaultdict,
    typing.Any,
    # OmegaConf metadata names the key/value types of a container as globals.
    dict, list, int, float, str, bool,
]


def _omegaconf_globals():
    """Configs saved by older fairseq versions are OmegaConf containers, not plain dicts."""
    try:
        from omegaconf import DictConfig, ListConfig
        from omegaconf.base import ContainerMetadata, Metadata
        from omegaconf.nodes import AnyNode, BooleanNode, FloatNode, IntegerNode, StringNode
    except ImportError:
        return []
    return [
        DictConfig, ListConfig, ContainerMetadata, Metadata,
        AnyNode, BooleanNode, FloatNode, IntegerNode, StringNode,
    ]


def fairseq_checkpoint_globals():
    """The exact allowlist registered by :func:`allow_fairseq_checkpoint_globals`."""
    return _FAIRSEQ_CHECKPOINT_GLOBALS + _omegaconf_globals()


def allow_fairseq_checkpoint_globals():
    """Register the allowlist with ``torch.serialization`` (idempotent)."""
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:  # torch < 2.4 loads with weights_only=False by default anyway
        add(fairseq_checkpoint_globals())
