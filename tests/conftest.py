import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("PYTEST_TMP", "/tmp")

import harness  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains for minutes (run by CI; `make test-fast` skips it)")


@pytest.fixture(scope="session", autouse=True)
def _session_tmp(tmp_path_factory):
    os.environ["PYTEST_TMP"] = str(tmp_path_factory.mktemp("session"))


@pytest.fixture(scope="session")
def lm_data_bin(tmp_path_factory):
    """The bundled WikiText-2 slice, binarised by fairseq-preprocess."""
    return harness.preprocess_lm(tmp_path_factory.mktemp("wikitext2-bin"))


@pytest.fixture(scope="session")
def mt_data_bin(tmp_path_factory):
    """The bundled WMT'16 En-Ro slice, binarised with a joined dictionary."""
    return harness.preprocess_translation(tmp_path_factory.mktemp("wmt16-bin"))


@pytest.fixture
def shared_data():
    if not harness.SHARED_DATA.is_dir():
        pytest.skip(f"{harness.SHARED_DATA} is absent (a fresh clone has no ../shared); this test needs the real corpora")
    return harness.SHARED_DATA


def pytest_collection_modifyitems(config, items):
    """The slow tests (each minutes of fairseq subprocesses) first, the rest in their order: xdist's
    workers then end on short tests together instead of one finishing a memorisation run alone
    (CI's 2-core run left a quarter of its CPU idle in that tail)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
