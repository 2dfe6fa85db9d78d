"""Average the parameters of the last N epoch checkpoints (what fairseq's
scripts/average_checkpoints.py does; that script is not in the fairseq wheel).

    python -m delight_plugin.recipes.average --dir CHECKPOINT_DIR --last 5 --output averaged.pt
"""
import argparse
import re
from pathlib import Path

import torch


def epoch_checkpoints(directory: Path, last: int):
    found = sorted((int(m.group(1)), p) for p in directory.glob("checkpoint*.pt")
                   if (m := re.fullmatch(r"checkpoint(\d+)\.pt", p.name)))
    if len(found) < last:
        raise SystemExit(f"error: asked to average {last} epoch checkpoints but {directory} has {len(found)}")
    return [p for _, p in found[-last:]]


def average(paths):
    from fairseq import checkpoint_utils
    import delight_plugin  # noqa: F401  (allowlists fairseq's checkpoint globals; registers the models)
    averaged, state = None, None
    for path in paths:
        state = checkpoint_utils.load_checkpoint_to_cpu(str(path))
        params = state["model"]
        if averaged is None:
            averaged = {k: v.double() if v.is_floating_point() else v.clone() for k, v in params.items()}
        else:
            for k, v in params.items():
                if v.is_floating_point():
                    averaged[k] += v.double()
    state["model"] = {k: (v / len(paths)).to(state["model"][k].dtype) if v.is_floating_point() else v
                      for k, v in averaged.items()}
    return state


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--last", required=True, type=int)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    paths = epoch_checkpoints(args.dir, args.last)
    torch.save(average(paths), args.output)
    print(f"averaged {', '.join(p.name for p in paths)} -> {args.output}")


if __name__ == "__main__":
    main()
