"""The quality study: log reading, planning (sweep, grid extension, the character regime following
the word regime's learning rates, finals waiting for their sweep, finished runs skipped), the
character corpus, the results' tables and figures, and one small study end to end."""
import json

import pytest

from delight_plugin.benchmark import quality, study
from delight_plugin.recipes import characters


def fairseq_line(kind, record):
    return f"2026-01-01 00:00:00 | INFO | {kind} | {json.dumps(record)}"


def test_curve_counts_tokens_and_training_seconds_and_keeps_the_resumed_records():
    log = ["num. shared model params: 1,234 (num. trained: 1,234)",
           fairseq_line("train_inner", {"num_updates": "10", "wpb": "2000", "train_wall": "30"}),
           fairseq_line("valid", {"valid_num_updates": "10", "valid_loss": "9.5"}),
           fairseq_line("train_inner", {"num_updates": "20", "wpb": "1500", "train_wall": "35"}),
           # interrupted after update 20, resumed from the checkpoint of update 10: updates 11-20 again
           fairseq_line("train_inner", {"num_updates": "20", "wpb": "1500", "train_wall": "40"}),
           fairseq_line("valid", {"valid_num_updates": "20", "valid_loss": "9.0"}),
           fairseq_line("valid", {"valid_num_updates": "20", "valid_loss": "9.0"})]  # end-of-training repeat
    curve = quality.valid_curve("\n".join(log), flops_per_token=6.0)
    assert curve == [
        {"updates": 10, "tokens": 20000.0, "train_seconds": 30.0, "flops": 120000.0, "valid_loss": 9.5},
        {"updates": 20, "tokens": 35000.0, "train_seconds": 70.0, "flops": 210000.0, "valid_loss": 9.0}]
    assert quality.logged_params("\n".join(log)) == 1234
    assert quality.eval_score("| Loss (base 2): 7.2500, Perplexity: 152.22\n") == {"loss": 7.25, "ppl": 152.22}
    assert quality.eval_score("nothing scored") is None


def result(regime, variant, lr, loss, phase="sweep", seed=1, tokens=100, test=None):
    return {"regime": regime, "variant": variant, "lr": lr, "seed": seed, "tokens": tokens, "phase": phase,
            "valid": {"loss": loss}, "test": None if test is None else {"loss": test}, "curve": [],
            "train_seconds": 10.0, "params": 5, "non_embedding_params": 3, "macs_per_token": 2e6}


REGIMES = {"word": study.Regime("word", "ppl", False, 8, 32, 100, 300),
           "char": study.Regime("char", "bpc", True, 8, 32, 100, 300)}


def planned(results, regimes=("word", "char"), grid=(1e-3, 2e-3, 4e-3), seeds=(1, 2, 3), extend=True):
    return [(r.phase, r.regime, r.lr, r.seed) for r in
            study.plan(results, list(regimes), ["plain_lm"], list(grid), list(seeds), REGIMES, extend)]


def test_plan_sweeps_then_extends_a_winning_edge_then_runs_the_seeds_at_the_best():
    assert planned([]) == [("sweep", "word", 2e-3, 1), ("sweep", "word", 1e-3, 1), ("sweep", "word", 4e-3, 1)]
    sweep = [result("word", "plain_lm", lr, loss) for lr, loss in ((1e-3, 9.0), (2e-3, 8.5), (4e-3, 8.0))]
    assert planned(sweep) == [("sweep", "word", 8e-3, 1)]  # the best is the largest: try twice it, once
    assert planned(sweep, extend=False)[0] == ("final", "word", 4e-3, 1)
    extended = sweep + [result("word", "plain_lm", 8e-3, 7.9)]
    # 8e-3 wins again but is not extended further; characters take the best and its better neighbour
    assert planned(extended) == [("final", "word", 8e-3, 1), ("final", "word", 8e-3, 2), ("final", "word", 8e-3, 3),
                                 ("sweep", "char", 4e-3, 1), ("sweep", "char", 8e-3, 1)]
    # the same character runs when the command names only the character regime (a second process)
    assert planned(extended, regimes=("char",)) == [("sweep", "char", 4e-3, 1), ("sweep", "char", 8e-3, 1)]
    assert planned([], regimes=("char",))[0] == ("sweep", "char", 2e-3, 1)  # no word results: the grid
    lowest = [result("word", "plain_lm", lr, loss) for lr, loss in ((1e-3, 8.0), (2e-3, 8.5), (4e-3, 9.0))]
    assert planned(lowest, regimes=("word",)) == [("sweep", "word", 5e-4, 1)]
    middle = [result("word", "plain_lm", lr, loss) for lr, loss in ((1e-3, 8.4), (2e-3, 8.0), (4e-3, 8.3))]
    done = middle + [result("word", "plain_lm", 2e-3, 8.0, "final", s, 300, 8.1) for s in (1, 2)]
    assert planned(done, regimes=("word",)) == [("final", "word", 2e-3, 3)]


def test_characters_keep_spaces_as_a_symbol_and_lines_as_lines(tmp_path):
    assert characters.characters(" The cat , sat \n") == "T h e ▁ c a t ▁ , ▁ s a t"
    assert characters.characters(" \n") == ""
    source = tmp_path / "in.txt"
    source.write_text(" ab c \n \n")
    assert characters.convert(source, tmp_path / "out.txt") == 5 + 1  # a b ▁ c + newline, and an empty line
    assert (tmp_path / "out.txt").read_text() == "a b ▁ c\n\n"
    with pytest.raises(ValueError, match="already contains"):
        characters.characters(" a▁b ")


def test_summary_table_and_figures(tmp_path):
    curve = [{"updates": 1, "tokens": 10.0, "train_seconds": 1.0, "flops": 60.0, "valid_loss": 8.0},
             {"updates": 2, "tokens": 20.0, "train_seconds": 2.0, "flops": 120.0, "valid_loss": 7.0}]
    runs = [result("word", v, lr, loss) for v, lr, loss in
            (("transformer_lm", 1e-3, 8.0), ("transformer_lm", 2e-3, 7.5), ("plain_lm", 1e-3, 7.9), ("plain_lm", 2e-3, 7.7))]
    runs += [result("word", "transformer_lm", 2e-3, 7.0, "final", s, 300, t) for s, t in ((1, 7.0), (2, 8.0))]
    runs += [result("word", "plain_lm", 2e-3, 7.1, "final", s, 300, t) for s, t in ((1, 7.5), (2, 7.5))]
    for run in runs:
        run["curve"] = curve
    meta = {"regimes": {"word": {"unit": "ppl", "tokens_per_sample": 512, "sweep_tokens": 100, "final_tokens": 300,
                                 "valid_head_tokens": 50}}, "seeds": [1, 2]}
    text = quality.write_results(runs, meta, tmp_path, "quality-study", "transformer_lm", ["plain_lm"])
    # 2^7 = 128 and 2^8 = 256: mean 192, sample std 90.5; plain_lm 2^7.5 = 181 on both seeds
    assert "| test vs transformer_lm | test vs plain_lm | train s |" in text
    assert "| plain_lm | 3 | 2.00M | 0.002 | 2 | 137.2 ± 0.0 (137.2-137.2) | 181.0 ± 0.0 (181.0-181.0) | 0.943x | 1.000x |" in text
    assert "| transformer_lm | 3 | 2.00M | 0.002 | 2 | 128.0 ± 0.0 (128.0-128.0) | 192.0 ± 90.5 (128.0-256.0) | 1.000x | 1.061x |" in text
    assert "| plain_lm | 238.9 | **207.9** |" in text  # the sweep, best learning rate in bold
    saved = json.loads((tmp_path / "quality-study.json").read_text())
    assert saved["summary"]["word"]["plain_lm"]["test"]["n"] == 2
    assert quality.markdown(saved) == text  # what render_results prints from the committed JSON
    headline = quality.markdown(saved, headline=True)  # the README's summary: the final runs without the sweep
    assert "| plain_lm | 238.9 | **207.9** |" not in headline and "| plain_lm | 3 | 2.00M | 0.002 | 2 |" in headline
    assert (tmp_path / "quality-study-word.png").read_bytes()[:4] == b"\x89PNG"


def small_study_argv(tmp_path, regime: str, final_tokens: int):
    """The study on the bundled slice: plain_lm at `tiny`, one learning rate, one seed."""
    from harness import SAMPLE_DIR

    return ["--regimes", regime, "--variants", "plain_lm", "--corpus", str(SAMPLE_DIR / "wikitext-2"),
            "--size", "tiny", "--lrs", "0.002", "--no-extend", "--seeds", "1", "--sweep-tokens", "2048",
            "--final-tokens", str(final_tokens), "--tokens-per-sample", "64", "--work-dir", str(tmp_path / "work"),
            "--results-dir", str(tmp_path / "results")]


@pytest.mark.slow
def test_a_small_study_runs_resumes_and_renders(tmp_path, capsys):
    """The whole command on the bundled slice: a sweep run and a final run at its learning rate,
    scored by fairseq-eval-lm; a second invocation finds nothing to do and renders the same."""
    argv = small_study_argv(tmp_path, "word", final_tokens=2560)
    study.main(argv)
    runs = study.load_results(tmp_path / "work" / "runs")
    assert sorted((r["phase"], r["seed"], r["tokens"]) for r in runs) == [("final", 1, 2560), ("sweep", 1, 2048)]
    final = next(r for r in runs if r["phase"] == "final")
    # 10 updates of 4 x 64 tokens, one curve point each; FLOPs = tokens x the counted FLOPs per token
    assert [p["tokens"] for p in final["curve"]] == [256.0 * u for u in range(1, 11)]
    assert final["curve"][-1]["flops"] == 2560 * final["train_flops_per_token"]
    assert 0 < final["test"]["loss"] < 16 and final["valid"]["loss"] < 16
    assert final["macs_per_token"] > 0 and final["non_embedding_params"] > 0
    assert not list((tmp_path / "work" / "runs").glob("*/*/*/checkpoints/*.pt"))  # removed once scored
    capsys.readouterr()
    study.main(argv + ["--plan"])
    assert capsys.readouterr().out == ""
    first = (tmp_path / "results" / "quality-study.md").read_text()
    study.main(argv)  # nothing left to run: only renders
    assert (tmp_path / "results" / "quality-study.md").read_text().split("\n", 1)[1] == first.split("\n", 1)[1]


def test_a_stop_file_ends_the_study_before_its_next_run(tmp_path, capsys):
    argv = small_study_argv(tmp_path, "word", final_tokens=2048)
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / study.STOP_FILE).touch()
    study.main(argv)
    assert "stopping before the next run" in capsys.readouterr().out
    assert study.load_results(tmp_path / "work" / "runs") == []


@pytest.mark.slow
def test_the_character_regime_runs_end_to_end_and_reports_bits_per_character(tmp_path):
    """The character corpus is built from the word files, binarised, trained and scored; the table
    reports bits per character."""
    study.main(small_study_argv(tmp_path, "char", final_tokens=2048))
    runs = study.load_results(tmp_path / "work" / "runs")
    assert sorted((r["regime"], r["phase"]) for r in runs) == [("char", "final"), ("char", "sweep")]
    final = next(r for r in runs if r["phase"] == "final")
    # a character vocabulary of a few hundred symbols: a loss far below the word level's
    assert 0 < final["test"]["loss"] < 9 and final["valid"]["loss"] < 9
    text = (tmp_path / "results" / "quality-study.md").read_text()
    assert "#### char level: WikiText-2, 64 tokens per sample, bits per character" in text
    assert f"| plain_lm | {final['non_embedding_params']:,} |" in text


def test_a_fresh_work_directory_resumes_from_the_committed_results(tmp_path):
    """Another machine's clone has no run directories: the committed runs are written back, so the
    plan continues where the study stopped instead of starting again."""
    sweep = [result("word", "plain_lm", lr, loss) for lr, loss in ((1e-3, 8.4), (2e-3, 8.0), (4e-3, 8.3))]
    (tmp_path / "quality-study.json").write_text(json.dumps({"runs": sweep}))
    root = tmp_path / "runs"
    assert study.import_committed(tmp_path / "quality-study.json", root) == 3
    assert study.import_committed(tmp_path / "quality-study.json", root) == 0  # present ones are kept
    assert study.import_committed(tmp_path / "missing.json", root) == 0
    stale = result("word", "plain_lm", 8e-3, 7.0)
    stale["flags"] = ["--tokens-per-sample", "999"]
    (tmp_path / "quality-study.json").write_text(json.dumps({"runs": sweep + [stale]}))
    assert study.import_committed(tmp_path / "quality-study.json", root, REGIMES) == 0  # stale: not imported
    assert sorted(r["lr"] for r in study.load_results(root)) == [1e-3, 2e-3, 4e-3]
    assert planned(study.load_results(root), regimes=("word",))[0] == ("final", "word", 2e-3, 1)


def test_later_seeds_add_final_runs_and_never_a_second_sweep():
    """`--seeds 2 3` after seed 1's sweep: finals at the sweep's best learning rate. A sweep run at
    another seed (an earlier version ran them so) chooses nothing and is not in the sweep table."""
    sweep = [result("word", "plain_lm", lr, loss) for lr, loss in ((1e-3, 8.0), (2e-3, 7.0), (4e-3, 7.5))]
    assert planned([], ("word",), seeds=(2, 3))[0] == ("sweep", "word", 2e-3, 1)
    stray = result("word", "plain_lm", 1e-3, 6.0, seed=2)  # better than every seed-1 run
    assert planned(sweep + [stray], ("word",), seeds=(2, 3)) == [("final", "word", 2e-3, 2), ("final", "word", 2e-3, 3)]
    summary = quality.summarise(sweep + [stray], "ppl", sweep_seed=study.SWEEP_SEED)
    assert summary["plain_lm"]["sweep"]["0.001"] == pytest.approx(2 ** 8.0)


def test_a_diagnostic_variant_runs_once_at_the_middle_learning_rate():
    grid, diagnostic = [1e-3, 2e-3, 4e-3], study.DIAGNOSTICS[0]
    runs = study.plan([], ["word"], [diagnostic], grid, [1, 2, 3], REGIMES)
    assert [(r.phase, r.lr, r.seed, r.tokens) for r in runs] == [("sweep", 2e-3, 1, 100)]
    assert study.plan([result("word", diagnostic, 2e-3, 8.0)], ["word"], [diagnostic], grid, [1, 2, 3], REGIMES) == []


def test_a_character_diagnostic_runs_at_its_parents_best_character_rate():
    """The character sweep holds the word regime's best rate and a neighbour, not the grid's middle:
    the diagnostic waits for its parent's character sweep and runs beside its best run."""
    grid, diagnostic = [1e-3, 2e-3, 4e-3], "gau_lm-no-bias"
    assert diagnostic in study.DIAGNOSTICS and study.parent_of(diagnostic) == "gau_lm"
    words = [result("word", "gau_lm", lr, loss) for lr, loss in [(1e-3, 9.0), (2e-3, 8.8), (4e-3, 8.5), (8e-3, 8.7)]]
    assert study.plan(words, ["word", "char"], [diagnostic], grid, [1], REGIMES) == [
        study.Run("word", diagnostic, 2e-3, 1, 100, "sweep")]  # the char sweep of gau_lm has not run
    chars = words + [result("char", "gau_lm", 4e-3, 3.5), result("char", "gau_lm", 8e-3, 3.4)]
    for regimes in (["word", "char"], ["char"]):  # whether or not --regimes names the word regime
        runs = study.plan(chars + [result("word", diagnostic, 2e-3, 8.6)], regimes, [diagnostic], grid, [1], REGIMES)
        assert [(r.regime, r.lr) for r in runs] == [("char", 8e-3)], regimes


def test_a_full_budget_diagnostic_waits_for_its_parents_sweep_then_runs_its_finals_at_its_best_lr():
    grid = [1e-3, 2e-3, 4e-3]
    (diagnostic, parent), = study.FULL_BUDGET_DIAGNOSTICS.items()
    assert study.plan([], ["word"], [diagnostic], grid, [1, 2, 3], REGIMES) == []
    partial = [result("word", parent, 1e-3, 9.0), result("word", parent, 2e-3, 8.0)]
    assert study.plan(partial, ["word"], [diagnostic], grid, [1, 2, 3], REGIMES) == []
    swept = partial + [result("word", parent, 4e-3, 8.5)]
    assert study.plan(swept, ["word"], [diagnostic], grid, [1, 2, 3], REGIMES) == [] or \
        not study.PAPER_LRS.get(parent)  # the parent's paper learning rate is part of its sweep
    swept += [result("word", parent, lr, 8.6) for lr in study.PAPER_LRS.get(parent, ())]
    runs = study.plan(swept, ["word"], [diagnostic], grid, [1, 2, 3], REGIMES)
    assert [(r.variant, r.phase, r.lr, r.seed, r.tokens) for r in runs] == [
        (diagnostic, "final", 2e-3, seed, 300) for seed in (1, 2, 3)]
    finished = swept + [result("word", diagnostic, 2e-3, 7.9, "final", 1, 300, 8.0)]
    assert [r.seed for r in study.plan(finished, ["word"], [diagnostic], grid, [1, 2, 3], REGIMES)] == [2, 3]
    finished += [result("word", diagnostic, 2e-3, 7.9, "final", seed, 300, 8.0) for seed in (2, 3)]
    assert study.plan(finished, ["word"], [diagnostic], grid, [1, 2, 3], REGIMES) == []


def test_processes_sharing_a_work_directory_binarise_its_data_once(tmp_path, monkeypatch):
    """Two study processes (--variants halves) start together: the second waits for the first's
    binarisation instead of running fairseq-preprocess into the same directory (it failed so)."""
    import threading
    import time

    calls, inside = [], []

    def binarise(regime, corpus, work, data, python):
        inside.append(1)
        calls.append(len(inside))  # how many were binarising at once
        time.sleep(0.3)
        data.mkdir(parents=True)
        (data / "test.bin").write_text("")
        inside.pop()

    monkeypatch.setattr(study, "_binarise", binarise)
    threads = [threading.Thread(target=study.prepare_data, args=(REGIMES["word"], tmp_path, tmp_path / "work"))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [1]


def test_a_run_trained_with_another_batch_than_its_regime_is_stale_and_planned_again(tmp_path, capsys):
    """The character regime's tokens per update changed (4,096 -> 2,048): runs recorded with the old
    batch must not pick learning rates or fill the table; they are reported and run again."""
    regime = REGIMES["word"]
    old, new = (result("word", "plain_lm", lr, 8.0) for lr in (1e-3, 2e-3))
    old["flags"] = ["--tokens-per-sample", str(regime.tokens_per_sample), "--max-tokens", str(2 * regime.tokens_per_update)]
    new["flags"] = ["--tokens-per-sample", str(regime.tokens_per_sample), "--max-tokens", str(regime.tokens_per_update)]
    for run in (old, new):
        path = study.Run(**{k: run[k] for k in ("regime", "variant", "lr", "seed", "tokens", "phase")}).directory(tmp_path)
        path.mkdir(parents=True)
        (path / "result.json").write_text(json.dumps(run))
    assert len(study.load_results(tmp_path)) == 2  # without regimes: everything recorded
    kept = study.load_results(tmp_path, REGIMES)
    assert [r["lr"] for r in kept] == [2e-3]
    assert "stale, ignored: word plain_lm lr 0.001" in capsys.readouterr().out
    assert ("sweep", "word", 1e-3, 1) in planned(kept, ("word",))


def test_a_stale_run_is_moved_out_of_the_runs_tree_before_it_runs_again(tmp_path):
    """Rerun in place, the new run would append to the old train.log (a curve of two runs) and the old
    result.json would be read again: the old run moves to stale-runs/ and the directory starts empty."""
    root = tmp_path / "runs"
    directory = study.Run("char", "plain_lm", 1e-3, 1, 100, "sweep").directory(root)
    directory.mkdir(parents=True)
    (directory / "train.log").write_text("old log")
    study.set_aside_if_finished(directory, root)
    assert directory.exists()  # unfinished (no result.json): resumed in place
    (directory / "result.json").write_text("{}")
    study.set_aside_if_finished(directory, root)
    assert not directory.exists() and not list(root.glob("*/*/*/result.json"))
    moved = tmp_path / "stale-runs" / directory.relative_to(root)
    assert (moved / "train.log").read_text() == "old log"
