"""The documentation is generated where it can be: the flag tables in docs/ equal what
scripts/make_flag_docs.py renders from the models' help text."""
import sys

import harness

sys.path.insert(0, str(harness.REPO / "scripts"))
import make_flag_docs  # noqa: E402


def test_flag_tables_equal_the_dataclass_help_text():
    for doc, text in make_flag_docs.rendered_docs().items():
        assert (harness.REPO / doc).read_text() == text, f"{doc} is stale: run `python scripts/make_flag_docs.py`"


def test_every_registered_model_has_a_flag_table():
    from fairseq.models import MODEL_REGISTRY
    ours = {name for name, cls in MODEL_REGISTRY.items() if cls.__module__.startswith("delight_plugin.")}
    assert ours and ours <= set(make_flag_docs.DOCS_OF), sorted(ours - set(make_flag_docs.DOCS_OF))
