"""linformer_lm: the chunked prefix-sum attention equals the dense O(n^2 k) formula, the reference's
slot-masking design leaks and the conformance probe catches it, sharing modes own the parameters
they should, and lengths are handled (shorter inputs work, longer ones are refused clearly)."""
import importlib.util
import math

import pytest
import torch

import harness
from delight_plugin.models.linformer_lm import LinformerLanguageModel
from delight_plugin.modules.cache import DecodingContext
from delight_plugin.modules.linformer import CausalLinformerAttention, SequenceCompression
from delight_plugin.presets import non_embedding_params, preset_flags

ARCH = "linformer_lm"
TINY = harness.tiny_flags(ARCH)  # 32 wide, 4 heads (d_head 8), k = 8, chunks of 8, N = 64


def build(*flags, **kw):
    return harness.build(ARCH, TINY + list(flags), **kw)[0]


# ---------------------------------------------------------------------------------------------
# Negative control: the reference package's causal flag masks compressed slots j > i, but every
# slot already mixes all n positions.
# ---------------------------------------------------------------------------------------------

class SlotMaskedAttention(CausalLinformerAttention):
    """linformer-pytorch's ``causal=True``: compress the whole sequence, then hide slots j > i."""

    def forward(self, x, ctx):
        bsz, length, _ = x.shape
        q, k, v = (t.view(bsz, length, self.num_heads, self.head_dim).transpose(1, 2)
                   for t in self.project_qkv(x, ctx, {}))
        e = self.key_compression.matrix(0, length)
        f = self.value_compression.matrix(0, length)
        scores = q @ (e @ k).transpose(-1, -2) / math.sqrt(self.head_dim)  # [B, H, n, k]
        slots = torch.arange(scores.size(-1))
        hidden = slots[None, :] > torch.arange(length)[:, None]
        out = scores.masked_fill(hidden, float("-inf")).softmax(-1) @ (f @ v)
        return self.out_proj(out.transpose(1, 2).reshape(bsz, length, self.dim))


class SlotMaskedLanguageModel(LinformerLanguageModel):
    @classmethod
    def build_attention(cls, cfg, layer_index, shared):
        attention = super().build_attention(cfg, layer_index, shared)
        attention.__class__ = SlotMaskedAttention
        return attention


def test_causality_probe_catches_the_reference_slot_masking():
    model, task = harness.build(ARCH, TINY)
    leaky = SlotMaskedLanguageModel.build_model(model.decoder.cfg, task)
    with pytest.raises(AssertionError, match="moved earlier outputs") as caught:
        harness.probe_causality(leaky)
    moved = float(caught.value.args[0].split("by ")[1].split(" ")[0])
    assert moved > 1e-3, caught.value  # a real leak, far above the probe's 1e-5 tolerance


# ---------------------------------------------------------------------------------------------
# Equivalence with the dense float64 formula of docs/variants.md (section 1, option 2):
#   S = ((Q K^T) o M) E^T * scale / sqrt(d),  P = softmax(S),  O = (((P * scale) F) o M) V
# ---------------------------------------------------------------------------------------------

def dense_reference(attn: CausalLinformerAttention, x: torch.Tensor) -> torch.Tensor:
    bsz, n, _ = x.shape
    q, k, v = (t.view(bsz, n, attn.num_heads, attn.head_dim).transpose(1, 2) for t in attn.qkv_proj(x).chunk(3, -1))
    keys, values = attn.key_compression, attn.value_compression
    i = torch.arange(n, dtype=x.dtype)[:, None]
    if keys.method == "convolution":
        # slot j pools block j (positions j*b .. j*b+b-1) after the kernel tap for the offset s % b
        b, slots = keys.block, keys.slots
        offsets = torch.arange(n) % b
        k = torch.einsum("bhsd,hsde->bhse", k, keys.mix[:, offsets])
        v = torch.einsum("bhsd,hsde->bhse", v, values.mix[:, offsets])
        e = (torch.arange(n)[None, :] // b == torch.arange(slots)[:, None]).to(x.dtype)[None]
        f = e
        first = torch.arange(slots, dtype=x.dtype)[None, :] * b
        scale = 1.0 / (i - first + 1).clamp(1, b)
        visible = i >= first
    else:
        e, f = keys.weight[:, :, :n], values.weight[:, :, :n]
        scale = 1.0 / torch.sqrt(i + 1)
        visible = torch.ones(n, e.size(1), dtype=torch.bool)
    mask = torch.ones(n, n).tril().to(x.dtype)
    scores = ((q @ k.transpose(-1, -2)) * mask) @ e.transpose(-1, -2) * scale / math.sqrt(attn.head_dim)
    p = scores.masked_fill(~visible, float("-inf")).softmax(-1)
    out = (((p * scale) @ f) * mask) @ v
    return attn.out_proj(out.transpose(1, 2).reshape(bsz, n, attn.dim))


@pytest.mark.parametrize("flags", [
    ["--linformer-sharing", "none"],
    ["--linformer-sharing", "kv", "--linformer-chunk-size", "5"],
    ["--linformer-method", "no-params", "--linformer-sharing", "headwise", "--linformer-chunk-size", "64"],
    ["--linformer-method", "convolution", "--linformer-sharing", "none", "--linformer-k", "10"],
    ["--linformer-method", "convolution", "--linformer-chunk-size", "3"],
], ids=["learnable-none", "learnable-kv-chunk5", "no-params-one-chunk", "convolution-none-k10", "convolution-chunk3"])
def test_chunked_attention_equals_the_dense_float64_formula(flags):
    model = build(*flags).double().eval()
    attn = model.decoder.layers[0].attention
    with torch.no_grad():
        x = torch.randn(2, 37, 32, dtype=torch.float64)
        got = attn(x, DecodingContext(torch.arange(37)))
        want = dense_reference(attn, x)
    assert (got - want).abs().max().item() < 1e-10


@pytest.mark.parametrize("flags", [
    ["--linformer-sharing", "none"],
    ["--linformer-method", "no-params", "--linformer-sharing", "headwise"],
    ["--linformer-method", "convolution", "--linformer-sharing", "none", "--linformer-k", "10"],
], ids=["learnable-none", "no-params-headwise", "convolution-none-k10"])
def test_single_token_steps_equal_the_dense_float64_formula(flags):
    """Decoding's one-position path (``compressed_attention_step``), from an empty state and after
    a prompt, gives the dense formula's outputs."""
    model = build(*flags).double().eval()
    attn = model.decoder.layers[0].attention
    x = torch.randn(2, 37, 32, dtype=torch.float64)
    with torch.no_grad():
        want = dense_reference(attn, x)
        for prompt in (0, 13):
            state = {}
            outs = [attn(x[:, :prompt], DecodingContext(torch.arange(prompt), state))] if prompt else []
            outs += [attn(x[:, t:t + 1], DecodingContext(torch.arange(t, t + 1), state)) for t in range(prompt, 37)]
            assert (torch.cat(outs, 1) - want).abs().max().item() < 1e-10, f"after a prompt of {prompt}"


def test_decoding_state_has_a_fixed_size_and_resumes_mid_sequence():
    """Two calls with a cache (positions 0..12, then 13..36) equal one call; the state is k x d_head
    per head whatever the length."""
    model = build("--linformer-sharing", "none").double().eval()
    attn = model.decoder.layers[0].attention
    x = torch.randn(2, 37, 32, dtype=torch.float64)
    with torch.no_grad():
        full = attn(x, DecodingContext(torch.arange(37)))
        state = {}
        first = attn(x[:, :13], DecodingContext(torch.arange(13), state))
        sizes = {name: tuple(t.shape) for name, t in attn.get_cache(state).items()}
        second = attn(x[:, 13:], DecodingContext(torch.arange(13, 37), state))
    assert sizes == {"keys": (2, 4, 8, 8), "values": (2, 4, 8, 8)}
    assert {name: tuple(t.shape) for name, t in attn.get_cache(state).items()} == sizes
    assert (torch.cat([first, second], 1) - full).abs().max().item() < 1e-10


# ---------------------------------------------------------------------------------------------
# Sharing modes, k per layer, parameters
# ---------------------------------------------------------------------------------------------

def compression_params(model) -> int:
    return sum(p.numel() for m in model.modules() if isinstance(m, SequenceCompression) for p in m.parameters())


@pytest.mark.parametrize("sharing,matrices", [("none", 2 * 2 * 4), ("headwise", 2 * 2), ("kv", 2), ("layerwise", 1)])
def test_sharing_modes_own_the_reference_number_of_matrices(sharing, matrices):
    model = build("--linformer-sharing", sharing)
    assert compression_params(model) == matrices * 8 * 64  # each E is k x N = 8 x 64
    full = build("--linformer-full-attention")
    assert sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in full.parameters()) == matrices * 8 * 64
    attentions = [layer.attention for layer in model.decoder.layers]
    assert (attentions[0].key_compression is attentions[0].value_compression) == (sharing in ("kv", "layerwise"))
    assert (attentions[0].key_compression is attentions[1].key_compression) == (sharing == "layerwise")


def test_convolution_and_fixed_projections():
    conv = build("--linformer-method", "convolution", "--linformer-sharing", "headwise")
    # Conv1d(d_head, d_head, kernel = N / k = 8, no bias) for K and for V in each of 2 layers
    assert compression_params(conv) == 2 * 2 * 8 * 8 * 8
    fixed = build("--linformer-method", "no-params")
    assert compression_params(fixed) == 0 and fixed.decoder.layers[0].attention.key_compression.weight.shape == (1, 8, 64)
    assert "decoder.layers.0.attention.key_compression.weight" in fixed.state_dict()  # the random E is saved


def test_k_reduce_by_layer():
    model = build("--linformer-sharing", "kv", "--linformer-k", "10", "--linformer-k-reduce-by-layer", "6",
                  "--decoder-layers", "3")
    assert [layer.attention.key_compression.slots for layer in model.decoder.layers] == [10, 4, 1]


def test_no_ffn_and_intermediate_output_projection():
    plain = build()
    lean = build("--linformer-no-ffn", "--linformer-out-proj-dim", "16")
    assert all(layer.ffn is None for layer in lean.decoder.layers)
    d, ffn, m = 32, 64, 16
    removed_per_layer = (2 * d * ffn + ffn + d + 2 * d) + (d * d + d) - (d * m + m + m * d + d)
    assert sum(p.numel() for p in plain.parameters()) - sum(p.numel() for p in lean.parameters()) == 2 * removed_per_layer


def test_sublayer_checkpointing_gives_the_same_gradients():
    model = build("--dropout", "0")
    tokens = harness.random_tokens(2, 20)

    def grads(level):
        for layer in model.decoder.layers:
            layer.checkpoint_sublayers = level == "C1"
        model.zero_grad()
        model.train()
        model(tokens)[0].logsumexp(-1).sum().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    plain, checkpointed = grads("C0"), grads("C1")
    assert len(plain) == len(checkpointed) and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, checkpointed))


def test_presets_match_the_baseline_size():
    for size in ("tiny", "small", "base"):
        ours, _ = harness.build(ARCH, preset_flags(ARCH, size), tokens_per_sample=512)
        base, _ = harness.build("transformer_lm", preset_flags("transformer_lm", size), tokens_per_sample=512)
        ratio = non_embedding_params(ours) / non_embedding_params(base)
        assert 0.9 <= ratio <= 1.1, (size, ratio)


# ---------------------------------------------------------------------------------------------
# Lengths
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["learnable", "convolution"])
def test_short_inputs_need_no_padder_and_long_ones_name_tokens_per_sample(method):
    model = build("--linformer-method", method).eval()
    for length in (1, 3, 64):  # shorter than k, shorter than a chunk, exactly N
        assert harness.log_probs(model, harness.random_tokens(1, length)).shape[1] == length
    with pytest.raises(ValueError, match=r"--tokens-per-sample.*at most 64|at most 64.*--tokens-per-sample"):
        harness.log_probs(model, harness.random_tokens(1, 65))


def test_decoding_past_the_compressed_length_is_refused():
    model = build().eval()
    tokens = harness.random_tokens(1, 65)
    state = {}
    with torch.no_grad():
        for t in range(64):
            model.decoder(tokens[:, : t + 1], incremental_state=state)
        with pytest.raises(ValueError, match="--tokens-per-sample"):
            model.decoder(tokens, incremental_state=state)


# ---------------------------------------------------------------------------------------------
# The head visualiser on a checkpoint written by fairseq-train
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow  # a fairseq-train run plus the plot: about 30 s on 2 busy cores
def test_plot_linformer_heads_on_a_trained_checkpoint(lm_data_bin, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    harness.fairseq_cli("train", lm_data_bin, "--user-dir", harness.PLUGIN_DIR, "--task", "language_modeling",
                        "--arch", ARCH, *TINY, "--linformer-sharing", "headwise", "--decoder-layers", "3",
                        "--tokens-per-sample", "64", "--max-tokens", "512", "--optimizer", "adam", "--lr", "0.001",
                        "--max-update", "2", "--no-epoch-checkpoints", "--num-workers", "0", "--disable-validation",
                        "--save-dir", tmp_path / "ckpt")
    output = tmp_path / "heads.png"
    spec = importlib.util.spec_from_file_location("plot_linformer_heads", harness.REPO / "scripts" / "plot_linformer_heads.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--path", str(tmp_path / "ckpt" / "checkpoint_last.pt"), "--data", str(lm_data_bin),
                 "--sample", "1", "--output", str(output)])
    assert "3 layers x 4 heads, 64 positions x 8 slots" in capsys.readouterr().out
    png = output.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
