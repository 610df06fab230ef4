"""HQ-SAM adapter training data: HQSeg-44K (or any mask folder) -> jittered inputs, soft labels, prompts.

Per image (HQ-SAM recipe, reference hq_sam.md §4.1-4.3): one object with its soft 0-255 label,
horizontal flip, large-scale jitter into the model's S x S input frame (bilinear for image and label
alike, so the label becomes soft; random crop; zero padding bottom/right after normalisation, as
SAM's inference pads), then one prompt drawn uniformly among box / 10 positive points / noisy
low-res mask. All three prompt fields are always filled (zeros when unused) so samples stack.
Every random choice comes from the per-sample generator `sample_rng(seed, epoch, index)`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from efficient_sam.config import SamConfig
from efficient_sam.datasets import ImageRecord, ObjectRecord, mask_to_box, open_dataset
from efficient_sam.images import IMAGE_EXTENSIONS, read_rgb
from efficient_sam.training.data import RecordSamples, SkipRecord, sample_rng, skip_on_error, total_skipped

__all__ = [
    "HQDataConfig", "TRAIN_SETS", "VAL_SETS", "read_hqseg", "is_hqseg", "read_soft_label", "soft_label",
    "open_hq_records", "SampleBuilder", "HQSamples", "collate",
    "noise_mask", "PROMPT_TYPES", "SkipRecord", "sample_rng",
]

# (name, image folder, mask folder) under HQSeg-44K's `data/`; images .jpg, masks .png, same stem.
TRAIN_SETS = (
    ("DIS5K-TR", "DIS5K/DIS-TR/im", "DIS5K/DIS-TR/gt"),
    ("ThinObject5K-TR", "thin_object_detection/ThinObject5K/images_train",
     "thin_object_detection/ThinObject5K/masks_train"),
    ("FSS-1000", "cascade_psp/fss_all", "cascade_psp/fss_all"),
    ("DUTS-TR", "cascade_psp/DUTS-TR", "cascade_psp/DUTS-TR"),
    ("DUTS-TE", "cascade_psp/DUTS-TE", "cascade_psp/DUTS-TE"),
    ("ECSSD", "cascade_psp/ecssd", "cascade_psp/ecssd"),
    ("MSRA-10K", "cascade_psp/MSRA_10K", "cascade_psp/MSRA_10K"),
)
VAL_SETS = (
    ("DIS5K-VD", "DIS5K/DIS-VD/im", "DIS5K/DIS-VD/gt"),
    ("COIFT", "thin_object_detection/COIFT/images", "thin_object_detection/COIFT/masks"),
    ("HRSOD", "thin_object_detection/HRSOD/images", "thin_object_detection/HRSOD/masks_max255"),
    ("ThinObject5K-TE", "thin_object_detection/ThinObject5K/images_test",
     "thin_object_detection/ThinObject5K/masks_test"),
)
_HQ_TOPS = ("DIS5K", "thin_object_detection", "cascade_psp")
PROMPT_TYPES = ("box", "points", "noise_mask")  # index = the sample's `prompt_type`


@dataclass
class HQDataConfig:
    train: str = "data/hqseg44k"  # HQSeg-44K `data/` folder, or a mask folder (images/ + masks/)
    val: str | None = None  # None: HQSeg-44K's validation sets when `train` is HQSeg-44K
    max_images: int | None = None
    max_val_images: int | None = 100
    hflip: float = 0.5
    scale: tuple[float, float] = (0.1, 2.0)  # large-scale jitter: long side = s * S, s ~ U(scale)
    prompts: tuple[str, ...] = PROMPT_TYPES
    num_points: int = 10


def read_soft_label(path: str | os.PathLike) -> np.ndarray:
    """A GT png -> HxW uint8 0..255 (channel 0 if RGB(A))."""
    with Image.open(path) as im:
        arr = np.array(im)
    if arr.ndim == 3:
        arr = arr[..., 0]
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    return arr.astype(np.uint8)


def soft_label(obj: ObjectRecord) -> np.ndarray:
    """The object's HxW uint8 0..255 label: the GT png itself for HQSeg records, 255 * mask otherwise."""
    if obj.meta.get("soft") and "mask_path" in obj.meta:
        return read_soft_label(obj.meta["mask_path"])
    return obj.mask().astype(np.uint8) * 255


def _pairs(img_dir: Path, gt_dir: Path) -> list[tuple[Path, Path]]:
    """(image, mask) pairs by stem in two folders (or one: images are the non-png files)."""
    same = img_dir == gt_dir
    files = sorted(p for p in img_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    images = [p for p in files if not (same and p.suffix.lower() == ".png")]
    masks = {p.stem: p for p in sorted(gt_dir.iterdir()) if p.is_file() and p.suffix.lower() == ".png"}
    return [(p, masks[p.stem]) for p in images if p.stem in masks]


def read_hqseg(root: str | os.PathLike, split: str = "train") -> list[ImageRecord]:
    """HQSeg-44K under `root` (the HF dataset's `data/`): one record (one object) per image of every
    subset present, in TRAIN_SETS / VAL_SETS order. Objects: `mask()` = GT > 128, `meta["soft"]`,
    `meta["mask_path"]` (read with `read_soft_label`)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    root = Path(root)
    sets = TRAIN_SETS if split == "train" else VAL_SETS
    records: list[ImageRecord] = []
    found = False
    for name, im_rel, gt_rel in sets:
        img_dir, gt_dir = root / im_rel, root / gt_rel
        if not (img_dir.is_dir() and gt_dir.is_dir()):
            continue
        found = True
        for img, gt in _pairs(img_dir, gt_dir):
            obj = ObjectRecord(
                object_id=img.stem, load_mask=(lambda p=gt: read_soft_label(p) > 128),
                meta={"soft": True, "mask_path": str(gt), "mask": str(gt.relative_to(root))},
            )
            records.append(ImageRecord(
                image_id=f"{name}/{img.stem}", path=str(img), load_image=(lambda p=img: read_rgb(p)),
                objects=[obj], meta={"dataset": name},
            ))
    if not found:
        looked = ", ".join(f"{im}+{gt}" if im != gt else im for _, im, gt in sets)
        raise FileNotFoundError(f"no HQSeg-44K {split} subset under {root}; looked for {looked}")
    return records


def is_hqseg(path: str | os.PathLike) -> bool:
    return any((Path(path) / top).is_dir() for top in _HQ_TOPS)


def open_hq_records(path: str | os.PathLike, split: str = "train", max_images: int | None = None) -> list[ImageRecord]:
    """HQSeg-44K (`split` picks its train/val sets) or any `efficient_sam.datasets` layout (mask folder,
    COCO, SA-1B; `split` ignored) -> the first `max_images` records."""
    records = read_hqseg(path, split) if is_hqseg(path) else open_dataset(path)
    return records[:max_images] if max_images is not None else records


def noise_mask(label: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    """(S, S) uint8 soft label -> (1, size, size) float32 0/255 mask prompt (Mask Transfiner noise):
    bilinear to size x size, /255, N(0, 1) noise added where |m - up(down(m, 8))| >= 0.01, > 0.5, x 255."""
    m = F.interpolate(label[None, None].float(), (size, size), mode="bilinear", align_corners=False) / 255
    small = max(1, size // 8)
    rec = F.interpolate(F.interpolate(m, (small, small), mode="bilinear", align_corners=False),
                        (size, size), mode="bilinear", align_corners=False)
    incoherent = (m - rec).abs() >= 0.01
    noise = torch.from_numpy(rng.standard_normal((1, 1, size, size)).astype(np.float32))
    return ((m + noise * incoherent) > 0.5).float()[0] * 255


class SampleBuilder:
    """ImageRecord + generator -> one training sample:

    image (3, S, S) float32 normalised (padding 0), label (S, S) uint8 soft 0..255 (padding 0),
    box (4,) float32 XYXY (x1/y1 exclusive), points (num_points, 2) float32 XY, noise_mask
    (1, m, m) float32 0/255 (m = 4 x grid), prompt_type int (PROMPT_TYPES index), seed int;
    all in the S x S input frame, unused prompt fields zero."""

    def __init__(self, model_cfg: SamConfig, cfg: HQDataConfig) -> None:
        unknown = set(cfg.prompts) - set(PROMPT_TYPES)
        if unknown:
            raise ValueError(f"unknown prompt types {sorted(unknown)}; expected some of {PROMPT_TYPES}")
        prompts = [p for p in cfg.prompts if p != "noise_mask" or model_cfg.prompt_encoder.mask_prompt]
        if not prompts:
            raise ValueError(f"no usable prompt type in {cfg.prompts} (this decoder takes no mask prompt)")
        lo, hi = cfg.scale
        if not 0 < lo <= hi:
            raise ValueError(f"scale must be 0 < lo <= hi, got {cfg.scale}")
        self.model_cfg, self.cfg = model_cfg, cfg
        self.prompt_ids = [PROMPT_TYPES.index(p) for p in prompts]
        self.img_size = model_cfg.image_encoder.img_size
        self.mask_size = 4 * model_cfg.image_encoder.grid_size
        self.mean = np.asarray(model_cfg.pixel_mean, np.float32)
        self.std = np.asarray(model_cfg.pixel_std, np.float32)

    def jitter(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Large-scale jitter: long side -> round(s * S), random crop to <= S x S, pad to S x S."""
        s_in = self.img_size
        h, w = label.shape
        long = max(1, round(rng.uniform(*self.cfg.scale) * s_in))
        nh, nw = (long, max(1, round(w * long / h))) if h >= w else (max(1, round(h * long / w)), long)
        img = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
        lab = np.asarray(Image.fromarray(label).resize((nw, nh), Image.BILINEAR))
        ch, cw = min(nh, s_in), min(nw, s_in)
        y0, x0 = int(rng.integers(nh - ch + 1)), int(rng.integers(nw - cw + 1))
        img, lab = img[y0 : y0 + ch, x0 : x0 + cw], lab[y0 : y0 + ch, x0 : x0 + cw]
        x = torch.from_numpy((img.astype(np.float32) - self.mean) / self.std).permute(2, 0, 1)
        pad = (0, s_in - cw, 0, s_in - ch)
        return F.pad(x, pad), F.pad(torch.from_numpy(np.array(lab)), pad)

    def __call__(self, rec: ImageRecord, rng: np.random.Generator) -> dict[str, Any]:
        with skip_on_error():
            image = rec.image()
            obj = rec.objects[int(rng.integers(len(rec.objects)))]
            label = soft_label(obj)
        if label.shape != image.shape[:2]:
            raise SkipRecord(f"label {label.shape} differs from the image {image.shape[:2]}")
        if not (label > 128).any():
            raise SkipRecord("empty mask (no pixel > 128)")
        if rng.random() < self.cfg.hflip:
            image, label = np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(label[:, ::-1])
        for _ in range(10):  # the object may be cropped out (or vanish when shrunk): draw again
            x, lab = self.jitter(image, label, rng)
            fg = (lab > 128).numpy()
            if fg.any():
                break
        else:
            raise SkipRecord("object lost by the scale jitter in 10 draws")
        kind = self.prompt_ids[int(rng.integers(len(self.prompt_ids)))]
        box = np.zeros(4, np.float32)
        points = np.zeros((self.cfg.num_points, 2), np.float32)
        nmask = torch.zeros(1, self.mask_size, self.mask_size)
        if kind == 0:
            box[:] = mask_to_box(fg)
        elif kind == 1:
            ys, xs = np.nonzero(fg)
            idx = rng.choice(ys.size, self.cfg.num_points, replace=ys.size < self.cfg.num_points)
            points[:] = np.stack([xs[idx], ys[idx]], axis=1)
        else:
            nmask = noise_mask(lab, self.mask_size, rng)
        return {
            "image": x, "label": lab, "box": torch.from_numpy(box), "points": torch.from_numpy(points),
            "noise_mask": nmask, "prompt_type": kind, "seed": int(rng.integers(2**62)),
        }


class HQSamples(RecordSamples):
    """Map-style over records with `set_epoch`; sample i uses `sample_rng(seed, epoch, i)`; an unusable
    record is replaced by the next one and counted in the sample's `skipped`
    (`efficient_sam.training.data.RecordSamples`)."""


def collate(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack to image (B, 3, S, S), label (B, S, S) uint8, box (B, 4), points (B, k, 2), noise_mask
    (B, 1, m, m), prompt_type (B,) int64, seed (B,); skipped = 0-d sum."""
    out = {k: torch.stack([s[k] for s in samples]) for k in ("image", "label", "box", "points", "noise_mask")}
    out["prompt_type"] = torch.tensor([s["prompt_type"] for s in samples], dtype=torch.long)
    out["seed"] = torch.tensor([s["seed"] for s in samples], dtype=torch.long)
    out["skipped"] = total_skipped(samples)
    return out
