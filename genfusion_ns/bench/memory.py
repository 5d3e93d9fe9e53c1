"""Peak memory of one training run inside a long-lived process (the bench trains many cells in one process).

On CUDA the allocator's peak is reset before the run. On CPU the peak resident set size is the only honest figure;
Linux lets a process reset it (``/proc/self/clear_refs``), so each cell gets its own peak. Where that is impossible
the figure is the process's lifetime peak, and the record says so.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")


@dataclass
class PeakMemory:
    """Peak memory of a measured block, in MiB, and what was measured."""

    mib: float | None = None
    kind: str = "n/a"


def _read_vm_hwm_kib() -> int | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_rss_peak() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0); False where not possible."""
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class PeakMemoryMeter:
    """``with PeakMemoryMeter(device) as meter: ...`` then ``meter.result``."""

    def __init__(self, device: str) -> None:
        self.use_cuda = device == "cuda" and torch.cuda.is_available()
        self.result = PeakMemory()
        self._rss_reset = False

    def __enter__(self) -> PeakMemoryMeter:
        if self.use_cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self._rss_reset = _reset_rss_peak() and _read_vm_hwm_kib() is not None
        return self

    def __exit__(self, *exc) -> None:
        if self.use_cuda:
            torch.cuda.synchronize()
            self.result = PeakMemory(torch.cuda.max_memory_allocated() / 2**20, "CUDA allocator peak")
        elif self._rss_reset:
            self.result = PeakMemory(_read_vm_hwm_kib() / 1024, "peak RSS of the run")
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            scale = 1 / 2**20 if sys.platform == "darwin" else 1 / 1024  # bytes on macOS, KiB on Linux
            self.result = PeakMemory(peak * scale, "peak RSS of the process so far (could not reset)")
