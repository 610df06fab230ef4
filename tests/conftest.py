"""Shared fixtures: the bundled test data (`assets/`), the EfficientSAM parity fixture, a fresh
accelerate state, in-process trainer runs and reading a run's metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import ASSETS, EFFICIENT_SAM_VITT, FIXTURES, GRABCUT, KEYS, PHOTOS, ROOT, load_rgb, state_dict_from_spec


@dataclass(frozen=True)
class Assets:
    """Where the test data is: everything inside the repository (assets/README.md)."""

    root: Path = ROOT                      # the repository root
    dir: Path = ASSETS                     # assets/
    photos: Path = PHOTOS                  # real photos of several sizes and modes
    grabcut: Path = GRABCUT                # 50 GrabCut images with masks, ignore bands and pairs.csv
    fixtures: Path = FIXTURES
    keys: Path = KEYS                      # key/shape listings of the official checkpoints
    efficient_sam_vitt: Path = EFFICIENT_SAM_VITT  # compact EfficientSAM ViT-Ti parity fixture


@pytest.fixture(scope="session")
def asset_paths() -> Assets:
    """The data paths, for tests (module-level parametrize lists use the constants of helpers.py).
    Named so that it is not confused with test_hub.py's own `assets` fixture (the offline Hub files)."""
    return Assets()


# ------------------------------------------------------------------------------------------------
# EfficientSAM ViT-Ti parity fixture: weights regenerated from weights_spec.json, official outputs


@pytest.fixture(scope="session")
def efficient_sam_vitt_sd(asset_paths) -> dict[str, torch.Tensor]:
    """The fixture's random weights as an official-layout EfficientSAM state dict (do not modify)."""
    return state_dict_from_spec(asset_paths.efficient_sam_vitt / "weights_spec.json")


@pytest.fixture(scope="session")
def efficient_sam_vitt_checkpoint(tmp_path_factory, efficient_sam_vitt_sd) -> Path:
    """Those weights as an official-format EfficientSAM file (`{"model": state_dict}`)."""
    path = tmp_path_factory.mktemp("efficient_sam_vitt") / "efficient_sam_vitt_random.pt"
    torch.save({"model": efficient_sam_vitt_sd}, path)
    return path


@pytest.fixture(scope="session")
def efficient_sam_vitt_io(asset_paths) -> dict[str, np.ndarray]:
    """`io.npz` of the fixture plus `image_<i>`, the fixture images (uint8 RGB) read from assets/."""
    with np.load(asset_paths.efficient_sam_vitt / "io.npz") as d:  # no pickle needed
        io = {k: d[k] for k in d.files}
    for i, name in enumerate(io["names"]):
        folder = asset_paths.grabcut / "images" if name.startswith("grabcut_") else asset_paths.photos
        io[f"image_{i}"] = load_rgb(folder / name)
    return io


# ------------------------------------------------------------------------------------------------
# Training


def _reset_accelerate_state() -> None:
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)


@pytest.fixture
def fresh_accelerate_state():
    """accelerate's process-global state reset before and after the test (for tests that build an
    `Accelerator` or call a trainer's `main` in this process)."""
    _reset_accelerate_state()
    yield
    _reset_accelerate_state()


@pytest.fixture(scope="session")
def run_training():
    """`run_training(config_cls, task_cls, config, overrides)`: train in this process (as
    `python -m <trainer>.train --config config overrides` does) and return the task; accelerate's
    global state is reset around the run."""
    from efficient_sam.training import load_config, train

    def run(config_cls: type, task_cls: type, config: Path, overrides: list[str]):
        _reset_accelerate_state()
        cfg = load_config(config_cls, config, overrides)
        task = task_cls(cfg)
        try:
            train(cfg, task)
        finally:
            _reset_accelerate_state()
        return task

    return run


@pytest.fixture(scope="session")
def read_metrics():
    """`read_metrics(run_dir)`: the rows of the run's `metrics.jsonl`, as dicts."""

    def read(out: Path) -> list[dict]:
        return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]

    return read
