"""Reading checkpoint files, with errors that say which file is broken and how.

torch reports a truncated checkpoint as ``OSError: [Errno 22] Invalid argument`` and a file that is
not one as a ``WeightsUnpickler error: Unsupported operand ...``, naming no file. ``torch.save``
(which fairseq-train uses) writes a zip archive, whose directory is at its end, so a cut-off copy
is recognisable before torch reads it.
"""
import pickle
import zipfile
from pathlib import Path
from typing import Union

ZIP_MAGIC = b"PK\x03\x04"
PICKLE_OPCODE_PROTO = b"\x80"  # torch's pre-1.6 format: a bare pickle stream


def check_readable(path: Union[str, Path]) -> None:
    """Raise ValueError naming ``path`` when it is empty, truncated, or not a torch.save file."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(len(ZIP_MAGIC))
    if size == 0:
        raise ValueError(f"checkpoint {path} is empty (0 bytes): an interrupted copy or a full disk?")
    if head == ZIP_MAGIC:
        if not zipfile.is_zipfile(path):
            raise ValueError(f"checkpoint {path} is truncated: the end of the file ({size} bytes) is missing, "
                             "as after an interrupted copy or a full disk; copy or save it again")
        return
    if not head.startswith(PICKLE_OPCODE_PROTO):
        raise ValueError(f"{path} is not a checkpoint: torch.save (which fairseq-train uses) did not write it "
                         f"(it starts with {head!r})")


def read_checkpoint(path: Union[str, Path]):
    """fairseq's ``load_checkpoint_to_cpu`` (weights_only, with the plugin's allowlist), whose errors
    name the file."""
    from fairseq import checkpoint_utils

    import delight_plugin  # noqa: F401  (allowlists fairseq's checkpoint globals; registers the models)

    check_readable(path)
    try:
        return checkpoint_utils.load_checkpoint_to_cpu(str(path))
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise ValueError(f"cannot read checkpoint {path}: {err}") from err
