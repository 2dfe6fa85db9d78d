"""Checkpoints load under torch's default weights_only=True once the plugin is imported, and a
checkpoint that smuggles a callable is refused without running it."""
import os
import subprocess
import sys

import pytest
import torch

import harness
from delight_plugin.safe_loading import fairseq_checkpoint_globals

TINY_TRANSFORMER = ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32",
                    "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
                    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"]


@pytest.fixture(scope="module")
def stock_transformer_checkpoint(mt_data_bin, tmp_path_factory):
    """A checkpoint of fairseq's own argparse-era ``transformer`` (its config holds a Namespace)."""
    save_dir = tmp_path_factory.mktemp("stock-transformer")
    harness.fairseq_cli("train", mt_data_bin, "--arch", "transformer", *TINY_TRANSFORMER, "--optimizer", "adam",
                        "--lr", "0.001", "--max-tokens", "1000", "--max-update", "2", "--save-dir", save_dir,
                        "--no-epoch-checkpoints", "--disable-validation", "--num-workers", "0")
    return save_dir / "checkpoint_last.pt"


def test_allowlist_holds_only_classes():
    assert all(isinstance(g, type) or g is __import__("typing").Any for g in fairseq_checkpoint_globals())
    assert os.system not in fairseq_checkpoint_globals()


def test_stock_checkpoint_is_refused_without_the_plugin(stock_transformer_checkpoint):
    """Proves the allowlist is needed: plain torch refuses the Namespace in fairseq's config."""
    code = f"import torch; torch.load({str(stock_transformer_checkpoint)!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0 and "argparse.Namespace" in proc.stderr


def test_fairseq_generate_loads_stock_transformer(mt_data_bin, stock_transformer_checkpoint):
    proc = harness.fairseq_cli("generate", mt_data_bin, "--user-dir", harness.PLUGIN_DIR,
                               "--path", stock_transformer_checkpoint, "--beam", "2", "--max-len-b", "5",
                               "--batch-size", "64", "--max-tokens", "4000")
    out = proc.stdout + proc.stderr
    assert "Generate test with beam=2: BLEU4" in out and out.count("\nH-") >= 290, out[-2000:]


def test_fairseq_eval_lm_loads_our_checkpoint(lm_data_bin, tmp_path):
    harness.fairseq_cli("train", lm_data_bin, "--user-dir", harness.PLUGIN_DIR, "--task", "language_modeling",
                        "--arch", "plain_lm", *harness.tiny_flags("plain_lm"), "--tokens-per-sample", "32",
                        "--sample-break-mode", "eos", "--skip-invalid-size-inputs-valid-test",
                        "--max-tokens", "256", "--optimizer", "adam", "--lr", "0.001", "--max-update", "2",
                        "--save-dir", tmp_path, "--no-epoch-checkpoints", "--disable-validation", "--num-workers", "0")
    state = torch.load(tmp_path / "checkpoint_last.pt")  # weights_only=True is torch's default
    assert state["cfg"]["model"]["_name"] == "plain_lm"
    proc = harness.fairseq_cli("eval_lm", lm_data_bin, "--user-dir", harness.PLUGIN_DIR, "--path",
                               tmp_path / "checkpoint_last.pt", "--tokens-per-sample", "32", "--max-tokens", "2048",
                               "--sample-break-mode", "eos", "--skip-invalid-size-inputs-valid-test")
    assert "Perplexity:" in proc.stdout + proc.stderr


class _RunsCommandWhenUnpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused_and_runs_nothing(mt_data_bin, stock_transformer_checkpoint, tmp_path):
    marker = tmp_path / "pwned"
    state = torch.load(stock_transformer_checkpoint)
    state["extra_state"]["payload"] = _RunsCommandWhenUnpickled(marker)
    evil = tmp_path / "evil.pt"
    torch.save(state, evil)

    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(evil)
    proc = harness.fairseq_cli("generate", mt_data_bin, "--user-dir", harness.PLUGIN_DIR, "--path", evil,
                               "--beam", "2", "--max-len-b", "5", check=False)
    assert proc.returncode != 0
    assert "Weights only load failed" in proc.stderr and "system" in proc.stderr, proc.stderr[-2000:]
    assert not marker.exists(), "the payload ran"

