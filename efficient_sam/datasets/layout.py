"""Which layout a dataset path holds, and its records whatever the layout."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .coco import read_coco
from .mask_folder import read_mask_folder
from .records import ImageRecord
from .sa1b import read_sa1b

__all__ = ["detect_layout", "open_dataset"]


def detect_layout(path: str | os.PathLike) -> str:
    """'masks', 'coco' or 'sa1b' for a dataset path."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"dataset path {p} does not exist")
    if p.is_file():
        if p.suffix == ".json":
            return "coco"
        if p.suffix == ".tar":
            return "sa1b"
        raise ValueError(f"cannot tell the layout of file {p} (expected a COCO .json or an SA-1B .tar)")
    if (p / "images").is_dir() and (p / "masks").is_dir():
        return "masks"
    if (p / "annotations").is_dir() and any((p / "annotations").glob("*.json")):
        return "coco"
    if next(p.rglob("sa_*.json"), None) is not None or next(p.rglob("*.tar"), None) is not None:
        return "sa1b"
    if any(p.glob("*.json")):
        return "coco"
    raise ValueError(
        f"cannot tell the layout of {p}: expected images/ + masks/ (mask folder), annotations/*.json (COCO) "
        f"or sa_<id>.jpg + sa_<id>.json / .tar shards (SA-1B)"
    )


def open_dataset(path: str | os.PathLike, layout: str = "auto", **kwargs: Any) -> list[ImageRecord]:
    """Records of a dataset in any supported layout ('auto' detects it)."""
    layout = detect_layout(path) if layout == "auto" else layout
    if layout == "masks":
        return read_mask_folder(path)
    if layout == "coco":
        return read_coco(path, **kwargs)
    if layout == "sa1b":
        return read_sa1b(path)
    raise ValueError(f"unknown layout {layout!r}; expected auto, masks, coco or sa1b")
