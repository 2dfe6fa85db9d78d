"""Build a model exactly as ``fairseq-train`` builds it, without training data.

fairseq's own ``fairseq-train`` argument parser reads the command line (so a named architecture's
defaults, the dataclass defaults and fairseq's type checks apply as on the command line), the
namespace becomes fairseq's config, ``tasks.setup_task`` loads the dictionaries from the data
directory, and ``task.build_model`` builds the model, which runs every build-time check. A data
directory needs only its dictionaries: ``synthetic_dictionary`` writes them.

The one place that does this for the tests (``tests/harness.py``), the benchmark
(``benchmark/subjects.py``), the hydra configs (``recipes/configs.py``) and the scripts
(``count_params_macs.py``, ``bench_delight_translation.py``).
"""
import os
import tempfile
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

PLUGIN_DIR = Path(__file__).resolve().parent


def training_args(data, flags: Sequence = ()):
    """The namespace of ``fairseq-train <data> --user-dir <this plugin> <flags>``."""
    from fairseq import options

    argv = [str(data), "--user-dir", str(PLUGIN_DIR), *map(str, flags)]
    return options.parse_args_and_arch(options.get_training_parser(), argv)


def training_config(data, flags: Sequence = (), adaptive_loss: bool = False):
    """fairseq's full config for ``fairseq-train <data> <flags>``. ``adaptive_loss``: with an adaptive
    softmax, use ``--criterion adaptive_loss`` (our models refuse any other criterion with one) for
    callers that build a model without training it."""
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    args = training_args(data, flags)
    if adaptive_loss and getattr(args, "adaptive_softmax_cutoff", None):
        args.criterion = "adaptive_loss"
    return convert_namespace_to_omegaconf(args)


class Built(NamedTuple):
    model: object
    task: object
    cfg: object


def build_as_fairseq_train(arch: str, flags: Sequence, data_dir, task: str = "language_modeling",
                           task_flags: Sequence = (), adaptive_loss: bool = False, seed: Optional[int] = None) -> Built:
    """``arch`` built as ``fairseq-train <data_dir> --task <task> <task_flags> --arch <arch> <flags>``
    would build it: (model, task, cfg). ``data_dir`` holds the dictionaries (``synthetic_dictionary``
    writes them); ``seed``: ``torch.manual_seed(seed)`` just before the weights are initialised;
    ``adaptive_loss`` as in :func:`training_config`."""
    from fairseq import tasks

    cfg = training_config(data_dir, ["--task", task, "--arch", arch, *task_flags, *flags], adaptive_loss=adaptive_loss)
    fairseq_task = tasks.setup_task(cfg.task)
    if seed is not None:
        import torch

        torch.manual_seed(seed)
    return Built(fairseq_task.build_model(cfg.model), fairseq_task, cfg)


def synthetic_dictionary(size: int, directory=None, langs: Sequence[str] = ()) -> Path:
    """A fairseq data directory holding only dictionaries of ``size`` symbols in all (fairseq adds
    bos, pad, eos and unk to the listed words): ``dict.txt``, or ``dict.<lang>.txt`` for each of
    ``langs`` (the same words: a joined dictionary). Default directory: one per size in the temp
    dir, reused by later calls. Written atomically, as parallel test workers may write it together."""
    directory = Path(directory or Path(tempfile.gettempdir()) / f"delight_bench_dict_{size}")
    directory.mkdir(parents=True, exist_ok=True)
    entries = "".join(f"w{i} {10**6 - i}\n" for i in range(size - 4))
    for name in [f"dict.{lang}.txt" for lang in langs] or ["dict.txt"]:
        with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".tmp", delete=False) as f:
            f.write(entries)
        os.replace(f.name, directory / name)
    return directory
