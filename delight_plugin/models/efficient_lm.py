"""The one decoder-only LM skeleton that every language-model architecture here reuses.

An architecture is a config dataclass (subclass of :class:`EfficientLMConfig`) plus a block
module; its model class subclasses :class:`EfficientLanguageModel` and implements
``build_blocks``. Embeddings, positions, the layer stack, final norm, output projection
(tied, untied or adaptive softmax), incremental state, activation checkpointing and the
parameter/MAC report are written here once; the other ``build_*`` hooks and ``embedding_scale``
let an architecture replace one piece. Blocks see activations as [batch, time, channels]
and a :class:`DecodingContext`; they must be causal.
"""
import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from fairseq import utils
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import FairseqIncrementalDecoder, FairseqLanguageModel
from fairseq.modules import AdaptiveSoftmax
from omegaconf import II
from torch import Tensor, nn

from ..modules.adaptive_input import AdaptiveInputAnyDtype
from ..modules.cache import DecodingContext
from ..modules.dropout import Dropout
from ..modules.positions import POSITION_SCHEMES, build_positions
from ..modules.recompute import block_stack
from ..presets import BASE
from ..reporting.stats import format_report, lm_report
from .build_checks import check_adaptive_softmax_criterion, check_cutoffs_fit_vocabulary
from .validation import POSITIVE_INT, POSITIVE_INT_OR_UNSET, PROBABILITY, check, check_choices, config_error

logger = logging.getLogger(__name__)

# What fairseq's FairseqDecoder.max_positions() returns for a decoder without a length limit.
UNBOUNDED_POSITIONS = int(1e6)


@dataclass
class EfficientLMConfig(FairseqDataclass):
    decoder_embed_dim: int = field(default=BASE.decoder_embed_dim, metadata={"help": "model width (d_model)"})
    decoder_input_dim: Optional[int] = field(
        default=None, metadata={"help": "token embedding width; projected to the model width if different "
                                        "(default: --decoder-embed-dim)"})
    decoder_output_dim: Optional[int] = field(
        default=None, metadata={"help": "width fed to the output layer; the final features are projected "
                                        "to it if different (default: --decoder-input-dim)"})
    decoder_layers: int = field(default=BASE.decoder_layers, metadata={"help": "number of blocks"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on embeddings and residual branches"})
    attention_dropout: float = field(default=0.0, metadata={"help": "dropout on attention weights"})
    activation_dropout: float = field(default=0.0, metadata={"help": "dropout after the FFN activation"})
    position_scheme: ChoiceEnum(POSITION_SCHEMES) = field(
        default="sinusoidal", metadata={"help": "how positions enter: added learned or sinusoidal "
                                                "embeddings, rotary q/k rotation in the blocks, or none"})
    no_scale_embedding: bool = field(default=False, metadata={"help": "do not scale embeddings by sqrt(dim)"})
    share_decoder_input_output_embed: bool = field(
        default=False, metadata={"help": "tie the output projection to the input embedding"})
    no_decoder_final_norm: bool = field(default=False, metadata={"help": "no LayerNorm after the last block"})
    adaptive_input: bool = field(default=False, metadata={"help": "adaptive input embeddings (Baevski & Auli)"})
    adaptive_input_factor: float = field(default=4, metadata={"help": "adaptive input dimension reduction factor"})
    adaptive_input_cutoff: Optional[str] = field(
        default=None, metadata={"help": "comma-separated adaptive input cutoffs, e.g. 20000,60000"})
    adaptive_softmax_cutoff: Optional[str] = field(
        default=None, metadata={"help": "comma-separated adaptive softmax cutoffs, e.g. 20000,60000 (use with "
                                        "--criterion adaptive_loss and --ddp-backend legacy_ddp)"})
    adaptive_softmax_dropout: float = field(default=0.0, metadata={"help": "dropout in the adaptive softmax tails"})
    adaptive_softmax_factor: float = field(default=4, metadata={"help": "adaptive softmax dimension reduction factor"})
    tie_adaptive_weights: bool = field(
        default=False, metadata={"help": "tie adaptive input and softmax weights (needs both, with equal cutoffs)"})
    tie_adaptive_proj: bool = field(default=False, metadata={"help": "also tie their projections"})
    checkpoint_activations: bool = field(
        default=False, metadata={"help": "recompute each block's activations in the backward pass (saves memory)"})
    print_stats: bool = field(
        default=False, metadata={"help": "log a parameter and MAC table per block when the model is built (MACs by "
                                         "torch's FlopCounterMode: FLOPs / 2)"})
    stats_seq_len: int = field(default=512, metadata={"help": "sequence length for --print-stats MACs"})
    tokens_per_sample: int = II("task.tokens_per_sample")
    max_target_positions: Optional[int] = II("task.max_target_positions")


def build_embedding(num_embeddings: int, dim: int, padding_idx: int) -> nn.Embedding:
    """A look-up table initialised N(0, 1/dim), its padding row zero."""
    table = nn.Embedding(num_embeddings, dim, padding_idx)
    nn.init.normal_(table.weight, mean=0.0, std=dim**-0.5)
    nn.init.zeros_(table.weight[padding_idx])
    return table


def cutoffs(value: Optional[str]) -> Optional[List[int]]:
    return None if value is None else utils.eval_str_list(value, type=int)


def input_dim(cfg) -> int:
    """The look-up table's width: --decoder-input-dim, default the model width."""
    return cfg.decoder_input_dim or cfg.decoder_embed_dim


def output_dim(cfg) -> int:
    """The output layer's width: --decoder-output-dim, default the input width."""
    return cfg.decoder_output_dim or input_dim(cfg)


def build_output_layer(cfg, vocab_size: int, dim: int, embed_tokens: nn.Module):
    """(adaptive softmax, output projection), one of them None: ``--adaptive-softmax-cutoff`` (tied to
    ``embed_tokens`` with ``--tie-adaptive-weights``), else a ``dim`` -> vocabulary projection (tied
    with ``--share-decoder-input-output-embed``). Also the DeLighT translation decoder's."""
    if cfg.adaptive_softmax_cutoff is not None:
        return AdaptiveSoftmax(vocab_size, dim, cutoffs(cfg.adaptive_softmax_cutoff),
                               dropout=cfg.adaptive_softmax_dropout,
                               adaptive_inputs=embed_tokens if cfg.tie_adaptive_weights else None,
                               factor=cfg.adaptive_softmax_factor, tie_proj=cfg.tie_adaptive_proj), None
    projection = nn.Linear(dim, vocab_size, bias=False)
    if cfg.share_decoder_input_output_embed:
        projection.weight = embed_tokens.weight
    else:
        nn.init.normal_(projection.weight, mean=0.0, std=dim**-0.5)
    return None, projection


class EfficientLMDecoder(FairseqIncrementalDecoder):
    def __init__(self, cfg: EfficientLMConfig, dictionary, model_cls):
        super().__init__(dictionary)
        self.cfg = cfg
        embed_dim = cfg.decoder_embed_dim
        self.padding_idx = dictionary.pad()
        self.length_limit = model_cls.trained_length_limit(cfg)

        if cfg.adaptive_input:
            self.embed_tokens = model_cls.build_adaptive_input(cfg, len(dictionary), self.padding_idx, input_dim(cfg))
        else:
            self.embed_tokens = build_embedding(len(dictionary), input_dim(cfg), self.padding_idx)
        self.embed_scale = model_cls.embedding_scale(cfg)
        self.input_transform = model_cls.build_input_transform(cfg)
        self.embed_positions = build_positions(cfg.position_scheme, embed_dim, cfg.max_target_positions)
        self.embedding_dropout = model_cls.build_embedding_dropout(cfg)

        self.layers = block_stack(model_cls.build_blocks(cfg), cfg.checkpoint_activations)
        self.layer_norm = None if cfg.no_decoder_final_norm else model_cls.build_norm(cfg, embed_dim)
        self.project_out_dim = model_cls.build_project_out_dim(cfg)
        self.adaptive_softmax, self.output_projection = build_output_layer(cfg, len(dictionary), output_dim(cfg),
                                                                           self.embed_tokens)

    def embedding_modules(self) -> List[nn.Module]:
        return [m for m in (self.embed_tokens, self.input_transform, self.embed_positions) if m is not None]

    def forward(self, prev_output_tokens, encoder_out=None, incremental_state=None,
                features_only: bool = False, return_all_hiddens: bool = False, **unused):
        x, extra = self.extract_features(prev_output_tokens, incremental_state, return_all_hiddens,
                                         encoder_out=encoder_out)
        if not features_only:
            x = self.output_layer(x)
        return x, extra

    def decoding_context(self, positions: Tensor, incremental_state, encoder_out, offset: int) -> DecodingContext:
        """What every block receives besides its input; a translation decoder adds the encoder output."""
        return DecodingContext(positions, incremental_state, offset)

    def extract_features(self, tokens: Tensor, incremental_state=None, return_all_hiddens: bool = False,
                         encoder_out=None, **unused):
        offset = 0
        if incremental_state is not None:
            offset = self.tokens_read(incremental_state, tokens.size(1))
            tokens = tokens[:, offset:]
        positions = torch.arange(offset, offset + tokens.size(1), device=tokens.device)
        ctx = self.decoding_context(positions, incremental_state, encoder_out, offset)

        x = self.embed_scale * self.embed_tokens(tokens)
        if self.input_transform is not None:
            x = self.input_transform(x)
        if self.embed_positions is not None:
            x = x + self.embed_positions(positions)
        x = self.embedding_dropout(x)

        inner_states = [x]
        for layer in self.layers:
            x = layer(x, ctx)
            if return_all_hiddens:
                inner_states.append(x)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        if self.project_out_dim is not None:
            x = self.project_out_dim(x)
        return x, {"attn": [None], "inner_states": inner_states}

    def tokens_read(self, incremental_state, length: int) -> int:
        """How many of the ``length`` tokens passed with ``incremental_state`` are already cached;
        records that all ``length`` will be after this call.

        fairseq passes the whole prefix at every step (one new token). A fresh state with a prompt
        of N tokens is a prefill: one parallel pass fills every block's cache and returns the
        outputs of all N positions, so decoding continues at position N without N sequential
        steps; a longer prefix later extends the cache the same way (a prompt read in pieces)."""
        record = self.get_incremental_state(incremental_state, "tokens_read")
        read = int(record["length"]) if record else 0
        if length <= read:
            raise ValueError(f"incremental decoding: the decoder has already read {read} tokens of this "
                             f"incremental_state; pass the whole prefix with at least one new token, got {length}")
        # a 0-dim CPU tensor: fairseq's state holds tensors, and beam search's reorder skips 0-dim ones
        self.set_incremental_state(incremental_state, "tokens_read", {"length": torch.tensor(length)})
        return read

    def output_layer(self, features: Tensor) -> Tensor:
        return features if self.adaptive_softmax is not None else self.output_projection(features)

    def max_positions(self) -> int:
        """The training length only where the model has parameters per position; otherwise fairseq's
        'unbounded', so that fairseq-eval-lm (which drops every sample longer than this) and sampling can
        run on longer windows than the model was trained on."""
        return self.length_limit or UNBOUNDED_POSITIONS


class EfficientLanguageModel(FairseqLanguageModel):
    """Base class of every LM architecture. Subclasses implement ``build_blocks``.

    ``presets`` maps a size name (tiny, small, base) to command-line flags that scale the
    registered defaults; benchmarks and the demo use the same name across architectures so
    that sizes are matched against fairseq's ``transformer_lm``.
    """

    presets: Dict[str, List[str]] = {}
    # skeleton field -> the architecture's own flag that sets it (DeLighT's LM), for error messages
    field_flags: Dict[str, str] = {}

    @classmethod
    def build_blocks(cls, cfg) -> List[nn.Module]:
        """The stack, first block first: each ``block(x, ctx) -> x``. ``--checkpoint-activations`` is
        applied to what this returns (``modules/recompute.py``)."""
        raise NotImplementedError

    @classmethod
    def trained_length_limit(cls, cfg) -> Optional[int]:
        """The longest input the model takes: the training length (--tokens-per-sample, or
        --max-target-positions) where it has parameters per position (learned positions); None where it
        works at any length (sinusoidal, rotary, none). Subclasses with other length-bound parameters
        extend this."""
        if cfg.position_scheme == "learned":
            return cfg.max_target_positions or cfg.tokens_per_sample
        return None

    @classmethod
    def build_input_transform(cls, cfg) -> Optional[nn.Module]:
        if input_dim(cfg) == cfg.decoder_embed_dim:
            return None
        return nn.Linear(input_dim(cfg), cfg.decoder_embed_dim, bias=False)

    @classmethod
    def build_adaptive_input(cls, cfg, vocab_size: int, padding_idx: int, input_dim: int) -> nn.Module:
        """The ``--adaptive-input`` look-up table (fairseq's ``AdaptiveInput``, no per-band scaling)."""
        return AdaptiveInputAnyDtype(vocab_size, padding_idx, input_dim, cfg.adaptive_input_factor, input_dim,
                             cutoffs(cfg.adaptive_input_cutoff), 0.0, 8)

    @classmethod
    def embedding_scale(cls, cfg) -> float:
        """What looked-up vectors are multiplied by: sqrt(input width) unless --no-scale-embedding."""
        return 1.0 if cfg.no_scale_embedding else input_dim(cfg)**0.5

    @classmethod
    def build_project_out_dim(cls, cfg) -> Optional[nn.Module]:
        """The projection of the final features to --decoder-output-dim, the output layer's width (None:
        they are that wide already). Dropped, as in fairseq, when tied adaptive weights take the
        features at the model width."""
        if cfg.decoder_embed_dim == output_dim(cfg) or cfg.tie_adaptive_weights:
            return None
        return nn.Linear(cfg.decoder_embed_dim, output_dim(cfg), bias=False)

    @classmethod
    def build_embedding_dropout(cls, cfg) -> nn.Module:
        return Dropout(cfg.dropout, module_name="embedding_dropout")

    @classmethod
    def build_norm(cls, cfg, dim: int) -> nn.Module:
        return nn.LayerNorm(dim)

    @classmethod
    def config_error(cls, name: str, value, allowed: str) -> ValueError:
        """``config_error`` naming the flag the user typed: ``field_flags`` maps a skeleton field
        that an architecture fills from one of its own flags (DeLighT's ``--delight-*``) to that flag."""
        return config_error(cls.field_flags.get(name, name), value, allowed)

    @classmethod
    def validate_config(cls, cfg) -> None:
        """Reject bad hyperparameters before any module is built. Subclasses extend this."""
        error = cls.config_error
        check_choices(cfg, error)
        check(cfg, POSITIVE_INT, "decoder_embed_dim", "decoder_layers", "max_target_positions", "stats_seq_len",
              error=error)
        # unset: follow the model width
        check(cfg, POSITIVE_INT_OR_UNSET, "decoder_input_dim", "decoder_output_dim", error=error)
        check(cfg, PROBABILITY, "dropout", "attention_dropout", "activation_dropout", error=error)
        if cfg.share_decoder_input_output_embed and (cfg.adaptive_input or cfg.adaptive_softmax_cutoff):
            raise error("share_decoder_input_output_embed", True,
                        "use --tie-adaptive-weights with adaptive input/softmax instead")
        if cfg.share_decoder_input_output_embed and input_dim(cfg) != output_dim(cfg):
            raise error("share_decoder_input_output_embed", True,
                        f"the tied output layer is the embedding table, so --decoder-input-dim ({input_dim(cfg)}) "
                        f"and --decoder-output-dim ({output_dim(cfg)}) must be equal")
        if cfg.tie_adaptive_weights:
            if not cfg.adaptive_input or cfg.adaptive_softmax_cutoff is None:
                raise error("tie_adaptive_weights", True, "needs both --adaptive-input and --adaptive-softmax-cutoff")
            if cfg.adaptive_input_cutoff != cfg.adaptive_softmax_cutoff:
                raise error("adaptive_input_cutoff", cfg.adaptive_input_cutoff,
                            "must equal --adaptive-softmax-cutoff when weights are tied")
        check_adaptive_softmax_criterion(cfg, error)

    @classmethod
    def build_model(cls, cfg, task):
        if cfg.max_target_positions is None:
            cfg.max_target_positions = cfg.tokens_per_sample
        cls.validate_config(cfg)
        check_cutoffs_fit_vocabulary(cfg, len(task.target_dictionary), getattr(cfg, "_name", cls.__name__),
                                     cls.config_error)
        model = cls(EfficientLMDecoder(cfg, task.target_dictionary, cls))
        if cfg.print_stats:
            logger.info("\n" + model.stats_table(cfg.stats_seq_len))
        return model

    def stats(self, seq_len: int):
        """Parameter and MAC rows per block (see ``reporting/stats.py``)."""
        return lm_report(self.decoder, seq_len)

    def stats_table(self, seq_len: int) -> str:
        return format_report(self.stats(seq_len), f"{type(self).__name__} at {seq_len} tokens")
