"""linformer_transformer: the decoder is causal for a fixed source, incremental decoding equals the full
pass (also after a beam reorder), a sentence is encoded the same in any batch (pads add nothing to the
compressed keys/values; the reference's input masking does not achieve that), decoding state sizes,
lengths, named-arch sizes against fairseq's transformer, bad flags, fairseq-train + generate (beam,
--nbest, --prefix-size, sampling) + interactive, and (slow) memorising 200 bundled WMT'16 pairs.
Variants and bad flags: tests/cases/linformer_transformer.py."""
import os
import re
from pathlib import Path

import pytest
import torch

import harness
from delight_plugin.modules.cache import Seq2SeqContext
from delight_plugin.modules.linformer import BidirectionalLinformerAttention, compressed_memory

ARCH = "linformer_transformer"
CASES = harness.cases(ARCH)
TINY = CASES.TINY + CASES.SHORT_POSITIONS  # 64 source and target positions
PAD = 1


def build(*flags):
    return harness.build_translation(ARCH, TINY + list(flags))[0]


def source_batch():
    """Three 11-token sources, left-padded as fairseq batches them: 7, 11 and 9 real tokens."""
    src = harness.random_tokens(3, 11, seed=5)
    src[0, :4] = PAD
    src[2, :2] = PAD
    return src, src.ne(PAD).sum(1)


def decode_with_reorder(model, encoder_out, tokens, order, at):
    """Token-by-token log-probs through incremental_state; at step ``at`` the batch is reordered as beam
    search does (decoder state and encoder output together). Returns (log-probs, reordered tokens)."""
    state, steps = {}, []
    for t in range(tokens.size(1)):
        if t == at:
            model.decoder.reorder_incremental_state_scripting(state, order)
            encoder_out = model.encoder.reorder_encoder_out(encoder_out, order)
            tokens = tokens.index_select(0, order)
            steps = [s.index_select(0, order) for s in steps]
        out = model.decoder(tokens[:, : t + 1], encoder_out=encoder_out, incremental_state=state)
        steps.append(model.get_normalized_probs(out, log_probs=True)[:, -1])
    return torch.stack(steps, 1), tokens


@pytest.mark.parametrize("name", sorted(CASES.VARIANTS))
def test_decoder_is_causal_for_a_fixed_source(name):
    """Changing target token j leaves every output before j unchanged (tolerance 1e-5) and moves the
    output at j; a target prefix's outputs do not depend on what follows."""
    fixed = harness.FixedSource(build(*CASES.VARIANTS[name]), *source_batch())
    harness.probe_causality(fixed)
    harness.probe_prefix(fixed)


@pytest.mark.parametrize("name", sorted(CASES.VARIANTS))
def test_incremental_decoding_equals_full_also_after_a_beam_reorder(name):
    model = build(*CASES.VARIANTS[name]).eval()
    src, lengths = source_batch()
    tokens = harness.random_tokens(3, 23, seed=2)
    order = torch.tensor([2, 0, 0])
    with torch.no_grad():
        encoder_out = model.encoder(src, lengths)
        full = model.get_normalized_probs(model.decoder(tokens, encoder_out=encoder_out), log_probs=True)
        inc, _ = decode_with_reorder(model, encoder_out, tokens, order, at=None)
        assert (inc - full).abs().max().item() <= 1e-4
        inc, reordered = decode_with_reorder(model, encoder_out, tokens, order, at=9)
        reordered_enc = model.encoder.reorder_encoder_out(encoder_out, order)
        full = model.get_normalized_probs(model.decoder(reordered, encoder_out=reordered_enc), log_probs=True)
        diff = (inc - full).abs().max().item()
        assert diff <= 1e-4, f"after a beam reorder incremental decoding differs by {diff:.3g}"
        # the decoder really reads the source: another source moves its output
        other = model.encoder(harness.random_tokens(3, 11, seed=9), torch.full((3,), 11))
        moved = (model.get_normalized_probs(model.decoder(reordered, encoder_out=other), log_probs=True) - full)
    assert moved.abs().max() > 1e-3


def batches_holding(sentence):
    """``sentence`` [1, 7] beside two 13-token sentences, left-padded (fairseq's default) and right-padded."""
    others = harness.random_tokens(2, 13, seed=4)
    pads = torch.full((1, 6), PAD)
    return {"left": torch.cat([torch.cat([pads, sentence], 1), others]),
            "right": torch.cat([torch.cat([sentence, pads], 1), others])}


def sentence_encoding_moves(model) -> float:
    """Largest change of the sentence's encoder output and translation log-probs when it is batched with
    longer sentences (left or right padded) instead of alone."""
    model.eval()
    sentence = harness.random_tokens(1, 7, seed=3)
    target = harness.random_tokens(1, 9, seed=6)
    with torch.no_grad():
        alone = model.encoder(sentence, torch.tensor([7]))
        alone_probs = model.get_normalized_probs(model.decoder(target, encoder_out=alone), log_probs=True)
        worst = 0.0
        for padding, batch in batches_holding(sentence).items():
            encoded = model.encoder(batch, batch.ne(PAD).sum(1))
            rows, mask = encoded["encoder_out"][0][:, 0], encoded["encoder_padding_mask"][0][0]
            assert mask.tolist() == [False] * 7 + [True] * 6, padding  # left-aligned: pads after the sentence
            assert rows[7:].abs().max() == 0, padding  # pads' output rows are zero
            first = model.encoder.reorder_encoder_out(encoded, torch.tensor([0]))
            probs = model.get_normalized_probs(model.decoder(target, encoder_out=first), log_probs=True)
            worst = max(worst, (rows[:7] - alone["encoder_out"][0][:, 0]).abs().max().item(),
                        (probs - alone_probs).abs().max().item())
    return worst


@pytest.mark.parametrize("name", sorted(CASES.VARIANTS))
def test_a_sentence_is_encoded_the_same_in_any_batch(name):
    moved = sentence_encoding_moves(build(*CASES.VARIANTS[name]))
    assert moved <= 1e-5, f"batching moved the sentence's encoder output / log-probs by {moved:.3g}"


class InputMaskedAttention(BidirectionalLinformerAttention):
    """linformer-pytorch's padding (its issue #11): zero the pads' *input* rows, then compress all S
    positions. The projections' biases still reach the slots, and the sqrt(n) scale counts the pads."""

    def forward(self, x, ctx):
        x = x.masked_fill(ctx.padding_mask[..., None], 0.0)
        return super().forward(x, Seq2SeqContext(ctx.positions))


@pytest.mark.parametrize("method", ["learnable", "convolution"])
def test_the_batching_probe_catches_input_masking(method):
    model = build("--linformer-method", method)
    for layer in model.encoder.layers:
        layer.attention.__class__ = InputMaskedAttention
    moved = sentence_encoding_moves(model)
    assert moved > 1e-3, f"the reference's input masking moved the sentence by only {moved:.3g}"


def test_pads_add_nothing_to_the_compressed_memory():
    """compressed_memory of a left-aligned padded row equals that of the sentence alone, exactly the
    slots (k, not S) and the scale of n real tokens."""
    model = build("--linformer-sharing", "none").double()
    attention = model.encoder.layers[0].attention
    k, v = torch.randn(2, 2, 4, 13, 8, dtype=torch.float64)
    padding = torch.zeros(2, 13, dtype=torch.bool)
    padding[0, 7:] = True
    keys, values, visible = compressed_memory(k, v, attention.key_compression, attention.value_compression, padding)
    alone_k, alone_v, _ = compressed_memory(k[:1, :, :7], v[:1, :, :7], attention.key_compression,
                                            attention.value_compression, None)
    assert keys.shape == (2, 4, 8, 8) and visible is None
    assert (keys[:1] - alone_k).abs().max() < 1e-12 and (values[:1] - alone_v).abs().max() < 1e-12
    e = attention.key_compression.weight[:, :, :7]
    assert torch.allclose(alone_k, (e @ k[:1, :, :7]) / 7**0.5, atol=1e-12)  # c = 1/sqrt(n), E sliced to n


def test_decoding_state_has_a_fixed_size():
    """Per decoder layer: the self-attention state is k x d_head per head whatever the step; the source
    attention caches k slots with --linformer-cross-k, the S source positions without."""
    src, lengths = source_batch()
    tokens = harness.random_tokens(3, 20, seed=2)
    for flags, source_rows in (([], 11), (["--linformer-cross-k", "4"], 4)):
        model = build(*flags).eval()
        state, sizes = {}, set()
        with torch.no_grad():
            encoder_out = model.encoder(src, lengths)
            for t in range(tokens.size(1)):
                model.decoder(tokens[:, : t + 1], encoder_out=encoder_out, incremental_state=state)
                sizes.add(tuple((name, tuple(v.shape)) for layer in model.decoder.layers
                                for module in (layer.attention, layer.source_attention)
                                for name, v in module.get_cache(state).items()))
        assert len(sizes) == 1, f"the decoding state changed size: {sizes}"
        per_layer = [("keys", (3, 4, 8, 8)), ("values", (3, 4, 8, 8)),
                     ("keys", (3, 4, source_rows, 8)), ("values", (3, 4, source_rows, 8))]
        assert [entry for entry in sizes.pop() if entry[0] != "mask"] == 2 * per_layer


def test_every_source_length_up_to_max_source_positions():
    model = build("--linformer-method", "convolution", "--linformer-cross-k", "4").eval()
    target = harness.random_tokens(1, 5)
    for length in (1, 3, 64):  # shorter than k, than a convolution block, exactly N
        source = harness.random_tokens(1, length)
        assert harness.log_probs(harness.FixedSource(model, source, torch.tensor([length])), target).shape == (1, 5, 100)
    with pytest.raises(ValueError, match=r"--max-source-positions \(64\)"):
        model.encoder(harness.random_tokens(1, 65), torch.tensor([65]))
    with pytest.raises(ValueError, match="--max-target-positions"):
        harness.log_probs(harness.FixedSource(model, target, torch.tensor([5])), harness.random_tokens(1, 65))


def model_config(arch, flags=()):
    """The model's config as fairseq-train resolves it (named-arch defaults, then the dataclass's)."""
    from delight_plugin.building import training_config
    return training_config("/tmp", ["--task", "translation", "--arch", arch, *flags]).model


SIZE_FIELDS = [f"{side}_{name}" for side in ("encoder", "decoder")
               for name in ("embed_dim", "ffn_embed_dim", "layers", "attention_heads")]


@pytest.mark.parametrize("ours,fairseqs", [("linformer_transformer", "transformer"),
                                           ("linformer_transformer_iwslt_de_en", "transformer_iwslt_de_en"),
                                           ("linformer_transformer_wmt16_en_ro", "transformer")])
def test_named_archs_have_fairseq_transformer_sizes(ours, fairseqs):
    a, b = model_config(ours), model_config(fairseqs)
    assert [getattr(a, f) for f in SIZE_FIELDS] == [getattr(b, f) for f in SIZE_FIELDS]
    assert (a.dropout, a.attention_dropout, a.activation_fn) == (0.3 if "wmt16" in ours else b.dropout, 0.0, "relu")
    assert getattr(a, "share_all_embeddings", False) == ("wmt16" in ours)


def test_base_arch_parameters_equal_fairseq_transformer_plus_final_norms_and_compressions():
    """With --linformer-full-attention every block has the parameters of fairseq's transformer (base);
    ours adds the pre-norm stacks' two final LayerNorms. Linformer adds one k x N matrix per side."""
    data = harness.translation_dicts(Path(os.environ["PYTEST_TMP"]) / "base_dicts")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    fairseq_model = harness.build_translation("transformer", [], data)[0]
    full = harness.build_translation(ARCH, ["--linformer-full-attention"], data)[0]
    linformer = harness.build_translation(ARCH, [], data)[0]
    assert count(full) == count(fairseq_model) + 2 * 2 * 512
    assert count(linformer) == count(full) + 2 * 64 * 1024


@pytest.mark.parametrize("flags,text", CASES.BAD, ids=[t + "-" + "_".join(f)[:30] for f, t in CASES.BAD])
def test_bad_config_rejected_at_build(flags, text):
    data = harness.translation_dicts(Path(os.environ["PYTEST_TMP"]) / "bad_dicts")
    message = harness.build_error(ARCH, TINY + flags, data_dir=data, task="translation",
                                  extra_task_flags=["--source-lang", "en", "--target-lang", "ro"])
    assert message, f"{ARCH} accepted bad flags {flags}"
    assert text in message, message[-500:]


def test_shared_embeddings_need_a_joined_dictionary(tmp_path):
    data = harness.translation_dicts(tmp_path, langs=("en",))
    harness.translation_dicts(tmp_path / "ro", langs=("ro",), size=90)
    (tmp_path / "dict.ro.txt").write_text((tmp_path / "ro" / "dict.ro.txt").read_text())
    message = harness.build_error(ARCH, TINY + ["--share-all-embeddings"], data_dir=data, task="translation",
                                  extra_task_flags=["--source-lang", "en", "--target-lang", "ro"])
    assert "--share-all-embeddings" in message and "joined" in message
    shared = build("--share-all-embeddings")
    assert shared.encoder.embed_tokens.weight is shared.decoder.embed_tokens.weight
    assert shared.decoder.output_projection.weight is shared.decoder.embed_tokens.weight  # implied, as fairseq


def test_print_stats_counts_every_parameter_once():
    model = build("--share-all-embeddings", "--linformer-cross-k", "4")
    rows = model.stats(11, 9)
    assert sum(r.params for r in rows) == sum(p.numel() for p in model.parameters())
    by_name = {r.name: r for r in rows}
    assert by_name["decoder embedding"].params == 0  # the table is the encoder's
    assert by_name["encoder.layers.0"].macs_per_token > 0 and by_name["decoder.layers.1"].macs_per_token > 0


MAX_LEN_B = 12  # an almost untrained model rarely stops: keep decoding short


def test_fairseq_train_generate_and_interactive(mt_data_bin, tmp_path):
    """fairseq-train, then fairseq-generate with beam search (--nbest 2, --prefix-size 1) and sampling,
    fairseq-interactive, and in-process beam search with and without incremental state agree."""
    flags = [*CASES.TINY, "--linformer-cross-k", "4"]
    harness.fairseq_cli("train", mt_data_bin, "--user-dir", harness.PLUGIN_DIR, "--task", "translation",
                        "--arch", ARCH, *flags, "--share-all-embeddings", "--optimizer", "adam", "--lr", "0.002",
                        "--max-tokens", "2048", "--max-update", "8", "--criterion", "label_smoothed_cross_entropy",
                        "--label-smoothing", "0.1", "--save-dir", tmp_path, "--no-epoch-checkpoints",
                        "--num-workers", "0", "--disable-validation", "--seed", "1", "--print-stats")
    checkpoint = tmp_path / "checkpoint_last.pt"
    common = [mt_data_bin, "--user-dir", harness.PLUGIN_DIR, "--path", checkpoint, "--max-len-b", MAX_LEN_B,
              "--batch-size", "64", "--gen-subset", "test"]
    beam = harness.fairseq_cli("generate", *common, "--beam", "4", "--nbest", "2", "--prefix-size", "1",
                               "--scoring", "sacrebleu")
    assert re.search(r"BLEU = \d", beam.stdout + beam.stderr), beam.stdout[-2000:]
    hyps = re.findall(r"^H-(\d+)\t\S+\t(.*)$", beam.stdout, re.M)
    targets = dict(re.findall(r"^T-(\d+)\t(.*)$", beam.stdout, re.M))
    sentences = len(targets)  # fairseq-generate leaves out the few empty pairs
    assert sentences > 290 and len(hyps) == 2 * sentences, beam.stdout[-2000:]
    assert all(h.split()[:1] == targets[i].split()[:1] for i, h in hyps
               if targets[i] and not targets[i].startswith("<<unk>>")), "--prefix-size 1 ignored"
    sample = harness.fairseq_cli("generate", *common, "--sampling", "--sampling-topk", "5", "--beam", "2",
                                 "--nbest", "2", "--seed", "3")
    assert len(re.findall(r"^H-", sample.stdout, re.M)) == 2 * sentences
    lines = (harness.SAMPLE_DIR / "wmt16-en-ro" / "test.en").read_text().splitlines()[:3]
    interactive = harness.fairseq_cli("interactive", mt_data_bin, "--user-dir", harness.PLUGIN_DIR, "--path",
                                      checkpoint, "--beam", "3", "--max-len-b", MAX_LEN_B, "--source-lang", "en",
                                      "--target-lang", "ro", stdin="\n".join(lines) + "\n").stdout
    assert len(re.findall(r"^H-\d+\t", interactive, re.M)) == 3, interactive[-2000:]
    with_state, without_state = (harness.generate_hypotheses(checkpoint, "test", incremental=incremental,
                                                             max_len_b=MAX_LEN_B, num_shards=3)  # 1/3 of them
                                 for incremental in (True, False))
    assert len(with_state) > 90 and with_state == without_state, "incremental beam search changed the hypotheses"


MEMORISATION_MODEL = ["--encoder-embed-dim", "128", "--decoder-embed-dim", "128", "--encoder-ffn-embed-dim", "256",
                      "--decoder-ffn-embed-dim", "256", "--encoder-layers", "2", "--decoder-layers", "2",
                      "--encoder-attention-heads", "4", "--decoder-attention-heads", "4", "--linformer-k", "16",
                      "--max-source-positions", "64", "--max-target-positions", "64"]
MEMORISATION_UPDATES = 60  # measured BLEU 93.4 (40 updates: 65.4, 100: 94.5)


@pytest.mark.slow
def test_memorises_a_few_hundred_pairs(tmp_path):
    """A small linformer_transformer trained briefly on CPU reproduces its 200 training pairs: BLEU > 60."""
    text, count = harness.short_pairs(tmp_path / "text", count=200, max_words=8)
    assert count == 200
    data = tmp_path / "bin"
    harness.fairseq_cli("preprocess", "--source-lang", "en", "--target-lang", "ro", "--joined-dictionary",
                        "--trainpref", text / "train", "--destdir", data, "--workers", "1")
    harness.fairseq_cli("train", data, "--user-dir", harness.PLUGIN_DIR, "--task", "translation", "--arch", ARCH,
                        *MEMORISATION_MODEL, "--share-all-embeddings", "--dropout", "0", "--attention-dropout", "0",
                        "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "0.005",
                        "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "30", "--max-tokens", "4096",
                        "--max-update", str(MEMORISATION_UPDATES), "--save-interval", "100000",
                        "--save-dir", tmp_path / "ckpt", "--no-epoch-checkpoints", "--num-workers", "0",
                        "--disable-validation", "--seed", "1", "--log-format", "simple", "--log-interval", "100")
    gen = harness.fairseq_cli("generate", data, "--user-dir", harness.PLUGIN_DIR, "--path",
                              tmp_path / "ckpt" / "checkpoint_last.pt", "--gen-subset", "train", "--beam", "5",
                              "--batch-size", "64", "--required-batch-size-multiple", "1", "--scoring", "sacrebleu")
    assert len(re.findall(r"^H-", gen.stdout, re.M)) == count, "fairseq-generate skipped some pairs"
    bleu = float(re.search(r"BLEU = ([\d.]+)", gen.stdout + gen.stderr).group(1))
    print(f"memorisation: BLEU {bleu} after {MEMORISATION_UPDATES} updates")
    assert bleu > 60, f"BLEU {bleu} on the {count} training pairs"


def measured_differences(flags):
    """The numbers the tests bound, for one variant: (incremental vs full, after a beam reorder,
    batched vs alone, largest move before j, smallest move at j)."""
    model = build(*flags).eval()
    src, lengths = source_batch()
    tokens, order = harness.random_tokens(3, 23, seed=2), torch.tensor([2, 0, 0])
    with torch.no_grad():
        encoder_out = model.encoder(src, lengths)
        full = model.get_normalized_probs(model.decoder(tokens, encoder_out=encoder_out), log_probs=True)
        incremental = (decode_with_reorder(model, encoder_out, tokens, order, at=None)[0] - full).abs().max().item()
        inc, reordered = decode_with_reorder(model, encoder_out, tokens, order, at=9)
        reordered_enc = model.encoder.reorder_encoder_out(encoder_out, order)
        full = model.get_normalized_probs(model.decoder(reordered, encoder_out=reordered_enc), log_probs=True)
        after_reorder = (inc - full).abs().max().item()
    fixed, targets = harness.FixedSource(model, src, lengths), harness.random_tokens(2, 37)
    base, before, at = harness.log_probs(fixed, targets), 0.0, float("inf")
    for j in (1, 12, 19, 36):  # the positions probe_causality changes
        changed = targets.clone()
        changed[:, j] = 4 + (changed[:, j] - 4 + 7) % (harness.VOCAB - 4)
        out = harness.log_probs(fixed, changed)
        before = max(before, (out[:, :j] - base[:, :j]).abs().max().item())
        at = min(at, (out[:, j] - base[:, j]).abs().max().item())
    return incremental, after_reorder, sentence_encoding_moves(model), before, at


if __name__ == "__main__":  # PYTHONPATH=. python tests/test_linformer_translation.py: the docs' table
    print("| variant | incremental vs full | after beam reorder | batched vs alone | before j | at j (min) |")
    print("|---|---|---|---|---|---|")
    for variant, variant_flags in sorted(CASES.VARIANTS.items()):
        numbers = measured_differences(variant_flags)
        print(f"| {variant} | " + " | ".join(f"{x:.1e}" for x in numbers[:4]) + f" | {numbers[4]:.2f} |")
