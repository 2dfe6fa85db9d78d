"""The conformance suite: every language-model architecture the plugin registers (discovered
from fairseq's registries) is probed for causality, prefix consistency, incremental decoding,
resumable training and build-time validation. Each model contributes tests/cases/<model>.py:

    TINY = [...]                         # flags that scale the registered defaults down
    VARIANTS = {"name": [...flags]}      # every mode/method the model supports
    BAD = [([...flags], "text the error must contain"), ...]
    NO_INCREMENTAL = "reason"            # only if incremental decoding is impossible (optional)
"""
import re
import shutil

import pytest
import torch

import harness
from delight_plugin import hub
from delight_plugin.checkpoint_files import read_checkpoint, trained_length_limit
from delight_plugin.recipes.eval_lm_checks import split_tokens

LM_ARCHS = harness.lm_archs()


def variant_params():
    params = []
    for arch in LM_ARCHS:
        variants = getattr(harness.cases(arch), "VARIANTS", {}) or {}
        params.append(pytest.param(arch, [], id=f"{arch}-default"))
        params += [pytest.param(arch, list(flags), id=f"{arch}-{name}") for name, flags in variants.items()]
    return params


def bad_params():
    return [pytest.param(arch, list(flags), text, id=f"{arch}-{'_'.join(flags)[:40]}")
            for arch in LM_ARCHS for flags, text in harness.cases(arch).BAD]


def test_every_lm_arch_is_covered():
    assert "plain_lm" in LM_ARCHS
    for arch in LM_ARCHS:
        harness.cases(arch)  # raises with instructions when a model has no cases file


@pytest.mark.parametrize("arch,flags", variant_params())
def test_causal(arch, flags):
    model, _ = harness.build(arch, harness.tiny_flags(arch) + flags)
    harness.probe_causality(model)


@pytest.mark.parametrize("arch,flags", variant_params())
def test_prefix_consistent(arch, flags):
    model, _ = harness.build(arch, harness.tiny_flags(arch) + flags)
    harness.probe_prefix(model)


def decoding_model(arch, flags):
    """The tiny model, or a skip for an arch that opts out of incremental decoding."""
    reason = getattr(harness.cases(arch), "NO_INCREMENTAL", None)
    if reason:
        pytest.skip(f"{arch} opts out of incremental decoding: {reason}")
    return harness.build(arch, harness.tiny_flags(arch) + flags)[0]


@pytest.mark.parametrize("arch,flags", variant_params())
def test_incremental_equals_full(arch, flags):
    harness.probe_incremental(decoding_model(arch, flags))


@pytest.mark.parametrize("arch,flags", variant_params())
def test_prefill_then_steps_equal_full(arch, flags):
    harness.probe_prefill(decoding_model(arch, flags))


@pytest.mark.parametrize("arch,flags,text", bad_params())
def test_bad_config_rejected_at_build(arch, flags, text):
    message = harness.build_error(arch, harness.tiny_flags(arch) + flags)
    assert message, f"{arch} accepted bad flags {flags}"
    assert text in message, f"error for {flags} should mention {text!r}, got: {message[-500:]}"


@pytest.mark.parametrize("arch", LM_ARCHS)
def test_train_resume_and_eval_lm(arch, lm_data_bin, tmp_path):
    """A real fairseq-train run; N updates straight and N/2 + restore + N/2 give identical
    per-update losses and identical weights; fairseq-eval-lm scores the checkpoint."""
    common = [lm_data_bin, "--user-dir", harness.PLUGIN_DIR, "--task", "language_modeling", "--arch", arch,
              *harness.tiny_flags(arch), "--tokens-per-sample", "64", "--max-tokens", "512",
              "--optimizer", "adam", "--lr", "0.001", "--seed", "3", "--log-format", "json",
              "--log-interval", "1", "--no-epoch-checkpoints", "--num-workers", "0", "--disable-validation"]
    # The straight run also saves its update-3 checkpoint; the resumed run restarts from a copy of it.
    straight = harness.fairseq_cli("train", *common, "--max-update", "6", "--save-interval-updates", "3",
                                   "--save-dir", tmp_path / "a")
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "checkpoint_1_3.pt", tmp_path / "b" / "checkpoint_last.pt")
    resumed = harness.fairseq_cli("train", *common, "--max-update", "6", "--save-dir", tmp_path / "b")
    want = harness.train_losses(straight.stdout + straight.stderr)
    got = harness.train_losses(resumed.stdout + resumed.stderr)
    assert sorted(want) == [1, 2, 3, 4, 5, 6] and sorted(got) == [4, 5, 6], (want, got)
    assert all(got[u] == want[u] for u in got), f"resumed losses {got} differ from straight {want}"
    a = torch.load(tmp_path / "a" / "checkpoint_last.pt")["model"]
    b = torch.load(tmp_path / "b" / "checkpoint_last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from straight training"

    ev = harness.fairseq_cli("eval_lm", lm_data_bin, "--user-dir", harness.PLUGIN_DIR, "--path",
                             tmp_path / "a" / "checkpoint_last.pt", "--gen-subset", "valid",
                             "--tokens-per-sample", "64", "--context-window", "32", "--max-tokens", "2048")
    out = ev.stdout + ev.stderr
    assert "Perplexity:" in out, out[-2000:]
    ppl = float(out.split("Perplexity:")[1].split()[0])
    assert 1.0 < ppl < 1e6, ppl
    check_longer_window(arch, tmp_path / "a" / "checkpoint_last.pt", lm_data_bin)


# Archs whose defaults have parameters per position (Linformer's k x N compression): bounded by training length.
LENGTH_BOUND = {"linformer_lm"}


def check_longer_window(arch, checkpoint, data):
    """160-token windows scoring 128 new tokens each, twice the training length: fairseq-eval-lm used to drop
    every such sample (max_positions was the training length), scoring 33 of 20,897 tokens here. Length-free
    models now score the whole split; the others are refused by delight_plugin.load (and
    scripts/wikitext/evaluate.sh) naming the training length."""
    state = read_checkpoint(checkpoint)
    assert trained_length_limit(state) == (64 if arch in LENGTH_BOUND else None)
    if arch in LENGTH_BOUND:
        with pytest.raises(ValueError, match="trained on 64-token samples"):
            hub.load(checkpoint, data_name_or_path=data, tokens_per_sample=160)
        return
    ev = harness.fairseq_cli("eval_lm", data, "--user-dir", harness.PLUGIN_DIR, "--path", checkpoint, "--gen-subset",
                             "valid", "--tokens-per-sample", "160", "--context-window", "32", "--max-tokens", "4096",
                             "--required-batch-size-multiple", "1")
    out = ev.stdout + ev.stderr
    evaluated = int(re.search(r"Evaluated ([\d,]+) tokens", out).group(1).replace(",", ""))
    assert evaluated == split_tokens(str(data), "valid"), out[-2000:]
    ppl = float(out.split("Perplexity:")[1].split()[0])
    assert 1.0 < ppl < 1e6, ppl
