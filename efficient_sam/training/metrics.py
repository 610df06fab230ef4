"""What a run logs: `metrics.jsonl` rows (+ the accelerate trackers) and the per-interval averages."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate import Accelerator

if TYPE_CHECKING:
    from .checkpoints import TrainState


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            return False
    return True


def flat_scalars(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested config -> flat {a/b: scalar} (TensorBoard's hparams accept only scalars and strings)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_scalars(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float, str, bool)):
            out[prefix + k] = v
        else:
            out[prefix + k] = str(v)
    return out


class MetricsWriter:
    """`metrics.jsonl` (main process, append, flushed per row) plus the accelerate trackers."""

    def __init__(self, accelerator: Accelerator, path: Path) -> None:
        self.acc = accelerator
        self.path = path

    def truncate_after(self, step: int) -> None:
        """Drop rows of an interrupted run that lie after the checkpoint we resume from."""
        if not (self.acc.is_main_process and self.path.is_file()):
            return
        rows = [line for line in self.path.read_text().splitlines() if line.strip()]
        keep = [line for line in rows if json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in keep))

    def log(self, row: dict[str, Any]) -> None:
        if self.acc.is_main_process:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        scalars = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
        self.acc.log(scalars, step=row["step"])


class LogInterval:
    """Loss sums, micro-batches, samples and time since the last logged row."""

    def __init__(self, samples: int) -> None:
        self._restart(samples, time.perf_counter())

    def _restart(self, samples: int, t: float) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.n_micro, self.samples, self.t = 0, samples, t

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        self.n_micro += 1
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + v.detach().float()

    def row(self, acc: Accelerator, state: TrainState, epoch: float, lr: float, grad_norm: Any) -> dict[str, Any]:
        """The metrics row of this interval (losses averaged over it and over processes); starts a new one."""
        means = {k: acc.reduce(v / self.n_micro, "mean").item() for k, v in self.sums.items()}
        now = time.perf_counter()
        row = {
            "step": state.step,
            "epoch": epoch,
            **means,
            "lr": lr,
            "samples_per_s": (state.samples - self.samples) / max(now - self.t, 1e-9),
            **{f"data/{k}": v for k, v in state.counts.items()},
        }
        if grad_norm is not None:
            row["grad_norm"] = float(grad_norm)
        self._restart(state.samples, now)
        return row


