"""Decoding speed at a fixed context: reach context C, then time single-token steps.

The averaged "generate" metric decodes from position 0 for a time budget, so it only sees the first
few thousand positions, where a linear design's per-step overhead dominates. Here each sample
reaches C tokens of cache in one parallel pass (our models' prefill, in pieces of ``piece`` tokens
so a quadratic design never holds a C x C matrix), takes ``warmup`` untimed steps, then times
``steps`` steps and reports milliseconds per step (one new token for each of the ``batch`` rows).

fairseq's ``transformer_lm`` has no prefill and stepping to 32,768 tokens takes minutes, so its cache
is filled with its own keys and values: one forward pass over the first ``min(C, baseline_forward)``
tokens of row 0 with a hook on every layer's attention input, projected by its k/v projections, repeated along time and batch up to C
positions and ``batch`` rows when C is longer. For C <= ``baseline_forward`` and batch 1 this is
exactly its decoding state (tested); beyond, the values are not those of the prompt, which does not
change what a step costs: a step's arithmetic does not depend on the cached values.
"""
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor

from . import measure
from .runner import describe, free_memory, is_out_of_memory
from .measure import BudgetExceeded
from .subjects import Subject


@dataclass
class DecodeOptions:
    contexts: List[int] = field(default_factory=lambda: [1024, 4096, 8192, 16384, 32768])
    batch_sizes: List[int] = field(default_factory=lambda: [1, 8])
    steps: int = 64
    warmup: int = 4
    repeats: int = 3
    piece: int = 2048  # prefill piece: bounds a quadratic design's prefill memory by piece x C
    baseline_forward: int = 4096  # longest prompt the baseline's own forward pass fills its cache with
    vocab_size: int = 10000
    time_budget: float = 300.0  # seconds one sample (prefill and steps) may take
    device: str = "cpu"
    seed: int = 1


def has_prefill(module) -> bool:
    """Our skeleton's decoders read a prompt in one pass (``EfficientLMDecoder.tokens_read``)."""
    return hasattr(module.decoder, "tokens_read")


def prefill(module, prompt: Tensor, piece: int) -> Dict:
    """Our models: the prompt read into a fresh incremental_state, ``piece`` tokens per pass."""
    state: Dict = {}
    for end in range(piece, prompt.size(1) + piece, piece):
        module.decoder(prompt[:, :min(end, prompt.size(1))], incremental_state=state)
    return state


def fairseq_cache_from_forward(module, prompt: Tensor, context: int, batch: int) -> Dict:
    """fairseq's transformer_lm: each layer's prev_key/prev_value ([B, heads, T, head_dim]), its own
    k_proj/v_proj of its attention's input ([T, B, C]) in one forward pass over ``prompt`` (row 0), repeated to
    ``context`` positions and ``batch`` rows (see the module docstring)."""
    captured: Dict = {}
    hooks = []
    for index, layer in enumerate(module.decoder.layers):
        # Its full forward calls F.multi_head_attention_forward with the projection weights, not the
        # k_proj/v_proj modules: capture the attention's key input and project it here.
        def keep_input(attn, args, kwargs, index=index):
            captured[index] = kwargs["key"] if "key" in kwargs else args[1]
        hooks.append(layer.self_attn.register_forward_pre_hook(keep_input, with_kwargs=True))
    try:
        module.decoder(prompt[:1])
    finally:
        for hook in hooks:
            hook.remove()
    state: Dict = {}
    for index, layer in enumerate(module.decoder.layers):
        attn = layer.self_attn
        buffers = {}
        for name, proj in (("prev_key", attn.k_proj), ("prev_value", attn.v_proj)):
            out = proj(captured[index])  # [T, 1, C]
            heads = out.view(out.size(0), 1, attn.num_heads, attn.head_dim).permute(1, 2, 0, 3)
            repeats = -(-context // heads.size(2))
            buffers[name] = heads.repeat(batch, 1, repeats, 1)[:, :, :context].contiguous()
        buffers["prev_key_padding_mask"] = None
        attn._set_input_buffer(state, buffers)
    return state


def reach_context(module, tokens: Tensor, context: int, opts: DecodeOptions) -> Dict:
    if has_prefill(module):
        return prefill(module, tokens[:, :context], opts.piece)
    prompt = tokens[:1, :min(context, opts.baseline_forward)]
    return fairseq_cache_from_forward(module, prompt, context, tokens.size(0))


def how_reached(module, context: int, opts: DecodeOptions) -> str:
    if has_prefill(module):
        return "prefill"
    if context <= opts.baseline_forward:
        return "own forward (hooked)"
    return f"own forward over {opts.baseline_forward}, repeated to {context}"


def ms_per_step(module, tokens: Tensor, context: int, opts: DecodeOptions, device: torch.device) -> float:
    """One sample: reach ``context``, ``warmup`` untimed steps, then ``steps`` timed ones (ms each)."""
    with torch.no_grad():
        state = reach_context(module, tokens, context, opts)
        for t in range(opts.warmup):
            module.decoder(tokens[:, : context + t + 1], incremental_state=state)
        measure.synchronize(device)
        start = time.perf_counter()
        for t in range(opts.warmup, opts.warmup + opts.steps):
            module.decoder(tokens[:, : context + t + 1], incremental_state=state)
        measure.synchronize(device)
    return (time.perf_counter() - start) * 1000 / opts.steps


class DecodeBenchmark:
    """For each context: build every subject for context + warm-up + steps tokens, then ``repeats``
    interleaved rounds of one sample per (subject, batch size). A subject that fails gets an error
    cell; one that runs out of memory or time is not tried at longer contexts with that batch size."""

    def __init__(self, subjects: List[Subject], opts: DecodeOptions, log: Callable[[str], None] = print):
        self.subjects, self.opts, self.log = subjects, opts, log
        self.device = torch.device(opts.device)

    def _tokens(self, batch: int, length: int) -> Tensor:
        g = torch.Generator().manual_seed(self.opts.seed)
        return torch.randint(4, self.opts.vocab_size, (batch, length), generator=g).to(self.device)

    def run(self) -> List[dict]:
        opts, rows, given_up = self.opts, [], {}
        for context in opts.contexts:
            length = context + opts.warmup + opts.steps
            cells = []
            for subject in self.subjects:
                try:
                    torch.manual_seed(opts.seed)
                    model = subject.build(length)
                    model.module.eval()
                except Exception as err:
                    model, error = None, describe(err)
                for batch in opts.batch_sizes:
                    row = {"name": subject.name, "kind": subject.kind, "context": context, "batch": batch,
                           "samples": [], "errors": {}}
                    if model is None:
                        row["errors"]["decode"] = error
                    elif (subject.name, batch) in given_up:
                        row["errors"]["decode"] = given_up[(subject.name, batch)]
                    else:
                        row["reached_by"] = how_reached(model.module, context, opts)
                    cells.append((row, model))
            for round_index in range(opts.repeats):
                for row, model in cells[round_index % max(1, len(cells)):] + cells[:round_index % max(1, len(cells))]:
                    if row["errors"]:
                        continue
                    tokens = self._tokens(row["batch"], length)
                    try:
                        with measure.time_limit(opts.time_budget):
                            row["samples"].append(ms_per_step(model.module, tokens, context, opts, self.device))
                    except Exception as err:
                        row["errors"]["decode"] = describe(err)
                        if isinstance(err, BudgetExceeded) or is_out_of_memory(err):
                            given_up[(row["name"], row["batch"])] = f"skipped: {describe(err)} at context {context}"
                    free_memory(self.device)
                self.log(f"[decode {context}] round {round_index + 1}/{opts.repeats} done")
            for row, _ in cells:
                row["ms_per_token"] = measure.median(row["samples"])
                rows.append(row)
                self.log(f"[decode {context}] {row['name']:<24} batch {row['batch']}: "
                         + (f"{row['ms_per_token']:.2f} ms/token" if row["ms_per_token"] else str(row["errors"])))
            cells.clear()
            free_memory(self.device)
        add_speedups(rows)
        return rows


def add_speedups(rows: List[dict]) -> None:
    """speedup: the baseline's ms/token over the row's at the same context and batch (its tokens/s ratio)."""
    base = {(r["context"], r["batch"]): r.get("ms_per_token") for r in rows if r["kind"] == "baseline"}
    for row in rows:
        reference = base.get((row["context"], row["batch"]))
        row["speedup"] = reference / row["ms_per_token"] if reference and row.get("ms_per_token") else None


def markdown(rows: List[dict], opts: dict) -> str:
    """One table per batch size: ms/token (speedup over transformer_lm) per arch and context."""
    contexts = sorted({r["context"] for r in rows})
    lines = [f"Decoding at a fixed context: the cache holds C tokens, then {opts['steps']} single-token steps "
             f"are timed after {opts['warmup']} untimed ones; ms per step (one token per sequence), median of "
             f"{opts['repeats']} samples; (Nx) = `transformer_lm`'s ms/token over the row's, same run. Our models "
             f"reach C by prefill; `transformer_lm` by its own forward pass (see `reached by`).", ""]
    for batch in sorted({r["batch"] for r in rows}):
        lines += [f"Batch {batch}:", "", "| model | " + " | ".join(f"C = {c:,}" for c in contexts) + " | reached by |",
                  "|---|" + "---|" * (len(contexts) + 1)]
        names = sorted({r["name"] for r in rows if r["batch"] == batch}, key=lambda n: (n != "transformer_lm", n))
        for name in names:
            cells, reached = [], set()
            for c in contexts:
                row = next((r for r in rows if (r["name"], r["batch"], r["context"]) == (name, batch, c)), None)
                if row is None:
                    cells.append("-")
                elif row.get("ms_per_token") is None:
                    error = next(iter(row["errors"].values()), "")
                    cells.append("skipped (failed at a shorter C)" if error.startswith("skipped:")
                                 else "error: " + error[:60].replace("|", "/"))
                else:
                    speedup = f" ({row['speedup']:.2f}x)" if row.get("speedup") and row["kind"] != "baseline" else ""
                    cells.append(f"{row['ms_per_token']:.2f}{speedup}")
                    reached.add(row.get("reached_by", ""))
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {'; '.join(sorted(reached))} |")
        lines.append("")
    return "\n".join(lines)


def plot(rows: List[dict], path) -> Optional[object]:
    """ms/token against context, log-log, one panel per batch size (None without matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    batches = sorted({r["batch"] for r in rows})
    fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4.5), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        for name in sorted({r["name"] for r in rows}):
            points = sorted((r["context"], r["ms_per_token"]) for r in rows
                            if r["name"] == name and r["batch"] == batch and r.get("ms_per_token"))
            if points:
                ax.plot(*zip(*points), marker="o", label=name, linewidth=2.5 if name == "transformer_lm" else 1.2)
        ax.set(xscale="log", yscale="log", xlabel="context C (tokens in the cache)", ylabel="ms per decoding step",
               title=f"decoding at a fixed context, batch {batch}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write(rows: List[dict], opts: DecodeOptions, output_dir, stem: str, command: str, seconds: float) -> list:
    """``<stem>_decode.json``, ``.md`` and ``.png``."""
    import json
    from dataclasses import asdict
    from pathlib import Path

    from .runner import machine_facts

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    meta = {"command": command, "seconds": seconds, "options": asdict(opts),
            **{k: v for k, v in machine_facts(opts, 0.0, seconds).items() if k in ("date", "machine", "torch")}}
    json_path = output_dir / f"{stem}_decode.json"
    json_path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, sort_keys=True))
    md_path = output_dir / f"{stem}_decode.md"
    md_path.write_text(f"{meta['machine']}; `{command}` ({seconds / 60:.0f} min)\n\n{markdown(rows, meta['options'])}")
    png = plot(rows, output_dir / f"{stem}_decode.png")
    return [json_path, md_path] + ([png] if png else [])
