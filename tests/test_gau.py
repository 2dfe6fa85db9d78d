"""GAU/FLASH against independent references written here from the formulas (float64, small dims),
plus what the conformance suite cannot see: the size of the decoding caches, the GAU attention
actually contributing, its gradients at initialisation, and the sizes of the presets and named
architecture."""
import math

import pytest
import torch

import harness
from delight_plugin.modules import gau as gau_module
from delight_plugin.modules.cache import DecodingContext
from delight_plugin.modules.gau import (ATTENTION_FNS, BucketLookup, CausalRelativeBias, ChunkedAttention, GAUBlock,
                                        QuadAttention, laplace)
from delight_plugin.modules.prefix_sum import exclusive_prefix_sum


# ------------------------------------------------------------------------------------------------
# GAU / FLASH attention
# ------------------------------------------------------------------------------------------------

def dense_flash(quad_q, quad_k, lin_q, lin_k, v, group_size, fn, bias=None):
    """FLASH written as one masked n x n weight matrix: within a group, fn(q.k / C + b(i - j)) for
    j <= i; for j in an earlier group, lin_q_i . lin_k_j / C; zero otherwise."""
    n = v.size(1)
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    same_group, earlier_group = (i // group_size) == (j // group_size), (j // group_size) < (i // group_size)
    logits = quad_q @ quad_k.transpose(-1, -2) / group_size
    if bias is not None:
        logits = logits + bias(torch.arange(n), torch.arange(n))
    local = torch.where(same_group & (j <= i), fn(logits), 0.0)
    linear = torch.where(earlier_group, lin_q @ lin_k.transpose(-1, -2) / group_size, 0.0)
    return (local + linear) @ v


def random_qkv(n, s=5, e=7, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, n, dim, generator=g, dtype=torch.float64) for dim in (s, s, s, s, e)]


def decode_one_by_one(attention, *inputs):
    state, outputs = {}, []
    for t in range(inputs[-1].size(1)):
        ctx = DecodingContext(torch.tensor([t]), state)
        outputs.append(attention(*(x[:, t:t + 1] for x in inputs), ctx))
    return torch.cat(outputs, dim=1), state


def relative_bias_with_random_weights():
    bias = CausalRelativeBias().double()
    torch.nn.init.normal_(bias.bias.weight)
    return bias


@pytest.mark.parametrize("fn", sorted(ATTENTION_FNS))
@pytest.mark.parametrize("n,group_size", [(1, 4), (13, 4), (16, 4), (23, 8), (9, 16)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_chunked_flash_matches_the_dense_formula(fn, n, group_size, with_bias):
    bias = relative_bias_with_random_weights() if with_bias else None
    attention = ChunkedAttention(group_size, fn, bias, dropout=0.0).eval()
    inputs = random_qkv(n)
    want = dense_flash(*inputs, group_size, ATTENTION_FNS[fn], bias)
    ctx = DecodingContext(torch.arange(n))
    torch.testing.assert_close(attention(*inputs, ctx), want, rtol=0, atol=1e-10)
    stepped, _ = decode_one_by_one(attention, *inputs)
    torch.testing.assert_close(stepped, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("fn", sorted(ATTENTION_FNS))
@pytest.mark.parametrize("n,group_size", [(7, 1), (13, 4), (15, 5), (64, 32), (75, 32), (40, 40), (290, 4)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_chunked_flash_training_gradients_match_the_dense_formula(fn, n, group_size, with_bias, monkeypatch):
    """Training runs group_attention's hand-written backward (halved groups from C = 32 on): every
    input's gradient, and the relative bias's, must equal autograd's through the dense formula."""
    calls = spy_on_group_attention(monkeypatch)
    bias = relative_bias_with_random_weights() if with_bias else None
    attention = ChunkedAttention(group_size, fn, bias, dropout=0.0).train()
    inputs = [x.requires_grad_() for x in random_qkv(n, seed=n)]
    wanted_of = inputs + ([bias.bias.weight] if with_bias else [])
    grad_out = torch.randn(2, n, 7, dtype=torch.float64)
    want = dense_flash(*inputs, group_size, ATTENTION_FNS[fn], bias)
    want_grads = torch.autograd.grad(want, wanted_of, grad_out)
    got = attention(*inputs, DecodingContext(torch.arange(n)))
    got_grads = torch.autograd.grad(got, wanted_of, grad_out)
    assert calls == [-(-n // group_size)]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    for got_grad, want_grad in zip(got_grads, want_grads):
        torch.testing.assert_close(got_grad, want_grad, rtol=0, atol=1e-9)


def spy_on_group_attention(monkeypatch):
    """A list that gets one entry per call ChunkedAttention makes to group_attention."""
    calls, real = [], gau_module.group_attention

    def spy(*args):
        calls.append(args[-3])  # the number of groups per sequence
        return real(*args)
    monkeypatch.setattr(gau_module, "group_attention", spy)
    return calls


def test_chunked_flash_with_weight_dropout_takes_the_autograd_path_and_the_same_formula(monkeypatch):
    """Dropout on the weights is applied by the autograd implementation; with p -> 0 it must give the
    formula's values and gradients too."""
    calls = spy_on_group_attention(monkeypatch)
    attention = ChunkedAttention(32, "relu_squared", relative_bias_with_random_weights(), dropout=1e-12).train()
    inputs = [x.requires_grad_() for x in random_qkv(75)]
    want = dense_flash(*inputs, 32, ATTENTION_FNS["relu_squared"], attention.relative_bias)
    got = attention(*inputs, DecodingContext(torch.arange(75)))
    assert calls == []
    torch.testing.assert_close(got, want, rtol=0, atol=1e-9)
    grad_out = torch.randn_like(want)
    for got_grad, want_grad in zip(torch.autograd.grad(got, inputs, grad_out),
                                   torch.autograd.grad(want, inputs, grad_out)):
        torch.testing.assert_close(got_grad, want_grad, rtol=0, atol=1e-9)


@pytest.mark.parametrize("rows", [1, 7, 32, 33, 100, 1100])
def test_exclusive_prefix_sum_matches_cumsum(rows):
    x = torch.randn(2, rows, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(exclusive_prefix_sum(x), x.cumsum(1) - x, rtol=0, atol=1e-10)
    torch.testing.assert_close(exclusive_prefix_sum(x, reverse=True), x.flip(1).cumsum(1).flip(1) - x,
                               rtol=0, atol=1e-10)


def test_chunked_decoding_accepts_pieces_that_cross_groups():
    attention = ChunkedAttention(4, "relu_squared", relative_bias_with_random_weights(), dropout=0.0).eval()
    inputs = random_qkv(15)
    want = dense_flash(*inputs, 4, ATTENTION_FNS["relu_squared"], attention.relative_bias)
    state, outputs = {}, []
    for start, end in [(0, 3), (3, 10), (10, 11), (11, 15)]:
        ctx = DecodingContext(torch.arange(start, end), state)
        outputs.append(attention(*(x[:, start:end] for x in inputs), ctx))
    torch.testing.assert_close(torch.cat(outputs, dim=1), want, rtol=0, atol=1e-10)


def test_chunked_decoding_state_is_bounded_by_the_group():
    """After 2C + 3 tokens the state is the s x e sum of the completed groups plus 3 rows in buffers of
    C rows (written in place), not 2C + 3 rows."""
    attention = ChunkedAttention(4, "relu_squared", None, dropout=0.0).eval()
    q, k, lq, lk, v = random_qkv(11)
    _, state = decode_one_by_one(attention, q, k, lq, lk, v)
    cache = attention.get_cache(state)
    assert cache["group_k"].shape == (2, 4, 5) and cache["group_v"].shape == (2, 4, 7) and cache["group_k_rows"] == 3
    torch.testing.assert_close(cache["group_v"][:, :3], v[:, 8:], rtol=0, atol=0)
    torch.testing.assert_close(cache["earlier_kv"], lk[:, :8].transpose(1, 2) @ v[:, :8], rtol=0, atol=1e-10)


@pytest.mark.parametrize("fn", sorted(ATTENTION_FNS))
@pytest.mark.parametrize("query_block", [512, 4, 5])  # one block; blocks that do and do not divide 13 and 6
def test_quad_attention_matches_the_dense_formula_with_a_fixed_scale(fn, query_block):
    bias = relative_bias_with_random_weights()
    attention = QuadAttention(scale_length=16, attention_fn=fn, relative_bias=bias, dropout=0.0).eval()
    attention.QUERY_BLOCK = query_block
    q, k, _, _, v = random_qkv(13)
    n = 13
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    weights = torch.where(j <= i, ATTENTION_FNS[fn](q @ k.transpose(-1, -2) / 16 + bias.lookup(bias.bucket(i - j))), 0.0)
    want = weights @ v
    torch.testing.assert_close(attention(q, k, v, DecodingContext(torch.arange(n))), want, rtol=0, atol=1e-10)
    # A prefix is attended exactly as in the full sequence: the scale does not depend on n.
    torch.testing.assert_close(attention(q[:, :5], k[:, :5], v[:, :5], DecodingContext(torch.arange(5))),
                               want[:, :5], rtol=0, atol=1e-10)
    stepped, _ = decode_one_by_one(attention, q, k, v)
    torch.testing.assert_close(stepped, want, rtol=0, atol=1e-10)
    state = {}  # prefill: a prompt of 6, then 7 more tokens after the cached 6
    first = attention(q[:, :6], k[:, :6], v[:, :6], DecodingContext(torch.arange(6), state))
    second = attention(q[:, 6:], k[:, 6:], v[:, 6:], DecodingContext(torch.arange(6, n), state))
    torch.testing.assert_close(torch.cat([first, second], dim=1), want, rtol=0, atol=1e-10)


def test_quad_attention_in_query_blocks_has_the_gradients_of_one_block():
    grads = []
    for query_block in (512, 4):
        torch.manual_seed(0)
        bias = relative_bias_with_random_weights()
        attention = QuadAttention(scale_length=16, attention_fn="relu_squared", relative_bias=bias, dropout=0.0).train()
        attention.QUERY_BLOCK = query_block
        q, k, _, _, v = (t.requires_grad_() for t in random_qkv(11))
        attention(q, k, v, DecodingContext(torch.arange(11))).square().sum().backward()
        grads.append([q.grad, k.grad, v.grad, bias.bias.weight.grad])
    for one, blocked in zip(*grads):
        torch.testing.assert_close(blocked, one, rtol=0, atol=1e-10)
    assert all(g.abs().sum() > 0 for g in grads[0])


def test_laplace_and_relative_bias_follow_their_definitions():
    mu, sigma = math.sqrt(0.5), math.sqrt(1 / (4 * math.pi))
    x = torch.tensor([mu, mu + sigma, -10.0], dtype=torch.float64)
    want = torch.tensor([0.5, 0.5 * (1 + math.erf(1 / math.sqrt(2))), 0.0], dtype=torch.float64)
    torch.testing.assert_close(laplace(x), want, rtol=0, atol=1e-12)
    buckets = CausalRelativeBias(num_buckets=32, max_distance=128).bucket(torch.arange(300))
    assert torch.equal(buckets[:16], torch.arange(16))  # exact buckets
    assert torch.all(buckets[1:] >= buckets[:-1]) and buckets[16] == 16 and buckets[100] == 30  # log-spaced
    assert torch.all(buckets[128:] == 31)  # everything beyond max_distance shares the last bucket


@pytest.mark.parametrize("offset,length", [(0, 1), (0, 300), (5, 7), (600, 45)])
def test_relative_bias_buckets_from_the_kept_table_equal_the_formula_and_are_computed_once_per_pass(offset, length):
    bias = relative_bias_with_random_weights()
    queries, keys = torch.arange(offset, offset + length), torch.arange(offset + length)
    want = bias.lookup(bias.bucket(queries[:, None] - keys[None, :]))  # negative distances: bucket 0, masked
    assert torch.equal(bias(queries, keys), want)
    ctx = DecodingContext(queries)
    calls = []
    original = bias.buckets
    bias.buckets = lambda *args: calls.append(1) or original(*args)
    for _ in range(3):  # three layers of one forward pass
        assert torch.equal(bias.causal(ctx, len(keys)), want)
    assert len(calls) == 1  # the Tq x Tk bucket matrix was a dozen passes per layer: 70% of a 2048-token forward


def loud_gau_model(flags):
    """A tiny GAU model whose attention is loud enough to matter: the paper's N(0, 0.02) scale
    initialisation makes relu^2 attention almost zero, which would let the probes pass vacuously."""
    model, _ = harness.build("gau_lm", harness.tiny_flags("gau_lm") + ["--gau-quad-scale-length", "8"] + flags)
    torch.manual_seed(1)
    for block in model.decoder.layers:
        torch.nn.init.normal_(block.qk_scale, std=2.0)
        torch.nn.init.normal_(block.qk_offset, std=0.5)
        if block.attention.relative_bias is not None:
            torch.nn.init.normal_(block.attention.relative_bias.bias.weight)
    return model.eval()


@pytest.mark.parametrize("flags", [
    ["--gau-no-relative-bias"], ["--gau-attention-fn", "laplace"],
    ["--gau-mode", "chunked", "--gau-token-shift"],
    ["--gau-mode", "chunked", "--gau-attention-fn", "laplace", "--gau-group-size", "5"],
], ids=["quad-no-bias", "quad-laplace-bias", "chunked-bias-shift", "chunked-laplace-group5"])
def test_gau_probes_hold_when_attention_matters(flags):
    model = loud_gau_model(flags)
    if "laplace" not in flags:  # laplace(0) > 0: zero queries and keys would not silence it
        silenced = loud_gau_model(flags)
        for block in silenced.decoder.layers:  # zero queries and keys: relu^2 attention outputs nothing
            torch.nn.init.zeros_(block.qk_scale)
            torch.nn.init.zeros_(block.qk_offset)
        tokens = harness.random_tokens(2, 37)
        contribution = (harness.log_probs(model, tokens) - harness.log_probs(silenced, tokens)).abs().max().item()
        assert contribution > 0.05, f"attention barely changes the outputs ({contribution:.3g})"
    harness.probe_causality(model)
    harness.probe_prefix(model)
    harness.probe_incremental(model)
    harness.probe_prefill(model)


def test_gau_block_parameters_match_the_paper():
    """About 6 d^2 + d s per GAU (e = 2d): U, V, Z in one projection and the output projection."""
    d, s = 64, 16
    block = GAUBlock(d, 2 * d, s, mode="chunked")
    weights = block.hidden_proj.weight.numel() + block.out_proj.weight.numel()
    assert weights == 6 * d * d + d * s
    assert block.qk_scale.shape == (4, s) and GAUBlock(d, 2 * d, s, mode="quad").qk_scale.shape == (2, s)


def block_gradient_norms(arch, flags):
    """Mean gradient norm of the GAUs' projections after one backward pass at initialisation."""
    model, _ = harness.build(arch, harness.tiny_flags(arch) + ["--dropout", "0", "--gau-quad-scale-length", "64"] + flags)
    tokens = harness.random_tokens(2, 64)
    log_probs = model.get_normalized_probs(model(tokens[:, :-1]), log_probs=True)
    torch.nn.functional.nll_loss(log_probs.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    norms = [block.hidden_proj.weight.grad.norm().item() for block in model.decoder.layers]
    return sum(norms) / len(norms)


@pytest.mark.parametrize("arch", ["gau_lm", "gau_lm_flash"])
def test_gaus_start_with_gradients_well_above_adams_epsilon(arch):
    """The paper's relu^2(q.k / L + b) with b ~ N(0, 0.02): without b, q.k / L is ~1e-6 at
    initialisation, relu^2 and its slope vanish, and the GAUs got gradients of ~1e-12 (FLASH-Quad),
    far under Adam's eps of 1e-8, so they stayed switched off (issue 16)."""
    with_bias = block_gradient_norms(arch, [])
    assert with_bias > 1e-5, with_bias
    if arch == "gau_lm":
        without = block_gradient_norms(arch, ["--gau-no-relative-bias"])
        assert without < 1e-8 < with_bias, (without, with_bias)


def test_relative_bias_is_on_by_default_and_old_checkpoints_without_it_load_unchanged():
    model, _ = harness.build("gau_lm", harness.tiny_flags("gau_lm"))
    weights = torch.cat([block.attention.relative_bias.bias.weight.flatten() for block in model.decoder.layers])
    assert 0.01 < weights.std().item() < 0.03  # N(0, 0.02)
    old, _ = harness.build("gau_lm", harness.tiny_flags("gau_lm") + ["--gau-no-relative-bias"])
    assert all(block.attention.relative_bias is None for block in old.decoder.layers)
    state = old.state_dict()
    assert not any("relative_bias" in key for key in state)
    model.load_state_dict(state)  # strict: the missing biases are upgraded to zeros
    tokens = harness.random_tokens(2, 37)
    assert torch.equal(harness.log_probs(model.eval(), tokens), harness.log_probs(old.eval(), tokens))


# ------------------------------------------------------------------------------------------------
# Sizes
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["gau_lm", "gau_lm_flash"])
def test_presets_match_the_baseline_size(arch):
    for size in ("tiny", "small", "base"):
        ratio = harness.baseline_size_ratio(arch, size)
        assert 0.9 <= ratio <= 1.1, (arch, size, ratio)


def test_named_sizes_match_fairseq():
    flash, _ = harness.build("gau_lm_flash", ["--gau-qk-dim", "64"])  # an explicit flag wins over the arch
    cfg = flash.decoder.cfg
    assert (cfg.gau_mode, cfg.gau_group_size, cfg.gau_qk_dim, cfg.decoder_layers) == ("chunked", 256, 64, 12)


def test_chunked_group_longer_than_the_sample_is_one_exact_group():
    """Decided: --gau-group-size above --tokens-per-sample is accepted (gau_lm_flash's 256 at short lengths): each
    sample is one padded group, attended exactly and causally; the cross-group linear attention only joins on
    longer inputs."""
    model, _ = harness.build("gau_lm", harness.tiny_flags("gau_lm") + ["--gau-mode", "chunked", "--gau-group-size", "100"])
    harness.probe_causality(model)
    harness.probe_prefix(model)
    harness.probe_incremental(model)


def test_relative_bias_gradient_is_the_embeddings():
    """The bias's own backward (one bincount) equals autograd's through an embedding look-up."""
    bias = CausalRelativeBias().double()
    torch.nn.init.normal_(bias.bias.weight)
    queries, keys = torch.arange(100, 140), torch.arange(140)
    grad = torch.randn(40, 140, dtype=torch.float64)
    (bias(queries, keys) * grad).sum().backward()
    ours = bias.bias.weight.grad.clone()
    bias.bias.weight.grad = None
    reference = bias.bias(bias.bucket(queries[:, None] - keys[None, :])).squeeze(-1)
    assert torch.equal(reference, bias(queries, keys))
    (reference * grad).sum().backward()
    assert torch.allclose(ours, bias.bias.weight.grad, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda w: BucketLookup.apply(w, bias.bucket(queries[:, None] - keys[None, :])),
                                    (torch.randn(32, dtype=torch.float64, requires_grad=True),))
