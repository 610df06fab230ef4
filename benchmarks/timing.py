"""Timing and the machine: the one timer (`time_fn`) of every benchmark script, device sync, peak memory,
and the machine description that goes into each report."""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import statistics
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = [
    "cpu_model", "machine_info", "rss_bytes", "release_memory", "PeakMemory", "memory_kind", "sync", "time_fn",
    "step_rates", "matmul_tflops",
]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, Any]:
    info = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    try:
        import segment_anything  # noqa: F401

        from importlib.metadata import version

        info["segment_anything"] = version("segment-anything")
    except Exception:  # noqa: BLE001
        pass
    return info


# ----------------------------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------------------------


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    try:  # give freed heap back to the OS so the next RSS baseline is honest (glibc only)
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory over a block: CUDA `max_memory_allocated`, or on CPU the process RSS sampled
    every few milliseconds, both relative to `baseline` bytes (see `memory_kind`)."""

    def __init__(self, device: torch.device, baseline: int = 0, interval: float = 0.002) -> None:
        self.device, self.baseline, self.interval = device, baseline, interval
        self.peak = 0
        self._stop = threading.Event()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak = rss_bytes()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, rss_bytes())

    @property
    def mb(self) -> float:
        return max(self.peak - self.baseline, 0) / 2**20


def memory_kind(device: torch.device) -> str:
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated during the end-to-end runs (weights included)"
    return "CPU: peak process RSS during the end-to-end runs minus RSS before the model was built (sampled)"


# ----------------------------------------------------------------------------------------------
# The timer
# ----------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(
    fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int, *,
    inference: bool = True, cuda_events: bool = True,
) -> dict[str, Any]:
    """`warmup` untimed calls, then `repeats` timed calls of `fn` -> ms statistics: median, min, max,
    mean, n, `first_warmup_ms` (the first warm-up call: compilation) and `all`.

    `inference`: under `torch.inference_mode` (the model benchmarks); `False` for training steps.
    On CUDA each call is timed with CUDA events (`cuda_events`, the model benchmarks) or by the
    synchronised wall clock (`cuda_events=False`, the training-speed scripts)."""
    events = cuda_events and device.type == "cuda"
    first = None
    with torch.inference_mode() if inference else nullcontext():
        for i in range(warmup):
            t0 = time.perf_counter()
            fn()
            sync(device)
            if i == 0:
                first = (time.perf_counter() - t0) * 1e3
        times = []
        for _ in range(repeats):
            if events:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                sync(device)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(float(start.elapsed_time(end)))
            else:
                t0 = time.perf_counter()
                fn()
                sync(device)  # a no-op on CPU
                times.append((time.perf_counter() - t0) * 1e3)
    return {
        "median": statistics.median(times), "min": min(times), "max": max(times),
        "mean": statistics.fmean(times), "n": len(times), "first_warmup_ms": first, "all": times,
    }


def step_rates(step: Callable[[], Any], device: torch.device, warmup: int, repeats: int, batch: int) -> dict[str, Any]:
    """A training step over `batch` samples (`time_fn` with autograd on, synchronised wall clock) ->
    samples per second and the step's median / min / max / all in ms."""
    t = time_fn(step, device, warmup, repeats, inference=False, cuda_events=False)
    return {"per_s": batch * 1e3 / t["median"], "median_ms": t["median"], "min_ms": t["min"],
            "max_ms": t["max"], "all_ms": t["all"]}


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int = 2048, calls: int = 10) -> float:
    """A plain matmul rate, taken before and after the run: on a shared machine a drop flags
    interference (noisy neighbours) during the timings."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    med = time_fn(lambda: [a @ b for _ in range(calls)], device, 1, 3, inference=False, cuda_events=False)["median"]
    return 2 * n**3 * calls / (med / 1e3) / 1e12
