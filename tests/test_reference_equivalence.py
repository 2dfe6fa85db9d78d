"""Our modules against public implementations, with our weights copied into theirs.

Our float64 references elsewhere are written from the papers by us, so they could share our
misreadings; here each module is compared with an independent public implementation instead:
flash-pytorch (GAU, FLASH), linformer-pytorch (Linformer attention), hourglass-transformer-pytorch
(shortening / upsampling) and labml-nn (Primer-EZ's multi-DConv-head attention). Every comparison is float64, eval mode,
with a checked one-to-one weight mapping (``copy_weights``: every parameter of theirs is written once,
every element of ours read once) and in the configuration where the mathematics is meant to agree; the
intentional differences are listed in each design's doc. A test skips when its package is missing.
``python tests/test_reference_equivalence.py`` prints the largest absolute difference per component.
"""
import math
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

import pytest
import torch
from torch import Tensor, nn

MAX_DIFFERENCES: Dict[str, float] = {}  # component -> largest |ours - theirs| seen (printed by __main__)
TOLERANCE = 1e-12


class Piece(NamedTuple):
    """Their parameter ``theirs`` <- ``transform(ours[rows])`` (rows: indices along our dim 0, or all)."""
    theirs: str
    ours: str
    rows: Optional[Sequence[int]] = None
    transform: Optional[Callable[[Tensor], Tensor]] = None


def copy_weights(ours: nn.Module, theirs: nn.Module, pieces: List[Piece], constants: Sequence[str] = (),
                 zero_ours: Sequence[str] = (), zero_theirs: Sequence[str] = ()) -> None:
    """Copy our parameters into ``theirs`` along ``pieces``; every parameter of theirs (except the
    fixed ``constants``, which the caller compares) must be written exactly once and every element of
    each of our parameters read exactly once, with matching shapes. A parameter that one side has and
    the other has not (a bias) is set to zero on its side (``zero_ours`` / ``zero_theirs``): that is
    the configuration where the two agree, and each such parameter is a declared difference."""
    our_params, their_params = dict(ours.named_parameters()), dict(theirs.named_parameters())
    reads = {name: torch.zeros(p.shape[0] if p.dim() else 1, dtype=torch.long) for name, p in our_params.items()}
    written = list(zero_theirs)
    with torch.no_grad():
        for name in zero_ours:
            our_params[name].zero_()
            reads[name] += 1
        for name in zero_theirs:
            their_params[name].zero_()
        for piece in pieces:
            source = our_params[piece.ours]
            rows = torch.arange(source.shape[0]) if piece.rows is None else torch.as_tensor(piece.rows)
            reads[piece.ours].index_add_(0, rows, torch.ones_like(rows))
            value = source[rows] if piece.rows is not None else source
            if piece.transform is not None:
                value = piece.transform(value)
            target = their_params[piece.theirs]
            assert target.shape == value.shape, (piece, target.shape, value.shape)
            target.copy_(value)
            written.append(piece.theirs)
    assert len(written) == len(set(written)), "a parameter of theirs is written twice"
    assert set(written) == set(their_params) - set(constants), set(their_params) - set(constants) ^ set(written)
    unread = {name: r.tolist() for name, r in reads.items() if not (r == 1).all()}
    assert not unread, f"our parameters not read exactly once: {unread}"


def randomise(module: nn.Module, seed: int, std: float = 0.5) -> nn.Module:
    """Random values for every parameter (our initialisations zero some, which would hide a mix-up)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * std)
    return module


def record(component: str, ours: Tensor, theirs: Tensor, tolerance: float = TOLERANCE) -> float:
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == torch.float64
    difference = (ours - theirs).abs().max().item()
    MAX_DIFFERENCES[component] = max(MAX_DIFFERENCES.get(component, 0.0), difference)
    scale = theirs.abs().max().item()
    assert scale > 1e-3, f"{component}: outputs are too small ({scale}) for the comparison to mean anything"
    assert difference <= tolerance * max(1.0, scale), f"{component}: max |ours - theirs| = {difference}"
    return difference


def rows(start: int, stop: int) -> List[int]:
    return list(range(start, stop))


# ---------------------------------------------------------------------------------------------------
# GAU / FLASH-Quad and FLASH against flash-pytorch 0.1.9
# ---------------------------------------------------------------------------------------------------

def interleaved_from_halves(dim: int) -> List[int]:
    """Our channel for each of theirs: rotary_embedding_torch pairs channels (2i, 2i+1), our rotary
    (GPT-NeoX layout) pairs (i, i + dim/2) at the same frequency, so their 2i is our i, 2i+1 our i + dim/2."""
    half = dim // 2
    return [c // 2 + (half if c % 2 else 0) for c in range(dim)]


def gau_pieces(dim_e: int, dim_s: int, their_qk_rows: Sequence[int], qk_channels: Sequence[int],
               bias_factor: float, to_out: str) -> List[Piece]:
    """flash-pytorch splits our one U|V|Z projection into to_hidden (V then the gate U) and to_qk (Z)."""
    value_then_gate = rows(dim_e, 2 * dim_e) + rows(0, dim_e)
    z_channels = [2 * dim_e + c for c in qk_channels]
    columns = lambda t: t[:, list(qk_channels)]  # noqa: E731
    return [
        Piece("norm.weight", "norm.weight"), Piece("norm.bias", "norm.bias"),
        Piece("to_hidden.0.weight", "hidden_proj.weight", value_then_gate),
        Piece("to_hidden.0.bias", "hidden_proj.bias", value_then_gate),
        Piece("to_qk.0.weight", "hidden_proj.weight", z_channels),
        Piece("to_qk.0.bias", "hidden_proj.bias", z_channels),
        Piece(f"{their_qk_rows[0]}.gamma", "qk_scale", their_qk_rows[1], columns),
        Piece(f"{their_qk_rows[0]}.beta", "qk_offset", their_qk_rows[1], columns),
        Piece("rel_pos_bias.relative_attention_bias.weight", "attention.relative_bias.bias.weight", None,
              lambda t: t * bias_factor),
        Piece(f"{to_out}.weight", "out_proj.weight"), Piece(f"{to_out}.bias", "out_proj.bias"),
    ]


def our_gau(dim, **options):
    from delight_plugin.modules.gau import GAUBlock
    return randomise(GAUBlock(dim, 2 * dim, options.pop("qk_dim"), relative_bias=True, **options).double(), seed=1)


def run_ours(block: nn.Module, x: Tensor) -> Tensor:
    from delight_plugin.modules.cache import DecodingContext
    with torch.no_grad():
        return block.eval()(x, DecodingContext(torch.arange(x.size(1))))


@pytest.mark.parametrize("attention_fn", ["relu_squared", "laplace"])
def test_gau_quad_equals_flash_pytorch_gau(attention_fn):
    """Causal GAU with our scale length set to the sequence length n (theirs divides by n) and no
    rotary (their GAU has none). Their T5 bias is always on, multiplied by sqrt(d) and then divided by n
    with the logits: our bias b is their b * sqrt(d) / n."""
    flash_pytorch = pytest.importorskip("flash_pytorch", reason="flash-pytorch==0.1.9 (pip install -e .[test])")
    dim, qk_dim, seq_len = 16, 8, 40  # 40 > 16: the log-spaced buckets of the T5 bias are used too
    ours = our_gau(dim, qk_dim=qk_dim, mode="quad", quad_scale_length=seq_len, attention_fn=attention_fn,
                   rotary=False)
    theirs = flash_pytorch.GAU(dim=dim, query_key_dim=qk_dim, expansion_factor=2.0, causal=True,
                               laplace_attn_fn=attention_fn == "laplace").double()
    copy_weights(ours, theirs, gau_pieces(2 * dim, qk_dim, ("offsetscale", None), range(qk_dim),
                                          seq_len / dim**0.5, "to_out.0"))
    x = torch.randn(3, seq_len, dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        expected = theirs.eval()(x)
    record(f"GAU quad ({attention_fn})", run_ours(ours, x), expected)


@pytest.mark.parametrize("rotary,token_shift,seq_len", [(False, False, 64), (True, False, 70), (True, True, 50)])
def test_flash_chunked_equals_flash_pytorch_flash(rotary, token_shift, seq_len):
    """Causal FLASH, same group size: quadratic attention in each group / g plus causal linear attention
    over earlier groups / g. Their T5 bias is multiplied by sqrt(s) after the division by g: our b is
    their b * sqrt(s). Their rotary pairs channels (2i, 2i+1), ours (i, i + s/2): Z's channels are
    permuted to match. A length that is not a multiple of g checks the padding of the last group."""
    flash_pytorch = pytest.importorskip("flash_pytorch", reason="flash-pytorch==0.1.9 (pip install -e .[test])")
    dim, qk_dim, group = 16, 8, 32  # group 32 > 16: in-group distances reach the log-spaced buckets
    ours = our_gau(dim, qk_dim=qk_dim, mode="chunked", group_size=group, rotary=rotary, token_shift=token_shift)
    rotary_module = None
    if rotary:
        from rotary_embedding_torch import RotaryEmbedding
        rotary_module = RotaryEmbedding(dim=qk_dim)
    theirs = flash_pytorch.FLASH(dim=dim, group_size=group, query_key_dim=qk_dim, expansion_factor=2.0,
                                 causal=True, rotary_pos_emb=rotary_module, shift_tokens=token_shift).double()
    channels = interleaved_from_halves(qk_dim) if rotary else range(qk_dim)
    # their offset-scale heads are (quad_q, lin_q, quad_k, lin_k); ours (quad_q, quad_k, lin_q, lin_k)
    pieces = gau_pieces(2 * dim, qk_dim, ("qk_offset_scale", [0, 2, 1, 3]), channels, qk_dim**-0.5, "to_out")
    constants = ["rotary_pos_emb.freqs"] if rotary else []
    copy_weights(ours, theirs, pieces, constants)
    if rotary:  # the fixed frequencies: pair i of theirs turns at our pair i's frequency
        torch.testing.assert_close(theirs.rotary_pos_emb.freqs, ours.rotary.inv_freq, rtol=0, atol=0)
    x = torch.randn(2, seq_len, dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        expected = theirs.eval()(x)
    name = "FLASH chunked" + (" + rotary" if rotary else "") + (" + token shift" if token_shift else "")
    record(name, run_ours(ours, x), expected)



# ---------------------------------------------------------------------------------------------------
# Linformer attention against linformer-pytorch 0.19.3 (non-causal): our causal form at the last position
# ---------------------------------------------------------------------------------------------------

THEIR_METHOD = {"learnable": "learnable", "convolution": "convolution", "no-params": "no_params"}


def our_linformer_layers(method: str, sharing: str, seq_len: int, slots: int, dim: int, heads: int, layers: int,
                         causal: bool = True):
    """Our attention layers as linformer_lm builds them for ``--linformer-sharing`` (max positions = n);
    ``causal=False``: linformer_transformer's encoder attention."""
    from delight_plugin.modules.linformer import (BidirectionalLinformerAttention, CausalLinformerAttention,
                                                  SequenceCompression)
    attention_cls = CausalLinformerAttention if causal else BidirectionalLinformerAttention
    torch.manual_seed(4)  # the no-params buffer is drawn at construction

    def compression(matrices):
        return SequenceCompression(method, slots, seq_len, dim // heads, matrices)

    shared = compression(1) if sharing == "layerwise" else None
    built = []
    for _ in range(layers):
        if shared is not None:
            keys = values = shared
        else:
            keys = compression(heads if sharing == "none" else 1)
            values = keys if sharing == "kv" else compression(heads if sharing == "none" else 1)
        built.append(attention_cls(dim, heads, keys, values, chunk_size=5))
    return randomise(nn.ModuleList(built).double(), seed=5)


def linformer_pieces(ours: nn.ModuleList, method: str, sharing: str, seq_len: int, dim: int, heads: int):
    """Per layer: their to_q/to_k/to_v[h] are head h's rows of our qkv_proj, w_o our out_proj, and
    each head's E (F) our compression of that head (or the shared one), scaled to the last position:
    ours divides learned/random slots by sqrt(n) and averages convolution blocks over their length."""
    head_dim = dim // heads
    pieces, zero_ours, zero_theirs = [], [], []
    seen = set()
    for layer, attention in enumerate(ours):
        mine, their = f"{layer}.", f"{layer}."
        for part, offset in (("q", 0), ("k", dim), ("v", 2 * dim)):
            for h in range(heads):
                pieces.append(Piece(f"{their}to_{part}.{h}.weight", f"{mine}qkv_proj.weight",
                                    rows(offset + h * head_dim, offset + (h + 1) * head_dim)))
        zero_ours.append(f"{mine}qkv_proj.bias")  # their q/k/v projections have no bias
        pieces += [Piece(f"{their}w_o.weight", f"{mine}out_proj.weight"), Piece(f"{their}w_o.bias", f"{mine}out_proj.bias")]
        if method == "no-params":
            continue  # fixed tensors, copied by set_fixed_projections
        for letter, compression in (("E", attention.key_compression), ("F", attention.value_compression)):
            for h in range(heads):
                matrix = h if matrices(compression) > 1 else 0
                key = (id(compression), matrix)
                if key in seen:
                    continue  # shared with an earlier head, layer or with the keys: their one module too
                seen.add(key)
                name = f"{their}heads.{h}.{letter}"
                if method == "learnable":
                    pieces.append(Piece(f"{name}.weight", _param_name(ours, compression, "weight"), [matrix],
                                        lambda t: t[0] / math.sqrt(seq_len)))
                else:
                    block = compression.block
                    pieces.append(Piece(f"{name}.weight", _param_name(ours, compression, "mix"), [matrix],
                                        lambda t, b=block: t[0].permute(2, 1, 0) / b))
                zero_theirs.append(f"{name}.bias")  # their E/F (Linear or Conv1d) have a bias
    return pieces, zero_ours, zero_theirs


def matrices(compression) -> int:
    """How many heads own a separate E (1 = shared); the convolution's E is a fixed 0/1 block matrix."""
    return (compression.mix if compression.block else compression.weight).shape[0]


def _param_name(root: nn.Module, module: nn.Module, attribute: str) -> str:
    target = getattr(module, attribute)
    return next(name for name, p in root.named_parameters() if p is target)


def set_fixed_projections(ours: nn.ModuleList, theirs: nn.ModuleList, seq_len: int, heads: int) -> None:
    """no-params: their E, F are plain tensors [n, k] (K^T @ E); ours are buffers [matrices, k, n]."""
    for attention, their_layer in zip(ours, theirs):
        for h, head in enumerate(their_layer.heads):
            for letter, compression in (("E", attention.key_compression), ("F", attention.value_compression)):
                matrix = compression.weight[h if matrices(compression) > 1 else 0]
                setattr(head, letter, (matrix.T / math.sqrt(seq_len)).clone())


def their_linformer_layers_with_our_weights(ours, method, sharing, seq_len, slots, dim, heads, layers):
    """linformer-pytorch's MHAttention layers for the same configuration, holding ``ours``' weights."""
    from linformer_pytorch.linformer_pytorch import MHAttention, get_EF
    shared = get_EF(seq_len, slots, THEIR_METHOD[method], dim // heads) if sharing == "layerwise" else None
    theirs = nn.ModuleList(
        MHAttention(seq_len, dim // heads, dim, slots, heads, 0.0, "C0", sharing, shared, shared, False, None,
                    method=THEIR_METHOD[method]) for _ in range(layers)).double()
    pieces, zero_ours, zero_theirs = linformer_pieces(ours, method, sharing, seq_len, dim, heads)
    copy_weights(ours, theirs, pieces, zero_ours=zero_ours, zero_theirs=zero_theirs)
    if method == "no-params":
        set_fixed_projections(ours, theirs, seq_len, heads)
    return theirs


@pytest.mark.parametrize("sharing", ["none", "headwise", "kv", "layerwise"])
@pytest.mark.parametrize("method", ["learnable", "convolution", "no-params"])
def test_linformer_last_position_equals_linformer_pytorch(method, sharing):
    """Our causal compression K~_i = sum_{s<=i} E[:, s] k_s is the full E K at the last position
    i = n-1, where the query sees the whole sequence: there our output must equal the non-causal
    Linformer's (their E, F = ours / sqrt(n) for learned and random E, their convolution kernel = our
    channel mixing / block length; their E/F bias and our q/k/v bias zero). Two layers, so that
    layerwise sharing is one E across layers (and across keys and values)."""
    linformer_pytorch = pytest.importorskip("linformer_pytorch",
                                            reason="linformer-pytorch==0.19.3 (pip install -e .[test])")
    dim, heads, slots, layers = 16, 2, 4, 2
    for seq_len in (12, 16):  # convolution blocks of 3 and 4 positions
        ours = our_linformer_layers(method, sharing, seq_len, slots, dim, heads, layers)
        theirs = their_linformer_layers_with_our_weights(ours, method, sharing, seq_len, slots, dim, heads, layers)
        x = torch.randn(3, seq_len, dim, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
        for attention, their_layer in zip(ours, theirs):
            with torch.no_grad():
                expected = their_layer.eval()(x)[:, -1]
            record(f"Linformer {method} / {sharing}", run_ours(attention, x)[:, -1], expected)


@pytest.mark.parametrize("sharing", ["none", "headwise", "kv", "layerwise"])
@pytest.mark.parametrize("method", ["learnable", "convolution", "no-params"])
def test_linformer_encoder_attention_equals_linformer_pytorch_at_every_position(method, sharing):
    """linformer_transformer's encoder attention is the non-causal Linformer: with the mapping above, our
    output equals linformer-pytorch's MHAttention at every position of an unpadded sentence."""
    pytest.importorskip("linformer_pytorch", reason="linformer-pytorch==0.19.3 (pip install -e .[test])")

    from delight_plugin.modules.cache import Seq2SeqContext
    dim, heads, slots, layers, seq_len = 16, 2, 4, 2, 12
    ours = our_linformer_layers(method, sharing, seq_len, slots, dim, heads, layers, causal=False)
    theirs = their_linformer_layers_with_our_weights(ours, method, sharing, seq_len, slots, dim, heads, layers)
    x = torch.randn(3, seq_len, dim, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for attention, their_layer in zip(ours, theirs):
        with torch.no_grad():
            expected = their_layer.eval()(x)
            got = attention.eval()(x, Seq2SeqContext(torch.arange(seq_len), padding_mask=torch.zeros(3, seq_len,
                                                                                                 dtype=torch.bool)))
        record(f"Linformer encoder {method} / {sharing}", got, expected)



# ---------------------------------------------------------------------------------------------------
# Hourglass shortening / upsampling against hourglass-transformer-pytorch 0.0.6 (naive and linear)
# ---------------------------------------------------------------------------------------------------

class NormAfter(nn.Module):
    """Their valley followed by the LayerNorm our level applies to its shortened tokens (their valley
    has no final norm); ``inner`` None = no valley layers."""

    def __init__(self, dim: int, inner: Optional[nn.Module] = None):
        super().__init__()
        self.inner, self.norm = inner, nn.LayerNorm(dim)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return self.norm(x if self.inner is None else self.inner(x, mask=mask))


def our_level(dim: int, factor: int, input_stride: int, kind: str, layers=()):
    from delight_plugin.modules.hourglass import (AvgPooling, HourglassLevel, LinearPooling, LinearUpsampling,
                                                  RepeatUpsampling)
    shorten = AvgPooling() if kind == "naive" else LinearPooling(dim, factor)
    upsample = RepeatUpsampling(factor) if kind == "naive" else LinearUpsampling(dim, factor)
    return HourglassLevel(dim, factor, input_stride, list(layers), shorten, upsample, None, dropout=0.0)


def hourglass_pieces(kind: str, ours_prefix: str, theirs_prefix: str) -> List[Piece]:
    pieces = [Piece(f"{theirs_prefix}valley_transformer.norm.weight", f"{ours_prefix}norm.weight"),
              Piece(f"{theirs_prefix}valley_transformer.norm.bias", f"{ours_prefix}norm.bias")]
    if kind == "linear":
        for theirs, ours in (("downsample", "shorten"), ("upsample", "upsample")):
            pieces += [Piece(f"{theirs_prefix}{theirs}.proj.{p}", f"{ours_prefix}{ours}.proj.{p}") for p in ("weight", "bias")]
    return pieces


@pytest.mark.parametrize("kind", ["naive", "linear"])
@pytest.mark.parametrize("factors", [(3,), (2, 3)])
def test_hourglass_level_equals_hourglass_transformer_pytorch(kind, factors):
    """Causal shift by k-1, pooling (mean / concatenate + linear), upsampling (repeat / linear + reshape)
    and the residual, for one level and for a level nested in another (shortening 2 then 3). The valleys
    hold no layers, only the norm our level applies to its shortened tokens (``NormAfter``). Lengths
    are multiples of the total shortening: their pad_to_multiple uses ``math`` without importing it."""
    package = pytest.importorskip("hourglass_transformer_pytorch",
                                  reason="hourglass-transformer-pytorch==0.0.6 (pip install -e .[test])")
    dim, seq_len = 8, 36
    inner = None
    if len(factors) == 2:
        inner = our_level(dim, factors[1], factors[0], kind)
    ours = randomise(our_level(dim, factors[0], 1, kind, [inner] if inner is not None else ()).double(), seed=7)
    depth = (0, 0, 0) if len(factors) == 1 else (0, (0, 0, 0), 0)
    theirs = package.HourglassTransformer(dim, depth=depth, shorten_factor=factors if len(factors) > 1 else factors[0],
                                          attn_resampling=False, updown_sample_type=kind, causal=True)
    pieces = hourglass_pieces(kind, "", "")
    if inner is not None:  # their inner hourglass, then our outer level's norm
        theirs.valley_transformer.valley_transformer = NormAfter(dim)
        theirs.valley_transformer = NormAfter(dim, theirs.valley_transformer)
        pieces += hourglass_pieces(kind, "layers.0.", "valley_transformer.inner.")
    else:
        theirs.valley_transformer = NormAfter(dim)
    theirs = theirs.double()
    copy_weights(ours, theirs, pieces)
    x = torch.randn(2, seq_len, dim, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    with torch.no_grad():
        expected = theirs.eval()(x)
    record(f"Hourglass {kind} x{'x'.join(map(str, factors))}", run_ours(ours, x), expected)



# ---------------------------------------------------------------------------------------------------
# Primer-EZ multi-DConv-head attention against labml-nn 0.5.1's three convolution variants
# ---------------------------------------------------------------------------------------------------

LABML_VARIANTS = {  # our --primer-conv-variant -> labml's attention and convolution classes (module, names)
    "per-channel": ("labml_nn.transformers.primer_ez.variations", "MultiDPHConvHeadAttention",
                    "SpatialDepthWisePerHeadConvolution"),
    "per-head-dim": ("labml_nn.transformers.primer_ez", "MultiDConvHeadAttention", "SpatialDepthWiseConvolution"),
    "shared": ("labml_nn.transformers.primer_ez.variations", "MultiDSharedConvHeadAttention",
               "SpatialDepthWiseSharedConvolution"),
}
LABML_INSTALL = "pip install --no-deps labml-nn==0.5.1 labml==0.4.168"


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("variant", sorted(LABML_VARIANTS))
def test_dconv_attention_equals_labml_primer_ez(variant, kernel_size):
    """Causal softmax attention whose q, k, v pass through a causal depthwise convolution along time:
    per channel of every head (the official Primer code; labml's MultiDPHConvHeadAttention), per head
    dimension shared by the heads (labml's MultiDConvHeadAttention), or one kernel (labml's
    MultiDSharedConvHeadAttention). Their convolutions have a bias, ours not: theirs is zeroed.
    labml-nn declares torchvision/torchtext/fairscale as requirements, so it is not in the test extra;
    LABML_INSTALL installs it without them (it imports with pyyaml and numpy; labml 0.5.x lacks the
    ``tracker.debug`` that labml-nn 0.5.1 calls)."""
    import importlib
    pytest.importorskip("labml_nn", reason=f"labml-nn is not installed ({LABML_INSTALL}; its declared "
                                           "requirements pull torchvision, torchtext and fairscale)")
    from labml import tracker
    if not hasattr(tracker, "debug"):
        pytest.skip(f"this labml has no tracker.debug, which labml-nn 0.5.1 calls: {LABML_INSTALL}")
    from delight_plugin.modules.dconv import MultiDConvHeadAttention
    module_name, attention_name, conv_name = LABML_VARIANTS[variant]
    module = importlib.import_module(module_name)
    dim, heads, seq_len = 16, 2, 11
    ours = randomise(MultiDConvHeadAttention(dim, heads, kernel_size=kernel_size, conv_variant=variant).double(),
                     seed=9)
    theirs = getattr(module, attention_name)(heads, dim, dropout_prob=0.0)
    conv_args = {"per-channel": (heads, dim // heads), "per-head-dim": (dim // heads,), "shared": ()}[variant]
    for projection in (theirs.query, theirs.key, theirs.value):  # their attention fixes kernel size 3
        projection[1] = getattr(module, conv_name)(*conv_args, kernel_size=kernel_size)
    theirs = theirs.double()
    pieces, zero_theirs = [], []
    for p, part in enumerate(("query", "key", "value")):
        block = rows(p * dim, (p + 1) * dim)
        pieces += [Piece(f"{part}.0.linear.weight", "qkv_proj.weight", block),
                   Piece(f"{part}.0.linear.bias", "qkv_proj.bias", block),
                   Piece(f"{part}.1.conv.weight", "conv.weight", [p], lambda t: t[0].unsqueeze(1))]
        zero_theirs.append(f"{part}.1.conv.bias")
    pieces += [Piece("output.weight", "out_proj.weight"), Piece("output.bias", "out_proj.bias")]
    copy_weights(ours, theirs, pieces, zero_theirs=zero_theirs)
    x = torch.randn(3, seq_len, dim, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()[:, :, None]  # [query, key, batch]
    with torch.no_grad():
        time_first = x.transpose(0, 1)
        expected = theirs.eval()(query=time_first, key=time_first, value=time_first, mask=causal).transpose(0, 1)
    record(f"Primer DConv {variant} (kernel {kernel_size})", run_ours(ours, x), expected)


if __name__ == "__main__":
    import sys
    code = pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]])
    collected = sys.modules["test_reference_equivalence"]  # pytest's import of this file, not __main__
    for component, difference in sorted(collected.MAX_DIFFERENCES.items()):
        print(f"{component:<50} max |ours - theirs| = {difference:.3g}")
    sys.exit(code)
