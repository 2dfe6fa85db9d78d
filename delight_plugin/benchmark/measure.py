"""Measurement primitives: a wall-clock budget that interrupts a run, timing, peak memory on
CPU and CUDA, MACs counted by torch's FlopCounterMode, and the machine's dense matmul rate."""
import ctypes
import resource
import signal
import statistics
import time
from contextlib import contextmanager
from typing import Callable, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..reporting.stats import _EXTRA_FLOP_RULES


class BudgetExceeded(Exception):
    """A measurement ran past its wall-clock budget."""


@contextmanager
def time_limit(seconds: Optional[float]):
    """Raise :class:`BudgetExceeded` once ``seconds`` have passed (main thread, Unix).

    The alarm fires between Python bytecodes, so a long C++ kernel finishes first; a model's
    forward pass is many kernels, which keeps the overshoot small.
    """
    if not seconds or seconds <= 0 or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise BudgetExceeded(f"exceeded the {seconds:.1f}s budget")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def memory_limit(gigabytes: Optional[float]):
    """Cap this process's address space growth so that an allocation past it raises a
    catchable ``RuntimeError`` instead of waking the kernel's OOM killer on a shared machine."""
    if not gigabytes:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _status_bytes("VmSize:") + int(gigabytes * 2**30)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Callable[[], None], device: torch.device, iterations: int = 1) -> float:
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / iterations


def median(values):
    return statistics.median(values) if values else None


# ---------------------------------------------------------------------------------------------
# Peak memory
# ---------------------------------------------------------------------------------------------

def default_memory_limit_gb(headroom_gb: float = 2.0, fallback_gb: float = 8.0, meminfo: str = "/proc/meminfo") -> float:
    """The address space a run may add by default: the memory the kernel reports available now
    (MemAvailable) less ``headroom_gb``, so the cap stops a run before the OOM killer would.

    A fixed cap below what the run needs is worse than none: once glibc's heap reaches it, every
    large allocation fails to extend the heap, and a run of every model at 8192 tokens trained
    2-3x slower from then on (measured: docs/benchmarks.md). ``fallback_gb`` where /proc/meminfo
    is missing."""
    try:
        with open(meminfo) as lines:
            available = next(int(line.split()[1]) * 1024 for line in lines if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return fallback_gb
    return max(1.0, available / 2**30 - headroom_gb)


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_LIBC = _libc()


# glibc mallopt parameters (malloc.h) and the values glibc settles at once a large block has been
# freed (its dynamic mmap threshold stops at 32 MiB and the trim threshold at twice that).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_SETTLED = {_M_MMAP_MAX: 65536, _M_MMAP_THRESHOLD: 32 * 2**20, _M_TRIM_THRESHOLD: 64 * 2**20}


def can_keep_freed_memory() -> bool:
    """Whether :func:`freed_memory_kept` does anything here (glibc's ``mallopt`` is there)."""
    return _LIBC is not None and hasattr(_LIBC, "mallopt")


@contextmanager
def freed_memory_kept(enabled: bool = True):
    """Inside, glibc keeps freed memory for reuse instead of handing it back to the kernel.

    glibc serves large allocations with their own mmap and unmaps them on free, so each
    training step faults all of its large activations in again, page by page (at 8192 tokens
    up to a third of a step, most for the models with the most activation memory). Heap-only
    allocation that is never trimmed lets a step reuse the previous step's pages, as PyTorch's
    caching allocator does on a GPU and jemalloc or tcmalloc do on CPU. On leaving, glibc gets
    the settings it reaches by itself after a large free, so peak-memory measurements outside
    see whole blocks mapped and unmapped. A no-op where glibc is not the allocator.
    """
    usable = enabled and can_keep_freed_memory()
    if usable:
        _LIBC.mallopt(_M_MMAP_MAX, 0)
        _LIBC.mallopt(_M_TRIM_THRESHOLD, -1)  # SIZE_MAX inside glibc: never trim on free
    try:
        yield usable
    finally:
        if usable:
            for parameter, value in _SETTLED.items():
                _LIBC.mallopt(parameter, value)


def cpu_peak_supported() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status_bytes("VmHWM:")
        return True
    except (OSError, KeyError):
        return False


def peak_memory_bytes(fn: Callable[[], None], device: torch.device) -> Optional[int]:
    """Peak memory that ``fn`` adds on top of what was live before it ran.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the resident-set high-water mark (VmHWM),
    reset through /proc/self/clear_refs, after ``malloc_trim`` hands freed heap pages back so
    that memory freed earlier is not silently reused (:func:`freed_memory_kept` is not in force here);
    torch's CPU allocator does not cache.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    if not cpu_peak_supported():
        return None
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = _status_bytes("VmRSS:")
    fn()
    return max(0, _status_bytes("VmHWM:") - before)


# ---------------------------------------------------------------------------------------------
# Compute
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def count_macs(fn: Callable[[], None]) -> float:
    """Multiply-accumulates of ``fn`` by the rules of ``reporting/stats.py`` (FLOPs / 2; matrix
    products, convolutions and attention count, element-wise work counts zero)."""
    with FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_RULES) as counter:
        fn()
    return counter.get_total_flops() / 2


def matmul_flops_per_second(device: torch.device, dtype: torch.dtype, size: int = 0,
                            repeats: int = 5) -> float:
    """This machine's dense matmul rate (the MFU denominator): best of ``repeats`` timed
    square products of ``size`` (default 2048 on CPU, 8192 on GPU)."""
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.mm(a, b)  # warm-up: thread pool, kernel selection
    best = min(seconds_per_call(lambda: torch.mm(a, b), device) for _ in range(repeats))
    return 2 * size**3 / best
