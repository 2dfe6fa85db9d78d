"""Read the scalars that ``fairseq-train --tensorboard-logdir`` writes (tensorboardX event files,
TFRecord framing) without TensorFlow, and plot them: the curves a user sees in TensorBoard."""
import struct
from pathlib import Path
from typing import Dict, List, Tuple


def event_scalars(path: Path) -> List[Tuple[int, str, float]]:
    """(step, tag, value) of every scalar in one event file."""
    from tensorboardX.proto.event_pb2 import Event

    data, scalars, offset = Path(path).read_bytes(), [], 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        event = Event.FromString(data[offset + 12:offset + 12 + length])  # after the length and its crc
        offset += 12 + length + 4  # and the data's crc
        scalars += [(event.step, v.tag, v.simple_value) for v in event.summary.value]
    return scalars


def logdir_scalars(logdir: Path) -> Dict[str, Dict[str, List[Tuple[int, float]]]]:
    """{subset (train_inner, valid, ...): {tag: [(step, value)]}} of a --tensorboard-logdir."""
    curves: Dict[str, Dict[str, List[Tuple[int, float]]]] = {}
    for path in sorted(Path(logdir).rglob("events.out.tfevents.*")):
        for step, tag, value in event_scalars(path):
            curves.setdefault(path.parent.name, {}).setdefault(tag, []).append((step, value))
    return curves


def plot_runs(logdirs: Dict[str, Path], path: Path, tags=(("train_inner", "loss"), ("valid", "ppl"))) -> Path:
    """One panel per (subset, tag), one line per run, as TensorBoard draws them."""
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq's logging setup lets its DEBUG through
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tags), figsize=(6 * len(tags), 4.5), squeeze=False)
    for ax, (subset, tag) in zip(axes[0], tags):
        for name, logdir in logdirs.items():
            points = sorted(logdir_scalars(logdir).get(subset, {}).get(tag, []))
            if points:
                ax.plot(*zip(*points), marker=".", label=name)
        ax.set_title(f"{subset}/{tag}")
        ax.set_xlabel("updates")
        if tag == "ppl":
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
