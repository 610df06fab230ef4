"""Prompt checks shared by `SamPredictor` and the torch-free `efficient_sam.onnx.OnnxSamPredictor`
(numpy only; `check_corner_points` takes torch tensors and numpy arrays alike)."""

from __future__ import annotations

import numpy as np

__all__ = ["numeric_array", "flag", "check_corner_points"]


def numeric_array(x, name: str, shape: tuple | None) -> np.ndarray:
    """A numeric (int or float) array of `shape` (None: any; None entries: any size)."""
    try:
        arr = np.asarray(x)
    except ValueError as e:  # ragged nested lists
        raise ValueError(f"{name} must be a rectangular array of numbers ({e})") from None
    if shape is not None and (
        arr.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, arr.shape))
    ):
        want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be numeric (int or float), got dtype {arr.dtype}")
    return arr


def flag(x, name: str) -> bool:
    """A bool option: True / False (or 1 / 0), anything else refused."""
    if isinstance(x, (bool, np.bool_)) or (isinstance(x, (int, np.integer)) and x in (0, 1)):
        return bool(x)
    raise TypeError(f"{name} must be True or False, got {x!r}")


def check_corner_points(coords, labels) -> None:
    """EfficientSAM box corners as points, coords (B, N, 2) and labels (B, N) (tensors or arrays): in each
    prompt the k-th label 2 (top-left) pairs with the k-th label 3 (bottom-right), and the pair must be a
    box that `boxes=` would accept."""
    if not (labels >= 2).any():  # one check (labels are already in -1..3) on the common path
        return
    is2, is3 = labels == 2, labels == 3
    if (is2.sum(1) != is3.sum(1)).any():
        raise ValueError(
            "point_labels: each box corner label 2 (top-left) needs its label 3 (bottom-right) in the same "
            "prompt, and vice versa; or give the box with box= / boxes="
        )
    tl, br = coords[is2], coords[is3]  # row-major: the k-th 2 and the k-th 3 of a prompt line up
    if (br < tl).any():
        raise ValueError(
            "point_coords: inverted box corners: label 2 is the top-left (x0, y0) and label 3 the bottom-right "
            "(x1, y1) corner, with x0 <= x1 and y0 <= y1"
        )
    if (br == tl).any():
        raise ValueError("point_coords: zero-area box corners: labels 2/3 need x0 < x1 and y0 < y1")
