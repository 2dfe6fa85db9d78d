"""Reading checkpoint files, with errors that say which file is broken and how.

torch reports a truncated checkpoint as ``OSError: [Errno 22] Invalid argument`` and a file that is
not one as a ``WeightsUnpickler error: Unsupported operand ...``, naming no file. ``torch.save``
(which fairseq-train uses) writes a zip archive, whose directory is at its end, so a cut-off copy
is recognisable before torch reads it.
"""
import pickle
import zipfile
from pathlib import Path
from typing import Optional, Union

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


    check_readable(path)
    try:
        return checkpoint_utils.load_checkpoint_to_cpu(str(path))
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise ValueError(f"cannot read checkpoint {path}: {err}") from err


def trained_length_limit(state) -> Optional[int]:
    """The longest sample the checkpoint's model takes: its training length where it has parameters
    per position (see ``EfficientLanguageModel.trained_length_limit``), None where any length works.
    fairseq's own models: their max_target_positions (what their max_positions() returns)."""
    from fairseq.models import ARCH_MODEL_REGISTRY
    from omegaconf import OmegaConf

    from .models.efficient_lm import EfficientLanguageModel

    if state.get("cfg") is None or state["cfg"].get("model") is None:
        return None  # an argparse-era checkpoint: nothing to tell
    cfg = OmegaConf.create(state["cfg"]["model"])
    model_cls = ARCH_MODEL_REGISTRY.get(cfg.get("_name", None))
    if model_cls is not None and issubclass(model_cls, EfficientLanguageModel):
        return model_cls.trained_length_limit(cfg)
    return cfg.get("max_target_positions", None) or cfg.get("tokens_per_sample", None)


def window_error(state, tokens: int, path) -> Optional[str]:
    """Why ``tokens``-token samples cannot be scored by the checkpoint at ``path`` (None if they can)."""
    limit = trained_length_limit(state)
    if limit is None or tokens <= limit:
        return None
    return (f"{path} was trained on {limit}-token samples (--tokens-per-sample {limit}) and cannot take longer "
            f"ones (parameters per position: learned positions, Linformer's compression; or fairseq's own "
            f"max_positions()): it cannot score {tokens}-token windows, and fairseq-eval-lm would silently skip every "
            f"sample; use --tokens-per-sample <= {limit}")
