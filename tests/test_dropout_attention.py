"""Causal attention with dropout on the CPU flash kernel (delight_plugin/modules/dropout_attention.py):
the same function as dense softmax-dropout-matmul for the same dropped pairs, forward and backward;
the dropped pairs are i.i.d. with probability p over the causal pairs; the models use it."""
import math

import pytest
import torch

from delight_plugin.modules.dropout_attention import (DroppedPairsAttention, sample_dropped_pairs,
                                                      scaled_dot_product_attention)


def dense_reference(q, k, v, p, query_rows, key_rows):
    """softmax(q k^T / sqrt(D), causal) with the listed pairs zeroed, the rest / (1 - p), times v."""
    bsz, heads, length, dim = q.shape
    keep = torch.ones(bsz * heads, length, length, dtype=q.dtype)
    keep[query_rows // length, query_rows % length, key_rows % length] = 0
    logits = (q @ k.transpose(-1, -2)) * dim ** -0.5
    logits = logits.masked_fill(~torch.ones(length, length, dtype=torch.bool).tril(), float("-inf"))
    return (logits.softmax(-1) * keep.view(bsz, heads, length, length) / (1 - p)) @ v


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_equals_dense_dropout_forward_and_backward(dtype, tol):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 37, 8, dtype=dtype, requires_grad=True) for _ in range(3))
    p = 0.2
    query_rows, key_rows = sample_dropped_pairs(6, 37, 37, p, True)
    assert len(query_rows) > 100
    out = DroppedPairsAttention.apply(q, k, v, p, query_rows, key_rows)
    ref = dense_reference(q, k, v, p, query_rows, key_rows)
    grad = torch.randn_like(out)
    ours, theirs = torch.autograd.grad(out, (q, k, v), grad), torch.autograd.grad(ref, (q, k, v), grad)
    assert (out - ref).abs().max() < tol
    for a, b in zip(ours, theirs):
        assert (a - b).abs().max() < tol


def test_equals_dense_dropout_under_a_key_padding_mask():
    """Translation encoders and encoder-decoder attention: T queries over S keys, padded keys masked."""
    torch.manual_seed(5)
    q = torch.randn(3, 2, 11, 8, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(3, 2, 17, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    keep = torch.ones(3, 1, 1, 17, dtype=torch.bool)
    keep[1, ..., 12:] = keep[2, ..., 15:] = False
    p = 0.15
    query_rows, key_rows = sample_dropped_pairs(6, 11, 17, p, False)
    bias = torch.zeros(keep.shape, dtype=q.dtype).masked_fill(~keep, float("-inf"))
    out = DroppedPairsAttention.apply(q, k, v, p, query_rows, key_rows, False, bias)
    dropped = torch.ones(6, 11, 17, dtype=q.dtype)
    dropped[query_rows // 11, query_rows % 11, key_rows % 17] = 0
    logits = ((q @ k.transpose(-1, -2)) * 8 ** -0.5).masked_fill(~keep, float("-inf"))
    ref = (logits.softmax(-1) * dropped.view(3, 2, 11, 17) / (1 - p)) @ v
    grad = torch.randn_like(out)
    assert (out - ref).abs().max() < 1e-12
    for a, b in zip(torch.autograd.grad(out, (q, k, v), grad), torch.autograd.grad(ref, (q, k, v), grad)):
        assert (a - b).abs().max() < 1e-12
    assert ((key_rows // 17) == (query_rows // 11)).all()  # same head
    assert (query_rows[1:] >= query_rows[:-1]).all() and len(query_rows) > 50


def test_without_dropped_pairs_it_is_plain_causal_attention():
    q, k, v = (torch.randn(1, 2, 16, 4, dtype=torch.float64) for _ in range(3))
    none = torch.empty(0, dtype=torch.long)
    out = DroppedPairsAttention.apply(q, k, v, 0.1, none, none)
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(out * 0.9, plain, atol=1e-12)


def test_dropped_pairs_are_causal_distinct_and_at_rate_p():
    torch.manual_seed(1)
    heads, length, p = 4, 300, 0.05
    query_rows, key_rows = sample_dropped_pairs(heads, length, length, p, True)
    # 32-bit rows (the sparse kernels convert 64-bit ones on every call), one dtype for the CSR
    assert query_rows.dtype == key_rows.dtype == torch.int32
    assert torch.equal(query_rows // length, key_rows // length)  # same head
    assert (key_rows % length <= query_rows % length).all()  # only causal pairs
    assert len(torch.unique(query_rows * heads * length + key_rows)) == len(query_rows)
    # sorted by query row, then key row: the attention reads them as a CSR matrix
    order = query_rows * heads * length + key_rows
    assert (order[1:] > order[:-1]).all()
    pairs = heads * length * (length + 1) // 2
    assert abs(len(query_rows) - p * pairs) < 5 * math.sqrt(pairs * p * (1 - p))
    # every key offset i - j and every head is hit about equally often (no position bias)
    per_head = torch.bincount(query_rows // length, minlength=heads).double()
    assert (per_head / per_head.mean() - 1).abs().max() < 0.05
    first_keys = (key_rows % length == 0).sum().item()  # key 0: one pair in every row
    assert abs(first_keys - p * heads * length) < 5 * math.sqrt(heads * length * p)


def test_expected_output_is_the_undropped_attention():
    """Dropout is unbiased: the mean over many draws approaches attention without dropout."""
    torch.manual_seed(2)
    q, k, v = (torch.randn(1, 1, 24, 4, dtype=torch.float64) for _ in range(3))
    # 4,000 independent draws as a batch of copies (the pairs are drawn independently per batch row)
    draws = scaled_dot_product_attention(*(t.expand(4000, -1, -1, -1) for t in (q, k, v)), is_causal=True,
                                         dropout_p=0.1)
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert (draws.mean(0) - plain[0]).abs().max() < 0.05
    assert draws.std(0).amax() > 0.01  # and it does drop


def test_falls_back_to_sdpa_outside_its_case():
    """A mask over queries and keys, or a dropout too large to be sparse: SDPA's own dropout."""
    q, k, v = (torch.randn(1, 1, 8, 4) for _ in range(3))
    for mask, p in ((torch.ones(8, 8, dtype=torch.bool).tril(), 0.1), (None, 0.5)):
        torch.manual_seed(3)
        a = scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        torch.manual_seed(3)
        b = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        assert torch.equal(a, b)


def test_bfloat16_under_autocast_is_close_to_float32():
    torch.manual_seed(4)
    q, k, v = (torch.randn(2, 2, 64, 16) for _ in range(3))
    query_rows, key_rows = sample_dropped_pairs(4, 64, 64, 0.1, True)
    ref = DroppedPairsAttention.apply(q, k, v, 0.1, query_rows, key_rows)
    half = DroppedPairsAttention.apply(*(t.bfloat16() for t in (q, k, v)), 0.1, query_rows, key_rows)
    assert half.dtype == torch.bfloat16 and torch.isfinite(half).all()
    assert (half.float() - ref).abs().max() < 0.05
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=0.1)
    assert out.dtype == torch.bfloat16


@pytest.mark.parametrize("module_name", ["delight", "causal", "bidirectional"])
def test_attention_modules_train_with_it(module_name, monkeypatch):
    """DeLighT's single-head and the skeleton's multi-head causal attention route training-mode
    dropout through it (a wrong routing would leave the slow SDPA math path in place)."""
    from delight_plugin.modules.attention import BidirectionalSelfAttention, CausalSelfAttention
    from delight_plugin.modules.cache import Seq2SeqContext
    from delight_plugin.modules.delight.attention import SingleHeadSelfAttention

    calls = []
    original = DroppedPairsAttention.apply
    monkeypatch.setattr(DroppedPairsAttention, "apply", lambda *a: calls.append(1) or original(*a))
    attention = {"delight": SingleHeadSelfAttention(16, 32, dropout=0.1),
                 "causal": CausalSelfAttention(16, 2, dropout=0.1),
                 "bidirectional": BidirectionalSelfAttention(16, 2, dropout=0.1)}[module_name]
    x = torch.randn(2, 10, 16, requires_grad=True)
    padding = torch.zeros(2, 10, dtype=torch.bool)
    padding[1, 7:] = True  # a translation encoder's padded source
    ctx = Seq2SeqContext(torch.arange(10), padding_mask=padding)
    attention.train()(x, ctx).sum().backward()
    assert calls and torch.isfinite(x.grad).all()
    calls.clear()
    attention.eval()(x, ctx)
    assert not calls
