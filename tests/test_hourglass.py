"""hourglass_lm beyond the conformance probes: the structure notation, the exact shift, every
resampling pair at lengths that are not multiples of the factor, the per-level decoding cache
(shortened layers step once per window, at scaled positions), parameter counts and sizes."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import harness
from cases.hourglass_lm import TINY
from delight_plugin.modules.cache import DecodingContext
from delight_plugin.modules.hourglass import parse_structure
from delight_plugin.presets import non_embedding_params, preset_flags

DOWN = ("avg", "linear", "attention")
UP = ("repeat", "linear", "attention")
PAIRS = [(d, u) for d in DOWN for u in UP]


def build(*flags):
    model, _ = harness.build("hourglass_lm", TINY + ["--dropout", "0", *flags])
    return model.eval()


def level_of(model):
    """The first shortened level (TINY has one full-resolution layer before it)."""
    return model.decoder.layers[1]


def run_level(level, x):
    with torch.no_grad():
        return level(x, DecodingContext(torch.arange(x.size(1))))


@pytest.mark.parametrize("text,parsed", [
    ("2@1,8@3,2@1", [(2, 1), (8, 3), (2, 1)]),
    (" 1@1, 2@2, 4@8, 2@2, 1@1", [(1, 1), (2, 2), (4, 8), (2, 2), (1, 1)]),
    ("0@1,3@4,1@1", [(0, 1), (3, 4), (1, 1)]),
])
def test_structure_notation_is_parsed(text, parsed):
    assert parse_structure(text) == parsed


@pytest.mark.parametrize("text,reason", [
    ("2@1,8@3", "odd number"),
    ("2@1", "odd number"),
    ("1@1,2@3,1@2", "palindrome"),
    ("1@2,2@4,1@2", "factor must be 1"),
    ("1@1,1@2,1@3,1@2,1@1", "must be a multiple"),
    ("1@1,1@4,1@4,1@4,1@1", "must be a multiple"),
    ("1@1,0@3,1@1", "at least one layer"),
    ("1@1,2-3,1@1", "LAYERS@FACTOR"),
])
def test_bad_structures_say_what_is_wrong_and_name_the_flag(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse_structure(text)
    message = harness.build_error("hourglass_lm", TINY + ["--hourglass-structure", text])
    assert "--hourglass-structure" in message and reason in message, message


def test_avg_repeat_level_is_the_shifted_window_mean():
    """Exact semantics: with no inner layers, step t gets x[t] + LN(mean(x[jk-k+1 .. jk])), j = t // k,
    with zeros before step 0 (the shift right by k-1). A missing or wrong shift fails this."""
    level = level_of(build("--hourglass-downsampling", "avg", "--hourglass-upsampling", "repeat"))
    level.layers = nn.ModuleList()
    k, n = 3, 11
    x = torch.randn(2, n, 32)
    shifted = torch.cat([torch.zeros(2, k - 1, 32), x], dim=1)
    expected = torch.stack([
        x[:, t] + level.norm(shifted[:, (t // k) * k:(t // k) * k + k].mean(dim=1)) for t in range(n)], dim=1)
    torch.testing.assert_close(run_level(level, x), expected)


@pytest.mark.parametrize("down,up", PAIRS)
def test_every_resampling_pair_is_causal_and_prefix_consistent_at_any_length(down, up):
    level = level_of(build("--hourglass-downsampling", down, "--hourglass-upsampling", up)).double()
    x = torch.randn(2, 11, 32, dtype=torch.float64)
    full = run_level(level, x)
    for length in range(1, 11):  # 1..10: most are not multiples of 3
        torch.testing.assert_close(run_level(level, x[:, :length]), full[:, :length], rtol=0, atol=1e-12)
    for j in (1, 3, 7, 10):
        changed = x.clone()
        changed[:, j] += 1.0
        out = run_level(level, changed)
        assert torch.equal(out[:, :j], full[:, :j]), f"{down}/{up}: step {j} leaked into earlier steps"
        assert (out[:, j] - full[:, j]).abs().max() > 1e-3


class Recorder(nn.Module):
    """Wraps a block and records the positions of every call."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, x, ctx):
        self.calls.append(ctx.positions.tolist())
        return self.inner(x, ctx)


def nested_model_with_recorders():
    model = build("--hourglass-structure", "1@1,1@2,1@6,1@2,1@1", "--position-scheme", "rotary",
                  "--hourglass-downsampling", "attention", "--hourglass-upsampling", "attention")
    outer = level_of(model)  # layers: [block, inner level, block]
    outer.layers[0] = Recorder(outer.layers[0])
    inner = outer.layers[1]
    inner.layers[0] = Recorder(inner.layers[0])
    return model, outer.layers[0], inner.layers[0]


def test_shortened_layers_see_positions_scaled_by_the_total_shortening():
    model, factor2, factor6 = nested_model_with_recorders()
    harness.log_probs(model, harness.random_tokens(1, 37))
    assert factor2.calls == [[2 * j for j in range(19)]]  # ceil(37 / 2) tokens
    assert factor6.calls == [[6 * j for j in range(7)]]  # ceil(37 / 6) tokens


def test_decoding_steps_each_level_once_per_window():
    """The per-level cache: a level's layers run only on steps t with t % k == 0, one token at a time."""
    model, factor2, factor6 = nested_model_with_recorders()
    harness.incremental_log_probs(model, harness.random_tokens(2, 25))
    assert factor2.calls == [[2 * j] for j in range(13)]  # steps 0, 2, .., 24
    assert factor6.calls == [[6 * j] for j in range(5)]  # steps 0, 6, .., 24


def test_resampling_parameter_counts():
    d, k, ffn = 32, 3, 64

    def params(down, up, *extra):
        return sum(p.numel() for p in build("--hourglass-downsampling", down, "--hourglass-upsampling", up,
                                            *extra).parameters())

    linear_pool, linear_up = k * d * d + d, d * k * d + k * d
    layer_norm = 2 * d
    # q, k|v and output projections, two LayerNorms and the FFN
    attention_block = (d * d + d) + (d * 2 * d + 2 * d) + (d * d + d) + 2 * layer_norm + (d * ffn + ffn + ffn * d + d)
    base = params("avg", "repeat")
    assert params("linear", "repeat") - base == linear_pool
    assert params("avg", "linear") - base == linear_up
    assert params("attention", "repeat") - base == attention_block + layer_norm  # + the window norm
    assert params("attention", "repeat", "--hourglass-attention-down-base", "linear") - base == (
        attention_block + layer_norm + linear_pool)
    assert params("avg", "attention") - base == attention_block + linear_up
    assert params("avg", "attention", "--hourglass-attention-up-base", "repeat") - base == attention_block


@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_presets_match_the_baseline_size(size):
    ours, _ = harness.build("hourglass_lm", preset_flags("hourglass_lm", size))
    base, _ = harness.build("transformer_lm", preset_flags("transformer_lm", size))
    ratio = non_embedding_params(ours) / non_embedding_params(base)
    assert 0.9 <= ratio <= 1.1, (size, ratio)


def test_stats_report_one_row_for_the_hierarchy_and_fewer_macs_than_a_full_stack():
    """1@1,2@3,1@1 has 4 layers like plain_lm with 4 layers, but two run on a 3x shorter sequence."""
    flags = ["--decoder-embed-dim", "64", "--decoder-ffn-embed-dim", "256", "--decoder-attention-heads", "4"]
    hourglass, _ = harness.build("hourglass_lm", flags + ["--hourglass-structure", "1@1,2@3,1@1"])
    plain, _ = harness.build("plain_lm", flags + ["--decoder-layers", "4"])
    rows = hourglass.stats(seq_len=96)
    assert [r.name for r in rows if r.name.startswith("layers.")] == ["layers.0", "layers.1", "layers.2"]
    assert sum(r.params for r in rows) == sum(p.numel() for p in hourglass.parameters())
    full_layer = next(r for r in rows if r.name == "layers.0").macs_per_token
    shortened = next(r for r in rows if r.name == "layers.1").macs_per_token
    # two layers at a third of the tokens plus the k*d^2 linear upsampling, well under two full layers
    assert shortened < 1.0 * full_layer, (shortened, full_layer)
    total = sum(r.macs_per_token for r in rows if r.name.startswith("layers."))
    plain_total = sum(r.macs_per_token for r in plain.stats(seq_len=96) if r.name.startswith("layers."))
    assert total < 0.8 * plain_total, (total, plain_total)


def test_activation_checkpointing_gives_the_same_gradients():
    flags = ["--hourglass-downsampling", "attention", "--hourglass-upsampling", "attention"]
    plain, checkpointed = build(*flags), build(*flags, "--checkpoint-activations")
    checkpointed.load_state_dict(plain.state_dict())
    tokens = harness.random_tokens(2, 20)

    def grads(model):
        model.train()
        F.log_softmax(model(tokens)[0], dim=-1).sum().backward()
        return [p.grad for p in model.parameters() if p.grad is not None]

    expected, recomputed = grads(plain), grads(checkpointed)
    assert len(expected) == len(recomputed)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(expected, recomputed))
