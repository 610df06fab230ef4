"""Quality of "segment everything" (the automatic mask generator):

- `mask_recall`: AR@100 / AR@1000 of the generator's masks against ground-truth masks, as MobileSAMv2
  reports it: pycocotools' `COCOeval` (segm) class-agnostic, the masks ranked by predicted IoU, recall
  averaged over IoU thresholds 0.50:0.05:0.95. Ignore bands are not applied (COCOeval has none).
- `agreement`: two outputs of the same images (a fast mode against the exact mode, a student's generator
  against its teacher's), masks matched one to one, greedily by IoU.
- `evaluate_everything`: both over a dataset's records (`esam-eval --protocol everything`).

The records are those of `SamAutomaticMaskGenerator.generate`, in any output mode.
"""

from __future__ import annotations

from typing import Any, Sequence

import sys
import time

import numpy as np
import torch

from efficient_sam import amg
from efficient_sam.datasets import DatasetError, mask_to_box

from .loop import _hw, _load

__all__ = ["record_masks", "mask_iou_matrix", "match_masks", "agreement", "mask_recall", "evaluate_everything"]

MAX_DETS = (100, 1000)


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


def _coco_rle(mask: np.ndarray) -> dict:
    rle = amg._pycocotools_mask().encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def mask_recall(
    records: Sequence[Sequence[dict]], gt_masks: Sequence[Sequence[np.ndarray]], max_dets: Sequence[int] = MAX_DETS
) -> dict[str, float]:
    """Generator records and (H, W) bool ground-truth masks per image -> {"AR@<m>": recall} for each m in
    `max_dets`: COCOeval segm, class-agnostic, masks scored by their predicted IoU."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(records) != len(gt_masks):
        raise ValueError(f"{len(records)} images of generator records but {len(gt_masks)} of ground-truth masks")
    images, anns, dets = [], [], []
    for i, (recs, gts) in enumerate(zip(records, gt_masks)):
        masks = record_masks(recs)
        h, w = gts[0].shape if len(gts) else masks.shape[1:]
        if len(masks) and tuple(masks.shape[1:]) != (h, w):
            raise ValueError(f"image {i}: generator masks are {tuple(masks.shape[1:])} (HxW), its ground truth {(h, w)}")
        images.append({"id": i, "height": int(h), "width": int(w)})
        for m in gts:
            x0, y0, x1, y1 = mask_to_box(m)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "segmentation": _coco_rle(m),
                         "area": float(m.sum()), "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0})
        for r, m in zip(recs, masks.numpy()):
            dets.append({"image_id": i, "category_id": 1, "segmentation": _coco_rle(m), "score": float(r["predicted_iou"])})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}
    gt.createIndex()
    if not dets:
        return {f"AR@{m}": 0.0 for m in max_dets}
    ev = COCOeval(gt, gt.loadRes(dets), "segm")
    ev.params.useCats = 0
    ev.params.maxDets = sorted(int(m) for m in max_dets)
    ev.evaluate()
    ev.accumulate()
    recall = ev.eval["recall"]  # (T, K=1, A, M); area index 0 = all
    out = {}
    for k, m in enumerate(ev.params.maxDets):
        r = recall[:, :, 0, k]
        out[f"AR@{m}"] = float(r[r > -1].mean()) if (r > -1).any() else float("nan")
    return out


def evaluate_everything(generator, records, max_dets: Sequence[int] = MAX_DETS, against=None,
                        progress: bool = False) -> dict[str, Any]:
    """Run `generator` (a `SamAutomaticMaskGenerator`) on every image of `records` -> mask recall
    (`mask_recall`) against the images' object masks, and with `against` (another generator) the
    `agreement` of ours to its output (`against` as the reference)."""
    t0 = time.perf_counter()
    ours, theirs, gts, skipped = [], [], [], []
    it = records
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(records, desc="esam-eval everything", unit="img", file=sys.stderr)
    for rec in it:
        image = _load(rec.image, f"image {rec.path}")
        masks = []
        for obj in rec.objects:
            where = obj.meta.get("mask_file") or f"the mask of object {obj.object_id} of {rec.path}"
            m = np.asarray(_load(obj.mask, where), bool)
            if m.shape != image.shape[:2]:
                raise DatasetError(f"{where}: mask is {_hw(m.shape)} (HxW), its image {rec.path} {_hw(image.shape[:2])}")
            if not m.any():
                skipped.append({"image_id": rec.image_id, "object_id": obj.object_id, "reason": "empty mask"})
                continue
            masks.append(m)
        gts.append(masks)
        ours.append(generator.generate(image))
        if against is not None:
            theirs.append(against.generate(image))
    out = {
        **mask_recall(ours, gts, max_dets),
        "n": sum(len(g) for g in gts), "n_images": len(gts),
        "masks_per_image": float(np.mean([len(r) for r in ours])) if ours else float("nan"),
        "recall_rule": "COCOeval segm, class-agnostic, masks ranked by predicted IoU, IoU 0.50:0.05:0.95, no ignore bands",
        "skipped": skipped, "seconds": time.perf_counter() - t0,
        "per_image": [{"image_id": r.image_id, "objects": len(g), "masks": len(o)} for r, g, o in zip(records, gts, ours)],
    }
    if against is not None:
        out["agreement"] = agreement(theirs, ours)
    return out
