"""Agreement of two "segment everything" outputs of the same images (e.g. a fast mode against the exact
mode, or a student's generator against its teacher's): masks matched one to one, greedily by IoU.

The records are those of `SamAutomaticMaskGenerator.generate`, in any output mode.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from efficient_sam import amg

__all__ = ["record_masks", "mask_iou_matrix", "match_masks", "agreement"]


def record_masks(records: Sequence[dict[str, Any]]) -> torch.Tensor:
    """Generator records -> (N, H, W) bool masks; `segmentation` as a binary mask, an uncompressed RLE
    or a COCO RLE. Empty input -> (0, 0, 0)."""
    out = []
    for r in records:
        seg = r["segmentation"]
        if isinstance(seg, dict):
            if isinstance(seg["counts"], list):
                seg = amg.rle_to_mask(seg)
            else:
                seg = amg._pycocotools_mask().decode(seg).astype(bool)
        out.append(torch.as_tensor(np.asarray(seg, dtype=bool)))
    return torch.stack(out) if out else torch.zeros(0, 0, 0, dtype=torch.bool)


def mask_iou_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(Na, H, W) and (Nb, H, W) bool -> (Na, Nb) IoU (0 where both masks are empty)."""
    fa, fb = a.flatten(1).float(), b.flatten(1).float()
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


def match_masks(a: torch.Tensor, b: torch.Tensor, min_iou: float = 0.5) -> list[tuple[int, int, float]]:
    """One-to-one matches (i in a, j in b, IoU) with IoU >= `min_iou`, taken greedily from the highest
    IoU down (ties: the first pair in row-major order)."""
    if len(a) == 0 or len(b) == 0:
        return []
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"masks of different sizes: {tuple(a.shape[1:])} and {tuple(b.shape[1:])}")
    iou = mask_iou_matrix(a, b)
    pairs = []
    for _ in range(min(iou.shape)):
        k = int(iou.argmax())
        i, j = divmod(k, iou.shape[1])
        v = float(iou[i, j])
        if v < min_iou:
            break
        pairs.append((i, j, v))
        iou[i, :] = -1.0
        iou[:, j] = -1.0
    return pairs


def agreement(
    reference: Sequence[Sequence[dict]], other: Sequence[Sequence[dict]], min_iou: float = 0.5
) -> dict[str, Any]:
    """Per image, the reference's and the other output's masks matched (`match_masks`) ->
    `matched_miou` (mean IoU over all matched pairs), `recall` (share of reference masks matched),
    `precision` (share of the other's masks matched), `count_changed` (share of images whose mask count
    differs) and per-image rows."""
    if len(reference) != len(other):
        raise ValueError(f"{len(reference)} reference images but {len(other)} others")
    rows, ious = [], []
    for ref, oth in zip(reference, other):
        pairs = match_masks(record_masks(ref), record_masks(oth), min_iou)
        ious += [v for _, _, v in pairs]
        rows.append({"n_reference": len(ref), "n_other": len(oth), "matched": len(pairs),
                     "matched_miou": float(np.mean([v for _, _, v in pairs])) if pairs else float("nan")})
    n_ref = sum(r["n_reference"] for r in rows)
    n_oth = sum(r["n_other"] for r in rows)
    n_match = sum(r["matched"] for r in rows)
    return {
        "matched_miou": float(np.mean(ious)) if ious else float("nan"),
        "recall": n_match / n_ref if n_ref else float("nan"),
        "precision": n_match / n_oth if n_oth else float("nan"),
        "count_changed": float(np.mean([r["n_reference"] != r["n_other"] for r in rows])) if rows else float("nan"),
        "min_iou": min_iou,
        "n_images": len(rows),
        "per_image": rows,
    }
