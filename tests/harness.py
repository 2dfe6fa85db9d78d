"""Shared machinery of the test-suite: build registered architectures through fairseq's own
argument parsing (so named-arch defaults and build-time validation are exercised exactly as
on the command line), run the conformance probes, and run fairseq's command-line tools."""
import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

import delight_plugin  # noqa: F401  (registers the architectures)
from delight_plugin.building import build_as_fairseq_train, synthetic_dictionary
from fairseq.models import ARCH_MODEL_REGISTRY, FairseqEncoderDecoderModel, FairseqLanguageModel

REPO = Path(__file__).resolve().parents[1]
PLUGIN_DIR = REPO / "delight_plugin"
SAMPLE_DIR = PLUGIN_DIR / "data" / "sample"
SHARED_DATA = REPO.parent / "shared" / "data"
VOCAB = 100  # symbols in the synthetic dictionary used by in-process model tests


def _ours(model_cls) -> bool:
    return model_cls.__module__.startswith("delight_plugin.")


def registered_archs(kind):
    """Every architecture name the plugin registers whose model is a ``kind`` subclass."""
    return sorted(a for a, m in ARCH_MODEL_REGISTRY.items() if _ours(m) and issubclass(m, kind))


def lm_archs():
    return registered_archs(FairseqLanguageModel)


def seq2seq_archs():
    return registered_archs(FairseqEncoderDecoderModel)


def model_name(arch: str) -> str:
    from fairseq.models import MODEL_REGISTRY
    cls = ARCH_MODEL_REGISTRY[arch]
    return next(name for name, c in MODEL_REGISTRY.items() if c is cls)


def cases(arch: str):
    """The per-model test cases module ``tests/cases/<model>.py`` (variants, bad configs, ...)."""
    name = model_name(arch)
    path = Path(__file__).parent / "cases" / f"{name}.py"
    if not path.exists():
        raise AssertionError(
            f"model {name!r} (arch {arch!r}) has no tests/cases/{name}.py: every registered model must "
            "contribute its tiny flags, variants and bad-config cases to the conformance suite")
    return importlib.import_module(f"cases.{name}")


def tiny_flags(arch: str):
    """The model's TINY flags, plus ``ARCH_TINY[arch]`` for a named arch that needs more (optional)."""
    module = cases(arch)
    return list(module.TINY) + list(getattr(module, "ARCH_TINY", {}).get(arch, []))


def write_dictionary(directory: Path, size: int = VOCAB) -> Path:
    return synthetic_dictionary(size, directory)


def build(arch: str, flags=(), data_dir=None, task="language_modeling", tokens_per_sample=64, extra_task_flags=()):
    """Build ``arch`` exactly as ``fairseq-train`` would, returning (model, task)."""
    data_dir = data_dir or write_dictionary(Path(os.environ.get("PYTEST_TMP", "/tmp")) / "delight_dict")
    task_flags = list(extra_task_flags)
    if task == "language_modeling":
        task_flags += ["--tokens-per-sample", tokens_per_sample]
    built = build_as_fairseq_train(arch, flags, data_dir, task=task, task_flags=task_flags, seed=0)
    return built.model, built.task


def baseline_size_ratio(arch: str, size: str) -> float:
    """Non-embedding parameters of ``arch`` at the ``size`` preset over ``transformer_lm``'s at that size."""
    from delight_plugin.presets import non_embedding_params, preset_flags
    ours, _ = build(arch, preset_flags(arch, size))
    base, _ = build("transformer_lm", preset_flags("transformer_lm", size))
    return non_embedding_params(ours) / non_embedding_params(base)


def build_error(arch: str, flags, **kw) -> str:
    """The message with which building ``arch`` with ``flags`` is refused ('' if it is not)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            build(arch, flags, **kw)
    except SystemExit:  # argparse rejected the value (choices, types)
        return err.getvalue()
    except (ValueError, TypeError, AssertionError) as e:
        return str(e)
    return ""


def translation_dicts(directory: Path, langs=("en", "ro"), size: int = VOCAB) -> Path:
    """Identical synthetic dictionaries for both sides (so they count as joined)."""
    return synthetic_dictionary(size, directory, langs)


def build_translation(arch: str, flags=(), data_dir=None):
    """Build a translation ``arch`` as fairseq-train would, over ``translation_dicts`` (en -> ro)."""
    data_dir = data_dir or translation_dicts(Path(os.environ.get("PYTEST_TMP", "/tmp")) / f"{arch}_dicts")
    return build(arch, flags, data_dir=data_dir, task="translation", extra_task_flags=["--source-lang", "en",
                                                                                        "--target-lang", "ro"])


class FixedSource:
    """A translation model seen as a target-side LM for a fixed source batch (for the probes below)."""

    def __init__(self, model, src, lengths):
        self.model, self.src, self.lengths = model, src, lengths

    def eval(self):
        self.model.eval()

    def __call__(self, tokens):
        return self.model(self.src[: len(tokens)], self.lengths[: len(tokens)], tokens)

    def get_normalized_probs(self, out, log_probs):
        return self.model.get_normalized_probs(out, log_probs=log_probs)


# --------------------------------------------------------------------------------------------
# Probes. Each raises AssertionError with the measured numbers when the model misbehaves.
# --------------------------------------------------------------------------------------------

def log_probs(model, tokens, **kw):
    with torch.no_grad():
        return model.get_normalized_probs(model(tokens, **kw), log_probs=True).float()


def random_tokens(batch: int, length: int, vocab: int = VOCAB, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, vocab, (batch, length), generator=g)


def probe_causality(model, length: int = 37, positions=None, tol: float = 1e-5, **kw):
    """Changing token j must leave every output before j unchanged, and change the output at j."""
    model.eval()
    tokens = random_tokens(2, length)
    base = log_probs(model, tokens, **kw)
    for j in positions or sorted({1, length // 3, length // 2 + 1, length - 1}):
        changed = tokens.clone()
        changed[:, j] = 4 + (changed[:, j] - 4 + 7) % (VOCAB - 4)
        out = log_probs(model, changed, **kw)
        before = (out[:, :j] - base[:, :j]).abs().max().item() if j else 0.0
        at_j = (out[:, j] - base[:, j]).abs().max().item()
        assert before <= tol, f"changing token {j} moved earlier outputs by {before:.3g} (> {tol})"
        assert at_j > tol, f"changing token {j} did not change the output at {j} (max diff {at_j:.3g})"


def probe_prefix(model, length: int = 37, prefix: int = 20, tol: float = 1e-4, **kw):
    """The outputs for a prefix must not depend on how long the sequence is."""
    model.eval()
    tokens = random_tokens(2, length)
    diff = (log_probs(model, tokens, **kw)[:, :prefix] - log_probs(model, tokens[:, :prefix], **kw)).abs().max().item()
    assert diff <= tol, f"outputs of a {prefix}-token prefix moved by {diff:.3g} when {length - prefix} tokens follow"


def incremental_log_probs(model, tokens, reorder_at=None, new_order=None, **kw):
    """Decode one token at a time through fairseq's incremental_state, optionally reordering the
    batch (as beam search does) after step ``reorder_at``."""
    state = {}
    steps = []
    with torch.no_grad():
        for t in range(tokens.size(1)):
            if reorder_at is not None and t == reorder_at:
                model.decoder.reorder_incremental_state_scripting(state, new_order)
                tokens = tokens.index_select(0, new_order)
                steps = [s.index_select(0, new_order) for s in steps]
            out = model.decoder(tokens[:, : t + 1], incremental_state=state, **kw)
            steps.append(model.get_normalized_probs(out, log_probs=True).float()[:, -1])
    return torch.stack(steps, dim=1), tokens


def probe_incremental(model, length: int = 37, tol: float = 1e-4, **kw):
    """Token-by-token decoding with incremental_state equals the full forward pass, also after a
    beam-search style reorder of the batch."""
    model.eval()
    tokens = random_tokens(3, length)
    full = log_probs(model, tokens, **kw)
    inc, _ = incremental_log_probs(model, tokens, **kw)
    diff = (inc - full).abs().max().item()
    assert diff <= tol, f"incremental decoding differs from the full forward pass by {diff:.3g} (> {tol})"
    order = torch.tensor([2, 0, 0])
    inc, reordered = incremental_log_probs(model, tokens, reorder_at=length // 2, new_order=order, **kw)
    diff = (inc - log_probs(model, reordered, **kw)).abs().max().item()
    assert diff <= tol, f"after reordering the beam, incremental decoding differs by {diff:.3g} (> {tol})"


def prefill_log_probs(model, tokens, prompt: int, pieces=1, **kw):
    """Read ``tokens[:, :prompt]`` into an empty incremental_state in ``pieces`` parallel passes
    (prefill), then decode the rest one token at a time; log-probabilities of every position."""
    state = {}
    ends = [prompt * (i + 1) // pieces for i in range(pieces)]
    with torch.no_grad():
        steps = []
        for end in ends:
            out = model.decoder(tokens[:, :end], incremental_state=state, **kw)
            steps.append(model.get_normalized_probs(out, log_probs=True).float())
        for t in range(prompt, tokens.size(1)):
            out = model.decoder(tokens[:, : t + 1], incremental_state=state, **kw)
            steps.append(model.get_normalized_probs(out, log_probs=True).float()[:, -1:])
    return torch.cat(steps, dim=1)


def probe_prefill(model, prompts=(8, 13, 16, 24), steps: int = 9, tol: float = 1e-4, **kw):
    """Prefill of a prompt (in one pass, and in two: 13 = 6 + 7 tokens ends mid-group), then
    token-by-token steps, equals the full forward pass for every position. The default prompts are and are not multiples of the tiny cases' FLASH group size
    and Linformer chunk size (8), and several steps cross a group boundary after the prompt."""
    model.eval()
    tokens = random_tokens(3, max(prompts) + steps)
    full = log_probs(model, tokens, **kw)
    for prompt in prompts:
        for pieces in (1, 2):
            got = prefill_log_probs(model, tokens[:, : prompt + steps], prompt, pieces, **kw)
            diff = (got - full[:, : prompt + steps]).abs().max().item()
            assert diff <= tol, (f"prefill of {prompt} tokens in {pieces} piece(s) + {steps} steps differs from "
                                 f"the full forward pass by {diff:.3g} (> {tol})")


def generate_hypotheses(model_path, subset: str, incremental: bool, beam: int = 5, max_len_b: int = 12,
                        num_shards: int = 1):
    """Best hypotheses (strings, by sample id) of in-process beam search over ``subset`` of the
    checkpoint's data (its first of ``num_shards`` shards), with or without incremental decoding state."""
    from fairseq import checkpoint_utils
    from fairseq.dataclass.configs import GenerationConfig
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(model_path)])
    task.load_dataset(subset)
    generator = task.build_generator(models, GenerationConfig(beam=beam, max_len_b=max_len_b))
    generator.model.has_incremental = incremental
    hyps = {}
    itr = task.get_batch_iterator(task.dataset(subset), max_sentences=16, num_shards=num_shards, shard_id=0)
    for sample in itr.next_epoch_itr(shuffle=False):
        for sid, out in zip(sample["id"].tolist(), task.inference_step(generator, models, sample)):
            hyps[sid] = task.target_dictionary.string(out[0]["tokens"])
    return hyps


# --------------------------------------------------------------------------------------------
# fairseq command-line tools
# --------------------------------------------------------------------------------------------

def fairseq_cli(tool: str, *args, cwd=None, check=True, env=None, stdin=None):
    """Run a fairseq console tool with this interpreter (``stdin``: text fed to it); return the
    completed process."""
    cmd = [sys.executable, "-m", f"fairseq_cli.{tool}", *[str(a) for a in args]]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, input=stdin)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def train_losses(log: str):
    """Per-update training losses from a ``--log-format json --log-interval 1`` run."""
    losses = {}
    for line in log.splitlines():
        if "train_inner" in line and "{" in line:
            rec = json.loads(line[line.index("{"):])
            losses[int(rec["num_updates"])] = float(rec["loss"])
    return losses


def preprocess_lm(dest: Path, source: Path = SAMPLE_DIR / "wikitext-2") -> Path:
    if not (dest / "dict.txt").exists():
        fairseq_cli("preprocess", "--only-source", "--trainpref", source / "train.txt",
                    "--validpref", source / "valid.txt", "--testpref", source / "test.txt",
                    "--destdir", dest, "--workers", "2", "--thresholdsrc", "2")
    return dest


def preprocess_translation(dest: Path, source: Path = SAMPLE_DIR / "wmt16-en-ro", src="en", tgt="ro") -> Path:
    if not (dest / "dict.en.txt").exists():
        fairseq_cli("preprocess", "--source-lang", src, "--target-lang", tgt, "--joined-dictionary",
                    "--trainpref", source / "train", "--validpref", source / "valid", "--testpref", source / "test",
                    "--destdir", dest, "--workers", "2")
    return dest


def short_pairs(directory: Path, count: int = 300, max_words: int = 10):
    """The first ``count`` bundled WMT'16 En-Ro training pairs of at most ``max_words`` words a side,
    written to ``directory``/train.{en,ro}; returns (directory, number of pairs)."""
    src = (SAMPLE_DIR / "wmt16-en-ro" / "train.en").read_text().splitlines()
    tgt = (SAMPLE_DIR / "wmt16-en-ro" / "train.ro").read_text().splitlines()
    pairs = [(s, t) for s, t in zip(src, tgt) if 0 < len(s.split()) <= max_words and 0 < len(t.split()) <= max_words]
    pairs = pairs[:count]
    directory.mkdir(parents=True, exist_ok=True)
    for lang, side in (("en", 0), ("ro", 1)):
        (directory / f"train.{lang}").write_text("".join(p[side] + "\n" for p in pairs))
    return directory, len(pairs)
