#!/usr/bin/env python
"""Plot every layer's and head's attention over the compressed slots of a linformer_lm checkpoint
for one sample: a grid of n x k heat maps (rows: layers, columns: heads; y: query position, x:
slot). Row i of a map is the softmax over the slots of the prefix memory K~_i, so it only ever
depends on tokens 0..i. Needs matplotlib (`pip install -e .[bench]`).

Example:
  python scripts/plot_linformer_heads.py --path checkpoints/checkpoint_best.pt --data data-bin/wikitext-2 \
      --subset valid --sample 0 --output heads.png
"""
import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--path", required=True, help="linformer_lm checkpoint (.pt) written by fairseq-train")
    p.add_argument("--data", required=True, help="binarised data directory (fairseq-preprocess output)")
    p.add_argument("--subset", default="valid", help="split to take the sample from (default valid)")
    p.add_argument("--sample", type=int, default=0, help="index of the sample in that split (default 0)")
    p.add_argument("--length", type=int, default=None,
                   help="tokens to plot (default: the sample, cut to the model's --tokens-per-sample)")
    p.add_argument("--output", default="linformer_heads.png", help="PNG to write (default linformer_heads.png)")
    return p.parse_args(argv)


def slot_weights(model, tokens):
    """[layers][heads, n, k] slot weights of one forward pass over ``tokens`` [1, n]."""
    import torch

    from delight_plugin.modules.linformer import CausalLinformerAttention

    attentions = [m for m in model.modules() if isinstance(m, CausalLinformerAttention)]
    if not attentions:
        raise SystemExit("this checkpoint has no compressed attention (trained with --linformer-full-attention?)")
    for attention in attentions:
        attention.record_weights = True
    with torch.no_grad():
        model(tokens)
    return [attention.last_weights[0].float().cpu() for attention in attentions]


def plot(weights, output: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers, heads = len(weights), weights[0].size(0)
    fig, axes = plt.subplots(layers, heads, figsize=(2.6 * heads, 2.4 * layers), squeeze=False)
    for layer, per_head in enumerate(weights):
        for head in range(heads):
            ax = axes[layer][head]
            ax.imshow(per_head[head].numpy(), aspect="auto", interpolation="nearest", cmap="viridis", vmin=0)
            ax.set_title(f"layer {layer} head {head}", fontsize=8)
            ax.set_xlabel("slot", fontsize=7)
            ax.set_ylabel("query position", fontsize=7)
            ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    import delight_plugin  # noqa: F401  (registers linformer_lm before the checkpoint is read)
    from fairseq import checkpoint_utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task([args.path], arg_overrides={"data": args.data})
    model = models[0].eval()
    task.load_dataset(args.subset)
    dataset = task.dataset(args.subset)
    if not 0 <= args.sample < len(dataset):
        raise SystemExit(f"--sample {args.sample}: the {args.subset} split has {len(dataset)} samples")
    tokens = dataset[args.sample]["source"][: args.length or model.decoder.max_positions()].unsqueeze(0)
    weights = slot_weights(model, tokens)
    plot(weights, Path(args.output), f"{Path(args.path).name}: {args.subset} sample {args.sample}, "
                                      f"{tokens.size(1)} tokens")
    print(f"wrote {args.output}: {len(weights)} layers x {weights[0].size(0)} heads, "
          f"{tokens.size(1)} positions x {weights[0].size(-1)} slots")


if __name__ == "__main__":
    main()
