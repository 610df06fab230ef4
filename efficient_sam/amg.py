"""Utilities of the automatic mask generator: point grids, crop boxes, stability score, mask boxes,
run-length encoding and small-region clean-up.

Every function follows the semantics of the official `segment_anything.utils.amg` (same grids, same crop
boxes, same box convention, same uncompressed COCO RLE), written for whole batches: the tensor functions
work on the device of their input, and `masks_to_rle` moves data to the host once per call.
`pycocotools` (COCO RLE) and `opencv` (small-region removal) are optional and imported on first use.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from . import transforms


def build_point_grid(n_per_side: int) -> np.ndarray:
    """(n*n, 2) XY points in [0, 1]^2 at the cell centres of an n x n grid, row by row."""
    offset = 1.0 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs, ys = np.meshgrid(side, side)  # xs varies along a row, ys down the rows
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One grid per crop layer; layer i has int(n_per_side / scale_per_layer**i) points per side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """XYXY crop boxes and their layer indices: the whole image (layer 0), then for layer i >= 1 a
    2^i x 2^i grid of overlapping crops (column of crops by column: x outer, y inner)."""
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    boxes, layers = [[0, 0, im_w, im_h]], [0]
    for layer in range(1, n_layers + 1):
        n = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / n))
        crop_w = int(math.ceil((overlap * (n - 1) + im_w) / n))
        crop_h = int(math.ceil((overlap * (n - 1) + im_h) / n))
        x0s = [int((crop_w - overlap) * i) for i in range(n)]
        y0s = [int((crop_h - overlap) * i) for i in range(n)]
        for x0 in x0s:
            for y0 in y0s:
                boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
                layers.append(layer)
    return boxes, layers


def stability_score(logits: torch.Tensor, mask_threshold: float, offset: float) -> torch.Tensor:
    """(..., H, W) logits -> (...) IoU of the masks at threshold + offset and threshold - offset (the
    first is inside the second, so IoU = count ratio). NaN for masks empty at both thresholds."""
    inter = (logits > (mask_threshold + offset)).sum((-1, -2), dtype=torch.int32)
    union = (logits > (mask_threshold - offset)).sum((-1, -2), dtype=torch.int32)
    return inter / union


def low_res_image_region(low_res: torch.Tensor, size: tuple[int, int], cfg) -> torch.Tensor:
    """(..., L, L) low-res logits of an image of `size` (h, w) -> the part of them covering the image
    (SAM pads the resized image at the bottom / right; EfficientSAM stretches it over the whole input)."""
    if cfg.resize == "stretch":
        return low_res
    in_h, in_w = transforms.input_size(size, cfg)
    s, n = cfg.image_encoder.img_size, low_res.shape[-1]
    return low_res[..., : math.ceil(in_h * n / s), : math.ceil(in_w * n / s)]


def upscale_once(low_res: torch.Tensor, size: tuple[int, int], cfg) -> torch.Tensor:
    """(N, L, L) logits -> (N, h, w) at the image's `size` with one interpolation: the fast mode's stand-in
    for `transforms.postprocess_masks` (SAM: upsampling to the input frame, cropping, then resizing), the
    same geometry up to rounding of the scaled size."""
    if cfg.resize == "stretch":
        return transforms.postprocess_masks(low_res[None], size, cfg)[0]
    (h, w), s = size, cfg.image_encoder.img_size
    in_h, in_w = transforms.input_size(size, cfg)
    full = (max(h, round(h * s / in_h)), max(w, round(w * s / in_w)))  # the whole S x S input, at image scale
    out = torch.nn.functional.interpolate(low_res[None], full, mode="bilinear", align_corners=False)[0]
    return out[..., :h, :w]


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N, 4) int64 XYXY boxes with inclusive max corner; [0, 0, 0, 0] for empty masks."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros(0, 4, dtype=torch.int64, device=masks.device)
    rows = masks.any(dim=2)  # (N, H)
    cols = masks.any(dim=1)  # (N, W)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y1 = torch.where(rows, ar_h, -1).amax(1)
    y0 = torch.where(rows, ar_h, h).amin(1)
    x1 = torch.where(cols, ar_w, -1).amax(1)
    x0 = torch.where(cols, ar_w, w).amin(1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1)
    empty = ~rows.any(1)
    return boxes.masked_fill(empty[:, None], 0)


def box_near_crop_edge(
    boxes: torch.Tensor, crop_box: list[int], orig_box: list[int], atol: float = 20.0
) -> torch.Tensor:
    """(N, 4) crop-frame XYXY boxes -> (N,) bool: a side lies within `atol` px of an edge of the crop
    that is not also an edge of the image."""
    off = torch.tensor([crop_box[0], crop_box[1]] * 2, device=boxes.device)
    b = (boxes + off).float()
    crop = torch.tensor(crop_box, dtype=torch.float32, device=boxes.device)
    orig = torch.tensor(orig_box, dtype=torch.float32, device=boxes.device)
    near_crop = (b - crop).abs() <= atol
    near_image = (b - orig).abs() <= atol
    return (near_crop & ~near_image).any(dim=1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def uncrop_masks(masks: torch.Tensor, crop_box: list[int], orig_h: int, orig_w: int) -> torch.Tensor:
    """(N, h, w) crop-frame masks -> (N, orig_h, orig_w), zero outside the crop."""
    x0, y0, x1, y1 = crop_box
    if (x0, y0, x1, y1) == (0, 0, orig_w, orig_h):
        return masks
    return torch.nn.functional.pad(masks, (x0, orig_w - x1, y0, orig_h - y1), value=0)


def masks_to_rle(masks: torch.Tensor) -> list[dict[str, Any]]:
    """(N, H, W) bool -> uncompressed COCO RLEs `{"size": [H, W], "counts": [...]}`, column-major, the
    counts starting with a run of zeros (possibly empty). Run boundaries are found on the masks' device
    and moved to the host in one transfer."""
    n, h, w = masks.shape
    if n == 0:
        return []
    flat = masks.transpose(1, 2).reshape(n, h * w)
    change = (flat[:, 1:] != flat[:, :-1]).nonzero()  # (K, 2) rows sorted by mask, then position
    first = flat[:, 0]
    host = torch.cat([change[:, 0], change[:, 1] + 1, first.long()]).cpu().numpy()
    k = change.shape[0]
    which, pos, first = host[:k], host[k : 2 * k], host[2 * k :].astype(bool)
    splits = np.searchsorted(which, np.arange(1, n))
    out = []
    for i, p in enumerate(np.split(pos, splits)):
        bounds = np.concatenate([[0], p, [h * w]])
        runs = np.diff(bounds).tolist()
        out.append({"size": [h, w], "counts": ([0] + runs) if first[i] else runs})
    return out


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Uncompressed RLE -> (H, W) bool array (C order)."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    values = (np.arange(len(counts)) % 2).astype(bool)
    return np.repeat(values, counts).reshape(w, h).T


def area_from_rle(rle: dict[str, Any]) -> int:
    return int(sum(rle["counts"][1::2]))


def _pycocotools_mask():
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        raise ImportError(
            "output_mode='coco_rle' needs pycocotools, an optional dependency: pip install pycocotools"
        ) from None
    return mask_utils


def coco_encode_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """Uncompressed RLE -> compressed COCO RLE with `counts` as a str (JSON-serialisable)."""
    h, w = rle["size"]
    out = _pycocotools_mask().frPyObjects(rle, h, w)
    out["counts"] = out["counts"].decode("utf-8")
    return out


def _cv2():
    try:
        import cv2
    except ImportError:
        raise ImportError(
            "min_mask_region_area > 0 needs opencv, an optional dependency: pip install opencv-python-headless"
        ) from None
    return cv2


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """(H, W) bool mask -> (mask, changed). mode "holes": fill background components (8-connected)
    smaller than `area_thresh`; "islands": drop foreground components smaller than it, keeping the
    largest one if all are smaller."""
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    cv2 = _cv2()
    holes = mode == "holes"
    work = (mask != holes).astype(np.uint8)  # holes: the background is the foreground of `work`
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(work, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    small = np.flatnonzero(sizes < area_thresh) + 1
    if small.size == 0:
        return mask, False
    if holes:
        fill = np.concatenate([[0], small])  # the mask's pixels (label 0 of `work`) plus the small holes
    else:
        fill = np.setdiff1d(np.arange(1, n_labels), small)
        if fill.size == 0:
            fill = np.array([int(np.argmax(sizes)) + 1])
    return np.isin(labels, fill), True
