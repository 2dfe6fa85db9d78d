"""Load a trained checkpoint for interactive use: ``from delight_plugin import load``.

``load`` returns fairseq's ``GeneratorHubInterface``, the object behind fairseq's own
``<Model>.from_pretrained``, so ``.sample()``, ``.score()`` (language models) and
``.translate()`` (encoder-decoders) work the same for every architecture of the plugin, and for
stock fairseq models too. Checkpoints load through torch's ``weights_only`` unpickler with the
allowlist of ``safe_loading.py``.
"""
from pathlib import Path
from typing import Optional, Union

from .checkpoint_files import check_readable, read_checkpoint, window_error

PLUGIN_DIR = Path(__file__).resolve().parent


def _checkpoint_path(checkpoint: Union[str, Path], checkpoint_file: Optional[str]) -> Path:
    path = Path(checkpoint)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint file or directory at {path}")
    names = [checkpoint_file] if checkpoint_file else ["checkpoint_best.pt", "checkpoint_last.pt", "model.pt"]
    for name in names:
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(f"{path} holds none of {names}")


def _data_dir(checkpoint: Path, data_name_or_path: Optional[Union[str, Path]]) -> str:
    """The directory with the dictionaries: given, next to the checkpoint, or the one it was trained on."""
    if data_name_or_path is not None:
        return str(Path(data_name_or_path).resolve())
    if any(checkpoint.parent.glob("dict*.txt")):
        return str(checkpoint.parent)
    state = read_checkpoint(checkpoint)
    cfg = state.get("cfg")
    data = cfg["task"]["data"] if cfg is not None else getattr(state.get("args"), "data", None)
    if not data or not Path(str(data).split(":")[0]).is_dir():
        raise FileNotFoundError(f"the dictionaries for {checkpoint} were not found next to it nor at its training "
                                f"data path {data!r}: pass data_name_or_path")
    return str(Path(str(data).split(":")[0]).resolve())


def load(checkpoint: Union[str, Path], checkpoint_file: Optional[str] = None,
         data_name_or_path: Optional[Union[str, Path]] = None, **overrides):
    """A ``GeneratorHubInterface`` for ``checkpoint`` (a checkpoint file, or a directory holding
    checkpoint_best.pt / checkpoint_last.pt / model.pt or ``checkpoint_file``).

    ``data_name_or_path`` is the directory with the dictionaries (default: next to the checkpoint,
    else the data directory it was trained on); ``overrides`` are config overrides such as
    ``bpe="sentencepiece", sentencepiece_model=...`` or ``max_len_b=50``.
    """
    from fairseq import hub_utils

    path = _checkpoint_path(checkpoint, checkpoint_file)
    check_readable(path)  # truncated or not a checkpoint: say so, naming the file
    if overrides.get("tokens_per_sample"):
        problem = window_error(read_checkpoint(path), int(overrides["tokens_per_sample"]), path)
        if problem:
            raise ValueError(problem)
    loaded = hub_utils.from_pretrained(str(path.parent), checkpoint_file=path.name,
                                       data_name_or_path=_data_dir(path, data_name_or_path), **overrides)
    return hub_utils.GeneratorHubInterface(loaded["args"], loaded["task"], loaded["models"])
