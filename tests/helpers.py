"""Test helpers: realistic random weights in any module tree, image loading, error metrics."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"
PHOTOS = DATA / "photos"
GRABCUT = DATA / "grabcut"
FIXTURES = SHARED / "fixtures"


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every tensor of `model` random values with spatial structure, by module type.

    Linear/conv weights N(0, 1/fan_in) (so activations keep unit scale), norm weights 1 + 0.1 N,
    biases 0.1 N, embeddings 0.5 N, position tables 0.1 N, Fourier matrix N(0, 1). Works on the
    official `segment_anything` modules and ours alike, so identical seeds on identical key layouts
    are not needed: generate once, copy the state dict.
    """
    g = torch.Generator().manual_seed(seed)

    def rand(t: torch.Tensor) -> torch.Tensor:
        return torch.randn(t.shape, generator=g, dtype=torch.float32)

    done = set()
    for mod in model.modules():
        for name, p in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
            if id(p) in done or not p.is_floating_point():
                continue
            done.add(id(p))
            r = rand(p)
            if isinstance(mod, (nn.Linear, nn.Conv2d)) and name == "weight":
                fan_in = p[0].numel()
                v = r / math.sqrt(fan_in)
            elif isinstance(mod, nn.ConvTranspose2d) and name == "weight":
                v = r / math.sqrt(p.shape[0])  # stride == kernel: each output sees in_channels inputs
            elif name == "weight" and p.dim() == 1:  # LayerNorm, LayerNorm2d, GroupNorm
                v = 1 + 0.1 * r
            elif isinstance(mod, nn.Embedding):
                v = 0.5 * r
            elif "gaussian" in name:
                v = r
            elif name in ("pixel_mean", "pixel_std"):
                continue
            else:  # biases, pos_embed, rel_pos tables
                v = 0.1 * r
            p.copy_(v)
    return model


def load_rgb(path: str | Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def rel_err(a, b) -> float:
    """max |a - b| / max |b|: the relative error of our output `a` against the reference `b`."""
    a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    b = np.asarray(b.detach().cpu() if isinstance(b, torch.Tensor) else b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def launch(module: str, args: list[str], nproc: int, timeout: int = 300) -> subprocess.CompletedProcess:
    """`accelerate launch -m module args` with `nproc` CPU processes (gloo), as a user would run it."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", "0", "--num_processes", str(nproc)]
    if nproc > 1:
        cmd.append("--multi_gpu")
    return subprocess.run([*cmd, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def run_training(config_cls: type, task_cls: type, config: Path, overrides: list[str]):
    """Train in this process (as `python -m <trainer>.train --config config overrides` does) and
    return the task; accelerate's global state is reset around the run."""
    from accelerate.state import AcceleratorState

    from efficient_sam.training import load_config, train

    AcceleratorState._reset_state(True)
    cfg = load_config(config_cls, config, overrides)
    task = task_cls(cfg)
    try:
        train(cfg, task)
    finally:
        AcceleratorState._reset_state(True)
    return task
