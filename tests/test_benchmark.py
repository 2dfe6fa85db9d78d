"""The benchmark's parts measure what they claim (memory of a known allocation, MACs of a known
product, a budget that interrupts), one broken or slow model gives error cells instead of a crash,
ratios are taken against the baseline of the same run, and the command line writes the JSON, the
markdown and the plots with a row for every registered LM architecture."""
import importlib.util
import json
import re
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

import harness
from delight_plugin.benchmark import measure, report
from delight_plugin.benchmark.runner import Benchmark, Options
from delight_plugin.benchmark.subjects import Measured, Subject, fairseq_subjects
from delight_plugin.presets import plugin_lm_archs, preset_flags

VOCAB = 50


class BagOfWordsLM(nn.Module):
    """Causal by construction (each position sees only its own token): enough to be measured."""

    def __init__(self, width: int = 16, hidden_layers: int = 1, delay: float = 0.0):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.hidden = nn.Sequential(*[nn.Linear(width, width) for _ in range(hidden_layers)])
        self.out = nn.Linear(width, VOCAB)
        self.delay = delay

    def forward(self, tokens):
        for _ in range(int(self.delay / 0.01) if self.training else 0):
            time.sleep(0.01)  # slow to train, interruptible between bytecodes
        return self.out(self.hidden(self.embed(tokens)))


def toy_subject(name, kind="ours", **kw):
    return Subject(name, kind, lambda length: Measured(BagOfWordsLM(**kw), VOCAB))


def broken(length):
    raise ValueError("--toy-flag=3 is invalid")


@pytest.fixture(scope="module")
def toy_result():
    """One toy benchmark run (about 25 s on 2 cores) shared by the tests that read it."""
    subjects = [toy_subject("baseline", "baseline"), toy_subject("deeper", hidden_layers=3),
                Subject("broken", "ours", broken), toy_subject("slow", delay=600.0)]
    # Budgets generous for a loaded 2-core machine, yet far below the slow model's 600 s steps.
    measure.count_macs(lambda: nn.Linear(2, 2)(torch.ones(2)))  # FlopCounterMode's first call is slow
    options = Options(size="tiny", lengths=[8, 16], repeats=2, vocab_size=VOCAB, time_budget=6.0,
                      generate_budget=1.0, min_sample_seconds=0.01)
    return Benchmark(subjects, options, log=lambda s: None).run()


def test_each_timed_sample_follows_an_untimed_step_and_warm_up_rounds_are_not_kept():
    """Samples time steady-state steps, as in training: each begins with one untimed step (with
    --malloc keep the heap then holds the step's memory). When one step fills a sample, every
    further round therefore costs two training steps; a warm-up round costs a sample's steps and
    leaves no sample behind."""
    def run(repeats, warmup_rounds):
        calls = []

        class Counted(Measured):
            def training_loss(self, tokens):
                calls.append(1)
                return super().training_loss(tokens)
        options = Options(size="tiny", lengths=[8], repeats=repeats, vocab_size=VOCAB, time_budget=6.0,
                          generate_budget=0.1, min_sample_seconds=0.0, warmup_rounds=warmup_rounds)
        subject = Subject("baseline", "baseline", lambda length: Counted(BagOfWordsLM(), VOCAB))
        row = Benchmark([subject], options, log=lambda s: None).run()["rows"][0]
        return len(calls), len(row["samples"]["train"]), len(row["samples"]["infer"])

    assert run(3, 0)[0] - run(1, 0)[0] == 4
    steps, train_samples, infer_samples = run(2, 1)
    assert (train_samples, infer_samples) == (2, 2)
    assert steps - run(2, 0)[0] == 2


def test_peak_memory_sees_a_known_allocation():
    cpu = torch.device("cpu")
    if not measure.cpu_peak_supported():
        pytest.skip("/proc/self/clear_refs is not writable here")
    mib = 2**20
    peak = measure.peak_memory_bytes(lambda: torch.ones(64 * mib // 4).sum(), cpu) / mib
    assert 60 <= peak <= 100, f"a 64 MiB tensor measured as {peak:.1f} MiB"
    idle = measure.peak_memory_bytes(lambda: None, cpu) / mib
    assert idle < 8, f"doing nothing measured as {idle:.1f} MiB"


def _page_faults_of_second_allocation(mib: int = 256) -> int:
    """Minor page faults of filling a fresh ``mib`` MiB malloc block after one of that size was
    freed (plain malloc, as torch's CPU allocator uses, without its alignment padding)."""
    import ctypes
    import resource

    libc = measure._LIBC
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size = mib * 2**20
    first = libc.malloc(size)
    ctypes.memset(first, 1, size)
    libc.free(first)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    second = libc.malloc(size)
    ctypes.memset(second, 1, size)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    libc.free(second)
    return faults


def test_freed_memory_kept_reuses_pages_and_restores_glibc():
    if not measure.can_keep_freed_memory():
        pytest.skip("the allocator is not glibc")
    with measure.freed_memory_kept(enabled=False) as active:
        assert not active
        outside = _page_faults_of_second_allocation()
    with measure.freed_memory_kept() as active:
        assert active
        inside = _page_faults_of_second_allocation()
    measure._LIBC.malloc_trim(0)  # hand back what the context kept, then glibc maps large blocks again
    after = _page_faults_of_second_allocation()
    # A 256 MiB block is 65,536 pages of 4 KiB (128 with transparent huge pages): glibc unmaps it on
    # free, so the next one faults in again, unless the memory is kept.
    assert outside >= 100 and after >= 100, (outside, after)
    assert inside * 10 < outside, f"{inside} page faults with freed memory kept, {outside} without"


def test_default_memory_limit_is_the_available_memory_less_headroom(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       25165824 kB\nMemFree:         1048576 kB\nMemAvailable:   10485760 kB\n")
    assert measure.default_memory_limit_gb(headroom_gb=2.0, meminfo=str(meminfo)) == pytest.approx(8.0)
    meminfo.write_text("MemAvailable:    2097152 kB\n")  # 2 GiB: never below 1 GiB
    assert measure.default_memory_limit_gb(headroom_gb=2.0, meminfo=str(meminfo)) == 1.0
    assert measure.default_memory_limit_gb(fallback_gb=3.0, meminfo=str(tmp_path / "missing")) == 3.0


def test_count_macs_of_a_known_product():
    layer = nn.Linear(32, 16)
    assert measure.count_macs(lambda: layer(torch.randn(1, 10, 32))) == 10 * 32 * 16
    # FLASH's group_attention accumulates in place; torch's counter alone would see 0 MACs here.
    out = torch.zeros(4, 8, 32)
    assert measure.count_macs(lambda: out.baddbmm_(torch.randn(4, 8, 16), torch.randn(4, 16, 32))) == 4 * 8 * 16 * 32


def test_time_limit_interrupts_a_long_run():
    start = time.perf_counter()
    with pytest.raises(measure.BudgetExceeded):
        with measure.time_limit(0.3):
            for _ in range(500):
                time.sleep(0.01)
    assert time.perf_counter() - start < 2.0


def test_failures_are_error_cells_and_ratios_use_the_baseline(toy_result):
    result = toy_result
    rows = {(r["name"], r["length"]): r for r in result["rows"]}
    assert set(rows) == {(n, l) for n in ("baseline", "deeper", "broken", "slow") for l in (8, 16)}
    assert rows["broken", 8]["errors"]["build"].startswith("ValueError: --toy-flag=3")
    assert rows["slow", 8]["errors"]["train"].startswith("timeout")
    assert rows["slow", 16]["errors"]["train"].startswith("skipped: timeout")
    assert rows["slow", 16]["infer_tokens_per_s"] > 0  # only training was slow
    for length in (8, 16):
        base, deeper = rows["baseline", length], rows["deeper", length]
        assert not base["errors"].keys() - {"generate"} and not deeper["errors"].keys() - {"generate"}, rows
        assert len(base["samples"]["train"]) == 2 and base["train_tokens_per_s"] > 0
        # 3 hidden 16x16 layers instead of 1: exactly 2 * 256 more MACs per token than 16*16 + 16*50
        assert deeper["macs_per_token"] - base["macs_per_token"] == 2 * 16 * 16
        assert deeper["ratio"]["macs_per_token"] == pytest.approx(deeper["macs_per_token"] / base["macs_per_token"])
        assert deeper["ratio"]["train_tokens_per_s"] == pytest.approx(
            deeper["train_tokens_per_s"] / base["train_tokens_per_s"])
        assert 0 < base["train_mfu"] < 1
        assert base["generate_tokens_per_s"] is None and base["errors"]["generate"].startswith("NotImplementedError")


def test_report_files(toy_result, tmp_path):
    result = toy_result
    paths = report.write(result, tmp_path)
    assert sorted(p.name for p in paths) == ["benchmark.json", "benchmark.md", "benchmark_memory.png",
                                                "benchmark_throughput.png"]
    assert json.loads((tmp_path / "benchmark.json").read_text())["rows"] == json.loads(json.dumps(result["rows"]))
    md = (tmp_path / "benchmark.md").read_text()
    assert "CPU allocator: default" in md  # Options' default; the script's --malloc keep is checked below
    for name in ("baseline", "deeper", "broken", "slow"):
        assert md.count(f"| {name} |") == 3  # one row per length, one in the ratio table
    # Two rounds: each ratio comes with the range of the two rounds' ratios, which holds the median.
    ratio_line = next(line for line in md.splitlines() if line.startswith("| deeper |") and "x (" in line)
    for cell in ratio_line.strip("|").split("|")[1:]:
        median, low, high = map(float, re.fullmatch(r" ([\d.]+)x \(([\d.]+)-([\d.]+)\) ", cell).groups())
        assert low <= median + 0.01 and median <= high + 0.01, ratio_line
    assert "error: ValueError: --toy-flag=3" in md and "error: timeout" in md
    for png in ("benchmark_memory.png", "benchmark_throughput.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_our_models_are_built_as_fairseq_train_builds_them():
    subject = next(s for s in fairseq_subjects(["plain_lm"], "tiny", 100, torch.device("cpu"), torch.float32)
                   if s.name == "plain_lm")
    measured = subject.build(64)
    reference, _ = harness.build("plain_lm", preset_flags("plain_lm", "tiny"), tokens_per_sample=64)
    assert measured.params() == sum(p.numel() for p in reference.parameters())
    assert measured.macs_per_token(64) == sum(r.macs_per_token for r in reference.stats(64))
    measured.module.eval()
    tokens = harness.random_tokens(1, 12)
    assert measured.generate(tokens, lambda step: step < 5) == 5


@pytest.mark.slow
def test_command_line_smoke(tmp_path):
    """The acceptance command (one length, one repeat, 1 s of decoding, no PyPI peers and one short decode context
    to save CI time): every registered LM arch has a row, and a decode row."""
    cmd = [sys.executable, str(harness.REPO / "scripts" / "benchmark.py"), "--size", "tiny", "--lengths", "256",
           "--repeats", "1", "--generate-budget", "1", "--peers", "none", "--output-dir", str(tmp_path),
           "--decode-contexts", "64", "--decode-batch-sizes", "1", "--decode-steps", "2", "--decode-repeats", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("benchmark.json", "benchmark.md", "benchmark_throughput.png", "benchmark_memory.png",
                 "benchmark_decode.json", "benchmark_decode.md", "benchmark_decode.png"):
        assert (tmp_path / name).stat().st_size > 0
    rows = json.loads((tmp_path / "benchmark.json").read_text())["rows"]
    names = {r["name"] for r in rows}
    assert set(plugin_lm_archs()) | {"transformer_lm"} <= names
    md = (tmp_path / "benchmark.md").read_text()
    assert "CPU allocator: glibc keeps freed memory while timing" in md  # --malloc keep, the default
    for arch in plugin_lm_archs():
        assert f"| {arch} |" in md
    measured = {(r["name"], r["length"]): r for r in rows}
    for arch in ["transformer_lm"] + plugin_lm_archs():
        row = measured[arch, 256]
        assert row["train_tokens_per_s"] and row["infer_tokens_per_s"] and row["macs_per_token"], row["errors"]
    decoded = json.loads((tmp_path / "benchmark_decode.json").read_text())["rows"]
    assert {r["name"] for r in decoded if r["ms_per_token"]} == set(plugin_lm_archs()) | {"transformer_lm"}


def test_adaptive_softmax_trains_on_its_cluster_logits():
    """fairseq's AdaptiveSoftmax.get_log_prob writes in place (inference only); the benchmark's
    training loss for the wiki103 arch uses the cluster logits and equals the full-softmax NLL."""
    arch = "delight_transformer_lm_wiki103"
    subject = next(s for s in fairseq_subjects([arch], "tiny", 10000, torch.device("cpu"), torch.float32)
                   if s.name == arch)
    model = subject.build(32)
    model.module.eval()  # no dropout, so both losses see the same network
    tokens = harness.random_tokens(2, 33, vocab=10000)
    loss = model.training_loss(tokens)
    loss.backward()
    with torch.no_grad():
        log_probs = model.log_probs(tokens[:, :-1])
    nll = torch.nn.functional.nll_loss(log_probs.reshape(-1, log_probs.size(-1)), tokens[:, 1:].reshape(-1))
    assert torch.isclose(loss, nll, rtol=1e-5), (loss.item(), nll.item())
    assert all(p.grad is not None for p in model.module.decoder.adaptive_softmax.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------------------------
# Decoding at a fixed context
# ------------------------------------------------------------------------------------------------

def test_the_baselines_cache_from_its_own_forward_is_its_decoding_state():
    """transformer_lm has no prefill: its k/v cache is filled from one forward pass (a hook on each
    attention's input). Up to ``baseline_forward`` tokens that is exactly its state: the steps after it give the
    logits of its full forward pass."""
    from delight_plugin.benchmark import decode

    model, _ = harness.build("transformer_lm", preset_flags("transformer_lm", "tiny"))
    model.eval()
    tokens = harness.random_tokens(1, 30)
    with torch.no_grad():
        full, _ = model.decoder(tokens)
        state = decode.reach_context(model, tokens, 24, decode.DecodeOptions(baseline_forward=64))
        steps = [model.decoder(tokens[:, : t + 1], incremental_state=state)[0][:, -1] for t in range(24, 30)]
    diff = (torch.stack(steps, 1) - full[:, 24:]).abs().max().item()
    assert diff <= 1e-4, f"steps after the hooked cache differ from the full forward by {diff:.3g}"


def test_decode_benchmark_reaches_each_context_and_writes_tables_and_a_plot(tmp_path):
    """A tiny run: each (arch, context, batch) gets ms/token, the baseline's speedup is 1 by definition
    and our models report reaching C by prefill; contexts past the baseline's forward are labelled."""
    from delight_plugin.benchmark import decode

    subjects = fairseq_subjects(["gau_lm_flash", "linformer_lm"], "tiny", VOCAB, torch.device("cpu"), torch.float32)
    opts = decode.DecodeOptions(contexts=[16, 40], batch_sizes=[1, 2], steps=3, warmup=1, repeats=1, piece=24,
                                baseline_forward=32, vocab_size=VOCAB)
    rows = decode.DecodeBenchmark(subjects, opts, log=lambda s: None).run()
    assert {(r["name"], r["context"], r["batch"]) for r in rows} == {
        (n, c, b) for n in ("transformer_lm", "gau_lm_flash", "linformer_lm") for c in (16, 40) for b in (1, 2)}
    assert all(r["ms_per_token"] > 0 and not r["errors"] for r in rows), [r["errors"] for r in rows]
    assert all(r["speedup"] == 1.0 for r in rows if r["kind"] == "baseline")
    reached = {(r["name"], r["context"]): r["reached_by"] for r in rows}
    assert reached[("gau_lm_flash", 40)] == "prefill"
    assert reached[("transformer_lm", 16)] == "own forward (hooked)"
    assert reached[("transformer_lm", 40)] == "own forward over 32, repeated to 40"
    paths = decode.write(rows, opts, tmp_path, "bench", "python scripts/benchmark.py --metrics decode", 1.0)
    text = (tmp_path / "bench_decode.md").read_text()
    assert "| gau_lm_flash |" in text and "C = 40" in text and "Batch 2:" in text, text
    assert json.loads((tmp_path / "bench_decode.json").read_text())["rows"][0]["ms_per_token"] > 0
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "bench_decode.png").stat().st_size > 0 and len(paths) == 3
