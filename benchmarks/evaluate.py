"""`esam-eval`: single-prompt mIoU and boundary IoU of a promptable model on a segmentation dataset.

    esam-eval --model efficient_sam_vitt --checkpoint efficient_sam_vitt.pt \\
              --data ../shared/data/grabcut --prompt box --json out.json

Protocol (EfficientSAM paper §4 / Tab. 4; DESIGN.md):
- `box`: the tight box of the ground-truth mask (x1/y1 exclusive, COCO's continuous box);
  `point` / `points3`: 1 or 3 positive points sampled uniformly inside the mask (without
  replacement, avoiding ignore pixels when possible), seeded per object so that every model sees the
  same points.
- Scored mask: box and multi-point prompts use the single-mask output on SAM-decoder models; a single
  point, and every prompt on EfficientSAM-decoder models (whose single-mask token is untrained),
  takes the most confident of the 3 masks.
- mIoU and boundary IoU (dilation ratio 0.02, HQ-SAM's definition) per object with ignore pixels
  excluded, averaged over objects.
- All objects of an image go through the decoder in one batched call (`--max-prompts` per call).

Models plug in through `PromptModel.predict_batch(image, boxes=, points=, labels=, multimask_output=)`
-> (masks (K, H, W) bool, scores (K,)): with `multimask_output` the model returns its most confident
mask per prompt. `oracle:gt` (the ground truth) and `oracle:box` (the filled box) are sanity baselines.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
import zlib
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from efficient_sam import transforms
from efficient_sam.config import parse_override
from efficient_sam.datasets import ImageRecord, detect_layout, mask_to_box, open_dataset

from .metrics import boundary_iou, mask_iou, nanmean

PROMPTS = ("box", "point", "points3")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# ----------------------------------------------------------------------------------------------
# Model interface
# ----------------------------------------------------------------------------------------------


class PromptModel(Protocol):
    """What the evaluation loop calls. `family` is "sam", "efficient_sam" or anything else (oracles).

    `predict_batch` gets K prompts for one image, all in original-image pixels: boxes (K, 4) XYXY, or
    points (K, N, 2) XY with labels (K, N). It returns masks (K, H, W) bool and scores (K,); with
    `multimask_output=True` the model picks its most confident mask per prompt. Models that set
    `uses_targets = True` (oracle baselines only) also receive `targets=` (K, H, W) ground truth.
    """

    family: str

    def predict_batch(
        self,
        image: np.ndarray,
        boxes: np.ndarray | None = None,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        multimask_output: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]: ...


class PredictorModel:
    """A `Sam` model behind `SamPredictor`: the image is encoded once, then each batch of prompts goes
    through one decoder call; the best mask is chosen on the low-res logits before upsampling."""

    uses_targets = False

    def __init__(self, model, hq_token_only: bool = False) -> None:
        from efficient_sam import SamPredictor

        if hq_token_only and not getattr(model, "is_hq", False):
            raise ValueError("hq_token_only needs an HQ model")
        self.model = model
        self.hq = dict(hq_features=None, hq_token_only=hq_token_only) if getattr(model, "is_hq", False) else None
        self.family = model.config.decoder_family  # decides which output is scored
        self.predictor = SamPredictor(model)
        self._image = None

    @torch.inference_mode()
    def predict_batch(self, image, boxes=None, points=None, labels=None, multimask_output=True):
        p, cfg = self.predictor, self.model.config
        if self._image is not image:
            p.set_image(image)
            self._image = image
        size, dev = p.original_size, p.device
        coords = labs = bx = None
        if points is not None:
            coords = transforms.transform_coords(torch.as_tensor(points, dtype=torch.float32).to(dev), size, cfg)
            labs = torch.as_tensor(labels, dtype=torch.long).to(dev)
        if boxes is not None:
            bx = transforms.transform_boxes(torch.as_tensor(boxes, dtype=torch.float32).to(dev), size, cfg)
        hq = {} if self.hq is None else {**self.hq, "hq_features": p.hq_features}
        low, iou = self.model.decode(p.features, coords, labs, bx, None, multimask_output, **hq)
        best = iou.argmax(dim=1)
        rows = torch.arange(low.shape[0], device=low.device)
        low, score = low[rows, best], iou[rows, best]
        masks = transforms.postprocess_masks(low[:, None].float(), size, cfg)[:, 0] > self.model.mask_threshold
        return masks.cpu().numpy(), score.float().cpu().numpy()


class GroundTruthOracle:
    """Returns the ground truth: IoU 1 by construction (checks the evaluation plumbing)."""

    family = "oracle"
    uses_targets = True

    def predict_batch(self, image, boxes=None, points=None, labels=None, multimask_output=True, targets=None):
        if targets is None:
            raise ValueError("the ground-truth oracle needs targets=")
        return np.asarray(targets, dtype=bool), np.ones(len(targets), dtype=np.float32)


class BoxOracle:
    """Returns the prompt box filled (the 'tight box as mask' baseline of ../shared/data/README.md)."""

    family = "oracle"
    uses_targets = False

    def predict_batch(self, image, boxes=None, points=None, labels=None, multimask_output=True):
        if boxes is None:
            raise ValueError("the box oracle needs box prompts (--prompt box)")
        h, w = image.shape[:2]
        out = np.zeros((len(boxes), h, w), dtype=bool)
        for k, (x0, y0, x1, y1) in enumerate(np.asarray(boxes)):
            out[k, int(np.floor(y0)) : int(np.ceil(y1)), int(np.floor(x0)) : int(np.ceil(x1))] = True
        return out, np.ones(len(boxes), dtype=np.float32)


ORACLES = {"oracle:gt": GroundTruthOracle, "oracle:box": BoxOracle}


# ----------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------


def use_multimask(family: str, prompt: str) -> bool:
    """Whether the scored mask is the most confident of the multimask outputs (DESIGN.md)."""
    if family == "efficient_sam":
        return True  # its single-mask token is untrained
    return prompt == "point"


def object_rng(seed: int, image_id: str, object_id: str) -> np.random.Generator:
    """Per-object generator: the same points for an object whatever else is evaluated."""
    return np.random.default_rng([seed, zlib.crc32(f"{image_id}/{object_id}".encode())])


def sample_points(mask: np.ndarray, ignore: np.ndarray | None, k: int, rng: np.random.Generator) -> np.ndarray:
    """k (x, y) pixel positions drawn uniformly from the mask (outside the ignore band when possible)."""
    region = mask & ~ignore if ignore is not None else mask
    ys, xs = np.nonzero(region)
    if ys.size == 0:
        ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise ValueError("cannot sample points from an empty mask")
    idx = rng.choice(ys.size, size=k, replace=ys.size < k)
    return np.stack([xs[idx], ys[idx]], axis=1).astype(np.float32)


def make_prompts(
    masks: Sequence[np.ndarray], ignores: Sequence[np.ndarray | None], prompt: str, rngs: Sequence[np.random.Generator]
) -> dict[str, np.ndarray]:
    """Prompts for a batch of objects: {"boxes": (K, 4)} or {"points": (K, N, 2), "labels": (K, N)}."""
    if prompt == "box":
        return {"boxes": np.array([mask_to_box(m) for m in masks], dtype=np.float32)}
    k = {"point": 1, "points3": 3}.get(prompt)
    if k is None:
        raise ValueError(f"unknown prompt {prompt!r}; expected one of {PROMPTS}")
    pts = np.stack([sample_points(m, ig, k, r) for m, ig, r in zip(masks, ignores, rngs)])
    return {"points": pts, "labels": np.ones(pts.shape[:2], dtype=np.int64)}


# ----------------------------------------------------------------------------------------------
# Evaluation loop
# ----------------------------------------------------------------------------------------------


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
        image = rec.image()
        h, w = image.shape[:2]
        for start in range(0, len(rec.objects), max_prompts):
            objs, masks, ignores = [], [], []
            for obj in rec.objects[start : start + max_prompts]:
                m = obj.mask()
                if m.shape != (h, w):
                    raise ValueError(f"{rec.image_id}/{obj.object_id}: mask {m.shape} differs from image {(h, w)}")
                if not m.any():
                    skipped.append({"image_id": rec.image_id, "object_id": obj.object_id, "reason": "empty mask"})
                    continue
                ig = obj.ignore()
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


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def load_model(
    name: str, checkpoint: str | None, overrides: dict, device: str, dtype: str, hq: bool = False
) -> PromptModel:
    if name in ORACLES:
        if checkpoint or overrides:
            raise SystemExit(f"esam-eval: {name} takes no --checkpoint / --set")
        return ORACLES[name]()
    import efficient_sam as es

    if name in es.list_models():
        model = es.build_model(name, checkpoint=checkpoint, **overrides)
        if checkpoint is None:
            warnings.warn(f"esam-eval: {name} has random weights (no --checkpoint given)", stacklevel=2)
    else:
        if checkpoint or overrides:
            raise SystemExit("esam-eval: --checkpoint / --set apply to registered model names only")
        from_pretrained = getattr(es, "from_pretrained", None)
        if from_pretrained is None:
            raise SystemExit(
                f"esam-eval: {name!r} is not a registered model ({', '.join(es.list_models())}) and "
                f"efficient_sam.from_pretrained is not available"
            )
        model = from_pretrained(name)
    if getattr(model, "config", None) is None or not hasattr(model, "decode"):
        raise SystemExit(f"esam-eval: {name!r} did not load a promptable model (got {type(model).__name__})")
    model = model.to(device=device, dtype=DTYPES[dtype]).eval()
    if hq and not getattr(model, "is_hq", False):
        raise SystemExit(f"esam-eval: --hq needs an HQ model; {name!r} is not one")
    return PredictorModel(model, hq_token_only=hq)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="esam-eval", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True,
                   help="registered name (e.g. efficient_sam_vitt), local dir/file or Hub repo id; "
                        "or oracle:gt / oracle:box (sanity baselines)")
    p.add_argument("--checkpoint", default=None, help="official checkpoint file for a registered name")
    p.add_argument("--data", required=True, help="dataset: mask folder, COCO JSON (or folder) or SA-1B folder/.tar")
    p.add_argument("--prompt", choices=PROMPTS, default="box")
    p.add_argument("--hq", action="store_true",
                   help="HQ models: score the HQ output alone (hq_token_only, HQ-SAM's validation); default SAM + HQ")
    p.add_argument("--json", default=None, help="write {miou, mbiou, n, per_item, ...} here")
    p.add_argument("--layout", choices=("auto", "masks", "coco", "sa1b"), default="auto")
    p.add_argument("--images", default=None, help="COCO image folder (default: found next to the JSON)")
    p.add_argument("--include-crowd", action="store_true", help="COCO: evaluate iscrowd annotations too")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--seed", type=int, default=0, help="seed of the point sampling")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--max-prompts", type=int, default=64, help="prompts per decoder call")
    p.add_argument("--dilation-ratio", type=float, default=0.02, help="boundary width / image diagonal")
    p.add_argument("--set", dest="overrides", action="append", type=parse_override, default=[],
                   metavar="KEY=VALUE", help="config override for a registered name (tests, small configs)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_prompts < 1:
        raise SystemExit("esam-eval: --max-prompts must be >= 1")
    try:
        layout = detect_layout(args.data) if args.layout == "auto" else args.layout
        kw = {}
        if args.images or args.include_crowd:
            if layout != "coco":
                raise ValueError(f"--images / --include-crowd apply to COCO data, {args.data} is {layout!r}")
            kw = {"image_dir": args.images, "include_crowd": args.include_crowd}
        records = open_dataset(args.data, layout, **kw)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"esam-eval: {e}") from None
    if args.limit is not None:
        records = records[: args.limit]
    model = load_model(args.model, args.checkpoint, dict(args.overrides), args.device, args.dtype, args.hq)
    res = evaluate(model, records, args.prompt, args.seed, args.dilation_ratio, args.max_prompts,
                   progress=not args.no_progress)
    out = {
        "miou": res["miou"], "mbiou": res["mbiou"], "n": res["n"],
        "model": args.model, "checkpoint": args.checkpoint, "data": str(args.data),
        "layout": layout, **{k: v for k, v in res.items() if k not in ("miou", "mbiou", "n")},
    }
    summary = {k: v for k, v in out.items() if k not in ("per_item", "skipped")}
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
