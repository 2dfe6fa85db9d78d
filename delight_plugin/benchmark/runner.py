"""The benchmark loop: for each length, build every subject, then run ``repeats`` rounds in
which every subject is measured once per metric (interleaved, so that a change in the machine's
load hits all subjects alike), under a wall-clock budget per measurement. A subject that fails,
runs out of memory or out of time gets an error cell and the run goes on; a subject that ran
out of memory or time at one length is not tried at longer ones."""
import gc
import math
import platform
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch

from . import measure
from .measure import BudgetExceeded
from .subjects import Measured, Subject

TIMED = ("train", "infer", "generate")  # tokens/s metrics, in the order each round runs them
# Training FLOPs per token ~ 3x the forward pass (backward computes two products per forward one).
TRAIN_FLOPS_PER_MAC = 2 * 3


@dataclass
class Options:
    size: str = "tiny"
    lengths: List[int] = field(default_factory=lambda: [512, 2048, 8192])
    batch_size: int = 1
    repeats: int = 3
    device: str = "cpu"
    dtype: str = "float32"
    vocab_size: int = 10000
    time_budget: float = 60.0  # seconds one training or inference sample (or its warm-up) may take
    generate_budget: float = 20.0  # seconds of token-by-token decoding per generation sample
    generate_repeats: int = 1  # decoding a whole sequence is long: fewer samples than ``repeats``
    memory_limit_gb: Optional[float] = None
    keep_freed_memory: bool = False  # CPU: glibc reuses freed pages while timing (measure.freed_memory_kept)
    min_sample_seconds: float = 0.1  # short steps are repeated until a sample lasts this long
    warmup_rounds: int = 1  # untimed rounds first: a run's first samples are slow (fresh pages, caches)
    seed: int = 1


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def is_out_of_memory(err: BaseException) -> bool:
    text = str(err).lower()
    return isinstance(err, MemoryError) or "out of memory" in text or "can't allocate" in text


def describe(err: BaseException) -> str:
    if isinstance(err, BudgetExceeded):
        return f"timeout ({err})"
    if is_out_of_memory(err):
        return "out of memory"
    return f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class Cell:
    """One subject at one length: its model, samples per metric, errors and time spent."""

    def __init__(self, subject: Subject, length: int):
        self.subject = subject
        self.length = length
        self.model: Optional[Measured] = None
        self.samples: Dict[str, List[float]] = {m: [] for m in TIMED}
        self.errors: Dict[str, str] = {}
        self.spent: Dict[str, float] = {m: 0.0 for m in TIMED}  # seconds, warm-up included
        self.iterations: Dict[str, int] = {}
        self.info: Dict[str, float] = {}
        self.generate_steps: Optional[int] = None

    def result(self) -> dict:
        row = {"name": self.subject.name, "kind": self.subject.kind, "length": self.length,
               "notes": self.subject.notes, "flags": self.subject.flags, **self.info,
               "samples": {m: s for m, s in self.samples.items() if s}, "errors": dict(self.errors)}
        for metric in TIMED:
            row[f"{metric}_tokens_per_s"] = measure.median(self.samples[metric])
        row["generate_steps"] = self.generate_steps
        row["seconds_spent"] = dict(self.spent)
        return row


class Benchmark:
    def __init__(self, subjects: List[Subject], options: Options, log: Callable[[str], None] = print):
        self.subjects = subjects
        self.options = options
        self.log = log
        self.device = torch.device(options.device)
        self.dtype = DTYPES[options.dtype]
        self.given_up: Dict[tuple, str] = {}  # (subject, metric) -> why longer lengths are skipped

    # ----- one measurement of one metric -------------------------------------------------------

    def _tokens(self, length: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.options.seed)
        vocab = self.options.vocab_size
        return torch.randint(4, vocab, (self.options.batch_size, length + 1), generator=g).to(self.device)

    def _train_step(self, model: Measured, tokens: torch.Tensor):
        def step():
            model.module.train()
            model.training_loss(tokens).backward()
            model.module.zero_grad(set_to_none=True)
        return step

    def _infer_step(self, model: Measured, tokens: torch.Tensor):
        def step():
            model.module.eval()
            with torch.no_grad():
                model.log_probs(tokens[:, :-1])
        return step

    def _sample(self, cell: Cell, metric: str, tokens: torch.Tensor) -> None:
        """Add one tokens/s sample for ``metric`` to ``cell`` (the first call also warms up)."""
        budget = self.options.generate_budget if metric == "generate" else self.options.time_budget
        start = time.perf_counter()
        try:
            with measure.freed_memory_kept(self._keeps_freed_memory()), \
                    measure.time_limit(budget + 5 if metric == "generate" else budget):
                if metric == "generate":
                    self._sample_generate(cell, tokens, budget)
                else:
                    self._sample_step(cell, metric, tokens)
        except Exception as err:  # an error cell, never a crash
            if cell.samples[metric]:
                cell.errors.setdefault(metric + "_note", f"stopped after {len(cell.samples[metric])} samples: "
                                                         f"{describe(err)}")
            else:
                cell.errors[metric] = describe(err)
            if isinstance(err, BudgetExceeded) or is_out_of_memory(err):
                self.given_up[(cell.subject.name, metric)] = f"skipped: {describe(err)} at length {cell.length}"
            cell.model.module.zero_grad(set_to_none=True)
            free_memory(self.device)
        finally:
            cell.spent[metric] += time.perf_counter() - start

    def _keeps_freed_memory(self) -> bool:
        return self.options.keep_freed_memory and self.device.type == "cpu" and measure.can_keep_freed_memory()

    def _sample_step(self, cell: Cell, metric: str, tokens: torch.Tensor) -> None:
        step = (self._train_step if metric == "train" else self._infer_step)(cell.model, tokens)
        if metric not in cell.iterations:  # warm-up, and enough iterations for a stable sample
            once = measure.seconds_per_call(step, self.device)
            cell.iterations[metric] = max(1, min(50, math.ceil(self.options.min_sample_seconds / max(once, 1e-6))))
            return self._sample_step(cell, metric, tokens)
        # One untimed step first: the timed ones then find this step's memory in the heap (with
        # --malloc keep) and its weights in cache, as every step after the first does in training.
        step()
        seconds = measure.seconds_per_call(step, self.device, cell.iterations[metric])
        cell.samples[metric].append(tokens.size(0) * (tokens.size(1) - 1) / seconds)

    def _sample_generate(self, cell: Cell, tokens: torch.Tensor, seconds: float) -> None:
        """Decode the whole sequence token by token through the model's cache, stopping early when
        ``seconds`` run out (the row then says how many steps were reached)."""
        cell.model.module.eval()
        if "generate" not in cell.iterations:
            cell.model.generate(tokens[:, :8], lambda step: True)  # warm-up (and raises if unsupported)
            cell.iterations["generate"] = 1
        deadline = time.perf_counter() + seconds
        measure.synchronize(self.device)
        start = time.perf_counter()
        steps = cell.model.generate(tokens[:, :-1], lambda step: step < 4 or time.perf_counter() < deadline)
        measure.synchronize(self.device)
        cell.samples["generate"].append(tokens.size(0) * steps / (time.perf_counter() - start))
        cell.generate_steps = steps if cell.generate_steps is None else min(cell.generate_steps, steps)

    # ----- static facts of a cell: size, compute, memory --------------------------------------

    def _describe_cell(self, cell: Cell, tokens: torch.Tensor) -> None:
        model = cell.model
        cell.info["params"] = model.params()
        cell.info["non_embedding_params"] = model.non_embedding_params()
        budget = self.options.time_budget
        for key, fn in (("macs_per_token", lambda: model.macs_per_token(cell.length)),
                        ("train_peak_mb", lambda: self._peak_mb(self._train_step(model, tokens))),
                        ("infer_peak_mb", lambda: self._peak_mb(self._infer_step(model, tokens)))):
            try:
                with measure.time_limit(budget):
                    cell.info[key] = fn()
            except Exception as err:
                cell.errors[key] = describe(err)
                model.module.zero_grad(set_to_none=True)
                free_memory(self.device)

    def _peak_mb(self, step) -> Optional[float]:
        peak = measure.peak_memory_bytes(step, self.device)
        return None if peak is None else peak / 2**20

    # ----- the loop ----------------------------------------------------------------------------

    def _build(self, subject: Subject, length: int, tokens: torch.Tensor) -> Cell:
        cell = Cell(subject, length)
        skipped = {m: self.given_up[(subject.name, m)] for m in TIMED if (subject.name, m) in self.given_up}
        if len(skipped) == len(TIMED) or (subject.name, "build") in self.given_up:
            cell.errors.update(skipped or {"build": self.given_up[(subject.name, "build")]})
            return cell
        cell.errors.update(skipped)
        try:
            with measure.time_limit(self.options.time_budget):
                torch.manual_seed(self.options.seed)
                cell.model = subject.build(length)
        except Exception as err:
            cell.errors["build"] = describe(err)
            if isinstance(err, BudgetExceeded) or is_out_of_memory(err):
                self.given_up[(subject.name, "build")] = f"skipped: {describe(err)} at length {length}"
            free_memory(self.device)
            return cell
        self._describe_cell(cell, tokens)
        return cell

    def run(self) -> dict:
        opts = self.options
        started = time.time()
        matmul = measure.matmul_flops_per_second(self.device, self.dtype)
        self.log(f"dense {opts.dtype} matmul on {opts.device}: {matmul / 1e9:,.1f} GFLOP/s")
        rows = []
        with measure.memory_limit(opts.memory_limit_gb if self.device.type == "cpu" else None):
            for length in opts.lengths:
                tokens = self._tokens(length)
                cells = []
                for subject in self.subjects:
                    self.log(f"[{length}] building {subject.name}")
                    cells.append(self._build(subject, length, tokens))
                live = [c for c in cells if c.model is not None]
                for round_index in range(-opts.warmup_rounds, opts.repeats):  # negative: warm-up, not kept
                    order = live[round_index % max(1, len(live)):] + live[:round_index % max(1, len(live))]
                    for cell in order:
                        for metric in TIMED:
                            if metric == "generate" and not 0 <= round_index < opts.generate_repeats:
                                continue
                            if metric not in cell.errors and not cell.errors.get(metric + "_note"):
                                self._sample(cell, metric, tokens)
                                if round_index < 0:
                                    cell.samples[metric].clear()
                    done = "warm-up round" if round_index < 0 else f"round {round_index + 1}/{opts.repeats}"
                    self.log(f"[{length}] {done} done ({time.time() - started:.0f}s elapsed)")
                for cell in cells:
                    row = cell.result()
                    rows.append(row)
                    self.log(summary_line(row))
                    cell.model = None
                free_memory(self.device)
        add_derived(rows, matmul)
        meta = machine_facts(opts, matmul, time.time() - started)
        meta["memory_limit_gb"] = opts.memory_limit_gb if self.device.type == "cpu" else None
        meta["allocator"] = ("glibc keeps freed memory while timing (--malloc keep)" if self._keeps_freed_memory()
                             else "default")
        return {"meta": meta, "rows": rows}


def summary_line(row: dict) -> str:
    def fmt(v):
        return "-" if v is None else f"{v:,.0f}"
    errors = "; ".join(f"{k}: {v}" for k, v in row["errors"].items())
    return (f"[{row['length']}] {row['name']:<24} train {fmt(row['train_tokens_per_s'])} tok/s, "
            f"infer {fmt(row['infer_tokens_per_s'])} tok/s, generate {fmt(row['generate_tokens_per_s'])} tok/s"
            + (f"  ({errors})" if errors else ""))


def add_derived(rows: List[dict], matmul_flops: float) -> None:
    """Training MFU, and each metric's ratio to the baseline at the same length (same run)."""
    baseline = {r["length"]: r for r in rows if r["kind"] == "baseline"}
    for row in rows:
        macs, tps = row.get("macs_per_token"), row.get("train_tokens_per_s")
        row["train_mfu"] = tps * TRAIN_FLOPS_PER_MAC * macs / matmul_flops if macs and tps else None
        base = baseline.get(row["length"], {})
        row["ratio"] = {}
        for key in ("train_tokens_per_s", "infer_tokens_per_s", "generate_tokens_per_s", "train_peak_mb",
                    "infer_peak_mb", "macs_per_token", "non_embedding_params"):
            if row.get(key) is not None and base.get(key):
                row["ratio"][key] = row[key] / base[key]


def machine_facts(opts: Options, matmul_flops: float, seconds: float) -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    facts = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.system()} {platform.machine()}, {cpu}, {torch.get_num_threads()} torch threads",
        "gpu": torch.cuda.get_device_name() if opts.device.startswith("cuda") else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "matmul_gflops": matmul_flops / 1e9,
        "seconds": seconds,
        "options": {k: v for k, v in vars(opts).items()},
    }
    try:
        import fairseq
        facts["fairseq"] = fairseq.__version__
    except Exception:
        pass
    return facts
