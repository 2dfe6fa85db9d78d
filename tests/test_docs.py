"""The documentation is generated where it can be and stays true: the flag tables in docs/ equal what
scripts/make_flag_docs.py renders from the models' help text, the results in the README and in
benchmarks/results/RESULTS.md equal what scripts/render_results.py renders from the committed JSON,
the docs' character-level status equals the committed quality study, the README is short and starts with the two set-up commands, and every relative link resolves."""
import json
import re
import sys

import harness

sys.path.insert(0, str(harness.REPO / "scripts"))
import make_flag_docs  # noqa: E402
import render_results  # noqa: E402

RESULTS = harness.REPO / "benchmarks" / "results"


def test_flag_tables_equal_the_dataclass_help_text():
    for doc, text in make_flag_docs.rendered_docs().items():
        assert (harness.REPO / doc).read_text() == text, f"{doc} is stale: run `python scripts/make_flag_docs.py`"


def test_every_registered_model_has_a_flag_table():
    from fairseq.models import MODEL_REGISTRY
    ours = {name for name, cls in MODEL_REGISTRY.items() if cls.__module__.startswith("delight_plugin.")}
    assert ours and ours <= set(make_flag_docs.DOCS_OF), sorted(ours - set(make_flag_docs.DOCS_OF))


def test_readme_and_results_equal_the_committed_results():
    readme = (harness.REPO / "README.md").read_text()
    block = readme.split(render_results.BEGIN + "\n", 1)[1].split(render_results.END, 1)[0]
    assert block == render_results.summary(RESULTS, "benchmarks/results"), f"run `{render_results.COMMAND}`"
    full = render_results.section(RESULTS, "benchmarks/results", ".")
    assert (RESULTS / "RESULTS.md").read_text() == full, f"run `{render_results.COMMAND}`"


def test_docs_character_level_status_equals_the_committed_study():
    study = json.loads((RESULTS / render_results.STUDY).read_text())
    expected = render_results.char_status(study)
    docs = [d for d in sorted((harness.REPO / "docs").glob("*.md")) if render_results.STATUS_BEGIN in d.read_text()]
    assert {d.stem for d in docs} >= {"delight", "gau", "hourglass", "linformer", "plain_lm", "primer_ez"}
    for doc in docs:
        block = doc.read_text().split(render_results.STATUS_BEGIN, 1)[1].split(render_results.STATUS_END, 1)[0]
        assert block == expected, f"{doc.name}: run `{render_results.COMMAND}`"


def test_char_status_names_what_is_missing():
    finals = {"transformer_lm": {"seeds": [1, 2, 3], "test": {"mean": 3.4, "std": 0.01, "n": 3}},
              "gau_lm": {"seeds": [1], "test": {"mean": 2.5, "std": 0.0, "n": 1}}}
    text = render_results.char_status({"summary": {"char": finals}})
    assert "`transformer_lm` 3.400 ± 0.010 (seeds 1, 2, 3); FLASH-Quad 2.500 (seed 1)." in text
    assert "Not yet run: DeLighT 8 blocks" in text and "no claim" in text
    every = {v: {"seeds": [1, 2, 3], "test": {"mean": 3.0, "std": 0.1, "n": 3}} for v in render_results.CHAR_NAMES}
    assert render_results.char_status({"summary": {"char": every}}).endswith("Every variant has its 3 seeds.")


def test_readme_is_short_and_starts_with_the_two_commands():
    readme = (harness.REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 400
    first_block = readme.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert [line.split()[:2] for line in first_block] == [["make", "demo"], ["make", "test"]]
    assert readme.index("make demo") < readme.index("## ")  # before any section


def test_relative_links_resolve():
    pages = [harness.REPO / "README.md", *sorted((harness.REPO / "docs").glob("*.md")), RESULTS / "RESULTS.md"]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            path = target.split("#", 1)[0]
            if path and "://" not in path and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(harness.REPO)}: {target}")
    assert not broken, broken
