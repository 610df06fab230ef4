"""COCO / LVIS evaluation of promptable models (EfficientSAM Tab. 4 / 5, SAM §7.3, HQ-SAM).

Two modes over a COCO-format instances JSON (`load_coco_gt`), images read from an image folder by
`file_name`, one image at a time (tqdm bar), all prompts of an image in batched model calls:

- **GT prompts** (`detections=None`): every non-crowd instance prompted with its GT box (COCO `bbox`
  XYWH -> XYXY) or with one positive point (`prompt="point"`, `center_point`: the interior pixel
  farthest from the mask boundary). Reports mIoU / mean boundary IoU over all instances and mIoU by
  COCO size: small `area < 32²`, medium `32² <= area < 96²`, large `area >= 96²`, with the
  annotation's `area` field as COCOeval uses it (half-open here, so each instance is in one bucket;
  COCOeval's own ranges are closed at both ends). Crowd annotations and empty masks are skipped and counted.
- **Detections** (`detections=` a COCO results file `[{image_id, category_id, bbox XYWH, score}]`):
  each detection box -> our mask -> COCO RLE (pycocotools, Fortran-order uint8) with the detector's
  score and category -> `COCOeval(iouType="segm")`: AP, AP50, AP75, AP_S, AP_M, AP_L (fractions, as
  COCOeval's `stats`), and **Boundary AP** (`BoundaryCOCOeval`): the Boundary IoU recipe (Cheng et al.
  2021, used by HQ-SAM), where each detection / GT pair is scored with min(mask IoU, boundary IoU),
  the boundary IoU being the IoU of the masks' inner boundary bands (dilation ratio 0.02,
  `metrics.mask_to_boundary`). Results go to COCOeval without `bbox`, so a detection's area is its
  mask area (as detectron2 does for segm). All GT images count (those without detections as misses).

LVIS: the same path for its COCO-like JSON; annotations without `iscrowd` count as non-crowd, images
without `file_name` are found by `coco_url` (`<split>/<name>` or `<name>` under the image folder).
The numbers are COCOeval's, not the federated LVIS API's (which also reads `neg_category_ids` /
`not_exhaustive_category_ids`); write `coco_results=` and run the LVIS API for official LVIS AP.

`evaluate_coco_distributed` splits the images over accelerate's processes (`index::num_processes`),
gathers the per-instance rows (`gather_object`), sorts them by annotation id / detection index and
summarises them exactly as `evaluate_coco` does: the same numbers on any number of processes.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from efficient_sam.datasets import DatasetError, mask_to_box, read_rgb, segmentation_to_mask
from efficient_sam.datasets.coco import _coco_image_dir, _find_coco_json

from .loop import _hw, _load
from .metrics import boundary_width, mask_iou, mask_to_boundary, nanmean
from .models import PromptModel
from .prompts import use_multimask

try:
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
except ImportError:  # pragma: no cover - the module imports; evaluating raises (`_pycocotools`)
    mask_utils = COCO = None
    COCOeval = object

__all__ = [
    "COCO_PROMPTS", "SIZES", "AP_KEYS", "POINT_RULE", "CocoGT", "load_coco_gt", "load_detections", "center_point",
    "boundary_band", "encode_mask", "BoundaryCOCOeval", "coco_segm_ap", "evaluate_coco", "evaluate_coco_distributed",
]

COCO_PROMPTS = ("box", "point")
SIZES = {"small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, math.inf)}  # [lo, hi)
AP_KEYS = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L")  # COCOeval.stats[:6]
POINT_RULE = ("interior point farthest from the boundary: argmax of cv2.distanceTransform(DIST_L2, precise) of "
              "the mask padded by 1 px of zeros; ties: first in row-major order; (x, y) = (column, row)")


def _pycocotools():
    """An ImportError saying how to install pycocotools, unless it is installed."""
    if COCO is None:  # pragma: no cover - an optional dependency
        raise ImportError("COCO evaluation needs pycocotools: pip install 'efficient-sam-distill[amg]'")
    return mask_utils, COCO, COCOeval


# ------------------------------------------------------------------------------------------------
# Ground truth and detections


@dataclass
class CocoGT:
    """A COCO-format instances file: `coco` is pycocotools' `COCO` index of it (`iscrowd` filled in with
    0 where absent), `image_dir` the folder the `file_name`s are relative to."""

    json_path: Path
    coco: Any
    image_dir: Path
    _url_split: dict = field(default_factory=dict)  # image id -> split folder of its coco_url (LVIS)

    def image_ids(self) -> list:
        """Image ids in file order."""
        return [im["id"] for im in self.coco.dataset["images"]]

    def image_path(self, img_id) -> Path:
        name = self.coco.imgs[img_id]["file_name"]
        split = self._url_split.get(img_id)
        cands = [self.image_dir / split / name, self.image_dir / name] if split else [self.image_dir / name]
        for c in cands:
            if c.is_file():
                return c
        raise FileNotFoundError(f"image file {cands[0]} (image id {img_id} of {self.json_path}) does not exist")

    def read_image(self, img_id) -> np.ndarray:
        """HxWx3 uint8; a file whose size is not the JSON's height x width raises `DatasetError`."""
        path = self.image_path(img_id)
        image = _load(lambda: read_rgb(path), f"image {path}")
        im = self.coco.imgs[img_id]
        if image.shape[:2] != (im["height"], im["width"]):
            raise DatasetError(f"image {path} is {_hw(image.shape[:2])} (HxW) but {self.json_path} gives "
                               f"{im['height']}x{im['width']} for image id {img_id}: its masks do not fit it")
        return image

    def gt_mask(self, ann: dict) -> np.ndarray:
        """HxW bool mask of an annotation (polygons or RLE, via `datasets.rle`); an RLE of another size
        than its image raises `DatasetError` naming the file and both sizes."""
        im = self.coco.imgs[ann["image_id"]]
        h, w = im["height"], im["width"]
        seg = ann["segmentation"]
        if isinstance(seg, dict) and [int(v) for v in seg.get("size", (h, w))] != [h, w]:
            raise DatasetError(f"{self.json_path}: annotation {ann['id']} (image {im['file_name']}): segmentation is "
                               f"{_hw(seg['size'])} (HxW), its image {h}x{w}")
        return _load(lambda: segmentation_to_mask(seg, h, w),
                     f"the segmentation of annotation {ann['id']} in {self.json_path}")


def _read_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:  # json.JSONDecodeError is a ValueError
        raise DatasetError(f"{path} is not valid JSON: {e}") from None


def _check_entries(data: dict, json_path: Path) -> dict:
    """Validate images / annotations; LVIS: iscrowd 0 where absent, file names from `coco_url`."""
    url_split = {}
    for i, im in enumerate(data["images"]):
        if isinstance(im, dict) and "file_name" not in im and "coco_url" in im:
            *head, im["file_name"] = str(im["coco_url"]).split("/")
            url_split[im.get("id")] = head[-1] if head else ""
        missing = [k for k in ("id", "file_name", "height", "width") if not isinstance(im, dict) or k not in im]
        if missing:
            raise DatasetError(f"{json_path}: image {i} has no {' / '.join(repr(k) for k in missing)}")
        try:
            im["height"], im["width"] = int(im["height"]), int(im["width"])
        except (TypeError, ValueError):
            raise DatasetError(f"{json_path}: image {im['id']}: height / width {im['height']!r} / {im['width']!r} "
                               f"are not integers") from None
    ids = {im["id"] for im in data["images"]}
    for i, a in enumerate(data["annotations"]):
        missing = [k for k in ("id", "image_id", "segmentation") if not isinstance(a, dict) or k not in a]
        if missing:
            raise DatasetError(f"{json_path}: annotation {i} has no {' / '.join(repr(k) for k in missing)}")
        if a["image_id"] not in ids:
            raise DatasetError(f"{json_path}: annotation {a['id']} refers to image id {a['image_id']!r}, "
                               f"which is not in 'images'")
        a.setdefault("iscrowd", 0)
    return url_split


def load_coco_gt(annotations: str | os.PathLike, images: str | os.PathLike | None = None) -> CocoGT:
    """A COCO / LVIS instances JSON (file, or folder with `annotations/`) -> `CocoGT`; `images` is the
    image folder (default: found next to the JSON, as `datasets.read_coco` does)."""
    _pycocotools()
    json_path = _find_coco_json(Path(annotations))
    data = _read_json(json_path)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise DatasetError(f"{json_path} is not a COCO instances file (needs 'images' and 'annotations')")
    url_split = _check_entries(data, json_path)
    if not data["images"]:
        raise DatasetError(f"{json_path} lists no images")
    image_dir = _coco_image_dir(json_path, data["images"][0]["file_name"], images)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return CocoGT(json_path, coco, Path(image_dir), url_split)


def load_detections(detections: str | os.PathLike | Sequence[dict], gt: CocoGT, min_score: float = 0.0) -> list[dict]:
    """A COCO results file / list `[{image_id, category_id, bbox XYWH, score}]` -> the entries with
    score >= `min_score`, each with `det_index` (its position in the file). Empty files, malformed
    entries and image / category ids absent from `gt` raise `DatasetError`."""
    where = str(detections) if isinstance(detections, (str, os.PathLike)) else "detections"
    dets = _read_json(Path(detections)) if isinstance(detections, (str, os.PathLike)) else detections
    if not isinstance(dets, list):
        raise DatasetError(f"{where}: expected a COCO results list [{{image_id, category_id, bbox, score}}, ...]")
    if not dets:
        raise DatasetError(f"{where} holds no detections: nothing to segment")
    out = []
    for i, d in enumerate(dets):
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if not isinstance(d, dict) or k not in d]
        if missing:
            raise DatasetError(f"{where}: detection {i} has no {' / '.join(repr(k) for k in missing)}")
        box = d["bbox"]
        if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(np.isfinite(np.asarray(box, float)))):
            raise DatasetError(f"{where}: detection {i}: bbox {box!r} is not 4 finite numbers (x, y, w, h)")
        if not isinstance(d["score"], (int, float)) or not math.isfinite(d["score"]):
            raise DatasetError(f"{where}: detection {i}: score {d['score']!r} is not a finite number")
        if d["score"] >= min_score:
            out.append({**d, "det_index": i})
    if not out:
        raise DatasetError(f"{where}: none of its {len(dets)} detections has a score >= {min_score}")
    for key, known, what in (("image_id", gt.coco.imgs, "image"), ("category_id", gt.coco.cats, "category")):
        unknown = sorted({d[key] for d in dets} - set(known), key=str)
        if unknown:
            raise DatasetError(f"{where}: {len(unknown)} {what} id(s) not in {gt.json_path}, e.g. {unknown[:5]}")
    return out


# ------------------------------------------------------------------------------------------------
# Masks: the 1-point rule, boundary bands, RLE


def center_point(mask: np.ndarray) -> np.ndarray:
    """HxW bool -> (x, y) float32 of the interior pixel farthest from the boundary (`POINT_RULE`): the
    1 px zero border makes the image edge count as boundary; ties go to the first pixel in row-major order."""
    import cv2

    m = np.asarray(mask, bool)
    if not m.any():
        raise ValueError("cannot place a point in an empty mask")
    dist = cv2.distanceTransform(np.pad(m, 1).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    y, x = divmod(int(np.argmax(dist)), m.shape[1])
    return np.array([x, y], dtype=np.float32)


def boundary_band(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """HxW bool -> `metrics.mask_to_boundary(mask, dilation_ratio)`, computed on the mask's bounding box
    only (outside it everything is background, the band lies inside it; d is the full image's), so
    cheap for the small objects of COCO images."""
    m = np.asarray(mask, bool)
    box = mask_to_box(m)
    out = np.zeros_like(m)
    if box is None:
        return out
    d = boundary_width(*m.shape, dilation_ratio)
    x0, y0, x1, y1 = box
    crop = m[y0:y1, x0:x1]
    # The ratio that gives the crop the full image's d (round(d / diag * diag) == d).
    out[y0:y1, x0:x1] = mask_to_boundary(crop, d / math.sqrt(crop.shape[0] ** 2 + crop.shape[1] ** 2))
    return out


def encode_mask(mask: np.ndarray) -> dict:
    """HxW bool -> COCO compressed RLE {"size", "counts": str} (pycocotools on Fortran-order uint8)."""
    _pycocotools()
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


# ------------------------------------------------------------------------------------------------
# AP: COCOeval and the boundary variant


class BoundaryCOCOeval(COCOeval):
    """segm COCOeval whose IoU is min(mask IoU, boundary IoU) per pair (the Boundary-AP recipe of
    Cheng et al. 2021): `computeIoU` runs pycocotools' own segm IoU a second time on the boundary
    bands (each annotation's `boundary` RLE if present, else `boundary_band` of its mask)."""

    def __init__(self, cocoGt, cocoDt, dilation_ratio: float = 0.02):
        super().__init__(cocoGt, cocoDt, iouType="segm")
        self.dilation_ratio = dilation_ratio

    def _bands(self, groups) -> dict:
        """{(image, category): [annotation]} -> the same with each segmentation replaced by its band."""
        return {key: [{**a, "segmentation": a.get("boundary") or encode_mask(
            boundary_band(mask_utils.decode(a["segmentation"]).astype(bool), self.dilation_ratio))} for a in anns]
            for key, anns in groups.items()}

    def _prepare(self):
        super()._prepare()  # segmentations -> RLE, ignore flags
        self._gts_b, self._dts_b = self._bands(self._gts), self._bands(self._dts)

    def computeIoU(self, imgId, catId):
        ious = super().computeIoU(imgId, catId)
        if len(ious) == 0:
            return ious
        masks = (self._gts, self._dts)
        self._gts, self._dts = self._gts_b, self._dts_b  # same order: the same stable score sort
        try:
            bious = super().computeIoU(imgId, catId)
        finally:
            self._gts, self._dts = masks
        return np.minimum(ious, bious)


def _run_cocoeval(cls, gt_index, results: list[dict], img_ids, **kw) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt_index.loadRes([{k: v for k, v in r.items() if k != "bbox"} for r in results])
        ev = cls(gt_index, dt, **kw)
        if img_ids is not None:
            ev.params.imgIds = sorted(img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


def coco_segm_ap(gt: CocoGT, results: list[dict], img_ids=None, boundary: bool = True,
                 dilation_ratio: float = 0.02) -> dict[str, Any]:
    """COCO results `[{image_id, category_id, segmentation RLE, score}]` -> {AP, AP50, AP75, AP_S,
    AP_M, AP_L, stats (COCOeval's 12)} and with `boundary` the same keys prefixed `boundary_`; -1
    where no GT falls in a size range (COCOeval's convention). `img_ids`: the images evaluated
    (default all of `gt`)."""
    _pycocotools()
    if not results:
        raise ValueError("no results to evaluate")
    if not gt.coco.dataset.get("categories"):
        raise DatasetError(f"{gt.json_path} has no 'categories': AP needs them")
    index = COCO()  # a fresh index on copies: COCOeval rewrites the annotations it evaluates
    index.dataset = {**gt.coco.dataset, "annotations": [dict(a) for a in gt.coco.dataset["annotations"]]}
    with contextlib.redirect_stdout(io.StringIO()):
        index.createIndex()
    stats = _run_cocoeval(lambda g, d: COCOeval(g, d, iouType="segm"), index, [dict(r) for r in results], img_ids)
    out: dict[str, Any] = {**dict(zip(AP_KEYS, stats)), "stats": stats}
    if boundary:
        bstats = _run_cocoeval(BoundaryCOCOeval, index, [dict(r) for r in results], img_ids,
                               dilation_ratio=dilation_ratio)
        out.update({f"boundary_{k}": v for k, v in zip(AP_KEYS, bstats)}, boundary_stats=bstats)
    return out


# ------------------------------------------------------------------------------------------------
# Per-image model calls


def _size_of(area: float) -> str:
    return next(name for name, (lo, hi) in SIZES.items() if lo <= area < hi)


def _predict(model: PromptModel, image: np.ndarray, prompts: dict, multimask: bool, targets) -> tuple:
    """One batched model call -> masks (K, H, W) bool, scores (K,)."""
    kwargs = dict(prompts, multimask_output=multimask)
    k = len(prompts["boxes"] if "boxes" in prompts else prompts["points"])
    if getattr(model, "uses_targets", False):
        kwargs["targets"] = np.stack(targets)
    pred, scores = model.predict_batch(image, **kwargs)
    pred = np.asarray(pred)
    if pred.shape != (k, *image.shape[:2]):
        raise ValueError(f"predict_batch returned masks of shape {pred.shape}, expected {(k, *image.shape[:2])}")
    return pred.astype(bool, copy=False), np.asarray(scores, dtype=np.float64).reshape(k)


def _gt_prompt_rows(gt: CocoGT, model, img_id, prompt: str, max_prompts: int, ratio: float, skipped: list) -> list:
    """Every non-crowd instance of one image prompted with its GT box or centre point -> one row each."""
    anns = []
    for a in gt.coco.imgToAnns.get(img_id, []):
        if a.get("iscrowd", 0):
            skipped.append({"image_id": img_id, "ann_id": a["id"], "reason": "iscrowd"})
        else:
            anns.append(a)
    if not anns:
        return []
    image, rows = gt.read_image(img_id), []
    multimask = use_multimask(getattr(model, "family", ""), prompt)
    for start in range(0, len(anns), max_prompts):
        live, masks = [], []
        for a in anns[start : start + max_prompts]:
            m = gt.gt_mask(a)
            if not m.any():
                skipped.append({"image_id": img_id, "ann_id": a["id"], "reason": "empty mask"})
                continue
            live.append(a)
            masks.append(m)
        if not live:
            continue
        if prompt == "box":
            prompts = {"boxes": np.array([[x, y, x + w, y + h] for x, y, w, h in
                                          (a.get("bbox") or _xywh(m) for a, m in zip(live, masks))], np.float32)}
        else:
            pts = np.stack([center_point(m) for m in masks])[:, None]
            prompts = {"points": pts, "labels": np.ones(pts.shape[:2], dtype=np.int64)}
        pred, scores = _predict(model, image, prompts, multimask, masks)
        for k, (a, m) in enumerate(zip(live, masks)):
            area = float(a["area"]) if "area" in a else float(m.sum())
            rows.append({
                "ann_id": a["id"], "image_id": img_id, "category_id": a.get("category_id"), "area": area,
                "size": _size_of(area), "iou": mask_iou(pred[k], m),
                "biou": mask_iou(boundary_band(pred[k], ratio), boundary_band(m, ratio)), "score": float(scores[k]),
                **({"box": prompts["boxes"][k].tolist()} if prompt == "box"
                   else {"point": prompts["points"][k, 0].tolist()}),
            })
    return rows


def _xywh(mask: np.ndarray) -> list[int]:
    x0, y0, x1, y1 = mask_to_box(mask)
    return [x0, y0, x1 - x0, y1 - y0]


def _oracle_targets(gt: CocoGT, img_id, dets: list[dict], h: int, w: int) -> list[np.ndarray]:
    """For models with `uses_targets` (the GT oracle): per detection the mask of the same-category,
    non-crowd GT instance whose box overlaps it most (box IoU), or an empty mask when none does."""
    _pycocotools()
    anns = [a for a in gt.coco.imgToAnns.get(img_id, []) if not a.get("iscrowd", 0)]
    empty = np.zeros((h, w), bool)
    if not anns:
        return [empty] * len(dets)
    ious = np.asarray(mask_utils.iou([list(map(float, d["bbox"])) for d in dets],
                                     [list(map(float, a["bbox"])) for a in anns], [0] * len(anns))).reshape(len(dets), -1)
    same = np.array([[d["category_id"] == a["category_id"] for a in anns] for d in dets])
    ious = np.where(same, ious, -1.0)
    return [gt.gt_mask(anns[int(j)]) if ious[i, j] > 0 else empty for i, j in enumerate(ious.argmax(axis=1))]


def _detection_rows(gt: CocoGT, model, img_id, dets: list[dict], max_prompts: int, ratio: float,
                    boundary: bool) -> list:
    """The detections of one image -> one COCO result row each (RLE mask, detector score and category)."""
    image, rows = gt.read_image(img_id), []
    h, w = image.shape[:2]
    multimask = use_multimask(getattr(model, "family", ""), "box")
    for start in range(0, len(dets), max_prompts):
        chunk = dets[start : start + max_prompts]
        boxes = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in (d["bbox"] for d in chunk)], np.float32)
        targets = _oracle_targets(gt, img_id, chunk, h, w) if getattr(model, "uses_targets", False) else None
        pred, scores = _predict(model, image, {"boxes": boxes}, multimask, targets)
        for k, d in enumerate(chunk):
            row = {"det_index": d["det_index"], "image_id": img_id, "category_id": d["category_id"],
                   "score": float(d["score"]), "model_score": float(scores[k]), "segmentation": encode_mask(pred[k])}
            if boundary:
                row["boundary"] = encode_mask(boundary_band(pred[k], ratio))
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------
# The evaluation: plan (which images), collect (model calls), summarise (metrics)


@dataclass
class _Plan:
    gt: CocoGT
    prompt: str
    image_ids: list  # the images to run, in file order
    dets: dict | None  # image id -> its detections (detections mode), else None
    n_detections: int = 0


def _plan(annotations, images, detections, prompt: str, min_score: float, limit: int | None) -> _Plan:
    if prompt not in COCO_PROMPTS:
        raise ValueError(f"unknown COCO prompt {prompt!r}; expected one of {COCO_PROMPTS}")
    gt = annotations if isinstance(annotations, CocoGT) else load_coco_gt(annotations, images)
    dets = None
    if detections is None:
        ids = [i for i in gt.image_ids() if gt.coco.imgToAnns.get(i)]
    else:
        if prompt != "box":
            raise ValueError("detections mode prompts with the detection boxes (prompt='box')")
        dets = {}
        for d in load_detections(detections, gt, min_score):
            dets.setdefault(d["image_id"], []).append(d)
        ids = [i for i in gt.image_ids() if i in dets]
    if limit is not None:
        ids = ids[:limit]
    n = sum(len(dets[i]) for i in ids) if dets is not None else 0
    return _Plan(gt, prompt, ids, dets, n)


def _collect(plan: _Plan, model, image_ids: Sequence, max_prompts: int, ratio: float, boundary: bool,
             progress: bool) -> tuple[list, list]:
    """Run the model on `image_ids` (one image in memory at a time) -> (rows, skipped)."""
    it = image_ids
    if progress:
        from tqdm.auto import tqdm

        mode = "detections" if plan.dets is not None else f"gt {plan.prompt}"
        it = tqdm(image_ids, desc=f"coco {mode}", unit="img", file=sys.stderr)
    rows: list = []
    skipped: list = []
    for img_id in it:
        if plan.dets is None:
            rows += _gt_prompt_rows(plan.gt, model, img_id, plan.prompt, max_prompts, ratio, skipped)
        else:
            rows += _detection_rows(plan.gt, model, img_id, plan.dets[img_id], max_prompts, ratio, boundary)
    return rows, skipped


def _summarize_gt(plan: _Plan, rows: list, skipped: list, ratio: float, multimask: bool) -> dict:
    rows = sorted(rows, key=lambda r: r["ann_id"])
    skipped = sorted(skipped, key=lambda r: r["ann_id"])
    out = {"mode": "gt_prompts", "prompt": plan.prompt,
           "miou": nanmean(r["iou"] for r in rows), "mbiou": nanmean(r["biou"] for r in rows), "n": len(rows)}
    for size in SIZES:
        sub = [r["iou"] for r in rows if r["size"] == size]
        out[f"miou_{size}"], out[f"n_{size}"] = nanmean(sub), len(sub)
    out.update(n_images=len(plan.image_ids), n_crowd=sum(s["reason"] == "iscrowd" for s in skipped),
               n_skipped=len(skipped), size_ranges="small: area < 32^2, medium: 32^2 <= area < 96^2, "
                                                   "large: area >= 96^2 (the annotation's 'area')")
    if plan.prompt == "point":
        out["point_rule"] = POINT_RULE
    out.update(scored_mask="most confident of 3" if multimask else "single-mask output", dilation_ratio=ratio,
               annotations=str(plan.gt.json_path), skipped=skipped, per_item=rows)
    return out


def _summarize_detections(plan: _Plan, rows: list, ratio: float, boundary: bool, multimask: bool,
                          limited: bool, keep_results: bool) -> dict:
    rows = sorted(rows, key=lambda r: r["det_index"])
    results = [{k: r[k] for k in ("image_id", "category_id", "segmentation", "score")} for r in rows]
    for res, r in zip(results, rows):
        if boundary:
            res["boundary"] = r["boundary"]
    img_ids = plan.image_ids if limited else None
    out = {"mode": "detections", "prompt": "box",
           **coco_segm_ap(plan.gt, results, img_ids, boundary=boundary, dilation_ratio=ratio),
           "n_detections": len(rows), "n_images": len(plan.image_ids),
           "n_gt_images": len(img_ids) if limited else len(plan.gt.image_ids()),
           "score": "the detector's score", "scored_mask": "most confident of 3" if multimask else "single-mask output",
           "dilation_ratio": ratio, "annotations": str(plan.gt.json_path)}
    if keep_results:
        out["results"] = [{k: v for k, v in r.items() if k != "boundary"} for r in results]
    return out


def evaluate_coco(
    model: PromptModel,
    annotations: str | os.PathLike | CocoGT,
    images: str | os.PathLike | None = None,
    detections: str | os.PathLike | Sequence[dict] | None = None,
    prompt: str = "box",
    *,
    max_prompts: int = 64,
    dilation_ratio: float = 0.02,
    boundary_ap: bool = True,
    min_score: float = 0.0,
    limit: int | None = None,
    progress: bool = False,
    keep_results: bool = False,
    _shard: tuple[int, int] = (0, 1),
    _gather=None,
) -> dict[str, Any]:
    """GT-prompt mIoU (`detections=None`) or detections -> segm AP / Boundary AP (module docstring).

    `limit`: the first N images (with annotations / with detections); in detections mode COCOeval then
    scores those N images only. `keep_results`: add the COCO segm `results` (detections mode)."""
    t0 = time.perf_counter()
    plan = _plan(annotations, images, detections, prompt, min_score, limit)
    index, count = _shard
    rows, skipped = _collect(plan, model, plan.image_ids[index::count], max_prompts, dilation_ratio,
                             boundary_ap, progress)
    if _gather is not None:
        rows, skipped = _gather(rows), _gather(skipped)
    multimask = use_multimask(getattr(model, "family", ""), prompt)
    if plan.dets is None:
        out = _summarize_gt(plan, rows, skipped, dilation_ratio, multimask)
    else:
        out = _summarize_detections(plan, rows, dilation_ratio, boundary_ap, multimask, limit is not None,
                                    keep_results)
    out["num_processes"] = count
    out["seconds"] = time.perf_counter() - t0
    return out


def evaluate_coco_distributed(model: PromptModel, annotations, images=None, detections=None, prompt: str = "box",
                              accelerator=None, **kwargs) -> dict[str, Any]:
    """`evaluate_coco` over accelerate's processes: process i runs images i::n, the per-instance rows
    are gathered (`gather_object`) and sorted by annotation id / detection index, then every process
    computes the same summary (write it from the main process only). `accelerator`: an `Accelerator`
    or `PartialState` (default: `PartialState()`)."""
    from accelerate import PartialState
    from accelerate.utils import gather_object, parse_flag_from_env

    # PartialState reads no ACCELERATE_USE_CPU itself (AcceleratorState does): without cpu=True a CPU
    # launch would look like 1 process and score only its own share.
    state = accelerator if accelerator is not None else PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    if state.num_processes == 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RuntimeError(f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but accelerate sees 1 process: the results "
                           f"would cover this process's images only")
    kwargs["progress"] = kwargs.get("progress", False) and state.is_main_process
    return evaluate_coco(model, annotations, images, detections, prompt,
                         _shard=(state.process_index, state.num_processes), _gather=gather_object, **kwargs)
