"""Checkpoint averaging (``python -m delight_plugin.recipes.average``) on update checkpoints of a real
run, explicit --inputs, refusal of mixed models; and unreadable checkpoint files named with what is
wrong with them, by the averaging script and by ``delight_plugin.load``."""
import subprocess
import sys

import pytest
import torch

import harness
from delight_plugin import hub


@pytest.fixture(scope="module")
def update_run(lm_data_bin, tmp_path_factory):
    """plain_lm for 6 updates saving every 2 (checkpoint_1_2.pt, _1_4.pt, _1_6.pt), no epoch checkpoints."""
    save_dir = tmp_path_factory.mktemp("average-run")
    harness.fairseq_cli("train", lm_data_bin, "--user-dir", harness.PLUGIN_DIR, "--task", "language_modeling",
                        "--arch", "plain_lm", *harness.tiny_flags("plain_lm"), "--tokens-per-sample", "64",
                        "--max-tokens", "512", "--optimizer", "adam", "--lr", "0.01", "--max-update", "6",
                        "--save-interval-updates", "2", "--no-epoch-checkpoints", "--num-workers", "0",
                        "--disable-validation", "--seed", "1", "--save-dir", save_dir)
    return save_dir


def average(*args):
    return subprocess.run([sys.executable, "-m", "delight_plugin.recipes.average", *map(str, args)],
                          capture_output=True, text=True, cwd=harness.REPO)


def params(path):
    return torch.load(path)["model"]


def mean_of(paths):
    states = [params(p) for p in paths]
    return {k: sum(s[k].double() for s in states) / len(states) for k in states[0] if states[0][k].is_floating_point()}


def test_averages_the_last_update_checkpoints(update_run, tmp_path):
    """Before: --num-update-checkpoints was unknown and --last found '0 epoch checkpoints'."""
    out = average("--dir", update_run, "--num-update-checkpoints", "2", "--output", tmp_path / "avg.pt")
    assert out.returncode == 0, out.stderr
    assert "checkpoint_1_4.pt, checkpoint_1_6.pt" in out.stdout
    want = mean_of([update_run / "checkpoint_1_4.pt", update_run / "checkpoint_1_6.pt"])
    got = params(tmp_path / "avg.pt")
    assert all(torch.allclose(got[k].double(), v, atol=1e-6) for k, v in want.items())
    assert not (tmp_path / "avg.pt.tmp").exists()
    bounded = average("--inputs", update_run, "--num-update-checkpoints", "2", "--checkpoint-upper-bound", "4",
                      "--output", tmp_path / "bounded.pt")
    assert bounded.returncode == 0 and "checkpoint_1_2.pt, checkpoint_1_4.pt" in bounded.stdout, bounded.stderr
    too_many = average("--dir", update_run, "--num-epoch-checkpoints", "2", "--output", tmp_path / "none.pt")
    assert too_many.returncode != 0 and "2 epoch checkpoints but" in too_many.stderr


def test_averages_explicit_inputs(update_run, lm_data_bin, tmp_path):
    files = [update_run / "checkpoint_1_2.pt", update_run / "checkpoint_1_6.pt"]
    out = average("--inputs", *files, "--output", tmp_path / "avg.pt")
    assert out.returncode == 0, out.stderr
    got, want = params(tmp_path / "avg.pt"), mean_of(files)
    assert all(torch.allclose(got[k].double(), v, atol=1e-6) for k, v in want.items())
    assert hub.load(tmp_path / "avg.pt", data_name_or_path=lm_data_bin).score("the game")["positional_scores"].numel()


def test_refuses_to_average_different_models(update_run, tmp_path):
    state = torch.load(update_run / "checkpoint_1_2.pt")
    state["cfg"]["model"]["_name"] = "gau_lm"
    torch.save(state, tmp_path / "other_arch.pt")
    out = average("--inputs", update_run / "checkpoint_1_4.pt", tmp_path / "other_arch.pt", "--output", tmp_path / "x.pt")
    assert out.returncode != 0 and "(--arch gau_lm) with" in out.stderr and "(--arch plain_lm)" in out.stderr, out.stderr
    state = torch.load(update_run / "checkpoint_1_2.pt")
    matrix = next(k for k, v in state["model"].items() if v.dim() == 2)
    state["model"][matrix] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "other_size.pt")
    out = average("--inputs", update_run / "checkpoint_1_4.pt", tmp_path / "other_size.pt", "--output", tmp_path / "y.pt")
    assert out.returncode != 0 and "different models" in out.stderr, out.stderr
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()


@pytest.fixture
def broken_checkpoints(update_run, tmp_path):
    good = (update_run / "checkpoint_1_2.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(good[: len(good) // 2])
    (tmp_path / "garbage.pt").write_bytes(b"garbage, not a checkpoint\n" * 40)
    (tmp_path / "empty.pt").write_bytes(b"")
    return tmp_path


@pytest.mark.parametrize("name,text", [("truncated.pt", "is truncated"), ("garbage.pt", "is not a checkpoint"),
                                       ("empty.pt", "is empty")])
def test_unreadable_checkpoints_name_the_file(broken_checkpoints, update_run, lm_data_bin, name, text):
    """Before: OSError [Errno 22] Invalid argument (truncated) and 'WeightsUnpickler error: Unsupported
    operand 103' (garbage), neither naming the file."""
    path = broken_checkpoints / name
    with pytest.raises(ValueError, match=f"{path}.* {text}"):
        hub.load(path, data_name_or_path=lm_data_bin)
    out = average("--inputs", update_run / "checkpoint_1_2.pt", path, "--output", broken_checkpoints / "avg.pt")
    assert out.returncode != 0 and f"{path}" in out.stderr and text in out.stderr, out.stderr
