"""The interactive-click protocol of RITM / f-BRS / SimpleClick: NoC@85/90/95, NoF and mIoU@k.

Ground truth per object: `gt` (HxW bool, the object) and `ignore` (HxW bool or None, e.g. GrabCut's
boundary band); IoU counts only the pixels not ignored (`metrics.mask_iou`).

The clicker (`next_click`): the first prediction is empty. FN = gt & ~pred & ~ignore and
FP = ~gt & pred & ~ignore are padded by one pixel of zeros, distance-transformed with OpenCV
(`cv2.distanceTransform`, DIST_L2, mask size 0 = exact), cropped back, and the pixels already clicked are
zeroed. If max(FN distance) > max(FP distance) the click is positive at the FN maximum, else negative
at the FP maximum (so with no error left at all it is a negative click at (0, 0), as RITM's clicker
does); among equal maxima the first pixel in row-major order wins. A click is the pixel centre given as
x = column, y = row (the prompt encoders add the half pixel themselves).

The loop (`click_object`): after each click the model predicts from all clicks so far; its mask is
sigmoid(logits) > 0.49, i.e. logits > log(0.49 / 0.51) ~ -0.04 (the probability rule of the protocol,
not SAM's logits > 0). It stops at IoU >= the highest threshold or after `max_clicks` clicks.
NoC@t = the 1-based index of the first click with IoU >= t, or `max_clicks` if none; NoF@t = how many
objects never reach t; mIoU@k (k = 1..max_clicks) is the mean over objects of the IoU after k clicks,
an object that stopped early carrying its last IoU forward (it would not be clicked again).

Model rules (`SamClickModel`), decided by `config.decoder_family`:
- SAM's decoder: click 1 takes the multimask output's mask of highest predicted IoU, later clicks the
  single-mask output; with `feed_logits` (default on when the model has a mask prompt: SAM's own
  interactive recipe) the previous click's chosen low-res logits (1, 4h, 4w) = (1, 256, 256) at 1024 px
  go in as `mask_input`.
- EfficientSAM's decoder: the most confident of the 3 masks at every click (its single-mask token is
  untrained), no mask prompt, at most `max_points` (6) points: beyond 6 clicks the LAST 6 go in.
  Negative clicks go in as label 0, which EfficientSAM encodes by its positional encoding alone.

Oracles (`CLICK_ORACLES`): `oracle:gt` predicts the ground truth (NoC = 1) and `oracle:empty` an empty
mask (NoC = max_clicks): they check the plumbing and the metric bounds.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from efficient_sam.datasets import DatasetError, ImageRecord

from .loop import _hw, _load
from .metrics import mask_iou, nanmean

__all__ = [
    "PROB_THRESHOLD", "LOGIT_THRESHOLD", "THRESHOLDS", "ClickModel", "SamClickModel", "GroundTruthClickOracle",
    "EmptyClickOracle", "CLICK_ORACLES", "as_click_model", "load_click_model", "next_click", "click_object",
    "noc", "summarize", "evaluate_clicks",
]

PROB_THRESHOLD = 0.49
LOGIT_THRESHOLD = math.log(PROB_THRESHOLD / (1 - PROB_THRESHOLD))  # sigmoid(l) > 0.49 <=> l > -0.0400
THRESHOLDS = (0.85, 0.90, 0.95)
MASK_RULE = f"sigmoid(logits) > {PROB_THRESHOLD} (logits > log(0.49/0.51) = {LOGIT_THRESHOLD:.4f})"
CARRY_RULE = "an object that reached the stop IoU before k clicks counts with its last IoU in mIoU@k"


# ------------------------------------------------------------------------------------------------
# The clicker


def _distance(mask: np.ndarray) -> np.ndarray:
    """HxW bool -> HxW float32 L2 distance to the nearest 0 pixel, the image border counting as 0."""
    try:
        import cv2
    except ImportError:
        raise ImportError("the click protocol needs OpenCV: pip install opencv-python-headless "
                          "(or the package's [amg] extra)") from None
    padded = np.pad(mask.astype(np.uint8), 1)  # one pixel of zeros
    return cv2.distanceTransform(padded, cv2.DIST_L2, 0)[1:-1, 1:-1]


def next_click(pred, gt, ignore=None, clicked=None) -> tuple[int, int, bool]:
    """The next click (x = column, y = row, positive) for HxW bool `pred` vs `gt` (module docstring).

    `ignore`: HxW bool pixels that are never errors; `clicked`: HxW bool pixels clicked before (their
    distance is zeroed so that a pixel is never clicked twice while another error pixel is as far)."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    valid = np.ones_like(gt) if ignore is None else ~np.asarray(ignore, bool)
    fn = _distance(gt & ~pred & valid)
    fp = _distance(~gt & pred & valid)
    if clicked is not None:
        fn[clicked] = 0
        fp[clicked] = 0
    positive = bool(fn.max() > fp.max())
    dist = fn if positive else fp
    row, col = divmod(int(np.argmax(dist)), dist.shape[1])  # argmax: the first maximum in row-major order
    return col, row, positive


# ------------------------------------------------------------------------------------------------
# Models


class ClickModel(Protocol):
    """What the click loop calls: `set_image(image)` once per image (HxWx3 uint8), then per click
    `predict(clicks (N, 2) XY float, labels (N,) 1/0, prev_logits)` -> (mask HxW bool, logits or None):
    `prev_logits` is what the previous call of this object returned (None at click 1); the model
    decides whether to use it. `rules` says how it turns clicks into a mask (for the results).
    Models with `uses_targets = True` (oracles) get the object's ground truth as `target=`."""

    family: str
    rules: dict

    def set_image(self, image: np.ndarray) -> None: ...

    def predict(self, clicks: np.ndarray, labels: np.ndarray, prev_logits=None, **kw) -> tuple[np.ndarray, Any]: ...


class SamClickModel:
    """A `Sam` (either decoder) behind `SamPredictor`: the image is encoded once, each click is one
    decoder call; the mask is chosen on the low-res logits, upsampled, thresholded at probability 0.49."""

    uses_targets = False

    def __init__(self, model, feed_logits: bool | None = None, hq_token_only: bool = False) -> None:
        from efficient_sam import SamPredictor

        cfg = model.config
        self.model, self.family = model, cfg.decoder_family
        has_mask = bool(cfg.prompt_encoder.mask_prompt)
        if feed_logits is None:
            feed_logits = has_mask and self.family == "sam"
        if feed_logits and not has_mask:
            raise ValueError("feed_logits needs a model with a mask prompt; this one (EfficientSAM decoder) has none")
        self.feed_logits = bool(feed_logits)
        self.max_points = cfg.prompt_encoder.max_points
        self.hq = dict(hq_token_only=hq_token_only) if getattr(model, "is_hq", False) else None
        self.predictor = SamPredictor(model)
        esam = self.family == "efficient_sam"
        self.rules = {
            "decoder_family": self.family,
            "first_click": "most confident of 3 masks" if esam else "multimask, highest predicted IoU",
            "later_clicks": "most confident of 3 masks" if esam else "single-mask output",
            "feed_logits": self.feed_logits,
            "max_points": self.max_points,
            "beyond_max_points": None if self.max_points is None else f"the last {self.max_points} clicks",
            "negative_clicks": "label 0 (positional encoding only)" if esam else "label 0",
        }
        if self.hq is not None:  # HQ-SAM's decoder returns one mask, multimask or not
            self.rules.update(first_click="multimask output (HQ: one mask)", hq_token_only=hq_token_only)

    def set_image(self, image: np.ndarray) -> None:
        self.predictor.set_image(image)

    @torch.inference_mode()
    def predict(self, clicks, labels, prev_logits=None, **kw):
        from efficient_sam import transforms

        p, cfg = self.predictor, self.model.config
        first = len(clicks) == 1
        if self.max_points is not None:
            clicks, labels = clicks[-self.max_points :], labels[-self.max_points :]
        size, dev = p.original_size, p.device
        coords = transforms.transform_coords(torch.as_tensor(np.asarray(clicks), dtype=torch.float32)[None].to(dev),
                                             size, cfg)
        labs = torch.as_tensor(np.asarray(labels), dtype=torch.long)[None].to(dev)
        multimask = first or self.family == "efficient_sam"
        mask_input = prev_logits[None] if self.feed_logits and prev_logits is not None else None
        hq = {} if self.hq is None else {**self.hq, "hq_features": p.hq_features}
        low, iou = self.model.decode(p.features, coords, labs, None, mask_input, multimask, **hq)
        chosen = low[0, int(iou[0].argmax())][None]  # (1, 4h, 4w) low-res logits
        up = transforms.postprocess_masks(chosen[None].float(), size, cfg)[0, 0]
        return (up > LOGIT_THRESHOLD).cpu().numpy(), chosen


class GroundTruthClickOracle:
    """Predicts the ground truth: NoC = 1 at every threshold."""

    family, uses_targets = "oracle", True
    rules = {"oracle": "predicts the ground truth"}

    def set_image(self, image) -> None:
        pass

    def predict(self, clicks, labels, prev_logits=None, target=None):
        if target is None:
            raise ValueError("the ground-truth oracle needs target=")
        return np.asarray(target, bool).copy(), None


class EmptyClickOracle:
    """Always predicts an empty mask: NoC = max_clicks, every object a failure."""

    family, uses_targets = "oracle", False
    rules = {"oracle": "predicts an empty mask"}

    def set_image(self, image) -> None:
        self._shape = np.asarray(image).shape[:2]

    def predict(self, clicks, labels, prev_logits=None):
        return np.zeros(self._shape, bool), None


CLICK_ORACLES = {"oracle:gt": GroundTruthClickOracle, "oracle:empty": EmptyClickOracle}


def as_click_model(model, feed_logits: bool | None = None):
    """A `ClickModel` from a click oracle / its name, a `Sam`, an `evaluation.PredictorModel`, or the
    single-prompt `GroundTruthOracle` (mapped to `oracle:gt`). `feed_logits` (None = the model's
    default) applies to SAM-family models; oracles and ready click models ignore it."""
    from .models import GroundTruthOracle, PredictorModel

    if isinstance(model, str):
        if model not in CLICK_ORACLES:
            raise ValueError(f"unknown click oracle {model!r}; expected one of {', '.join(CLICK_ORACLES)}")
        return CLICK_ORACLES[model]()
    if isinstance(model, GroundTruthOracle):
        return GroundTruthClickOracle()
    if isinstance(model, PredictorModel):
        return SamClickModel(model.model, feed_logits, hq_token_only=bool(model.hq and model.hq["hq_token_only"]))
    if hasattr(model, "config") and hasattr(model, "decode"):
        return SamClickModel(model, feed_logits)
    if hasattr(model, "predict") and hasattr(model, "set_image"):
        return model  # feed_logits is the model's own business (its `rules` say what it does)
    raise TypeError(f"cannot run the click protocol with a {type(model).__name__} (its oracles: "
                    f"{', '.join(CLICK_ORACLES)}, or a Sam / PredictorModel)")


def load_click_model(name: str, checkpoint: str | None, overrides: dict, device: str, dtype: str,
                     hq: bool = False, feed_logits: bool | None = None):
    """`load_model` for the click protocol: also knows `oracle:empty`; `oracle:box` has no click form."""
    from .models import load_model

    if name in CLICK_ORACLES:
        if checkpoint or overrides:
            raise SystemExit(f"esam-eval: {name} takes no --checkpoint / --set")
        return CLICK_ORACLES[name]()
    if name.startswith("oracle:"):
        raise SystemExit(f"esam-eval: --model {name}: the click protocol's oracles are {', '.join(CLICK_ORACLES)}")
    return as_click_model(load_model(name, checkpoint, overrides, device, dtype, hq), feed_logits)


# ------------------------------------------------------------------------------------------------
# The loop and the metrics


def click_object(model, gt, ignore=None, max_clicks: int = 20, stop_iou: float = 0.95) -> dict[str, list]:
    """Click one object (after `model.set_image`) -> {"ious": [IoU after click 1, 2, ...],
    "clicks": [[x, y, label], ...]}, stopping at IoU >= `stop_iou` or after `max_clicks` clicks."""
    gt = np.asarray(gt, bool)
    pred, logits = np.zeros_like(gt), None
    clicked = np.zeros_like(gt)
    pts, labels, ious = [], [], []
    extra = {"target": gt} if getattr(model, "uses_targets", False) else {}
    for _ in range(max_clicks):
        x, y, positive = next_click(pred, gt, ignore, clicked)
        clicked[y, x] = True
        pts.append((x, y))
        labels.append(int(positive))
        pred, logits = model.predict(np.asarray(pts, np.float32), np.asarray(labels, np.int64), logits, **extra)
        pred = np.asarray(pred, bool)
        if pred.shape != gt.shape:
            raise ValueError(f"the click model returned a {_hw(pred.shape)} mask for a {_hw(gt.shape)} object")
        ious.append(mask_iou(pred, gt, ignore))
        if ious[-1] >= stop_iou:
            break
    return {"ious": ious, "clicks": [[x, y, lab] for (x, y), lab in zip(pts, labels)]}


def noc(ious: Sequence[float], threshold: float, max_clicks: int) -> int:
    """1-based index of the first IoU >= threshold, or `max_clicks` if there is none."""
    hit = np.flatnonzero(np.asarray(ious, np.float64) >= threshold)
    return int(hit[0]) + 1 if hit.size else max_clicks


def _key(t: float) -> str:
    return f"{t * 100:g}"  # 0.85 -> "85"


def summarize(per_object_ious: Sequence[Sequence[float]], thresholds=THRESHOLDS, max_clicks: int = 20) -> dict:
    """IoU lists per object -> {"noc": {"85": mean NoC, ...}, "nof": {"85": count, ...},
    "miou_at_clicks": [mIoU@1, ..., mIoU@max_clicks]} (short lists carry their last IoU forward)."""
    out: dict[str, Any] = {"noc": {}, "nof": {}}
    for t in thresholds:
        nocs = [noc(ious, t, max_clicks) for ious in per_object_ious]
        reached = [bool(np.any(np.asarray(ious) >= t)) for ious in per_object_ious]
        out["noc"][_key(t)] = float(np.mean(nocs)) if nocs else float("nan")
        out["nof"][_key(t)] = int(len(reached) - sum(reached))
    padded = [list(ious) + [ious[-1]] * (max_clicks - len(ious)) for ious in per_object_ious if len(ious)]
    arr = np.asarray(padded, np.float64).reshape(len(padded), max_clicks)
    out["miou_at_clicks"] = [nanmean(arr[:, k]) for k in range(max_clicks)]
    return out


def _objects(rec: ImageRecord, hw: tuple[int, int], skipped: list):
    """(object, gt, ignore) of an image with the sizes checked; empty / fully ignored objects skipped."""
    for obj in rec.objects:
        where = obj.meta.get("mask_file") or f"the mask of object {obj.object_id} of {rec.path}"
        gt = np.asarray(_load(obj.mask, where), bool)
        if gt.shape != hw:
            raise DatasetError(f"{where}: mask is {_hw(gt.shape)} (HxW), its image {rec.path} {_hw(hw)}")
        ig_where = obj.meta.get("ignore_file") or f"the ignore mask of object {obj.object_id} of {rec.path}"
        ig = _load(obj.ignore, ig_where)
        if ig is not None:
            ig = np.asarray(ig, bool)
            if ig.shape != hw:
                raise DatasetError(f"{ig_where}: ignore mask is {_hw(ig.shape)} (HxW), its image {rec.path} {_hw(hw)}")
        if not (gt if ig is None else gt & ~ig).any():
            reason = "empty mask" if not gt.any() else "mask fully ignored"
            skipped.append({"image_id": rec.image_id, "object_id": obj.object_id, "reason": reason})
            continue
        yield obj, gt, ig


def evaluate_clicks(model, records: Sequence[ImageRecord], max_clicks: int = 20, thresholds=THRESHOLDS,
                    feed_logits: bool | None = None, progress: bool = False) -> dict[str, Any]:
    """Run the protocol on every object of `records`; `model`: anything `as_click_model` takes. Returns
    noc / nof ({"85": mean NoC or failure count, ...}), miou_at_clicks ([mIoU@1..max_clicks]),
    per_object ([{image_id, object_id, ious, clicks [[x, y, label]], noc, area, ignore_px}]), n, n_images,
    n_skipped, skipped, thresholds, max_clicks, stop_iou, mask_rule, carry_forward, rules (the model's
    click rules: decoder, feed_logits, max_points and what happens beyond), family, seconds."""
    if max_clicks < 1:
        raise ValueError(f"max_clicks must be >= 1, got {max_clicks}")
    thresholds = sorted(float(t) for t in thresholds)
    if not thresholds or not all(0 < t <= 1 for t in thresholds):
        raise ValueError(f"thresholds must be IoUs in (0, 1], got {thresholds}")
    cm = as_click_model(model, feed_logits)
    per_object, skipped = [], []
    t0 = time.perf_counter()
    it = records
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(records, desc="esam-eval clicks", unit="img", file=sys.stderr)
    for rec in it:
        image = _load(rec.image, f"image {rec.path}")
        objects = list(_objects(rec, image.shape[:2], skipped))
        if objects:
            cm.set_image(image)
        for obj, gt, ig in objects:
            r = click_object(cm, gt, ig, max_clicks, thresholds[-1])
            per_object.append({"image_id": rec.image_id, "object_id": obj.object_id, **r,
                               "noc": {_key(t): noc(r["ious"], t, max_clicks) for t in thresholds},
                               "area": int(gt.sum()), "ignore_px": 0 if ig is None else int(ig.sum())})
    summary = summarize([o["ious"] for o in per_object], thresholds, max_clicks)
    return {
        **summary, "n": len(per_object), "n_images": len(records), "n_skipped": len(skipped),
        "thresholds": thresholds, "max_clicks": max_clicks, "stop_iou": thresholds[-1],
        "mask_rule": MASK_RULE, "carry_forward": CARRY_RULE, "rules": dict(cm.rules), "family": cm.family,
        "seconds": time.perf_counter() - t0, "skipped": skipped, "per_object": per_object,
    }
