"""``linformer_transformer``: a Linformer encoder-decoder for translation, on the LM's pieces.

Encoder: ``linformer_lm``'s blocks with non-causal Linformer self-attention (every query reads the
k compressed slots of its whole sentence, pads contributing nothing). Decoder: ``linformer_lm``'s
decoder (embeddings, positions, causal prefix-sum Linformer blocks, output layer, O(1)-per-token
decoding state) with a source-attention sublayer in every block: full softmax attention over the
source, or ``--linformer-cross-k`` compressed slots of it. See docs/linformer.md.

The encoder left-aligns its input (each row's real tokens first, pads after them), so that a
token's position, and with it its column of the compression matrix, is its index in its sentence
whatever the batch; ``encoder_out`` keeps that order, with the matching ``encoder_padding_mask``.
"""
import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from fairseq.models import FairseqEncoder, FairseqEncoderDecoderModel, register_model, register_model_architecture
from fairseq.utils import safe_getattr
from omegaconf import II
from torch import Tensor, nn

from ..modules.attention import BidirectionalSelfAttention
from ..modules.cache import Seq2SeqContext
from ..modules.dropout import Dropout
from ..modules.linformer import BidirectionalLinformerAttention, SequenceCompression
from ..modules.positions import build_positions
from ..modules.recompute import block_stack
from ..modules.source_attention import SourceAttention
from ..reporting.stats import format_report, seq2seq_report
from .efficient_lm import EfficientLMDecoder, build_embedding, config_error, input_dim
from .linformer_lm import LinformerLanguageModel, LinformerLMConfig, layer_slots, validate_linformer
from .plain_lm import PlainLanguageModel
from .validation import POSITIVE_INT, check, check_heads

logger = logging.getLogger(__name__)


@dataclass
class LinformerTransformerConfig(LinformerLMConfig):
    encoder_embed_dim: int = field(default=512, metadata={"help": "encoder width"})
    encoder_ffn_embed_dim: int = field(default=2048, metadata={"help": "encoder FFN hidden width"})
    encoder_layers: int = field(default=6, metadata={"help": "encoder blocks"})
    encoder_attention_heads: int = field(
        default=8, metadata={"help": "encoder attention heads (a divisor of the encoder width)"})
    linformer_k: int = field(
        default=64, metadata={"help": "compressed key/value slots k of the encoder and decoder self-attention; 1 <= "
                                      "k <= both max positions. Sentences are short: a k above their length costs "
                                      "time and compresses nothing"})
    linformer_cross_k: Optional[int] = field(
        default=None, metadata={"help": "compress the source keys/values of the encoder-decoder attention to this "
                                        "many slots K, 1 <= K <= --max-source-positions, padding-aware as the "
                                        "encoder (default: full softmax attention over the source)"})
    share_all_embeddings: bool = field(
        default=False, metadata={"help": "one look-up table for source, target and output (implies "
                                         "--share-decoder-input-output-embed, as fairseq's transformer; needs a "
                                         "joined dictionary, --encoder-embed-dim = the decoder's input width, and no "
                                         "adaptive input or softmax)"})
    max_source_positions: int = II("task.max_source_positions")
    # The LM skeleton's sequence length: a translation decoder's is --max-target-positions.
    tokens_per_sample: int = II("task.max_target_positions")


class EncoderView:
    """``cfg`` as the LM's layer builders read it, for the encoder: they read ``decoder_*`` widths and
    ``max_target_positions``, which here stand for the ``encoder_*`` ones and ``max_source_positions``."""

    RENAMED = {"decoder_embed_dim": "encoder_embed_dim", "decoder_ffn_embed_dim": "encoder_ffn_embed_dim",
               "decoder_layers": "encoder_layers", "decoder_attention_heads": "encoder_attention_heads",
               "max_target_positions": "max_source_positions"}

    def __init__(self, cfg):
        self._cfg = cfg

    def __getattr__(self, name):
        return getattr(self._cfg, self.RENAMED.get(name, name))


class EncoderLayerBuilder(LinformerLanguageModel):
    """``linformer_lm``'s block builders (sharing, k per layer, full attention, FFN, checkpointing)
    making non-causal attention; called on an ``EncoderView``, never instantiated."""

    linformer_attention_cls = BidirectionalLinformerAttention
    attention_cls = BidirectionalSelfAttention
    length_flag = "--max-source-positions"


class DecoderLayerBuilder(LinformerLanguageModel):
    """``linformer_lm``'s causal blocks plus a source-attention sublayer each; never instantiated."""

    length_flag = "--max-target-positions"

    @classmethod
    def build_blocks(cls, cfg) -> List[nn.Module]:
        blocks = super().build_blocks(cfg)
        layerwise = cfg.linformer_cross_k and cfg.linformer_sharing == "layerwise"
        shared = cls.build_source_compression(cfg, 0, matrices=1) if layerwise else None
        for i, block in enumerate(blocks):
            block.add_source_attention(cls.build_source_attention(cfg, i, shared))
        return blocks

    @classmethod
    def build_source_compression(cls, cfg, layer_index: int, matrices: int) -> SequenceCompression:
        head_dim = cfg.decoder_embed_dim // cfg.decoder_attention_heads
        return SequenceCompression(cfg.linformer_method, layer_slots(cfg, layer_index, cfg.linformer_cross_k),
                                   cfg.max_source_positions, head_dim, matrices, length_flag="--max-source-positions")

    @classmethod
    def build_source_attention(cls, cfg, layer_index: int, shared: Optional[SequenceCompression]) -> SourceAttention:
        keys = values = None
        if cfg.linformer_cross_k:
            keys, values = cls.key_value_compressions(cfg, layer_index, shared, cls.build_source_compression)
        return SourceAttention(cfg.decoder_embed_dim, cfg.encoder_embed_dim, cfg.decoder_attention_heads,
                               cfg.attention_dropout, keys, values)


class LinformerEncoder(FairseqEncoder):
    def __init__(self, cfg, dictionary, embed_tokens: nn.Embedding):
        super().__init__(dictionary)
        self.cfg = cfg
        dim = cfg.encoder_embed_dim
        self.padding_idx = dictionary.pad()
        self.embed_tokens = embed_tokens
        self.embed_scale = 1.0 if cfg.no_scale_embedding else dim**0.5
        self.embed_positions = build_positions(cfg.position_scheme, dim, cfg.max_source_positions)
        self.embedding_dropout = Dropout(cfg.dropout, module_name="embedding_dropout")
        self.layers = block_stack(EncoderLayerBuilder.build_blocks(EncoderView(cfg)), cfg.checkpoint_activations)
        self.layer_norm = nn.LayerNorm(dim)

    def embedding_modules(self) -> List[nn.Module]:
        return [m for m in (self.embed_tokens, self.embed_positions) if m is not None]

    def forward(self, src_tokens: Tensor, src_lengths: Optional[Tensor] = None, **unused):
        if src_tokens.size(1) > self.cfg.max_source_positions:
            raise ValueError(f"got a source of {src_tokens.size(1)} tokens; the model takes at most "
                             f"--max-source-positions ({self.cfg.max_source_positions})")
        padding_mask = src_tokens.eq(self.padding_idx)
        if padding_mask.any():  # left-align: real tokens first (in order), pads after them
            order = torch.sort(padding_mask.to(torch.uint8), dim=1, stable=True).indices
            src_tokens, padding_mask = src_tokens.gather(1, order), padding_mask.gather(1, order)
        positions = torch.arange(src_tokens.size(1), device=src_tokens.device)
        x = self.embed_scale * self.embed_tokens(src_tokens)
        if self.embed_positions is not None:
            x = x + self.embed_positions(positions)
        x = self.embedding_dropout(x)
        ctx = Seq2SeqContext(positions, padding_mask=padding_mask)
        for layer in self.layers:
            x = layer(x, ctx)
        # Pads' rows are zeroed so that nothing reading the output can pick up what they computed.
        x = self.layer_norm(x).masked_fill(padding_mask[..., None], 0.0)
        return {
            "encoder_out": [x.transpose(0, 1)],  # fairseq's [S, B, C] convention; rows left-aligned
            "encoder_padding_mask": [padding_mask],
            "encoder_embedding": [], "encoder_states": [], "src_tokens": [],
            "src_lengths": [] if src_lengths is None else [src_lengths],
        }

    def reorder_encoder_out(self, encoder_out: Dict[str, List[Tensor]], new_order: Tensor):
        return {
            **encoder_out,
            "encoder_out": [encoder_out["encoder_out"][0].index_select(1, new_order)],
            "encoder_padding_mask": [encoder_out["encoder_padding_mask"][0].index_select(0, new_order)],
            "src_lengths": [t.index_select(0, new_order) for t in encoder_out["src_lengths"]],
        }

    def max_positions(self):
        return self.cfg.max_source_positions


class LinformerDecoder(EfficientLMDecoder):
    """``linformer_lm``'s decoder; its blocks read the encoder output through the context."""

    def decoding_context(self, positions: Tensor, incremental_state, encoder_out, offset: int) -> Seq2SeqContext:
        if encoder_out is None:
            raise ValueError("linformer_transformer's decoder needs encoder_out (the encoder's output)")
        masks = encoder_out["encoder_padding_mask"]
        return Seq2SeqContext(positions, incremental_state, encoder_out=encoder_out["encoder_out"][0].transpose(0, 1),
                              encoder_padding_mask=masks[0] if masks else None, offset=offset)


@register_model("linformer_transformer", dataclass=LinformerTransformerConfig)
class LinformerTransformerModel(FairseqEncoderDecoderModel):
    @classmethod
    def validate_embedding_sharing(cls, cfg, task) -> None:
        if not cfg.share_all_embeddings:
            return
        if task.source_dictionary != task.target_dictionary:
            raise config_error("share_all_embeddings", True, "needs a joined dictionary "
                                                             "(fairseq-preprocess --joined-dictionary)")
        decoder_input_dim = input_dim(cfg)
        if cfg.encoder_embed_dim != decoder_input_dim:
            raise config_error("share_all_embeddings", True, f"needs --encoder-embed-dim ({cfg.encoder_embed_dim}) "
                                                             f"= the decoder's input width ({decoder_input_dim})")
        if cfg.adaptive_input or cfg.adaptive_softmax_cutoff is not None:
            raise config_error("share_all_embeddings", True, "cannot share an adaptive input or softmax")

    @classmethod
    def validate_config(cls, cfg) -> None:
        PlainLanguageModel.validate_config(cfg)  # the decoder skeleton's flags, every choice, decoder heads
        source, target = cfg.max_source_positions, cfg.max_target_positions
        check(cfg, POSITIVE_INT, "max_source_positions")
        validate_linformer(cfg, min(source, target),
                           f"--max-source-positions ({source}) and --max-target-positions ({target})")
        check(cfg, POSITIVE_INT, "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_layers")
        check_heads(cfg, "encoder")
        if cfg.linformer_cross_k is not None and not 1 <= cfg.linformer_cross_k <= source:
            raise config_error("linformer_cross_k", cfg.linformer_cross_k,
                               f"must be between 1 and --max-source-positions ({source})")

    @classmethod
    def build_model(cls, cfg, task):
        cls.validate_embedding_sharing(cfg, task)
        if cfg.share_all_embeddings:
            cfg.share_decoder_input_output_embed = True  # as fairseq's transformer: one table for all three
        cls.validate_config(cfg)
        decoder = LinformerDecoder(cfg, task.target_dictionary, DecoderLayerBuilder)
        source = task.source_dictionary
        embed = decoder.embed_tokens if cfg.share_all_embeddings else build_embedding(
            len(source), cfg.encoder_embed_dim, source.pad())
        model = cls(LinformerEncoder(cfg, source, embed), decoder)
        if cfg.print_stats:  # --stats-seq-len tokens a side, at most what each side takes
            src_len, tgt_len = (min(cfg.stats_seq_len, n) for n in (cfg.max_source_positions, cfg.max_target_positions))
            logger.info("\n" + model.stats_table(src_len, tgt_len))
        return model

    def stats(self, src_len: int, tgt_len: int):
        """Parameter and MAC rows per block (see ``reporting/stats.py``)."""
        return seq2seq_report(self, src_len, tgt_len)

    def stats_table(self, src_len: int, tgt_len: int) -> str:
        return format_report(self.stats(src_len, tgt_len),
                             f"{type(self).__name__}: {src_len} source tokens, {tgt_len} target tokens, "
                             "MACs per target token")


# ``--arch linformer_transformer`` is the config's defaults: fairseq's ``transformer`` (base) widths
# and depth, 512 wide, FFN 2048, 6 + 6 layers, 8 heads, k = 64.

@register_model_architecture("linformer_transformer", "linformer_transformer_iwslt_de_en")
def linformer_transformer_iwslt_de_en(args):
    """fairseq's ``transformer_iwslt_de_en`` sizes: FFN 1024 and 4 heads on both sides."""
    for side in ("encoder", "decoder"):
        setattr(args, f"{side}_ffn_embed_dim", safe_getattr(args, f"{side}_ffn_embed_dim", 1024))
        setattr(args, f"{side}_attention_heads", safe_getattr(args, f"{side}_attention_heads", 4))


@register_model_architecture("linformer_transformer", "linformer_transformer_wmt16_en_ro")
def linformer_transformer_wmt16_en_ro(args):
    """Transformer-base widths with the WMT'16 En-Ro baseline's joined embeddings and dropout 0.3
    (the recipe's ``transformer`` flags, delight_plugin/recipes/hyperparameters.py)."""
    args.share_all_embeddings = True
    args.dropout = safe_getattr(args, "dropout", 0.3)
