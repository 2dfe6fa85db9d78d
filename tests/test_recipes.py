"""The recipes: hyperparameters, generated hydra configs, text tools, and the shell scripts run
offline end to end on tiny slices of ../shared/data (prepare, train a few updates, evaluate)."""
import argparse
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import harness
from delight_plugin.presets import BASELINE_PRESETS
from delight_plugin.recipes import configs, hyperparameters as hp
from delight_plugin.recipes.bleu import scores
from delight_plugin.recipes.romanian import normalise, remove_diacritics

SCRIPTS = harness.REPO / "scripts"
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "PYTHON": sys.executable}
FAST_TRAIN = ["--max-update", "2", "--update-freq", "1", "--tokens-per-sample", "64", "--max-tokens", "512",
              "--num-workers", "0", "--disable-validation"]


def sh(script, *args, cwd, check=True):
    proc = subprocess.run(["bash", str(SCRIPTS / script), *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True)
    if check and proc.returncode:
        raise AssertionError(f"{script} {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def tiny(arch):
    if arch == hp.LM_BASELINE:
        return BASELINE_PRESETS["tiny"]
    if arch == hp.MT_BASELINE:
        return ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32", "--decoder-embed-dim",
                "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
                "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"]
    if arch == hp.DELIGHT_MT:
        return ["--delight-emb-map-dim", "32", "--delight-emb-out-dim", "64", "--delight-enc-layers", "2",
                "--delight-dec-layers", "2", "--delight-enc-max-depth", "4", "--delight-dec-max-depth", "4",
                "--delight-emb-depth", "2"]
    flags = harness.tiny_flags(arch)
    if arch == "delight_transformer_lm_wiki103":  # its 20K/60K cutoffs need a 267K vocabulary
        flags += ["--adaptive-input-cutoff", "100,300", "--adaptive-softmax-cutoff", "100,300"]
    return flags


def slice_lines(src: Path, dest: Path, lines: int):
    dest.write_text("".join(src.read_text(encoding="utf-8").splitlines(keepends=True)[:lines]), encoding="utf-8")


# ------------------------------------------------------------------------------------------------
# Hyperparameters and configs
# ------------------------------------------------------------------------------------------------

def test_every_registered_lm_arch_has_a_recipe():
    covered = {arch for arch, _ in hp.lm_recipes()}
    assert covered == set(hp.registered_lm_archs()) and hp.LM_BASELINE in covered


def test_delight_learning_rates_follow_the_reference():
    assert [hp.delight_mt_lr(d) for d in (128, 256, 384, 640)] == [0.0028, 0.0014, 0.0009, 0.0006]
    assert [hp.delight_lm_lr(d) for d in (512, 1024)] == [0.004, 0.002]


def test_update_freq_keeps_tokens_per_update_across_gpu_counts():
    def freq(gpus):
        flags = hp.lm_flags("plain_lm", "wikitext-103", gpus=gpus)
        return int(flags[flags.index("--update-freq") + 1]), int(flags[flags.index("--max-tokens") + 1])
    assert freq(1) == (16, 2048) and freq(8) == (2, 2048) and freq(64) == (1, 2048)


def test_bad_recipe_requests_name_the_flag():
    with pytest.raises(ValueError, match="--dataset"):
        hp.lm_flags("plain_lm", "ptb")
    with pytest.raises(ValueError, match="--arch"):
        hp.lm_flags("no_such_lm", "wikitext-2")
    with pytest.raises(ValueError, match="--d-m"):
        hp.lm_flags("plain_lm", "wikitext-2", d_m=256)
    with pytest.raises(ValueError, match="wikitext-103"):
        hp.lm_flags("delight_transformer_lm_wiki103", "wikitext-2")


def test_committed_configs_equal_the_generator_output():
    wanted = configs.generate()
    committed = {p.name: p.read_text() for p in (harness.REPO / "configs").glob("*.yaml")}
    assert sorted(wanted) == sorted(committed), "run `python scripts/make_configs.py` and commit configs/"
    for name, text in wanted.items():
        assert committed[name] == text, f"configs/{name} is stale: run `python scripts/make_configs.py`"


def test_config_holds_the_recipe_values():
    cfg = configs.config_dict(hp.lm_flags("plain_lm", "wikitext-2"), "data", "ckpt")
    assert cfg["model"]["_name"] == "plain_lm" and cfg["model"]["decoder_embed_dim"] == 256
    assert cfg["optimization"]["lr"] == [0.0005] and cfg["lr_scheduler"]["warmup_updates"] == 1000
    assert cfg["dataset"]["max_tokens"] == 4096 and cfg["task"]["tokens_per_sample"] == 512


# ------------------------------------------------------------------------------------------------
# Text tools
# ------------------------------------------------------------------------------------------------

def test_romanian_normalisation():
    assert remove_diacritics("Şi ţara, Ța ă â î ș ț ÂÎȘ") == "Si tara, Ta a a i s t AIS"
    assert normalise("„Bună” – zi… ( da ) 5 %", "ro", diacritics=False) == '"Buna" - zi... (da) 5%'
    assert normalise("ş ţ", "ro") == "ș ț"  # cedilla forms become comma-below when diacritics stay
    assert normalise("“It’s” — fine", "en") == "\"It's\" - fine"


def test_bleu_scores_and_signature():
    ref = ["Acesta este un test simplu, nu-i asa?", "Casa este mare."]
    s = scores(ref, ref)
    assert s["sacrebleu"] == 100.0 and s["tokenized_bleu"] == 100.0
    assert s["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    worse = scores(["Acesta este un test, nu?", "Casa e mare."], ref)
    assert 0 < worse["sacrebleu"] < 100 and 0 < worse["tokenized_bleu"] < 100
    with pytest.raises(ValueError, match="references"):
        scores(ref, ref[:1])


# ------------------------------------------------------------------------------------------------
# Scripts: help, dry runs, errors
# ------------------------------------------------------------------------------------------------

SCRIPT_NAMES = [f"{d}/{s}.sh" for d in ("wikitext", "wmt16_en_ro") for s in ("prepare", "train", "evaluate")]


@pytest.mark.parametrize("script", SCRIPT_NAMES)
def test_script_help_and_strict_mode(script, tmp_path):
    text = (SCRIPTS / script).read_text()
    assert "set -euo pipefail" in text
    out = sh(script, "--help", cwd=tmp_path).stdout
    assert out.startswith("usage:") and "--dry-run" in out


def test_dry_run_prints_commands_and_writes_nothing(tmp_path):
    out = sh("wikitext/train.sh", "plain_lm", "--dataset", "wikitext-2", "--dry-run", "--max-update", "7",
             cwd=tmp_path).stdout
    line = next(l for l in out.splitlines() if l.startswith("+ fairseq-train"))
    assert "--arch plain_lm" in line and line.endswith("--max-update 7")
    assert "--update-freq 1" in line and "--decoder-embed-dim 256" in line
    out = sh("wmt16_en_ro/prepare.sh", "--dry-run", "--source", tmp_path, cwd=tmp_path, check=False)
    assert list(tmp_path.iterdir()) == []


def test_clear_errors(tmp_path):
    r = sh("wikitext/train.sh", "plain_lm", "--dataset", "wikitext-2", cwd=tmp_path, check=False)
    assert r.returncode and "prepare.sh" in r.stderr
    r = sh("wikitext/prepare.sh", "--dataset", "ptb", cwd=tmp_path, check=False)
    assert r.returncode and "--dataset must be wikitext-2 or wikitext-103" in r.stderr
    r = sh("wikitext/prepare.sh", "--dataset", "wikitext-2", "--source", tmp_path / "nope", cwd=tmp_path, check=False)
    assert r.returncode and "not a directory" in r.stderr
    r = sh("wikitext/evaluate.sh", tmp_path / "missing.pt", cwd=tmp_path, check=False)
    assert r.returncode and "does not exist" in r.stderr
    r = sh("wmt16_en_ro/prepare.sh", "--source", tmp_path, cwd=tmp_path, check=False)
    assert r.returncode and "newsdev2016.en" in r.stderr


# ------------------------------------------------------------------------------------------------
# End to end on the real corpora
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wikitext2_bin(tmp_path_factory):
    if not harness.SHARED_DATA.is_dir():
        pytest.skip(f"{harness.SHARED_DATA} is absent")
    work = tmp_path_factory.mktemp("wikitext-recipe")
    (work / "src").mkdir()
    for split, lines in (("train", 400), ("valid", 60), ("test", 60)):
        slice_lines(harness.SHARED_DATA / "wikitext-2" / f"{split}.txt", work / "src" / f"{split}.txt", lines)
    out = sh("wikitext/prepare.sh", "--dataset", "wikitext-2", "--source", "src", "--workers", "1", cwd=work).stdout
    assert "step 2/2" in out and (work / "data-bin/wikitext-2/.done").exists()
    again = sh("wikitext/prepare.sh", "--dataset", "wikitext-2", "--source", "src", cwd=work).stdout
    assert again.count("skip:") == 2 and "+ fairseq-preprocess" not in again
    return work


# The shell recipe through four archs that take its different paths: fairseq's baseline, the arch that
# checks a finished run is not clobbered, the WikiText-103 recipe (adaptive input and softmax) and a
# linear-time design. Every arch's recipe flags train in test_every_hydra_config_composes_and_trains_two_updates
# and every arch trains, resumes and is scored in test_conformance.py, so all ten here cost CI ~6 minutes
# for no path not already covered.
RECIPE_ARCHS = ["transformer_lm", "plain_lm", "delight_transformer_lm_wiki103", "gau_lm_flash"]


def test_the_recipe_archs_are_registered_recipes():
    assert set(RECIPE_ARCHS) <= {arch for arch, _ in hp.lm_recipes()}


@pytest.mark.slow
@pytest.mark.parametrize("arch", RECIPE_ARCHS)
def test_wikitext_recipe_end_to_end(arch, wikitext2_bin):
    work = wikitext2_bin
    dataset = "wikitext-2" if (arch, "wikitext-2") in hp.lm_recipes() else "wikitext-103"
    save = f"ckpt/{arch}"
    sh("wikitext/train.sh", arch, "--dataset", dataset, "--data", "data-bin/wikitext-2", "--save-dir", save,
       "--no-fp16", *tiny(arch), *FAST_TRAIN, cwd=work)
    log = (work / save / "train.log").read_text()
    assert f"arch: '{arch}'" in log or f"'arch': '{arch}'" in log or f"--arch {arch}" in log
    assert "num_updates 2" in log or "num_updates: 2" in log or "done training" in log
    if arch == "plain_lm":  # a finished run is never clobbered (once is enough: each call costs seconds)
        again = sh("wikitext/train.sh", arch, "--dataset", dataset, "--data", "data-bin/wikitext-2", "--save-dir", save,
                   cwd=work).stdout
        assert "skip:" in again and "+ fairseq-train" not in again
    out = sh("wikitext/evaluate.sh", f"{save}/checkpoint_last.pt", "--subsets", "test", "--tokens-per-sample", "64",
             "--context-window", "32", cwd=work).stdout
    ppl = float(re.search(r"test perplexity: ([0-9.]+)", out).group(1))
    assert math.isfinite(ppl) and 1 < ppl < 10 * 2000, out


@pytest.mark.slow
@pytest.mark.parametrize("arch", [hp.MT_BASELINE, hp.DELIGHT_MT, hp.LINFORMER_MT])
def test_wmt16_recipe_end_to_end(arch, tmp_path_factory, shared_data):
    if arch not in hp.mt_archs():
        pytest.skip(f"{arch} is not registered in this checkout")
    work = tmp_path_factory.mktemp(f"wmt-{arch}")
    src = work / "src"
    src.mkdir()
    for name, lines in (("europarl-10k", 300), ("newsdev2016", 60), ("newstest2016", 45)):  # 45: not a multiple of 8 (fairseq #5036)
        for lang in ("en", "ro"):
            slice_lines(shared_data / "wmt16-en-ro" / f"{name}.{lang}", src / f"{name}.{lang}", lines)
    sh("wmt16_en_ro/prepare.sh", "--source", "src", "--vocab-size", "400", "--workers", "1", cwd=work)
    ref = (work / "data-bin/wmt16_en_ro/test.ref.ro").read_text(encoding="utf-8")
    assert len(ref.splitlines()) == 45 and not set("șțăâîşţ") & set(ref.lower())
    sh("wmt16_en_ro/train.sh", arch, "--save-dir", "ckpt", "--no-fp16", *tiny(arch), "--max-update", "3",
       "--update-freq", "1", "--max-tokens", "1024", "--num-workers", "0", "--no-epoch-checkpoints", "--disable-validation", cwd=work)
    out = sh("wmt16_en_ro/evaluate.sh", "ckpt/checkpoint_last.pt", "--beam", "2", "--max-len-b", "10", cwd=work).stdout
    assert re.search(r"sacreBLEU \(detokenized\): BLEU = [0-9.]+ ", out), out
    assert "gave no hypothesis" not in out, out
    assert "sacreBLEU signature: nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:" in out
    assert re.search(r"tokenized BLEU .*: [0-9.]+", out)
    result = json.loads((work / "ckpt/bleu_checkpoint_last_test.json").read_text())
    assert 0 <= result["sacrebleu"] <= 100
    assert len((work / "ckpt/hyp_checkpoint_last_test.txt").read_text(encoding="utf-8").splitlines()) == 45


def _resolved(flags):
    from omegaconf import OmegaConf
    cfg = configs.fairseq_config(flags, "data", "save")
    return {group: vars(node) if isinstance(node, argparse.Namespace) else
            OmegaConf.to_container(node, resolve=True, enum_to_str=True)
            for group, node in cfg.items() if node is not None}


def _hydra_value(value):
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return f"'{value}'" if isinstance(value, str) and ("," in value or "(" in value) else str(value)


def hydra_overrides(recipe_flags, extra_flags):
    """The hydra overrides that turn the config of ``recipe_flags`` into that of
    ``recipe_flags + extra_flags``, found by parsing both with fairseq's own parser (so each
    flag lands in its group: model, criterion, distributed_training, ...)."""
    base, changed = _resolved(recipe_flags), _resolved(recipe_flags + extra_flags)
    return [f"++{group}.{key}={_hydra_value(value)}" for group, values in changed.items()
            for key, value in values.items()
            if not key.startswith("_") and base.get(group, {}).get(key) != value]


@pytest.mark.slow
def test_every_hydra_config_composes_and_trains_two_updates(lm_data_bin, mt_data_bin, tmp_path):
    """Every config, through fairseq-hydra-train's own code path (compose + _hydra_main), in one
    process to save start-up time; one of them also through the real fairseq-hydra-train command."""
    jobs = []
    for name, recipe in configs.recipes().items():
        arch = recipe["flags"][recipe["flags"].index("--arch") + 1]
        lm = name.startswith("wikitext")
        overrides = [f"task.data={lm_data_bin if lm else mt_data_bin}", f"checkpoint.save_dir={tmp_path / name}",
                     "optimization.max_update=2", "optimization.update_freq=[1]", "dataset.max_tokens=512", "dataset.num_workers=0",
                     "dataset.disable_validation=true", "++common.fp16=false",
                     f"common.user_dir={harness.PLUGIN_DIR}", *hydra_overrides(recipe["flags"], tiny(arch))]
        overrides += ["task.tokens_per_sample=64"] if lm else ["dataset.max_tokens=1024"]
        jobs.append({"name": name, "overrides": overrides})
    driver = tmp_path / "jobs.json"
    driver.write_text(json.dumps(jobs))
    proc = subprocess.run([sys.executable, str(Path(__file__).parent / "hydra_smoke.py"), str(harness.REPO / "configs"),
                           str(driver)], capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    for job in jobs:
        assert (tmp_path / job["name"] / "checkpoint_last.pt").exists(), job["name"]
        assert f"trained {job['name']}: 2 updates" in proc.stdout

    cli = subprocess.run(["fairseq-hydra-train", "--config-dir", str(harness.REPO / "configs"), "--config-name",
                          "wikitext-2_plain_lm", *jobs[0]["overrides"][:1],
                          f"checkpoint.save_dir={tmp_path / 'cli'}", *[o for o in next(
                              j for j in jobs if j["name"] == "wikitext-2_plain_lm")["overrides"][2:]]],
                         capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert (tmp_path / "cli" / "checkpoint_last.pt").exists() and not (tmp_path / "outputs").exists()


def test_wikitext_evaluate_refuses_longer_windows_than_learned_positions_and_counts_tokens(lm_data_bin, tmp_path):
    """A learned-position model trained on 64-token samples: a 160-token window is refused naming the training
    length (fairseq-eval-lm would skip every sample); a 64-token one scores every token of the split."""
    harness.fairseq_cli("train", lm_data_bin, "--user-dir", harness.PLUGIN_DIR, "--task", "language_modeling", "--arch",
                        "plain_lm", *harness.tiny_flags("plain_lm"), "--position-scheme", "learned", "--optimizer",
                        "adam", "--lr", "0.001", "--save-dir", tmp_path, "--no-epoch-checkpoints", "--seed", "1",
                        *FAST_TRAIN)
    checkpoint = tmp_path / "checkpoint_last.pt"
    refused = sh("wikitext/evaluate.sh", checkpoint, "--data", lm_data_bin, "--subsets", "valid",
                 "--tokens-per-sample", "160", "--context-window", "32", cwd=tmp_path, check=False)
    assert refused.returncode and "trained on 64-token samples" in refused.stderr, refused.stderr
    ok = sh("wikitext/evaluate.sh", checkpoint, "--data", lm_data_bin, "--subsets", "valid", "--tokens-per-sample", "64",
            "--context-window", "32", cwd=tmp_path)
    assert re.search(r"valid perplexity: [0-9.]+", ok.stdout), ok.stdout
