"""Per-stage measurements of a dry run: wall time, peak resident memory, FLOPs counted, projected GPU time.

Peak RSS: on Linux the kernel's high-water mark (``VmHWM``) is reset at the start of each stage
(``/proc/self/clear_refs``, value 5), so each stage reports its own peak; where that is not possible
the process-wide peak since start is reported (``ru_maxrss``) and marked so. FLOPs:
``torch.utils.flop_counter.FlopCounterMode`` counts matrix multiplications, convolutions and attention
(forward and backward; 2 FLOP per multiply-add), not element-wise work, so it is a lower bound on what
the GPU executes. The projection divides the counted FLOPs by ``peak x utilisation`` of a stated GPU.
"""
from __future__ import annotations

import ctypes
import gc
import json
import resource
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

# Assumed GPU: an A100's dense TF32 tensor-core peak (the published recipe trains in fp32/TF32) at 40%
# utilisation, the assumption of docs/reproduce.md's GPU-hour estimates.
GPU_NAME = "A100 (TF32 dense peak 156 TFLOPS)"
GPU_PEAK_TFLOPS = 156.0
GPU_UTILISATION = 0.40


@dataclass
class GpuAssumption:
    """The GPU a projection assumes: its peak (TFLOPS) and the share of it that is reached."""

    name: str = GPU_NAME
    peak_tflops: float = GPU_PEAK_TFLOPS
    utilisation: float = GPU_UTILISATION

    def __post_init__(self) -> None:
        if not self.peak_tflops > 0 or not 0 < self.utilisation <= 1:
            raise ValueError(f"GPU assumption: expected peak_tflops > 0 and 0 < utilisation <= 1, got "
                             f"{self.peak_tflops}, {self.utilisation}")

    def seconds(self, flops: float) -> float:
        """Projected seconds for ``flops`` at ``peak x utilisation``."""
        return flops / (self.peak_tflops * 1e12 * self.utilisation)

    def describe(self) -> str:
        return f"{self.name} at {self.utilisation:.0%} utilisation ({self.peak_tflops * self.utilisation:.1f} TFLOPS)"


@dataclass
class StageRecord:
    """What one stage cost on this machine, and the GPU time its counted FLOPs project to."""

    stage: str
    seconds: float = 0.0
    peak_rss_gib: float = 0.0
    rss_before_gib: float = 0.0
    peak_scope: str = "stage"  # "stage" (high-water mark reset at its start) or "process" (since start)
    flops: float = 0.0
    gpu_seconds: float = 0.0
    full_run_scale: float | None = None  # published-run work / dry-run work of this stage (None: not scaled)
    full_run_gpu_hours: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trim() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc), so RSS peaks measure new memory."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def pin_mmap_threshold(nbytes: int = 1 << 20) -> None:
    """glibc: serve every allocation of ``nbytes`` or more by its own mapping, returned to the OS when freed.
    By default the threshold rises to 32 MB after the first large free, and the freed heap pages of DiT-XL's
    16-32 MB tensors then stay resident: RSS would report freed memory, which a GPU allocator reuses."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, int(nbytes))  # M_MMAP_THRESHOLD (also stops its dynamic rise)
    except (OSError, AttributeError):
        pass


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_gib() -> float:
    """Current resident set size in GiB (0 where /proc is missing)."""
    return (_status_kb("VmRSS") or 0) / 1024 ** 2


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS; False where that is not supported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


def peak_gib(scoped: bool) -> float:
    """Peak RSS in GiB: since the last ``reset_peak`` (``scoped``) or since the process started."""
    hwm = _status_kb("VmHWM") if scoped else None
    return (hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024 ** 2


@contextmanager
def measure(stage: str, gpu: GpuAssumption, records: list[StageRecord], count_flops: bool = True,
            full_run_scale: float | None = None, log: Path | None = None) -> Iterator[StageRecord]:
    """Time, peak RSS and (``count_flops``) FLOPs of the block; appends its ``StageRecord`` to ``records``
    (and one JSON line to ``log``, so that a stopped run keeps what it measured)."""
    from torch.utils.flop_counter import FlopCounterMode

    trim()
    rec = StageRecord(stage, rss_before_gib=round(rss_gib(), 3), full_run_scale=full_run_scale)
    scoped = reset_peak()
    rec.peak_scope = "stage" if scoped else "process"
    counter = FlopCounterMode(display=False) if count_flops else None
    t0 = time.perf_counter()
    try:
        if counter is not None:
            with counter:
                yield rec
        else:
            yield rec
    finally:
        rec.seconds = round(time.perf_counter() - t0, 2)
        rec.peak_rss_gib = round(peak_gib(scoped), 3)
        rec.flops = float(counter.get_total_flops()) if counter is not None else 0.0
        rec.gpu_seconds = gpu.seconds(rec.flops)
        if full_run_scale is not None:
            rec.full_run_gpu_hours = rec.gpu_seconds * full_run_scale / 3600
        records.append(rec)
        if log is not None:
            with open(log, "a") as f:
                f.write(json.dumps(rec.to_dict(), default=str) + "\n")
        trim()


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def stage_table(records: list[StageRecord], gpu: GpuAssumption) -> str:
    """Markdown: one row per stage, every row marked as a dry run with random weights."""
    lines = [f"Projected GPU time: counted FLOPs / ({gpu.describe()}); FLOPs count matmuls, convolutions and "
             "attention only. 'full run': this stage's FLOPs scaled to the published run's work (same network).", "",
             "| stage | what | wall s (CPU) | peak RSS GiB | GFLOP counted | projected GPU s | full run GPU h |",
             "|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r.stage} | dry run, random weights | {r.seconds:.1f} | {r.peak_rss_gib:.2f}"
                     f"{'' if r.peak_scope == 'stage' else ' (process)'} | {r.flops / 1e9:,.1f} | "
                     f"{r.gpu_seconds:.3f} | {_num(r.full_run_gpu_hours, '.2f')} |")
    return "\n".join(lines) + "\n"
