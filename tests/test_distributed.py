"""Two-process data-parallel training on CPU through scripts/train_ddp_cpu.sh."""
import json
import os
import subprocess
import sys

import harness


def test_two_process_cpu_training(lm_data_bin, tmp_path):
    env = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}")
    cmd = ["bash", harness.REPO / "scripts" / "train_ddp_cpu.sh", "--nprocs", "2", "--log-dir", tmp_path / "logs",
           "--", lm_data_bin, "--user-dir", harness.PLUGIN_DIR, "--task", "language_modeling", "--arch", "plain_lm",
           *harness.tiny_flags("plain_lm"), "--tokens-per-sample", "64", "--max-tokens", "256", "--optimizer", "adam",
           "--lr", "0.001", "--max-update", "3", "--log-format", "json", "--log-interval", "1",
           "--save-dir", tmp_path / "ckpt", "--no-epoch-checkpoints", "--disable-validation", "--num-workers", "0"]
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=300)
    logs = [(tmp_path / "logs" / f"rank_{r}.log").read_text() for r in (0, 1)]
    assert proc.returncode == 0, proc.stdout + proc.stderr + logs[0][-3000:] + logs[1][-3000:]
    for rank, log in enumerate(logs):
        assert f"as rank {rank}" in log, log[-2000:]
    assert "'distributed_world_size': 2" in logs[0]
    # Every update averages both ranks' batches: 2 x 256 tokens per update.
    updates = [json.loads(l[l.index("{"):]) for l in logs[0].splitlines() if "train_inner" in l]
    assert [int(u["num_updates"]) for u in updates] == [1, 2, 3]
    assert all(float(u["wpb"]) == 512 for u in updates), updates
    assert (tmp_path / "ckpt" / "checkpoint_last.pt").exists()
