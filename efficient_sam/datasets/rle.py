"""COCO masks in numpy: run-length encoding (column-major runs, starting with a run of zeros) and
polygons. Standalone ports of pycocotools' `maskApi.c` (`rle_decode`, `rle_encode`,
`polygons_to_mask`) that give identical masks."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["rle_from_string", "rle_to_string", "rle_decode", "rle_encode", "polygons_to_mask", "segmentation_to_mask"]


def rle_from_string(s: str | bytes) -> list[int]:
    """Counts of a compressed COCO RLE string (LEB128-like, 5 bits per char, deltas from the 3rd on)."""
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_to_string(counts: Sequence[int]) -> str:
    """Compressed COCO RLE string of run counts (inverse of `rle_from_string`)."""
    out = []
    for i, c in enumerate(counts):
        x = int(c) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = (x != -1) if (ch & 0x10) else (x != 0)
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def _counts_to_mask(counts: Sequence[int], h: int, w: int) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, expected {h}x{w} = {h * w}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    return np.repeat(values, counts).reshape(w, h).T


def rle_decode(rle: dict) -> np.ndarray:
    """COCO RLE `{"size": [h, w], "counts": str | bytes | list[int]}` -> HxW bool mask."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = rle_from_string(counts)
    return _counts_to_mask(counts, h, w)


def _mask_counts(mask: np.ndarray) -> list[int]:
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)  # column-major
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return counts


def rle_encode(mask: np.ndarray) -> dict:
    """HxW mask -> compressed COCO RLE `{"size": [h, w], "counts": str}` (as pycocotools, str not bytes)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected an HxW mask, got shape {mask.shape}")
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle_to_string(_mask_counts(mask))}


def _polygon_counts(xy: Sequence[float], h: int, w: int) -> list[int]:
    """pycocotools `rleFrPoly`: rasterise one polygon exactly as the COCO API does."""
    scale = 5.0
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    k = len(xy)
    # C casts truncate toward zero.
    x = np.trunc(scale * xy[:, 0] + 0.5).astype(np.int64)
    y = np.trunc(scale * xy[:, 1] + 0.5).astype(np.int64)
    x, y = np.append(x, x[0]), np.append(y, y[0])
    us, vs = [], []
    for j in range(k):
        xs, xe, ys, ye = int(x[j]), int(x[j + 1]), int(y[j]), int(y[j + 1])
        dx, dy = abs(xe - xs), abs(ys - ye)
        flip = (dx >= dy and xs > xe) or (dx < dy and ys > ye)
        if flip:
            xs, xe, ys, ye = xe, xs, ye, ys
        if dx == 0 and dy == 0:  # repeated vertex: C divides 0/0, the point is never used below
            us.append(np.array([xs]))
            vs.append(np.array([ys]))
            continue
        if dx >= dy:
            s = (ye - ys) / dx
            d = np.arange(dx + 1)
            t = dx - d if flip else d
            us.append(t + xs)
            vs.append(np.trunc(ys + s * t + 0.5).astype(np.int64))
        else:
            s = (xe - xs) / dy
            d = np.arange(dy + 1)
            t = dy - d if flip else d
            vs.append(t + ys)
            us.append(np.trunc(xs + s * t + 0.5).astype(np.int64))
    u = np.concatenate(us) if us else np.zeros(0, np.int64)
    v = np.concatenate(vs) if vs else np.zeros(0, np.int64)
    # Points where the boundary crosses a column, downsampled to the pixel grid.
    j = np.flatnonzero(u[1:] != u[:-1]) + 1
    xd = np.where(u[j] < u[j - 1], u[j], u[j] - 1).astype(np.float64)
    xd = (xd + 0.5) / scale - 0.5
    keep = (np.floor(xd) == xd) & (xd >= 0) & (xd <= w - 1)
    yd = np.minimum(v[j], v[j - 1]).astype(np.float64)
    yd = (yd + 0.5) / scale - 0.5
    yd = np.ceil(np.clip(yd, 0, h))
    xi, yi = xd[keep].astype(np.int64), yd[keep].astype(np.int64)
    a = np.sort(np.append(xi * h + yi, h * w))
    a = np.diff(a, prepend=0).tolist()
    b = [a[0]]
    i = 1
    while i < len(a):
        if a[i] > 0:
            b.append(a[i])
            i += 1
        else:
            i += 1
            if i < len(a):
                b[-1] += a[i]
                i += 1
    return b


def polygons_to_mask(polygons: Sequence[Sequence[float]], h: int, w: int) -> np.ndarray:
    """COCO polygons `[[x0, y0, x1, y1, ...], ...]` -> HxW bool mask (union; pycocotools' rasteriser)."""
    mask = np.zeros((h, w), dtype=bool)
    for poly in polygons:
        if len(poly) < 6:  # pycocotools needs >= 3 points
            continue
        mask |= _counts_to_mask(_polygon_counts(poly, h, w), h, w)
    return mask


def segmentation_to_mask(segmentation: Any, h: int, w: int) -> np.ndarray:
    """A COCO `segmentation` (polygon list, uncompressed or compressed RLE) -> HxW bool mask."""
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, h, w)
    if isinstance(segmentation, dict):
        mask = rle_decode(segmentation)
        if mask.shape != (h, w):
            raise ValueError(f"RLE size {mask.shape} differs from the image size {(h, w)}")
        return mask
    raise TypeError(f"unknown COCO segmentation of type {type(segmentation).__name__}")
