"""Average the parameters of checkpoints of one model, as fairseq's scripts/average_checkpoints.py
does (that script is not in the fairseq wheel):

    python -m delight_plugin.recipes.average --dir CKPT_DIR --num-epoch-checkpoints 5 --output avg.pt
    python -m delight_plugin.recipes.average --dir CKPT_DIR --num-update-checkpoints 5 --output avg.pt
    python -m delight_plugin.recipes.average --inputs a.pt b.pt c.pt --output avg.pt

Epoch checkpoints are checkpointN.pt; update checkpoints (--save-interval-updates) are
checkpoint_E_U.pt, ordered by U. --last N is --num-epoch-checkpoints N. --checkpoint-upper-bound X
takes the last N up to epoch (or update) X. Checkpoints of different architectures or sizes are
refused. The output is written atomically (fairseq's own checkpoint writer).
"""
import argparse
import re
from pathlib import Path
from typing import List, Optional

EPOCH = re.compile(r"checkpoint(\d+)\.pt")
UPDATE = re.compile(r"checkpoint_\d+_(\d+)\.pt")


def last_checkpoints(directory: Path, count: int, pattern: re.Pattern, kind: str,
                     upper_bound: Optional[int] = None) -> List[Path]:
    found = sorted((int(m.group(1)), p) for p in directory.glob("checkpoint*.pt") if (m := pattern.fullmatch(p.name)))
    if upper_bound is not None:
        found = [(n, p) for n, p in found if n <= upper_bound]
    if len(found) < count:
        bound = f" up to {upper_bound}" if upper_bound is not None else ""
        raise SystemExit(f"error: asked to average {count} {kind} checkpoints but {directory} has {len(found)}{bound} "
                         f"({'checkpointN.pt' if kind == 'epoch' else 'checkpoint_E_U.pt'})")
    return [p for _, p in found[-count:]]


def epoch_checkpoints(directory: Path, last: int) -> List[Path]:
    return last_checkpoints(directory, last, EPOCH, "epoch")


def architecture(state) -> str:
    cfg = state.get("cfg")
    if cfg is not None and cfg.get("model") is not None:
        return str(cfg["model"].get("_name", None) or cfg["model"].get("arch", "?"))
    return str(getattr(state.get("args"), "arch", "?"))


def check_same_model(first_path: Path, first, path: Path, state) -> None:
    if architecture(state) != architecture(first):
        raise SystemExit(f"error: cannot average {path} (--arch {architecture(state)}) with {first_path} "
                         f"(--arch {architecture(first)}): checkpoints of different architectures")
    a, b = first["model"], state["model"]
    differs = sorted(set(a) ^ set(b)) or [k for k in a if a[k].shape != b[k].shape]
    if differs:
        k = differs[0]
        shapes = " vs ".join(str(tuple(s[k].shape)) if k in s else "missing" for s in (a, b))
        raise SystemExit(f"error: cannot average {path} with {first_path}: different models (parameter {k}: "
                         f"{shapes}; {len(differs)} parameters differ)")


def average(paths):
    from ..checkpoint_files import read_checkpoint
    averaged, first, state = None, None, None
    for path in paths:
        try:
            state = read_checkpoint(path)
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
        params = state["model"]
        if averaged is None:
            first = (path, state)
            averaged = {k: v.double() if v.is_floating_point() else v.clone() for k, v in params.items()}
        else:
            check_same_model(*first, path, state)
            for k, v in params.items():
                if v.is_floating_point():
                    averaged[k] += v.double()
    state["model"] = {k: (v / len(paths)).to(state["model"][k].dtype) if v.is_floating_point() else v
                      for k, v in averaged.items()}
    return state


def select(args) -> List[Path]:
    if args.num_epoch_checkpoints and args.num_update_checkpoints:
        raise SystemExit("error: pass one of --num-epoch-checkpoints (--last) and --num-update-checkpoints")
    count = args.num_epoch_checkpoints or args.num_update_checkpoints
    if count is None:
        if args.dir is not None or not args.inputs:
            raise SystemExit("error: pass --inputs FILE... or --dir with --num-epoch-checkpoints/--num-update-checkpoints")
        missing = [p for p in args.inputs if not p.is_file()]
        if missing:
            raise SystemExit(f"error: no checkpoint file at {missing[0]}")
        return args.inputs
    directories = [args.dir] if args.dir is not None else args.inputs
    if len(directories) != 1 or not directories[0].is_dir():
        raise SystemExit("error: --num-epoch-checkpoints/--num-update-checkpoints take one directory (--dir or --inputs)")
    if count < 1:
        raise SystemExit(f"error: the number of checkpoints to average must be positive, got {count}")
    pattern, kind = (EPOCH, "epoch") if args.num_epoch_checkpoints else (UPDATE, "update")
    return last_checkpoints(directories[0], count, pattern, kind, args.checkpoint_upper_bound)


def main(argv=None):
    from fairseq.checkpoint_utils import torch_persistent_save

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", nargs="+", type=Path, help="checkpoint files, or one directory")
    parser.add_argument("--dir", type=Path, help="directory of the checkpoints (with --num-*-checkpoints)")
    parser.add_argument("--num-epoch-checkpoints", "--last", type=int, help="average the last N checkpointN.pt")
    parser.add_argument("--num-update-checkpoints", type=int, help="average the last N checkpoint_E_U.pt")
    parser.add_argument("--checkpoint-upper-bound", type=int, help="the last epoch/update to consider")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    paths = select(args)
    torch_persistent_save(average(paths), args.output)
    print(f"averaged {', '.join(p.name for p in paths)} -> {args.output}")


if __name__ == "__main__":
    main()
