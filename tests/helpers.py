"""Test helpers: data paths, realistic random weights in any module tree, image loading, error metrics,
launching a trainer in subprocesses. Fixtures built on them are in conftest.py."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from efficient_sam.images import read_rgb as load_rgb  # noqa: F401 - the library's one image reader

# All test data lives in the repository (assets/README.md). Tests get these paths from the `asset_paths`
# fixture (conftest.py); the constants are for module-level parametrize lists only.
ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
PHOTOS = ASSETS / "photos"
GRABCUT = ASSETS / "grabcut"
FIXTURES = ASSETS / "fixtures"
KEYS = ASSETS / "reference" / "keys"
EFFICIENT_SAM_VITT = FIXTURES / "efficient_sam_vitt_compact"


def _load_make_weights():
    """The fixture's standalone weight script, imported from its path (it is not a package)."""
    path = EFFICIENT_SAM_VITT / "make_weights.py"
    spec = importlib.util.spec_from_file_location("efficient_sam_vitt_make_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# state_dict_from_spec(spec_path) -> the official-layout EfficientSAM-Ti state dict of the fixture
state_dict_from_spec = _load_make_weights().state_dict_from_spec


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

