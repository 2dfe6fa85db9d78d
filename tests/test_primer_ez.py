"""Primer EZ against an independent reference written here from the formula (float64, small dims),
plus what the conformance suite cannot see: the official Primer initialisation, the size of the
decoding cache, and the sizes of the presets and named architectures."""
import pytest
import torch

import harness
from delight_plugin.modules.dconv import CONV_VARIANTS, CausalDepthwiseConv
from delight_plugin.presets import non_embedding_params


# ------------------------------------------------------------------------------------------------
# Primer: causal depthwise convolution
# ------------------------------------------------------------------------------------------------

def reference_kernel(conv, projection: int, head: int, dim: int):
    """The kernel (index 0 = current step, j = j steps back) of one channel, from the variant's definition."""
    w = conv.weight[projection]
    row = {"per-channel": head * conv.head_dim + dim, "per-head-dim": dim, "shared": 0}[conv.variant]
    return w[row].flip(0)


def reference_conv(conv, x):
    """y[t, c] = sum_j kernel_c[j] * x[t - j, c], with zeros before t = 0."""
    out = torch.zeros_like(x)
    for p in range(conv.num_projections):
        for h in range(conv.num_heads):
            for i in range(conv.head_dim):
                c = (p * conv.num_heads + h) * conv.head_dim + i
                kernel = reference_kernel(conv, p, h, i)
                for j in range(conv.kernel_size):
                    out[:, j:, c] += kernel[j] * x[:, : x.size(1) - j, c]
    return out


@pytest.mark.parametrize("variant", CONV_VARIANTS)
@pytest.mark.parametrize("kernel_size", [1, 3, 4])
def test_depthwise_conv_matches_the_formula(variant, kernel_size):
    torch.manual_seed(0)
    conv = CausalDepthwiseConv(3, num_heads=2, head_dim=3, kernel_size=kernel_size, variant=variant).double()
    torch.nn.init.normal_(conv.weight)
    x = torch.randn(2, 11, conv.channels, dtype=torch.float64)
    full, _ = conv(x)
    torch.testing.assert_close(full, reference_conv(conv, x), rtol=0, atol=1e-12)

    # Decoding in uneven pieces with the returned history gives the same outputs.
    pieces, history = [], None
    for start, end in [(0, 1), (1, 2), (2, 6), (6, 7), (7, 11)]:
        out, history = conv(x[:, start:end], history)
        pieces.append(out)
        assert history.shape == (2, kernel_size - 1, conv.channels)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=1e-12)


def test_conv_variants_share_kernels_as_documented():
    sizes = {v: CausalDepthwiseConv(3, num_heads=4, head_dim=8, kernel_size=3, variant=v).weight.shape
             for v in CONV_VARIANTS}
    assert sizes == {"per-channel": (3, 32, 3), "per-head-dim": (3, 8, 3), "shared": (3, 1, 3)}


def test_primer_uses_the_official_initialisation_and_squared_relu():
    model, _ = harness.build("primer_ez_lm", harness.tiny_flags("primer_ez_lm"))
    layer = model.decoder.layers[0]
    w = layer.attention.conv.weight  # kernel size 4 in the tiny flags
    assert torch.all(w[..., -1] == 0.5) and torch.all(w[..., :-1] == 0.5 / 4)
    x = torch.tensor([-2.0, 3.0])
    assert torch.equal(layer.ffn.activation(x), torch.tensor([0.0, 9.0]))


def test_primer_decoding_cache_keeps_kernel_minus_one_projections():
    model, _ = harness.build("primer_ez_lm", harness.tiny_flags("primer_ez_lm"))
    model.eval()
    tokens = harness.random_tokens(2, 6)
    state = {}
    with torch.no_grad():
        for t in range(tokens.size(1)):
            model.decoder(tokens[:, : t + 1], incremental_state=state)
    attention = model.decoder.layers[1].attention
    cache = attention.get_cache(state)
    assert cache["qkv_history"].shape == (2, 3, 3 * 32)
    assert cache["k_rows"] == 6 and cache["k"].shape[:2] == (2, 4) and cache["k"].shape[3] == 8  # 6 rows in use


# ------------------------------------------------------------------------------------------------
# Sizes
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["primer_ez_lm"])
def test_presets_match_the_baseline_size(arch):
    for size in ("tiny", "small", "base"):
        ratio = harness.baseline_size_ratio(arch, size)
        assert 0.9 <= ratio <= 1.1, (arch, size, ratio)


def test_named_sizes_match_fairseq():
    gpt, _ = harness.build("primer_ez_lm_gpt")
    baseline, _ = harness.build("transformer_lm_gpt")
    cfg = gpt.decoder.cfg
    assert (cfg.decoder_embed_dim, cfg.decoder_layers, cfg.decoder_attention_heads, cfg.decoder_ffn_embed_dim) == \
        (768, 12, 12, 3072)
    assert abs(non_embedding_params(gpt) / non_embedding_params(baseline) - 1) < 0.01
