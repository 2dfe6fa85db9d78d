"""The conformance probes must catch a block that peeks at the next token, and the shared
skeleton's report, presets and checkpointing must work for the reference block."""
import copy

import pytest
import torch
from torch import nn

import harness
from delight_plugin.models.plain_lm import PlainLanguageModel
from delight_plugin.presets import non_embedding_params, preset_flags, vocabulary_flags


class LeakyBlock(nn.Module):
    """Adds a little of the *next* position's input: a future-token leak."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x, ctx):
        future = torch.cat([x[:, 1:], torch.zeros_like(x[:, :1])], dim=1)
        return self.inner(x + 0.1 * future, ctx)


class LeakyLanguageModel(PlainLanguageModel):
    @classmethod
    def build_blocks(cls, cfg):
        return [LeakyBlock(block) for block in super().build_blocks(cfg)]


def leaky_model():
    model, task = harness.build("plain_lm", harness.tiny_flags("plain_lm"))
    return LeakyLanguageModel.build_model(model.decoder.cfg, task)


def test_probes_pass_on_reference_block():
    model, _ = harness.build("plain_lm", harness.tiny_flags("plain_lm"))
    harness.probe_causality(model)
    harness.probe_prefix(model)
    harness.probe_incremental(model)


def test_causality_probe_catches_a_leaky_block():
    with pytest.raises(AssertionError, match="moved earlier outputs"):
        harness.probe_causality(leaky_model())


def test_prefix_probe_catches_a_leaky_block():
    with pytest.raises(AssertionError, match="prefix moved"):
        harness.probe_prefix(leaky_model())


def test_incremental_probe_catches_a_leaky_block():
    with pytest.raises(AssertionError, match="incremental decoding differs"):
        harness.probe_incremental(leaky_model())


class PromptBlindBlock(LeakyBlock):
    """Reads a multi-token input without filling its cache (a block written for one token a step)."""

    def forward(self, x, ctx):
        if ctx.incremental_state is not None and x.size(1) > 1:
            return self.inner(x, type(ctx)(ctx.positions))
        return self.inner(x, ctx)


def test_prefill_probe_catches_a_block_that_does_not_fill_its_cache():
    model, task = harness.build("plain_lm", harness.tiny_flags("plain_lm"))
    harness.probe_prefill(model)

    class PromptBlind(PlainLanguageModel):
        @classmethod
        def build_blocks(cls, cfg):
            return [PromptBlindBlock(block) for block in super().build_blocks(cfg)]

    with pytest.raises(AssertionError, match="prefill of 8 tokens"):
        harness.probe_prefill(PromptBlind.build_model(model.decoder.cfg, task))


def test_prefill_returns_every_prompt_position_and_refuses_a_prefix_with_no_new_token():
    model, _ = harness.build("plain_lm", harness.tiny_flags("plain_lm"))
    model.eval()
    tokens, state = harness.random_tokens(2, 12), {}
    with torch.no_grad():
        prompt_out, _ = model.decoder(tokens[:, :10], incremental_state=state)
        full, _ = model.decoder(tokens)
        assert prompt_out.shape == (2, 10, len(model.decoder.dictionary))
        assert torch.allclose(prompt_out, full[:, :10], atol=1e-5)
        with pytest.raises(ValueError, match="already read 10 tokens"):
            model.decoder(tokens[:, :10], incremental_state=state)


def test_stats_report_counts_every_parameter_and_the_known_macs():
    model, _ = harness.build("plain_lm", harness.tiny_flags("plain_lm"))
    rows = model.stats(seq_len=16)
    assert sum(r.params for r in rows) == sum(p.numel() for p in model.parameters())
    d, ffn, n, vocab = 32, 64, 16, len(model.decoder.dictionary)
    # per token: qkv + out projections, two FFN matrices, and q.k^T plus attn.v over n keys
    per_layer = 4 * d * d + 2 * d * ffn + 2 * n * d
    layers = [r for r in rows if r.name.startswith("layers.")]
    assert len(layers) == 2 and all(r.macs_per_token == per_layer for r in layers), layers
    assert rows[-1].macs_per_token == d * vocab


def plain_and_checkpointed(arch, flags):
    """``arch`` built without and with --checkpoint-activations, the same weights in both."""
    plain, _ = harness.build(arch, flags)
    checkpointed, _ = harness.build(arch, flags + ["--checkpoint-activations"])
    checkpointed.load_state_dict(plain.state_dict())
    return plain, checkpointed


def test_activation_checkpointing_recomputes_every_block_with_the_same_gradients():
    plain, checkpointed = plain_and_checkpointed("plain_lm", harness.tiny_flags("plain_lm") + ["--dropout", "0"])
    tokens = harness.random_tokens(2, 20)
    calls = []
    for block in checkpointed.decoder.layers:
        block.attention.register_forward_hook(lambda *_: calls.append(1))

    def grads(model):
        model.train()
        model(tokens)[0].logsumexp(-1).sum().backward()
        return [p.grad for p in model.parameters() if p.grad is not None]

    expected, recomputed = grads(plain), grads(checkpointed)
    assert len(calls) == 2 * len(checkpointed.decoder.layers), f"{len(calls)} attention calls: nothing recomputed"
    assert len(expected) == len(recomputed)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(expected, recomputed))


def test_checkpointed_blocks_keep_their_parameter_names_and_a_deep_copy_runs_its_own_weights():
    plain, checkpointed = plain_and_checkpointed("plain_lm", harness.tiny_flags("plain_lm"))
    assert list(checkpointed.state_dict()) == list(plain.state_dict())  # checkpoints load either way
    copied, tokens = copy.deepcopy(checkpointed).eval(), harness.random_tokens(2, 12)
    expected = copied(tokens)[0]
    with torch.no_grad():
        for p in checkpointed.parameters():
            p.zero_()
    assert torch.equal(copied(tokens)[0], expected)


def test_presets_match_the_baseline_size():
    for size in ("tiny", "small"):
        ours, _ = harness.build("plain_lm", preset_flags("plain_lm", size))
        base, _ = harness.build("transformer_lm", preset_flags("transformer_lm", size))
        ratio = non_embedding_params(ours) / non_embedding_params(base)
        assert 0.9 <= ratio <= 1.1, (size, ratio)


def test_adaptive_cutoffs_are_scaled_only_when_they_do_not_fit_the_vocabulary(tmp_path):
    arch = "delight_transformer_lm_wiki103"  # 20K/60K cutoffs, sized for WikiText-103's 267,744 words
    flags = vocabulary_flags(arch, 10000)
    assert flags == ["--adaptive-input-cutoff", "746,2240", "--adaptive-softmax-cutoff", "746,2240"]
    small = ["--delight-emb-map-dim", "32", "--delight-emb-out-dim", "64", "--delight-dec-layers", "2",
             "--criterion", "adaptive_loss"]
    model, _ = harness.build(arch, small + flags, data_dir=harness.write_dictionary(tmp_path, size=10000))
    assert model.decoder.adaptive_softmax.cutoff == [746, 2240, 10000]
    assert vocabulary_flags(arch, 267744) == [] and vocabulary_flags("plain_lm", 100) == []


def test_adaptive_softmax_needs_adaptive_loss_in_fairseq_train(lm_data_bin, tmp_path):
    """With the default cross_entropy fairseq's adaptive softmax fails in autograd ("modified by an
    inplace operation") at the first backward; the model refuses it when fairseq-train builds it."""
    common = [lm_data_bin, "--user-dir", harness.PLUGIN_DIR, "--task", "language_modeling", "--arch", "plain_lm",
              *harness.tiny_flags("plain_lm"), "--adaptive-softmax-cutoff", "200,2000", "--tokens-per-sample", "32",
              "--max-tokens", "256", "--optimizer", "adam", "--lr", "0.001", "--max-update", "1", "--num-workers", "0",
              "--disable-validation", "--no-save", "--log-format", "json", "--log-interval", "1"]
    refused = harness.fairseq_cli("train", *common, "--save-dir", tmp_path, check=False)
    out = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "ValueError: --adaptive-softmax-cutoff='200,2000' is invalid" in out, out[-2000:]
    assert "--criterion adaptive_loss, not --criterion cross_entropy" in out and "inplace" not in out, out[-2000:]
    trained = harness.fairseq_cli("train", *common, "--criterion", "adaptive_loss", "--ddp-backend", "legacy_ddp",
                                  "--save-dir", tmp_path)
    assert list(harness.train_losses(trained.stdout + trained.stderr)) == [1]


def test_append_rows_keeps_the_history_of_torch_cat_in_a_buffer_written_in_place():
    from delight_plugin.modules.cache import append_rows

    g = torch.Generator().manual_seed(0)
    pieces = [torch.randn(2, 3, n, 4, generator=g) for n in [300] + [1] * 260 + [5]]  # outgrows its room once
    cache, buffers = {}, set()
    for i, piece in enumerate(pieces):
        history = append_rows(cache, "k", piece, dim=2)
        assert torch.equal(history, torch.cat(pieces[: i + 1], dim=2))
        buffers.add(cache["k"].data_ptr())
    assert cache["k_rows"] == 565 and len(buffers) == 2  # room for 300 + 256 rows, then one regrowth
    limited = {}
    for piece in pieces[1:5]:
        append_rows(limited, "g", piece, dim=2, limit=4)
    assert limited["g"].shape[2] == 4 and torch.equal(limited["g"], torch.cat(pieces[1:5], dim=2))
