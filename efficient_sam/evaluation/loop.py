"""The evaluation loop: every object of every image prompted (`prompts`), the model's masks scored
with mIoU and boundary IoU (`metrics`; dilation ratio 0.02, HQ-SAM's definition) per object with
ignore pixels excluded, averaged over objects. All objects of an image go through the model in one
batched call (`max_prompts` per call).

Objects whose mask is empty (an empty file, or a `pairs.csv` `object_id` that selects no pixel; the
reader warns about the latter) are skipped and counted (`skipped` rows with the reason, `n_skipped`);
a file that cannot be decoded, or a mask / ignore mask of another size than its image, raises
`DatasetError` naming the file and both sizes."""

from __future__ import annotations

import sys
import time
from typing import Any, Sequence

import numpy as np
import torch

from efficient_sam.datasets import DatasetError, ImageRecord

from .metrics import boundary_iou, mask_iou, nanmean
from .models import PromptModel
from .prompts import PROMPTS, make_prompts, object_rng, use_multimask

__all__ = ["evaluate", "evaluate_distributed"]


def _load(fn, what: str):
    """`fn()`, with a decoding error of the file turned into a `DatasetError` naming `what`."""
    try:
        return fn()
    except DatasetError:
        raise
    except (OSError, SyntaxError, EOFError, ValueError, TypeError, KeyError) as e:  # PIL / RLE decoding errors
        raise DatasetError(f"cannot read {what}: {type(e).__name__}: {e}") from e


def _hw(shape) -> str:
    return "x".join(str(v) for v in shape)


def evaluate(
    model: PromptModel,
    records: Sequence[ImageRecord],
    prompt: str = "box",
    seed: int = 0,
    dilation_ratio: float = 0.02,
    max_prompts: int = 64,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate `model` on `records` -> {"miou", "mbiou", "n", "per_item", ...}."""
    if prompt not in PROMPTS:
        raise ValueError(f"unknown prompt {prompt!r}; expected one of {PROMPTS}")
    multimask = use_multimask(getattr(model, "family", ""), prompt)
    per_item: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    t0 = time.perf_counter()
    it = records
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(records, desc=f"esam-eval {prompt}", unit="img", file=sys.stderr)
    for rec in it:
        image = _load(rec.image, f"image {rec.path}")
        h, w = image.shape[:2]
        for start in range(0, len(rec.objects), max_prompts):
            objs, masks, ignores = [], [], []
            for obj in rec.objects[start : start + max_prompts]:
                where = obj.meta.get("mask_file") or f"the mask of object {obj.object_id} of {rec.path}"
                m = _load(obj.mask, where)
                if m.shape != (h, w):
                    raise DatasetError(f"{where}: mask is {_hw(m.shape)} (HxW), its image {rec.path} {_hw((h, w))}")
                if not m.any():
                    oid = obj.meta.get("object_id")
                    skip = {"image_id": rec.image_id, "object_id": obj.object_id,
                            "reason": "empty mask" if oid is None else "object_id selects no pixels"}
                    if obj.meta.get("mask_file"):
                        skip["file"] = obj.meta["mask_file"]
                    skipped.append(skip)
                    continue
                ig_where = obj.meta.get("ignore_file") or f"the ignore mask of object {obj.object_id} of {rec.path}"
                ig = _load(obj.ignore, ig_where)
                if ig is not None and np.shape(ig) != (h, w):
                    raise DatasetError(
                        f"{ig_where}: ignore mask is {_hw(np.shape(ig))} (HxW), its image {rec.path} {_hw((h, w))}"
                    )
                objs.append(obj)
                masks.append(m)
                ignores.append(ig)
            if not objs:
                continue
            rngs = [object_rng(seed, rec.image_id, o.object_id) for o in objs]
            prompts = make_prompts(masks, ignores, prompt, rngs)
            kwargs = dict(prompts, multimask_output=multimask)
            if getattr(model, "uses_targets", False):
                kwargs["targets"] = np.stack(masks)
            pred, scores = model.predict_batch(image, **kwargs)
            pred = np.asarray(pred)
            if pred.shape != (len(objs), h, w):
                raise ValueError(f"predict_batch returned masks of shape {pred.shape}, expected {(len(objs), h, w)}")
            for k, (obj, m, ig) in enumerate(zip(objs, masks, ignores)):
                item = {
                    "image_id": rec.image_id,
                    "object_id": obj.object_id,
                    "iou": mask_iou(pred[k], m, ig),
                    "biou": boundary_iou(pred[k], m, ig, dilation_ratio),
                    "score": float(np.asarray(scores)[k]),
                    "area": int(m.sum()),
                    "ignore_px": int(ig.sum()) if ig is not None else 0,
                }
                if "boxes" in prompts:
                    item["box"] = [float(v) for v in prompts["boxes"][k]]
                else:
                    item["points"] = prompts["points"][k].tolist()
                per_item.append(item)
    ious = [r["iou"] for r in per_item]
    bious = [r["biou"] for r in per_item]
    return {
        "miou": nanmean(ious),
        "mbiou": nanmean(bious),
        "n": len(per_item),
        "n_images": len(records),
        "n_skipped": len(skipped),
        "n_biou_undefined": int(sum(1 for b in bious if not np.isfinite(b))),
        "prompt": prompt,
        "scored_mask": "most confident of 3" if multimask else "single-mask output",
        "seed": seed,
        "dilation_ratio": dilation_ratio,
        "seconds": time.perf_counter() - t0,
        "skipped": skipped,
        "per_item": per_item,
    }


def evaluate_distributed(
    model: PromptModel, records: Sequence[ImageRecord], prompt: str, seed: int, accelerator
) -> dict[str, float]:
    """`evaluate` with the images split over accelerate's processes -> {"miou", "mbiou"} over all
    objects (for the trainers' evaluation rows)."""
    mine = list(records)[accelerator.process_index :: accelerator.num_processes]
    items = evaluate(model, mine, prompt, seed=seed)["per_item"] if mine else []
    ious = [r["iou"] for r in items if np.isfinite(r["iou"])]
    bious = [r["biou"] for r in items if np.isfinite(r["biou"])]
    sums = torch.tensor([sum(ious), len(ious), sum(bious), len(bious)], device=accelerator.device, dtype=torch.float64)
    sums = accelerator.reduce(sums, "sum")
    return {"miou": (sums[0] / sums[1].clamp(min=1)).item(), "mbiou": (sums[2] / sums[3].clamp(min=1)).item()}
