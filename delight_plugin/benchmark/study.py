"""The quality study: does each architecture learn as its paper says, at equal training tokens?

One command plans, runs (resumably) and renders the whole study::

    python -m delight_plugin.benchmark.study --regimes word char --jobs 1

Per regime (``REGIMES``: WikiText-2 words at 512 tokens, WikiText-2 characters at 2048) and per
variant (``transformer_lm``, every LM model of the plugin, FLASH, a smaller DeLighT):

1. **sweep**: one seed at each learning rate of the grid on a short budget; where the best is at
   an edge of the grid, the grid is extended once past it. The character regime sweeps only the
   word regime's best learning rate and its better neighbour.
2. **final**: the full budget at the best learning rate (lowest full-valid loss of the sweep), for
   every seed.

Every run is fairseq-train, then fairseq-eval-lm on the full validation set (and the test set for
final runs). A run's directory holds its logs and ``result.json``; a run with a ``result.json`` is
skipped, and an interrupted one resumes from its ``checkpoint_last.pt`` (fairseq's own resume),
so the study can be stopped and restarted at any time (``touch <work-dir>/STOP`` stops every
process on the work directory once its current run has finished, so none is lost). The committed results (``--results-dir``)
are read back into an empty work directory first, so a fresh clone on another machine continues
the study where the last one stopped. ``--plan`` prints what is left to do.
Results: ``quality-study.json``, ``.md`` and one figure per regime (valid loss against tokens,
training FLOPs and training seconds) in ``--results-dir``.
"""
import argparse
import fcntl
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from . import quality

REPO = Path(__file__).resolve().parents[2]
PLUGIN_DIR = REPO / "delight_plugin"
BASELINE = "transformer_lm"
# Our skeleton with softmax attention at the baseline's sizes: a ratio to it isolates a block from what
# every model of ours shares against fairseq's transformer_lm (the skeleton, its initialisation).
SAME_SKELETON = "plain_lm"
ADAPTIVE_LOSS = ["--criterion", "adaptive_loss", "--ddp-backend", "legacy_ddp"]


@dataclass(frozen=True)
class Regime:
    name: str
    unit: str  # what the loss is reported as: "ppl" (word perplexity) or "bpc" (bits per character)
    characters: bool
    tokens_per_sample: int
    tokens_per_update: int
    sweep_tokens: int
    final_tokens: int
    # Model flags every variant gets in this regime (the output layer), and flags they replace.
    model_flags: List[str] = field(default_factory=list)
    drop_flags: List[str] = field(default_factory=list)
    valid_head_tokens: int = 50_000  # the part of valid.txt validated during training (the curves)


REGIMES: Dict[str, Regime] = {
    # Adaptive softmax (2K/10K cutoffs, as fairseq's WikiText-103 models): the 33K-word output layer
    # would otherwise be 70% of every model's compute at `small`, hiding the blocks under test.
    "word": Regime("word", "ppl", False, 512, 2048, 500_000, 1_500_000,
                   model_flags=["--adaptive-softmax-cutoff", "2000,10000", *ADAPTIVE_LOSS],
                   drop_flags=["--share-decoder-input-output-embed"]),
    # 2,048 characters per update, as many tokens per update as the word regime, so both take the same
    # number of updates (244 sweep, 732 final, after 100 warm-up): at 4,096 a sweep was 122 updates,
    # mostly warm-up, and ended near the unigram entropy (transformer_lm at 1e-3: 4.19 bits per character).
    "char": Regime("char", "bpc", True, 2048, 2048, 500_000, 1_500_000),
}

# Variant -> (arch, flags after the size preset). DeLighT's claim is the Transformer's quality with
# 1.5-3x fewer parameters, so it also runs with 4 blocks instead of 8 (1.96M non-embedding parameters
# at `small`, 1.6x fewer than transformer_lm's 3.16M; the 8 blocks have 3.58M).
# DeLighT's registered dropouts (the paper's, for many epochs) sit at seven places; the baseline's
# --dropout at three. Under one epoch dropout only slows learning, so the DeLighT variants get the
# baseline's: DROPOUT after the positions, the attention and the FFN, none elsewhere.
# delight_transformer_lm-paper-dropouts keeps all seven, to show what they cost here.
DELIGHT_MATCHED_DROPOUT = ["--delight-emb-dropout", "0", "--delight-dropout", "0", "--attention-dropout", "0",
                           "--adaptive-softmax-dropout", "0", "--pe-dropout", "{dropout}", "--ffn-dropout", "{dropout}"]
# gau_lm-no-bias is FLASH-Quad as registered before the relative position bias was on by default;
# gau_lm-unscaled-embedding tests the quiet start (scripts/init_diagnostics.py): without the sqrt(d)
# embedding scale the GAUs' outputs are a 16x larger part of the residual stream at initialisation;
# FLASH and the baseline run the same, to tell a GAU effect from one every model would show.
VARIANTS: Dict[str, tuple] = {
    BASELINE: (BASELINE, []),
    "gau_lm": ("gau_lm", []),
    "gau_lm_flash": ("gau_lm_flash", []),
    "primer_ez_lm": ("primer_ez_lm", []),
    "delight_transformer_lm": ("delight_transformer_lm", DELIGHT_MATCHED_DROPOUT),
    "delight_transformer_lm-4blocks": ("delight_transformer_lm", ["--delight-dec-layers", "4", *DELIGHT_MATCHED_DROPOUT]),
    "hourglass_lm": ("hourglass_lm", []),
    "linformer_lm": ("linformer_lm", []),
    "plain_lm": ("plain_lm", []),
    "gau_lm-no-bias": ("gau_lm", ["--gau-no-relative-bias"]),
    "gau_lm-unscaled-embedding": ("gau_lm", ["--no-scale-embedding"]),
    "delight_transformer_lm-paper-dropouts": ("delight_transformer_lm", []),
    "gau_lm_flash-unscaled-embedding": ("gau_lm_flash", ["--no-scale-embedding"]),
    "transformer_lm-unscaled-embedding": (BASELINE, ["--no-scale-embedding"]),
    "delight_transformer_lm-4blocks-map256": ("delight_transformer_lm", [
        "--delight-dec-layers", "4", "--delight-emb-map-dim", "256", *DELIGHT_MATCHED_DROPOUT]),
    # FLASH's paper compares with Transformer++ (rotary positions, GLU): our softmax-attention skeleton
    # with rotary instead of sinusoidal positions is the nearest baseline we have. Run as a diagnostic
    # first (2026-12-04), it beat FLASH at the character sweep's budget (3.180 bpc against 3.371), so it
    # is swept and seeded as a full variant: the position scheme's share of a gap, apart from the block's.
    "plain_lm-rotary": ("plain_lm", ["--position-scheme", "rotary"]),
}
# Diagnostic variants ask one question of their parent, the variant their name starts with (does the
# bias or the embedding scale explain its gap?): one sweep run beside the
# parent's, at the grid's middle learning rate where the parent's sweep has it (words), else at the
# parent's best sweep rate (characters, whose sweep is the word regime's best rate and a neighbour).
DIAGNOSTICS = ("gau_lm-no-bias", "gau_lm-unscaled-embedding", "delight_transformer_lm-paper-dropouts",
               "gau_lm_flash-unscaled-embedding", "transformer_lm-unscaled-embedding")
# Full-budget diagnostics ask a question the short sweep cannot (a gap that opens late): final runs,
# every seed, at their parent's best sweep learning rate. DeLighT predicts through its map dim (128
# at `small`, so adaptive-softmax tails of 32 and 8 dims against the baseline's 64 and 16); map256
# predicts through the model width instead.
FULL_BUDGET_DIAGNOSTICS = {"delight_transformer_lm-4blocks-map256": "delight_transformer_lm-4blocks"}
LR_GRID = (5e-4, 1e-3, 2e-3)
# Papers' own learning rates, swept besides the grid: DeLighT's reference rule for WikiText-103,
# min(round(1024 / d_m * 0.002, 3), 0.01), is 0.008 at the `small` preset's d_m = 256.
PAPER_LRS = {"delight_transformer_lm": (0.008,), "delight_transformer_lm-4blocks": (0.008,)}
SEEDS = (1, 2, 3)
# Sweeps (and sweep diagnostics) run at this seed whichever final seeds an invocation asks for, and
# only runs at it choose learning rates: `--seeds 2 3` adds final runs, never a second sweep.
SWEEP_SEED = 1
WARMUP_UPDATES = 100
DROPOUT = 0.1  # fairseq's default; the budgets are under one epoch, so the recipe's 0.3 only slows learning
CURVE_POINTS = 10
# `touch <work-dir>/STOP`: every study process on that work directory finishes its current run and exits.
STOP_FILE = "STOP"


@dataclass(frozen=True)
class Run:
    regime: str
    variant: str
    lr: float
    seed: int
    tokens: int
    phase: str  # "sweep" or "final"

    def directory(self, root: Path) -> Path:
        return root / self.regime / self.variant / f"{self.phase}-lr{self.lr:g}-seed{self.seed}-tokens{self.tokens}"


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

def head_lines(path: Path, tokens: int) -> List[str]:
    """The first lines of ``path`` holding at least ``tokens`` tokens (one eos per line counted)."""
    lines, count = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            lines.append(line)
            count += len(line.split()) + 1
            if count >= tokens:
                break
    return lines


def prepare_data(regime: Regime, corpus: Path, work: Path, python: str = sys.executable) -> Path:
    """Binarise ``corpus`` (train/valid/test.txt) for ``regime``: subsets train, valid (the head
    validated during training), valid1 (all of valid.txt) and test. Reused when present."""
    data = work / f"data-{regime.name}"
    work.mkdir(parents=True, exist_ok=True)
    # Processes sharing a work directory (--variants halves) would binarise into it at once.
    with open(work / f".data-{regime.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (data / "test.bin").exists():
            _binarise(regime, corpus, work, data, python)
    return data


def _binarise(regime: Regime, corpus: Path, work: Path, data: Path, python: str) -> None:
    text = work / f"text-{regime.name}"
    text.mkdir(parents=True, exist_ok=True)
    if regime.characters:
        from ..recipes.characters import convert

        for split in ("train", "valid", "test"):
            convert(corpus / f"{split}.txt", text / f"{split}.txt")
    else:
        for split in ("train", "valid", "test"):
            (text / f"{split}.txt").write_text((corpus / f"{split}.txt").read_text(encoding="utf-8"), encoding="utf-8")
    (text / "valid_head.txt").write_text("".join(head_lines(text / "valid.txt", regime.valid_head_tokens)),
                                         encoding="utf-8")
    subprocess.run([python, "-m", "fairseq_cli.preprocess", "--only-source", "--trainpref", str(text / "train.txt"),
                    "--validpref", f"{text / 'valid_head.txt'},{text / 'valid.txt'}", "--testpref",
                    str(text / "test.txt"), "--destdir", str(data), "--workers", "2"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------

def model_flags(regime: Regime, variant: str, size: str) -> List[str]:
    """--arch, the size preset, the variant's and the regime's model flags."""
    from ..presets import preset_flags

    arch, extra = VARIANTS[variant]
    extra = [flag.format(dropout=DROPOUT) for flag in extra]
    # FLASH-Quad divides q.k by a fixed length L (default 512); the paper's 1/n is L = the training length.
    scale = ["--gau-quad-scale-length", str(regime.tokens_per_sample)] if arch == "gau_lm" else []
    return ["--arch", arch, *preset_flags(arch, size), *scale, *extra, *regime.model_flags]


def train_command(run: Run, regime: Regime, data: Path, size: str, python: str) -> List[str]:
    from ..recipes.hyperparameters import LM_COMMON, LM_DATASET_RECIPES

    updates = budget_updates(run.tokens, regime)
    every = max(1, updates // CURVE_POINTS)
    recipe = without(LM_COMMON + LM_DATASET_RECIPES["wikitext-2"].train, regime.drop_flags, SET_HERE)
    return [python, "-m", "fairseq_cli.train", str(data), "--user-dir", str(PLUGIN_DIR), *recipe,
            *model_flags(regime, run.variant, size),
            "--tokens-per-sample", str(regime.tokens_per_sample), "--max-tokens", str(regime.tokens_per_update),
            "--update-freq", "1", "--required-batch-size-multiple", "1",
            "--lr", str(run.lr), "--warmup-updates", str(WARMUP_UPDATES), "--max-update", str(updates),
            "--seed", str(run.seed), "--dropout", str(DROPOUT), "--valid-subset", "valid",
            "--validate-interval-updates", str(every), "--save-interval-updates", str(every),
            "--keep-interval-updates", "1", "--log-interval", str(every), "--log-format", "json",
            "--ignore-unused-valid-subsets", "--num-workers", "0"]


def budget_updates(tokens: int, regime: Regime) -> int:
    """Updates for a budget of ``tokens``, a multiple of the curve's points so that the last
    logged interval ends at the last update (its tokens and seconds are then all counted)."""
    updates = tokens // regime.tokens_per_update
    return max(1, updates - updates % CURVE_POINTS) if updates >= CURVE_POINTS else max(1, updates)


# Recipe flags (with their value) that train_command sets itself.
SET_HERE = ("--tokens-per-sample", "--lr", "--warmup-updates", "--max-update", "--seed", "--dropout")


def without(flags: List[str], switches, options) -> List[str]:
    """``flags`` less the ``switches`` and the ``options`` with their values."""
    kept, skip = [], False
    for flag in flags:
        if skip:
            skip = False
        elif flag in options:
            skip = True
        elif flag not in switches:
            kept.append(flag)
    return kept


def eval_command(run: Run, regime: Regime, data: Path, checkpoint: Path, subset: str, python: str) -> List[str]:
    # Final runs score with half a window of context, as the recipes do; sweep runs without (cheaper).
    context = regime.tokens_per_sample // 2 if run.phase == "final" else 0
    return [python, "-m", "fairseq_cli.eval_lm", str(data), "--user-dir", str(PLUGIN_DIR), "--path", str(checkpoint),
            "--gen-subset", subset, "--tokens-per-sample", str(regime.tokens_per_sample),
            "--context-window", str(context), "--max-tokens", str(4 * regime.tokens_per_sample),
            "--required-batch-size-multiple", "1", "--num-workers", "0"]


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------

def thread_env(threads: int) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def git_commit() -> Optional[str]:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def execute(run: Run, regime: Regime, data: Path, root: Path, size: str, threads: int, python: str,
            cost: dict, keep_checkpoints: bool = False) -> dict:
    """Train, score and record one run (resuming whatever an earlier attempt left)."""
    directory = run.directory(root)
    set_aside_if_finished(directory, root)
    directory.mkdir(parents=True, exist_ok=True)
    env = thread_env(threads)
    checkpoints = directory / "checkpoints"
    command = train_command(run, regime, data, size, python) + ["--save-dir", str(checkpoints)]
    load_before = os.getloadavg()[0]
    with open(directory / "train.log", "a") as log:  # appended: a resumed run continues the curve
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, env=env)
    load_after = os.getloadavg()[0]
    scores = {}
    for subset, name in (("valid1", "valid"), ("test", "test")):
        if name == "test" and run.phase != "final":
            continue
        out = subprocess.run(eval_command(run, regime, data, checkpoints / "checkpoint_last.pt", subset, python),
                             check=True, capture_output=True, text=True, env=env)
        (directory / f"eval_{name}.log").write_text(out.stdout + out.stderr)
        scores[name] = quality.eval_score(out.stdout + out.stderr)
    log = (directory / "train.log").read_text()
    curve = quality.valid_curve(log, cost["train_flops_per_token"])
    result = {**asdict(run), "arch": VARIANTS[run.variant][0], "flags": command[3:], "size": size,
              "threads": threads, "commit": git_commit(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "params": quality.logged_params(log), **cost, "curve": curve,
              "train_seconds": curve[-1]["train_seconds"] if curve else None, **scores,
              # the machine's 1-minute load average when training began and ended: seconds measured
              # beside other work (load above the run's own threads) are slower than on a quiet machine
              "load_average": [load_before, load_after]}
    (directory / "result.json").write_text(json.dumps(result, indent=1))
    if not keep_checkpoints:
        for path in checkpoints.glob("*.pt"):
            path.unlink()
    return result


def set_aside_if_finished(directory: Path, root: Path) -> None:
    """A run planned again although its directory holds a ``result.json`` is stale (``load_results``):
    move the old run out of the runs tree (to ``<root>/../stale-runs/``, replacing an older copy), so that
    the new one starts from scratch instead of appending to the old log and curve."""
    if (directory / "result.json").exists():
        target = root.parent / "stale-runs" / directory.relative_to(root)
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        directory.rename(target)


def training_cost(regime: Regime, variant: str, size: str, data: Path) -> dict:
    """Non-embedding parameters and training FLOPs per token (3x the forward's multiply-accumulates
    x 2), counted by one rule for every model (``measure.count_macs``) on a real batch: the blocks at
    the regime's length, then the output layer (an adaptive softmax computes only the bands of the
    batch's targets)."""
    import torch

    from ..presets import non_embedding_params
    from .measure import count_macs
    from .subjects import build_fairseq_lm

    flags = model_flags(regime, variant, size)
    model, _ = build_fairseq_lm(flags[1], flags[2:], regime.tokens_per_sample, data)
    model.eval()
    tokens = first_tokens(data, regime.tokens_per_sample + 1)
    inputs, targets = tokens[None, :-1], tokens[None, 1:]
    with torch.no_grad():
        features = model(inputs, features_only=True)[0]
    body = count_macs(lambda: model(inputs, features_only=True))
    decoder = model.decoder
    if getattr(decoder, "adaptive_softmax", None) is not None:
        head = count_macs(lambda: decoder.adaptive_softmax(features, targets))
    else:
        head = count_macs(lambda: decoder.output_layer(features))
    macs = (body + head) / regime.tokens_per_sample
    return {"non_embedding_params": non_embedding_params(model), "macs_per_token": macs,
            "train_flops_per_token": 6 * macs}


def first_tokens(data: Path, count: int):
    """The first ``count`` token ids of the binarised training set."""
    import torch
    from fairseq.data import data_utils

    dataset = data_utils.load_indexed_dataset(str(data / "train"), None)
    ids, index = [], 0
    while len(ids) < count:
        ids.extend(dataset[index].tolist())
        index += 1
    return torch.tensor(ids[:count])


# --------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------

def import_committed(committed: Path, root: Path, regimes: Optional[Dict[str, Regime]] = None) -> int:
    """Write each run of the committed results file whose directory has no ``result.json`` yet
    (a fresh clone, another machine) into ``root``; returns how many were written. With ``regimes``,
    not the stale ones (``trained_as``): they would replace the rerun of each in every new invocation."""
    if not committed.exists():
        return 0
    written = 0
    for record in json.loads(committed.read_text())["runs"]:
        if regimes and record["regime"] in regimes and not trained_as(record, regimes[record["regime"]]):
            continue
        run = Run(**{name: record[name] for name in ("regime", "variant", "lr", "seed", "tokens", "phase")})
        path = run.directory(root) / "result.json"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=1))
            written += 1
    return written


def load_results(root: Path, regimes: Optional[Dict[str, Regime]] = None) -> List[dict]:
    """Every finished run; with ``regimes``, less those trained with another length or batch than their
    regime's now (stale: the regime changed since), which are reported and then rerun."""
    results = [json.loads(p.read_text()) for p in sorted(root.glob("*/*/*/result.json"))]
    kept = []
    for r in results:
        if regimes and r["regime"] in regimes and not trained_as(r, regimes[r["regime"]]):
            print(f"stale, ignored: {r['regime']} {r['variant']} lr {r['lr']:g} seed {r['seed']} ({r['phase']}): "
                  "trained with other --tokens-per-sample / --max-tokens than the regime's", flush=True)
        else:
            kept.append(r)
    return kept


def trained_as(result: dict, regime: Regime) -> bool:
    flags = result.get("flags") or []
    recorded = {flag: flags[i + 1] for i, flag in enumerate(flags[:-1]) if flag in ("--tokens-per-sample", "--max-tokens")}
    want = {"--tokens-per-sample": str(regime.tokens_per_sample), "--max-tokens": str(regime.tokens_per_update)}
    return all(recorded.get(flag, value) == value for flag, value in want.items())


def sweep_results(results: List[dict], regime: str, variant: str) -> List[dict]:
    return [r for r in results if (r["regime"], r["variant"], r["phase"], r["seed"]) == (regime, variant, "sweep", SWEEP_SEED)
            and r.get("valid")]


def best_lr(results: List[dict], regime: str, variant: str) -> Optional[float]:
    rows = sweep_results(results, regime, variant)
    return min(rows, key=lambda r: r["valid"]["loss"])["lr"] if rows else None


def parent_of(variant: str) -> str:
    """The variant whose learning rates a diagnostic follows (itself for any other variant)."""
    if variant in FULL_BUDGET_DIAGNOSTICS:
        return FULL_BUDGET_DIAGNOSTICS[variant]
    return variant.split("-", 1)[0] if variant in DIAGNOSTICS else variant


def diagnostic_lr(results: List[dict], regime: str, variant: str, grid: List[float], extend: bool,
                  follow: Optional[str]) -> Optional[float]:
    """A diagnostic's one learning rate: the grid's middle one if its parent sweeps it, else the parent's
    best once the parent's sweep is complete (None until then)."""
    parent = parent_of(variant)
    lrs = sweep_lrs(results, regime, parent, grid, extend, follow)
    if lrs is None:
        return None
    middle = grid[len(grid) // 2]
    if middle in lrs:
        return middle
    done = {r["lr"] for r in sweep_results(results, regime, parent)}
    return best_lr(results, regime, parent) if set(lrs) <= done else None


def sweep_lrs(results: List[dict], regime: str, variant: str, grid: List[float], extend: bool = True,
              follow: Optional[str] = None) -> Optional[List[float]]:
    """The learning rates to sweep: the grid, extended once past an edge that wins. A regime that
    ``follow``s another (characters follow words) takes that regime's best learning rate and its
    better neighbour, once that sweep is complete (None until then)."""
    def losses(name):
        return {r["lr"]: r["valid"]["loss"] for r in sweep_results(results, name, variant)}

    if follow is not None:
        leader, done = sweep_lrs(results, follow, variant, grid, extend), losses(follow)
        if not all(lr in done for lr in leader):
            return None
        i = leader.index(min(leader, key=done.get))
        neighbours = [leader[j] for j in (i - 1, i + 1) if 0 <= j < len(leader)]
        return [leader[i]] + ([min(neighbours, key=done.get)] if neighbours else [])
    done = losses(regime)
    lrs = list(grid) + [lr for lr in PAPER_LRS.get(variant, ()) if lr not in grid]
    if extend and all(lr in done for lr in grid):  # decided by the grid alone, so it extends once
        best = min(grid, key=done.get)
        if best == max(grid):
            lrs.append(best * 2)
        elif best == min(grid):
            lrs.insert(0, best / 2)
    return lrs


def plan(results: List[dict], regimes: List[str], variants: List[str], grid: List[float], seeds: List[int],
         regime_table: Dict[str, Regime], extend: bool = True) -> List[Run]:
    """The runs not done yet whose inputs are known (final runs wait for their sweep)."""
    done = {(r["regime"], r["variant"], r["lr"], r["seed"], r["tokens"], r["phase"]) for r in results}

    def pending(runs: List[Run]) -> List[Run]:
        return [r for r in runs if (r.regime, r.variant, r.lr, r.seed, r.tokens, r.phase) not in done]

    def follow_words(regime: Regime, variant: str) -> Optional[str]:
        # Characters follow the word sweep when it is planned here or has results: the plan must not
        # depend on whether ``--regimes`` names ``word`` once its sweep is done.
        has_words = "word" in regimes or bool(sweep_results(results, "word", parent_of(variant)))
        return "word" if regime.characters and has_words else None

    todo = []
    for name in regimes:
        regime = regime_table[name]
        for variant in variants:
            follow = follow_words(regime, variant)
            if variant in FULL_BUDGET_DIAGNOSTICS:  # once the parent's sweep is complete
                parent = FULL_BUDGET_DIAGNOSTICS[variant]
                parent_sweep = sweep_lrs(results, name, parent, grid, extend, follow)
                if parent_sweep is not None and set(parent_sweep) <= {r["lr"] for r in sweep_results(results, name, parent)}:
                    lr = best_lr(results, name, parent)
                    todo += pending([Run(name, variant, lr, seed, regime.final_tokens, "final") for seed in seeds])
                continue
            if variant in DIAGNOSTICS:
                lr = diagnostic_lr(results, name, variant, grid, extend, follow)
                if lr is not None:
                    todo += pending([Run(name, variant, lr, SWEEP_SEED, regime.sweep_tokens, "sweep")])
                continue
            lrs = sweep_lrs(results, name, variant, grid, extend, follow)
            if lrs is None:
                continue
            sweep = [Run(name, variant, lr, SWEEP_SEED, regime.sweep_tokens, "sweep") for lr in lrs]
            todo += pending(sweep)
            if pending(sweep):
                continue
            lr = best_lr(results, name, variant)
            todo += pending([Run(name, variant, lr, seed, regime.final_tokens, "final") for seed in seeds])
    # Word regime first (the character sweep needs its learning rates), sweeps before finals, and in
    # a sweep the grid's middle learning rate for every variant first: a study stopped early then
    # still compares every variant at one learning rate.
    middle = grid[len(grid) // 2]

    def order(run: Run):
        lr_rank = 0 if run.lr == middle else 1 if run.lr in grid else 2
        return regimes.index(run.regime), run.phase != "sweep", lr_rank if run.phase == "sweep" else 0
    return sorted(todo, key=order)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "data" / "wikitext-2",
                        help="directory with train.txt, valid.txt, test.txt (default: ../shared/data/wikitext-2)")
    parser.add_argument("--size", default="small", help="size preset of every variant (default small)")
    parser.add_argument("--lrs", nargs="+", type=float, default=list(LR_GRID), help="learning-rate grid of the sweep")
    parser.add_argument("--no-extend", action="store_true", help="never extend the grid past a winning edge")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--sweep-tokens", type=int, help="override every regime's sweep budget")
    parser.add_argument("--final-tokens", type=int, help="override every regime's final budget")
    parser.add_argument("--tokens-per-sample", type=int, help="override every regime's length (tests)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--work-dir", type=Path, default=REPO / "bench-output" / "quality-study")
    parser.add_argument("--results-dir", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--stem", default="quality-study")
    parser.add_argument("--max-runs", type=int, help="stop after this many runs (then render)")
    parser.add_argument("--plan", action="store_true", help="print the runs left to do and exit")
    parser.add_argument("--render-only", action="store_true", help="only rewrite the results from finished runs")
    args = parser.parse_args(argv)

    regimes = {name: Regime(**{**asdict(REGIMES[name]), **{k: v for k, v in (
        ("sweep_tokens", args.sweep_tokens), ("final_tokens", args.final_tokens),
        ("tokens_per_sample", args.tokens_per_sample)) if v}}) for name in args.regimes}
    if args.tokens_per_sample:
        regimes = {n: Regime(**{**asdict(r), "tokens_per_update": 4 * args.tokens_per_sample}) for n, r in regimes.items()}
    root = args.work_dir / "runs"
    root.mkdir(parents=True, exist_ok=True)
    import_committed(args.results_dir / f"{args.stem}.json", root, {**REGIMES, **regimes})
    # The results are every finished run's, whichever invocation ran it: the command that produces them
    # is the whole study (resumed across sittings); this invocation is recorded besides it.
    meta = {"command": "python -m delight_plugin.benchmark.study",
            "invocation": "python -m delight_plugin.benchmark.study " + " ".join(argv if argv is not None else sys.argv[1:]),
            "size": args.size, "threads_per_run": args.threads, "jobs": args.jobs, "corpus": str(args.corpus.name),
            "machine": machine(), "regimes": {n: asdict(r) for n, r in regimes.items()}, "warmup_updates": WARMUP_UPDATES,
            "dropout": DROPOUT, "lr_grid": args.lrs, "seeds": args.seeds,
            "sweep_seed": SWEEP_SEED}
    if not args.render_only and not args.plan:
        run_study(args, regimes, root)
    every = load_results(root, {**REGIMES, **regimes})
    if args.plan:  # from every regime's results, as ``run_study`` plans (characters follow the word sweep)
        for run in plan(every, list(regimes), args.variants, args.lrs, args.seeds, regimes, not args.no_extend):
            print(f"{run.phase:5} {run.regime:4} {run.variant:30} lr {run.lr:g} seed {run.seed} tokens {run.tokens:,}")
        return
    # Rendered from every finished run, not only this invocation's selection: processes sharing
    # the study by variant (``--variants``) each rewrite the whole results file.
    meta["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    present = {r["regime"] for r in every}
    meta["regimes"] = {**{n: asdict(r) for n, r in REGIMES.items() if n in present and n not in regimes},
                       **meta["regimes"]}
    rendered = [r for r in every if r["regime"] in meta["regimes"]]
    print(quality.write_results(rendered, meta, args.results_dir, args.stem, BASELINE, [SAME_SKELETON]))


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return f"{platform.machine()} {cpu}, {os.cpu_count()} cores"


def run_study(args, regimes: Dict[str, Regime], root: Path) -> None:
    costs: Dict[tuple, dict] = {}
    done = 0
    stop = args.work_dir / STOP_FILE
    while args.max_runs is None or done < args.max_runs:
        if stop.exists():  # between runs, so no run's work is lost
            print(f"{stop} exists: stopping before the next run (delete it to run again)", flush=True)
            return
        results = load_results(root, regimes)
        todo = plan(results, list(regimes), args.variants, args.lrs, args.seeds, regimes, not args.no_extend)
        if not todo:
            return
        batch = todo[: max(1, args.jobs)]
        if args.max_runs is not None:
            batch = batch[: args.max_runs - done]
        for run in batch:
            regime = regimes[run.regime]
            data = prepare_data(regime, args.corpus, args.work_dir)
            if (run.regime, run.variant) not in costs:
                costs[run.regime, run.variant] = training_cost(regime, run.variant, args.size, data)

        def one(run: Run):
            regime = regimes[run.regime]
            data = prepare_data(regime, args.corpus, args.work_dir)
            print(f"[{time.strftime('%H:%M:%S')}] {run.phase} {run.regime} {run.variant} lr {run.lr:g} "
                  f"seed {run.seed} ({run.tokens:,} tokens)", flush=True)
            try:
                result = execute(run, regime, data, root, args.size, args.threads, sys.executable,
                                 costs[run.regime, run.variant])
            except subprocess.CalledProcessError as err:
                print(f"    failed ({err}); see {run.directory(root)}", flush=True)
                raise
            print(f"    valid loss {result['valid']['loss']:.4f} in {result['train_seconds']:.0f} s", flush=True)

        with ThreadPoolExecutor(max_workers=len(batch)) as pool:
            list(pool.map(one, batch))
        done += len(batch)


if __name__ == "__main__":
    main()
