"""Every recipe's hyperparameters, in one place.

``scripts/wikitext/train.sh`` and ``scripts/wmt16_en_ro/train.sh`` ask this module for their
fairseq flags, ``scripts/make_configs.py`` turns the same flags into ``configs/*.yaml``, and the
tests check both. A new architecture needs no edit here: LM architectures are discovered from
fairseq's registry and get the dataset's defaults plus the model's size preset (``arch_rule``:
one registered at a size of its own keeps it); only architectures that need something else are
listed in ``LM_ARCH_RULES``.

Batches are given per update (``tokens_per_update``) so that the recipe means the same on 1 or 8
GPUs: ``--update-freq`` is derived from the GPU count.

Command line (one flag per line, for ``mapfile``)::

    python -m delight_plugin.recipes.hyperparameters lm --arch plain_lm --dataset wikitext-103 [--gpus 8]
    python -m delight_plugin.recipes.hyperparameters mt --arch delight_transformer_wmt16_en_ro --d-m 384
    python -m delight_plugin.recipes.hyperparameters list
"""
import argparse
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

LM_BASELINE = "transformer_lm"
MT_BASELINE = "transformer"
DELIGHT_MT = "delight_transformer_wmt16_en_ro"
LINFORMER_MT = "linformer_transformer_wmt16_en_ro"
LM_DATASETS = ("wikitext-2", "wikitext-103")
DELIGHT_MT_DIMS = (128, 256, 384, 640)  # the d_m values of the reference's En-Ro runs
# fairseq's adaptive_loss refuses the default pytorch_ddp backend
ADAPTIVE_LOSS = ["--criterion", "adaptive_loss", "--ddp-backend", "legacy_ddp"]
ADAM = ["--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--adam-eps", "1e-08", "--clip-norm", "0.0"]


@dataclass(frozen=True)
class LMDataset:
    size: str  # the model-size preset (delight_plugin.presets) every arch uses on this dataset
    tokens_per_update: int
    max_tokens: int  # per GPU and forward pass
    train: List[str]  # optimisation, schedule and regularisation flags
    eval_context_window: int


LM_DATASET_RECIPES: Dict[str, LMDataset] = {
    # fairseq's examples/language_model WikiText-103 recipe: 32K tokens/update, 50K updates,
    # inverse-sqrt schedule, tied input/output embeddings.
    "wikitext-103": LMDataset(
        size="base", tokens_per_update=32768, max_tokens=2048, eval_context_window=400,
        train=[*ADAM, "--weight-decay", "0.01", "--lr", "0.0005", "--lr-scheduler", "inverse_sqrt",
               "--warmup-updates", "4000", "--warmup-init-lr", "1e-07", "--max-update", "50000",
               "--dropout", "0.1", "--share-decoder-input-output-embed"]),
    # WikiText-2 is 50x smaller: a smaller model, more dropout, ~20 epochs of 4K-token updates.
    "wikitext-2": LMDataset(
        size="small", tokens_per_update=4096, max_tokens=4096, eval_context_window=400,
        train=[*ADAM, "--weight-decay", "0.01", "--lr", "0.0005", "--lr-scheduler", "inverse_sqrt",
               "--warmup-updates", "1000", "--warmup-init-lr", "1e-07", "--max-update", "10000",
               "--dropout", "0.3", "--share-decoder-input-output-embed"]),
}
LM_COMMON = ["--task", "language_modeling", "--sample-break-mode", "none", "--tokens-per-sample", "512",
             "--skip-invalid-size-inputs-valid-test", "--seed", "1", "--no-epoch-checkpoints"]


def delight_lm_lr(d_m: int) -> float:
    """The reference's WikiText-103 peak learning rate: min(round(1024/d_m * 0.002, 3), 0.01)."""
    return min(round(1024 / d_m * 0.002, 3), 0.01)


def delight_mt_lr(d_m: int) -> float:
    """The reference's WMT'16 En-Ro peak learning rate: min(round(512/d_m * 7e-4, 4), 0.01)."""
    return min(round(512 / d_m * 7e-4, 4), 0.01)


def delight_lm_wiki103(d_m: int) -> Tuple[int, int, List[str]]:
    """(tokens_per_update, max_tokens, flags) of the reference's ``lm_wikitext_103.py``: 8 GPUs x
    8192 tokens x update-freq 4, cosine schedule (one period of 95K updates after 5K warm-up),
    no weight decay, 12 blocks (depth 4 -> 12)."""
    flags = ["--delight-emb-map-dim", "128", "--delight-emb-out-dim", str(d_m),
             "--delight-dec-min-depth", "4", "--delight-dec-max-depth", "12", "--delight-dec-width-mult", "2",
             *ADAPTIVE_LOSS, *ADAM, "--weight-decay", "0.0",
             "--lr-scheduler", "cosine", "--lr", str(delight_lm_lr(d_m)), "--min-lr", "1e-09",
             "--warmup-init-lr", "1e-07", "--warmup-updates", "5000", "--lr-period-updates", "95000",
             "--t-mult", "1", "--lr-shrink", "1", "--max-update", "100000"]
    return 8 * 8192 * 4, 8192, flags


@dataclass(frozen=True)
class LMArchRule:
    datasets: Tuple[str, ...] = LM_DATASETS
    use_preset: bool = True  # False: the named architecture's own size is the point of it
    extra: Dict[str, List[str]] = field(default_factory=dict)  # dataset -> flags after the dataset's


LM_ARCH_RULES: Dict[str, LMArchRule] = {
    # Its adaptive input/softmax cutoffs (20K, 60K) need WikiText-103's 267K-word vocabulary.
    "delight_transformer_lm_wiki103": LMArchRule(datasets=("wikitext-103",), use_preset=False),
}


def arch_rule(arch: str) -> LMArchRule:
    """``LM_ARCH_RULES[arch]``; an arch registered at a size beyond the presets (``presets.SIZED_ARCHS``,
    e.g. primer_ez_lm_gpt) keeps that size and trains only where the largest preset does."""
    from delight_plugin.presets import SIZED_ARCHS, SIZES
    if arch in LM_ARCH_RULES:
        return LM_ARCH_RULES[arch]
    if arch in SIZED_ARCHS:
        return LMArchRule(datasets=tuple(d for d, r in LM_DATASET_RECIPES.items() if r.size == SIZES[-1]),
                          use_preset=False)
    return LMArchRule()


def update_freq(tokens_per_update: int, max_tokens: int, gpus: int) -> int:
    return max(1, math.ceil(tokens_per_update / (max_tokens * gpus)))


def registered_lm_archs() -> List[str]:
    """``transformer_lm`` and every LM architecture the plugin registers right now."""
    from delight_plugin.presets import plugin_lm_archs
    return [LM_BASELINE, *plugin_lm_archs()]


def lm_recipes() -> List[Tuple[str, str]]:
    """(arch, dataset) pairs that have a recipe, for every registered LM architecture."""
    return [(arch, ds) for arch in registered_lm_archs() for ds in LM_DATASETS
            if ds in arch_rule(arch).datasets]


def lm_flags(arch: str, dataset: str, gpus: int = 1, d_m: Optional[int] = None) -> List[str]:
    """fairseq-train flags (without the data directory and save dir) of the LM recipe."""
    from delight_plugin.presets import preset_flags
    if dataset not in LM_DATASET_RECIPES:
        raise ValueError(f"--dataset must be one of {list(LM_DATASET_RECIPES)}, got {dataset!r}")
    if arch not in registered_lm_archs():
        raise ValueError(f"--arch {arch!r} is not a registered LM architecture; choose one of {registered_lm_archs()}")
    rule = arch_rule(arch)
    if dataset not in rule.datasets:
        raise ValueError(f"--arch {arch} has a recipe only for --dataset {' or '.join(rule.datasets)}")
    if d_m is not None and arch != "delight_transformer_lm_wiki103":
        raise ValueError("--d-m applies to delight_transformer_lm_wiki103 only")
    recipe = LM_DATASET_RECIPES[dataset]
    if arch == "delight_transformer_lm_wiki103":
        tokens_per_update, max_tokens, train = delight_lm_wiki103(d_m or 1024)
        model = []
    else:
        tokens_per_update, max_tokens, train = recipe.tokens_per_update, recipe.max_tokens, recipe.train
        model = preset_flags(arch, recipe.size) if rule.use_preset else []
    return ["--arch", arch, *LM_COMMON, *model, *train, *rule.extra.get(dataset, []),
            "--max-tokens", str(max_tokens), "--update-freq", str(update_freq(tokens_per_update, max_tokens, gpus))]


def mt_archs() -> List[str]:
    from fairseq.models import ARCH_MODEL_REGISTRY
    return [a for a in (MT_BASELINE, DELIGHT_MT, LINFORMER_MT) if a in ARCH_MODEL_REGISTRY]


MT_COMMON = ["--task", "translation", "--source-lang", "en", "--target-lang", "ro",
             "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
             *ADAM, "--weight-decay", "0.0", "--max-update", "100000", "--keep-last-epochs", "10",
             "--seed", "1", "--skip-invalid-size-inputs-valid-test"]


def mt_flags(arch: str, gpus: int = 1, d_m: Optional[int] = None) -> List[str]:
    """fairseq-train flags of the WMT'16 En-Ro recipe (32K target tokens per update, as the
    reference's 8 GPUs x 4096 tokens)."""
    tokens_per_update, max_tokens = 8 * 4096, 4096
    if arch == DELIGHT_MT:
        d_m = d_m or 384
        # The reference's "linear" scheduler (warm up from 1e-7 over 10K updates, then decay linearly
        # to 1e-7 at the last update) is fairseq's polynomial_decay with power 1.
        arch_flags = ["--delight-emb-map-dim", "128", "--delight-emb-out-dim", str(d_m),
                      "--delight-enc-min-depth", "4", "--delight-enc-max-depth", "8", "--delight-enc-width-mult", "2",
                      "--delight-dec-min-depth", "4", "--delight-dec-max-depth", "8", "--delight-dec-width-mult", "2",
                      "--lr-scheduler", "polynomial_decay", "--lr", str(delight_mt_lr(d_m)), "--power", "1",
                      "--end-learning-rate", "1e-07", "--warmup-updates", "10000", "--total-num-update", "100000"]
    elif arch in (MT_BASELINE, LINFORMER_MT):
        if d_m is not None:
            raise ValueError("--d-m applies to delight_transformer_wmt16_en_ro only")
        # Transformer-base (62M with a ~35K joined vocabulary: the paper's baseline), fairseq's
        # standard schedule for it; the Linformer arch has its widths, shared embeddings and dropout
        # 0.3 as defaults, and trains on the same schedule so that the two compare.
        sizes = ["--share-all-embeddings", "--dropout", "0.3"] if arch == MT_BASELINE else []
        arch_flags = [*sizes, "--lr-scheduler", "inverse_sqrt", "--lr", "0.0007", "--warmup-updates", "4000",
                      "--warmup-init-lr", "1e-07"]
    else:
        raise ValueError(f"ARCH must be one of {[MT_BASELINE, DELIGHT_MT, LINFORMER_MT]}, got {arch!r}")
    return ["--arch", arch, *MT_COMMON, *arch_flags, "--max-tokens", str(max_tokens),
            "--update-freq", str(update_freq(tokens_per_update, max_tokens, gpus))]


def mt_recipes() -> List[Tuple[str, Optional[int]]]:
    return [(a, d) for a in mt_archs() for d in (DELIGHT_MT_DIMS if a == DELIGHT_MT else (None,))]


def main(argv=None):
    parser = argparse.ArgumentParser(description="Print a recipe's fairseq-train flags, one per line.")
    sub = parser.add_subparsers(dest="recipe", required=True)
    lm = sub.add_parser("lm", help="WikiText language modelling")
    lm.add_argument("--arch", required=True)
    lm.add_argument("--dataset", required=True, choices=LM_DATASETS)
    mt = sub.add_parser("mt", help="WMT'16 En-Ro translation")
    mt.add_argument("--arch", required=True)
    for p in (lm, mt):
        p.add_argument("--gpus", type=int, default=1)
        p.add_argument("--d-m", type=int, default=None, help="DeLighT model width d_m")
    sub.add_parser("list", help="every (recipe, arch, dataset) this checkout can run")
    args = parser.parse_args(argv)
    try:
        if args.recipe == "list":
            lines = [f"lm {a} {d}" for a, d in lm_recipes()] + [f"mt {a}" for a in mt_archs()]
        elif args.gpus < 1:
            raise ValueError(f"--gpus must be >= 1, got {args.gpus}")
        elif args.recipe == "lm":
            lines = lm_flags(args.arch, args.dataset, args.gpus, args.d_m)
        else:
            lines = mt_flags(args.arch, args.gpus, args.d_m)
    except (ValueError, KeyError) as err:
        raise SystemExit(f"error: {err}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
