"""What the benchmark measures: a *subject* builds a model for one sequence length and exposes
the same few operations whatever its origin (our architectures and fairseq's ``transformer_lm``
here, the PyPI peers in ``peers.py``).

Our models and the baseline are built exactly as ``fairseq-train`` builds them: fairseq's own
argument parser with ``--user-dir``, the arch's named defaults, the size preset's flags and
``--tokens-per-sample <length>``, then ``task.build_model``.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..building import build_as_fairseq_train, synthetic_dictionary


class Measured:
    """A built model seen through the operations the benchmark times."""

    def __init__(self, module: nn.Module, vocab_size: int):
        self.module = module
        self.vocab_size = vocab_size

    def log_probs(self, tokens: Tensor) -> Tensor:
        """Next-token log-probabilities [batch, time, vocab] (what training and scoring need)."""
        return torch.log_softmax(self.module(tokens).float(), dim=-1)

    def training_loss(self, tokens: Tensor) -> Tensor:
        """Mean next-token NLL of ``tokens`` [batch, time + 1], as a training step computes it."""
        log_probs = self.log_probs(tokens[:, :-1])
        return F.nll_loss(log_probs.float().reshape(-1, log_probs.size(-1)), tokens[:, 1:].reshape(-1))

    def generate(self, tokens: Tensor, budget_check: Callable[[int], bool]) -> int:
        """Decode ``tokens`` one step at a time with cached state; return the steps done.
        ``budget_check(step)`` returning False stops early. Peers without a cache raise."""
        raise NotImplementedError("no incremental decoding")

    def macs_per_token(self, length: int) -> float:
        from .measure import count_macs

        tokens = torch.full((1, length), 4, dtype=torch.long, device=self.device)
        self.module.eval()
        return count_macs(lambda: self.log_probs(tokens)) / length

    def embedding_parameters(self) -> set:
        """ids of the token/position embedding and output-layer parameters."""
        skip = set()
        for m in self.module.modules():
            if isinstance(m, nn.Embedding) or (isinstance(m, nn.Linear) and m.out_features == self.vocab_size):
                skip |= {id(p) for p in m.parameters()}
        return skip

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def non_embedding_params(self) -> int:
        skip = self.embedding_parameters()
        return sum(p.numel() for p in self.module.parameters() if id(p) not in skip)


class FairseqMeasured(Measured):
    """A fairseq language model: forward returns (logits, extra); decoding uses
    ``incremental_state`` exactly as ``fairseq-generate`` does (the whole prefix is passed in)."""

    def log_probs(self, tokens: Tensor) -> Tensor:
        # get_normalized_probs also covers the adaptive softmax, whose forward returns features.
        return self.module.get_normalized_probs(self.module(tokens), log_probs=True)

    def training_loss(self, tokens: Tensor) -> Tensor:
        # An adaptive softmax trains on its cluster logits, as fairseq's adaptive_loss does: its
        # get_log_prob fills the full distribution in place and is for inference only.
        adaptive = getattr(self.module.decoder, "adaptive_softmax", None)
        if adaptive is None:
            return super().training_loss(tokens)
        logits, targets = adaptive(self.module(tokens[:, :-1])[0], tokens[:, 1:].contiguous())
        total = sum(F.cross_entropy(out.float(), target, reduction="sum")
                    for out, target in zip(logits, targets) if target is not None)
        return total / tokens[:, 1:].numel()

    def generate(self, tokens: Tensor, budget_check: Callable[[int], bool]) -> int:
        state: Dict = {}
        steps = 0
        with torch.no_grad():
            for t in range(tokens.size(1)):
                if not budget_check(t):
                    break
                self.module.decoder(tokens[:, : t + 1], incremental_state=state)
                steps += 1
        return steps

    def macs_per_token(self, length: int) -> float:
        # Our models report MACs through the skeleton (the same numbers as --print-stats).
        if hasattr(self.module, "stats"):
            return sum(row.macs_per_token for row in self.module.stats(length))
        return super().macs_per_token(length)

    def embedding_parameters(self) -> set:
        # The definition of presets.non_embedding_params, which sizes were matched by.
        from ..presets import embedding_parameter_ids

        return embedding_parameter_ids(self.module)


@dataclass
class Subject:
    """One row group of the report: a name, where it comes from, and how to build it."""

    name: str
    kind: str  # "baseline", "ours" or "peer"
    build: Callable[[int], Measured]  # sequence length -> model
    notes: str = ""
    flags: List[str] = field(default_factory=list)


def build_fairseq_lm(arch: str, flags: List[str], length: int, data_dir: Path):
    """Build ``arch`` as fairseq-train would for ``--tokens-per-sample length``."""
    built = build_as_fairseq_train(arch, flags, data_dir, task_flags=["--tokens-per-sample", length],
                                   adaptive_loss=True)
    return built.model, len(built.task.target_dictionary)


def fairseq_subjects(archs: List[str], size: str, vocab_size: int, device: torch.device,
                     dtype: torch.dtype) -> List[Subject]:
    """The baseline ``transformer_lm`` first, then ``archs``, each at the ``size`` preset."""
    from ..presets import BASELINE_ARCH, preset_flags, vocabulary_flags

    data_dir = synthetic_dictionary(vocab_size)
    subjects = []
    for arch in [BASELINE_ARCH] + [a for a in archs if a != BASELINE_ARCH]:
        kind = "baseline" if arch == BASELINE_ARCH else "ours"
        try:
            flags = preset_flags(arch, size) + vocabulary_flags(arch, vocab_size)
        except (ValueError, KeyError) as err:
            flags, error = [], str(err)

            def build(length, error=error):
                raise ValueError(error)
        else:
            def build(length, arch=arch, flags=flags):
                model, vocab = build_fairseq_lm(arch, flags, length, data_dir)
                return FairseqMeasured(model.to(device=device, dtype=dtype), vocab)
        subjects.append(Subject(arch, kind, build, flags=flags))
    return subjects


def baseline_shape(size: str, vocab_size: int) -> dict:
    """Width, depth, heads and FFN width of the baseline at ``size`` (the peers copy them), and
    the query/key width s of our FLASH preset at that size (flash-pytorch runs the same config)."""
    from ..presets import BASELINE_ARCH, preset_flags

    model, _ = build_fairseq_lm(BASELINE_ARCH, preset_flags(BASELINE_ARCH, size), 8,
                                synthetic_dictionary(vocab_size))
    layer = model.decoder.layers[0]
    flash_flags = preset_flags("gau_lm_flash", size)
    return {"dim": model.decoder.embed_dim, "layers": len(model.decoder.layers),
            "heads": layer.self_attn.num_heads, "ffn": layer.fc1.out_features,
            "qk_dim": int(flash_flags[flash_flags.index("--gau-qk-dim") + 1])}
