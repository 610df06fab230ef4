"""Optimizer parameter groups and the per-step learning-rate schedule.

The lr is computed from the optimizer-step index and written into the param groups by the engine
(as MAE's `lr_sched`), not by a wrapped scheduler: accelerate's `AcceleratedScheduler` steps the
scheduler once per process per optimizer step, which ends a warm-up `num_processes` times early.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import nn

from .config import ConfigError, TrainConfig


def per_process_batch(cfg: TrainConfig, num_processes: int) -> int:
    """The micro-batch of one process: `train.batch_size`, or for `auto` the global batch split evenly
    over the processes (then there is no gradient accumulation)."""
    if cfg.batch_size != "auto":
        return cfg.batch_size
    if cfg.global_batch_size is None:
        raise ConfigError("train.batch_size=auto needs train.global_batch_size (the batch of all processes together)")
    if cfg.global_batch_size % num_processes:
        raise ConfigError(
            f"train.batch_size=auto: train.global_batch_size={cfg.global_batch_size} is not divisible by the "
            f"{num_processes} processes; choose a global batch that is a multiple of {num_processes}"
        )
    return cfg.global_batch_size // num_processes


def peak_lr(cfg: TrainConfig, global_batch_size: int) -> float:
    """`train.lr`, or `train.blr` x global batch / 256 (MAE's linear scaling rule)."""
    if cfg.lr is not None:
        return cfg.lr
    if cfg.blr is not None:
        return cfg.blr * global_batch_size / 256
    raise ValueError("set train.lr (absolute) or train.blr (scaled by global_batch_size / 256)")


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """lr for optimizer step `step` (0-based): linear warm-up from 0, then the configured decay."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if cfg.lr_schedule == "constant":
        return base_lr
    if cfg.lr_schedule == "step":
        passed = sum(step >= round(m * steps_per_epoch) for m in cfg.lr_milestones)
        return base_lr * cfg.lr_gamma**passed
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    progress = min(max(progress, 0.0), 1.0)
    if cfg.lr_schedule == "cosine":
        return cfg.min_lr + (base_lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.lr_schedule == "linear":
        return cfg.min_lr + (base_lr - cfg.min_lr) * (1.0 - progress)
    raise ValueError(f"unknown train.lr_schedule {cfg.lr_schedule!r}; expected cosine, linear, step or constant")


def param_groups(
    model: nn.Module,
    weight_decay: float,
    no_weight_decay: Iterable[str] = (),
    layer_id: Callable[[str], int] | None = None,
    num_layers: int = 0,
    layer_decay: float | None = None,
) -> list[dict]:
    """Trainable parameters split into decay / no-decay groups (and per-layer lr scales).

    No weight decay on norms and biases (every tensor with ndim <= 1) and on parameters whose name
    contains one of `no_weight_decay` (position embeddings, learned tokens). With `layer_decay`,
    parameter `n` gets lr x layer_decay ** (num_layers - layer_id(n)).
    """
    skip = tuple(no_weight_decay)
    groups: dict[tuple[bool, int], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = not (p.ndim <= 1 or any(s in name for s in skip))
        lid = layer_id(name) if (layer_decay is not None and layer_id is not None) else 0
        key = (decay, lid)
        if key not in groups:
            scale = layer_decay ** (num_layers - lid) if layer_decay is not None and layer_id is not None else 1.0
            groups[key] = {"params": [], "names": [], "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale}
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return [groups[k] for k in sorted(groups)]


def build_optimizer(groups: list[dict], cfg: TrainConfig) -> torch.optim.Optimizer:
    clean = [{k: v for k, v in g.items() if k != "names"} for g in groups]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(clean, lr=0.0, betas=cfg.betas, eps=cfg.eps)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(clean, lr=0.0, betas=cfg.betas, eps=cfg.eps)
    raise ValueError(f"unknown train.optimizer {cfg.optimizer!r}; expected adamw or adam")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
