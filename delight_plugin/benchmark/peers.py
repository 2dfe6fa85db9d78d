"""Adapters for the PyPI peers (the ``bench`` extra), sized like the baseline.

Each peer is imported only when it is built, so the benchmark runs without the extra and says
which peers it skipped. Sizes follow docs/variants.md section 5: the baseline's width d, depth
L, heads h and FFN width; where a package cannot match exactly, the report shows both the
parameter count and the MACs so readers can judge.
"""
import importlib
from typing import Callable, Dict, List, Tuple

import torch

from .subjects import Measured, Subject

# peer name -> (import name, pip requirement)
PEER_PACKAGES: Dict[str, Tuple[str, str]] = {
    "x_transformers": ("x_transformers", "x-transformers"),
    "flash_pytorch": ("flash_pytorch", "flash-pytorch"),
    "hourglass_pytorch": ("hourglass_transformer_pytorch", "hourglass-transformer-pytorch"),
    "linformer": ("linformer", "linformer"),
    "linformer_pytorch": ("linformer_pytorch", "linformer-pytorch"),
}

PEER_NOTES = {
    "x_transformers": "plain pre-norm decoder, fused SDPA, GELU FFN (strong plain baseline)",
    "flash_pytorch": "FLASHTransformer, causal, 2L GAU layers, group 256, s as gau_lm_flash",
    "hourglass_pytorch": "HourglassTransformerLM, depth (a, L-2a, a), shorten factor 2, no attention resampling",
    "linformer": "lucidrains LinformerLM, k=min(256, T/4); NOT causal: speed and memory only",
    "linformer_pytorch": "tatp22 LinformerLM causal=True, k=min(256, T/4); leaks the future: speed and memory only",
}


def _x_transformers(shape, vocab, length):
    from x_transformers import Decoder, TransformerWrapper

    return TransformerWrapper(num_tokens=vocab, max_seq_len=length, attn_layers=Decoder(
        dim=shape["dim"], depth=shape["layers"], heads=shape["heads"], attn_dim_head=shape["dim"] // shape["heads"],
        ff_mult=shape["ffn"] // shape["dim"], attn_flash=True))


def _flash_pytorch(shape, vocab, length):
    from flash_pytorch import FLASHTransformer

    # Two GAUs replace one attention + FFN layer; s as in our gau_lm_flash preset.
    return FLASHTransformer(num_tokens=vocab, dim=shape["dim"], depth=2 * shape["layers"], causal=True,
                            group_size=256, query_key_dim=shape["qk_dim"], expansion_factor=2)


def _hourglass_pytorch(shape, vocab, length):
    from hourglass_transformer_pytorch import HourglassTransformerLM

    outer = max(1, shape["layers"] // 4)
    depth = (outer, max(1, shape["layers"] - 2 * outer), outer)
    # Lengths must be multiples of the shortening factor (the package's padder is broken).
    return HourglassTransformerLM(num_tokens=vocab, dim=shape["dim"], max_seq_len=length, heads=shape["heads"],
                                  dim_head=shape["dim"] // shape["heads"], depth=depth, shorten_factor=2,
                                  attn_resampling=False, causal=True)


def _linformer_k(length: int) -> int:
    return max(1, min(256, length // 4))


def _linformer(shape, vocab, length):
    from linformer import LinformerLM

    return LinformerLM(num_tokens=vocab, dim=shape["dim"], seq_len=length, depth=shape["layers"],
                       k=_linformer_k(length), heads=shape["heads"], dim_head=shape["dim"] // shape["heads"])


def _linformer_pytorch(shape, vocab, length):
    from linformer_pytorch import LinformerLM

    return LinformerLM(num_tokens=vocab, input_size=length, channels=shape["dim"], dim_k=_linformer_k(length),
                       dim_ff=shape["ffn"], nhead=shape["heads"], depth=shape["layers"], causal=True,
                       dropout=0.1, dropout_ff=0.1)


BUILDERS: Dict[str, Callable] = {
    "x_transformers": _x_transformers,
    "flash_pytorch": _flash_pytorch,
    "hourglass_pytorch": _hourglass_pytorch,
    "linformer": _linformer,
    "linformer_pytorch": _linformer_pytorch,
}


def available(name: str) -> bool:
    try:
        importlib.import_module(PEER_PACKAGES[name][0])
        return True
    except Exception:  # not installed, or broken at import
        return False


def peer_subjects(names: List[str], shape: dict, vocab_size: int, device: torch.device,
                  dtype: torch.dtype) -> Tuple[List[Subject], List[str]]:
    """Subjects for the installed peers in ``names``, and a line for each one skipped."""
    subjects, skipped = [], []
    for name in names:
        if name not in BUILDERS:
            raise ValueError(f"--peers: unknown peer {name!r}; choose from {sorted(BUILDERS)} or 'none'")
        if not available(name):
            skipped.append(f"{name}: `{PEER_PACKAGES[name][1]}` is not installed (pip install -e '.[bench]')")
            continue

        def build(length, name=name):
            torch.manual_seed(0)
            module = BUILDERS[name](shape, vocab_size, length)
            return Measured(module.to(device=device, dtype=dtype), vocab_size)
        subjects.append(Subject(name, "peer", build, notes=PEER_NOTES[name]))
    return subjects, skipped
