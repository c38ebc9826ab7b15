"""Wall-clock time and peak memory of one call, shared by the benchmark scripts.

Peak memory is measured above what was resident before the call. CUDA:
torch.cuda.max_memory_allocated. CPU: every allocation and free the torch profiler
records (profile_memory=True), summed in time order, so a workspace that an operator
allocates and frees inside itself (im2col buffers of a CPU convolution) counts as it
does on CUDA. (Summing each operator's net ``self_cpu_memory_usage`` instead would miss
such workspaces and under-count convolution-heavy calls.)
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes on ``device``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def peak_bytes(fn: Callable[[], object], device: torch.device) -> tuple[int, float]:
    """(peak bytes allocated by one call of ``fn`` above the state before it, seconds)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base, time.perf_counter() - start
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    seconds = time.perf_counter() - start
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")  # one event per allocation (+) or free (-)
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak, seconds
