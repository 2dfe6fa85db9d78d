"""Efficient-Transformer architectures for fairseq.

Use with any fairseq command: ``fairseq-train --user-dir delight_plugin --arch <name> ...``.
Importing the package registers the models, and allowlists the globals that fairseq
checkpoints hold so that they load under torch's default ``weights_only=True``.
"""

__version__ = "0.1.0"

try:
    import fairseq  # noqa: F401
    from fairseq.models import register_model  # noqa: F401
except Exception as err:  # ImportError, or a fairseq that breaks while importing
    raise ImportError(
        "delight_plugin needs a fairseq that imports on this Python "
        f"(importing it failed with: {err!r}). Install the prebuilt upstream wheel with "
        "`pip install ve-fairseq==0.12.3` (PyPI's fairseq 0.12.2 does not import on Python "
        ">= 3.11), or install fairseq from its git main branch."
    ) from err

from . import safe_loading  # noqa: E402

safe_loading.allow_fairseq_checkpoint_globals()

from . import models  # noqa: E402,F401  (registers every architecture)
from .hub import load  # noqa: E402,F401  (delight_plugin.load(checkpoint) -> GeneratorHubInterface)
