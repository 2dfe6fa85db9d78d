"""quality_per_compute's log reader: validation points get the wall time and the tokens seen of
the update they follow, repeated validations of one update count once, eval-lm perplexities are
read, and the table and figure are written."""
import json

from delight_plugin.benchmark import quality


def fairseq_line(kind, record):
    return f"2026-01-01 00:00:00 | INFO | {kind} | {json.dumps(record)}"


def test_curve_table_and_plot(tmp_path):
    run = tmp_path / "runs" / "plain_lm"
    run.mkdir(parents=True)
    log = ["num. shared model params: 1,234 (num. trained: 1,234)",
           fairseq_line("train_inner", {"num_updates": "10", "wpb": "2000", "wall": "30"}),
           fairseq_line("valid", {"valid_num_updates": "10", "valid_ppl": "900.5"}),
           fairseq_line("train_inner", {"num_updates": "20", "wpb": "1500", "wall": "65"}),
           fairseq_line("valid", {"valid_num_updates": "20", "valid_ppl": "700.25"}),
           fairseq_line("valid", {"valid_num_updates": "20", "valid_ppl": "700.25"})]  # end-of-training repeat
    (run / "train.log").write_text("\n".join(log) + "\n")
    (run / "eval_valid.log").write_text("INFO | Loss (base 2): 9.4500, Perplexity: 699.41\n")
    (run / "eval_test.log").write_text("INFO | Loss (base 2): 9.5000, Perplexity: 724.08\n")
    [row] = quality.collect(tmp_path / "runs")
    assert row["curve"] == [
        {"updates": 10, "wall_seconds": 30.0, "tokens": 20000.0, "valid_ppl": 900.5},
        {"updates": 20, "wall_seconds": 65.0, "tokens": 35000.0, "valid_ppl": 700.25}]
    assert (row["params"], row["updates"], row["valid_ppl"], row["test_ppl"]) == (1234, 20, 699.41, 724.08)
    quality.main(["--runs-dir", str(tmp_path / "runs"), "--output-dir", str(tmp_path / "out"),
                  "--meta", json.dumps({"budget_minutes": 3})])
    assert "| plain_lm | 1,234 | 20 | 35,000 | 699.4 | 724.1 |" in (tmp_path / "out" / "quality.md").read_text()
    assert (tmp_path / "out" / "quality.png").read_bytes()[:4] == b"\x89PNG"
