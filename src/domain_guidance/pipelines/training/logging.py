"""Run logging on the main process: a tqdm bar (loss, it/s), ``log.jsonl`` and TensorBoard.

Every JSONL record has ``event`` ("start", "train", "checkpoint", "grid", "sync", "resume",
"nonfinite", "done", "note") and ``step``. On resume, records of steps after the checkpoint (work
that was lost with the killed process) are dropped and TensorBoard purges them too, so the log
reads as one uninterrupted run.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from ...io.atomic import atomic_path

LOG_NAME, TB_DIR = "log.jsonl", "tb"


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf
    if isinstance(v, Path):
        return str(v)
    return v


def read_log(run_dir: str | Path, event: str | None = None) -> list[dict[str, Any]]:
    """Records of ``<run>/log.jsonl`` (optionally only one event kind)."""
    path = Path(run_dir) / LOG_NAME
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            if event is None or rec.get("event") == event:
                out.append(rec)
    return out


class RunLogger:
    """Logs of one run; all methods are no-ops on non-main ranks (``enabled=False``)."""

    def __init__(self, run_dir: Path, *, enabled: bool, total_steps: int, start_step: int = 0,
                 progress: bool = True, tensorboard: bool = True, resumed: bool = False):
        self.enabled, self.run_dir = enabled, Path(run_dir)
        self.bar = self.writer = self.file = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._truncate_after(start_step if resumed else -1)  # a fresh start drops a failed attempt's log
        self.file = open(self.run_dir / LOG_NAME, "a")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.run_dir / TB_DIR), purge_step=start_step + 1)
            except ImportError:  # pragma: no cover - tensorboard is a dependency
                self.writer = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="it", dynamic_ncols=True)

    def _truncate_after(self, step: int) -> None:
        path = self.run_dir / LOG_NAME
        if not path.is_file():
            return
        keep = [r for r in read_log(self.run_dir) if int(r.get("step", 0)) <= step]
        with atomic_path(path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))

    def event(self, event: str, step: int, **fields: Any) -> None:
        if not self.enabled:
            return
        rec = {"event": event, "step": step, "time": round(time.time(), 3),
               **{k: _jsonable(v) for k, v in fields.items()}}
        self.file.write(json.dumps(rec) + "\n")
        self.file.flush()

    def note(self, step: int, message: str) -> None:
        """A human-readable remark: in the JSONL log and above the progress bar."""
        self.event("note", step, message=message)
        if self.enabled:
            (self.bar.write if self.bar is not None else print)(f"[dog train] {message}")

    def metrics(self, step: int, values: dict[str, float]) -> None:
        """Training scalars at ``step``: JSONL, TensorBoard (``train/<name>``) and the bar's postfix."""
        if not self.enabled:
            return
        self.event("train", step, **values)
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.writer.add_scalar(f"train/{k}", v, step)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{values.get('loss', float('nan')):.4f}",
                                 its=f"{values.get('it_per_s', 0.0):.2f}", refresh=False)

    def image(self, step: int, tag: str, image_hwc: Any) -> None:
        if self.enabled and self.writer is not None:
            self.writer.add_image(tag, image_hwc, step, dataformats="HWC")

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
        if self.file is not None:
            self.file.close()
