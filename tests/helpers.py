"""Test helpers: data paths, realistic random weights in any module tree, image loading, error metrics,
launching a trainer in subprocesses. Fixtures built on them are in conftest.py."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.random_weights import randomize_  # noqa: F401 - realistic random weights, shared with benchmarks
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

