"""Mask IoU and boundary IoU with an ignore mask.

Boundary IoU follows Cheng et al. 2021 as used by HQ-SAM (`mask_to_boundary`): with
`d = max(1, round(dilation_ratio * sqrt(H^2 + W^2)))`, the mask is padded by one pixel of 0 and
eroded `d` times with a 3x3 ones kernel (`cv2.erode`, whose own border never erodes), then cropped;
the boundary is the mask minus its erosion. `d` iterated 3x3 erosions are one erosion by a
(2d+1)x(2d+1) square, and the single pixel of zero padding makes every pixel within `d` of the image
edge erode too - exactly what a min-pool with zero padding does. We compute it as a max-pool of the
inverted mask padded with ones (no OpenCV needed).

Ignore pixels (`ignore=True`) are removed from both the intersection and the union, after the
boundaries have been taken on the full masks. An empty union gives NaN (as in HQ-SAM), which the
means skip.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["boundary_width", "mask_to_boundary", "mask_iou", "boundary_iou", "nanmean"]


def boundary_width(height: int, width: int, dilation_ratio: float = 0.02) -> int:
    """Erosion depth d in pixels: max(1, round(ratio * image diagonal)) (Python round, as the gist)."""
    return max(1, int(round(dilation_ratio * math.sqrt(height**2 + width**2))))


def _as_bool(mask) -> np.ndarray:
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected an HxW mask, got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def mask_to_boundary(mask, dilation_ratio: float = 0.02) -> np.ndarray:
    """HxW bool mask -> its inner boundary band of width d (bool HxW)."""
    m = _as_bool(mask)
    h, w = m.shape
    d = boundary_width(h, w, dilation_ratio)
    if not m.any():
        return np.zeros_like(m)
    inv = torch.from_numpy(~m).to(torch.float32)[None, None]
    # Outside the image counts as background (value 1 in the inverted mask) -> edge pixels erode.
    inv = F.pad(inv, (d, d, d, d), value=1.0)
    k = 2 * d + 1
    # A square max-pool is separable: rows then columns (much cheaper than one k x k pool).
    dil = F.max_pool2d(inv, kernel_size=(1, k), stride=1)
    dil = F.max_pool2d(dil, kernel_size=(k, 1), stride=1)
    eroded = dil[0, 0].numpy() < 0.5
    return m & ~eroded


def _ratio(inter: int, union: int) -> float:
    return float(inter) / float(union) if union > 0 else float("nan")


def mask_iou(pred, gt, ignore=None) -> float:
    """|P & G| / |P | G| over the pixels not ignored; NaN if the union is empty."""
    p, g = _as_bool(pred), _as_bool(gt)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in size")
    inter, union = p & g, p | g
    if ignore is not None:
        valid = ~_as_bool(ignore)
        inter, union = inter & valid, union & valid
    return _ratio(int(inter.sum()), int(union.sum()))


def boundary_iou(pred, gt, ignore=None, dilation_ratio: float = 0.02) -> float:
    """IoU of the boundary bands of prediction and ground truth (HQ-SAM / Cheng et al.)."""
    p, g = _as_bool(pred), _as_bool(gt)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in size")
    return mask_iou(mask_to_boundary(p, dilation_ratio), mask_to_boundary(g, dilation_ratio), ignore)


def nanmean(values) -> float:
    """Mean over the finite values (NaN when there are none)."""
    a = np.asarray(list(values), dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")
