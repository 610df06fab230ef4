"""Checkpoints of a run: the loop position (`TrainState`), atomic saves with rotation, resume, the final export.

Layout: `output_dir/checkpoints/step_<n>/` (accelerate's state + `train_state.json`), written to
`step_<n>.tmp` and renamed once complete; `output_dir/final/` likewise from `final.tmp`.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from torch import nn

from .config import RunConfig, TrainingError

CHECKPOINT_PREFIX = "step_"


@dataclass
class TrainState:
    """Loop position, saved as JSON next to accelerate's state in every checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of this process consumed in `epoch`
    samples: int = 0  # samples seen, all processes
    counts: dict[str, int] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__))

    @classmethod
    def load(cls, path: Path) -> "TrainState":
        return cls(**json.loads(path.read_text()))


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (half-written `.tmp` folders are ignored)."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def resolve_resume(cfg: RunConfig) -> Path | None:
    if cfg.resume in (None, "", "none"):
        return None
    if cfg.resume == "auto":
        ckpts = list_checkpoints(cfg.output_dir)
        return ckpts[-1] if ckpts else None
    path = Path(cfg.resume)
    if not (path / "train_state.json").is_file():
        raise TrainingError(f"resume={cfg.resume!r} is not a checkpoint folder (no train_state.json)")
    return path


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"{CHECKPOINT_PREFIX}{step}"


def rotate_checkpoints(output_dir: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` complete checkpoints."""
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(acc: Accelerator, output_dir: Path, state: TrainState, keep: int) -> None:
    """accelerate's state + `train_state.json` into `step_<n>.tmp`, renamed to `step_<n>` once complete
    (so a crash never leaves a half checkpoint), then rotation. Every process calls this."""
    final = checkpoint_dir(output_dir, state.step)
    tmp = final.with_name(final.name + ".tmp")
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    acc.save_state(str(tmp))
    if acc.is_main_process:
        state.save(tmp / "train_state.json")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)  # the rename commits the checkpoint
        rotate_checkpoints(output_dir, keep)
    acc.wait_for_everyone()


def export_final(acc: Accelerator, task: Any, model: nn.Module, output_dir: Path) -> Path:
    """`task.save_final` into `final.tmp`, renamed to `final/` (main process)."""
    final = output_dir / "final"
    if acc.is_main_process:
        tmp = output_dir / "final.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        task.save_final(acc.unwrap_model(model), tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    return final


