"""Writes the GrabCut pairs as a COCO instances file, for `esam-eval --protocol coco` on bundled data:

    python assets/grabcut/coco/make_coco.py      # -> instances.json, detections_gt_boxes.json (here)

- `instances.json`: one image and one annotation per pair (`../pairs.csv`), category 1 "object",
  `segmentation` as COCO compressed RLE of the human mask (> 128), `bbox` XYWH of the mask, `area` its
  pixel count, `iscrowd` 0; `file_name` relative to `assets/grabcut` (pass `--images assets/grabcut`).
- `detections_gt_boxes.json`: the GT boxes in the COCO results format, as a detector that finds every
  object exactly would give them (scores 1.0, 0.99, ... in pair order): the upper bound of box-prompted AP.
The ignore bands are not part of COCO's format and are left out.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def main() -> None:
    images, anns, dets = [], [], []
    with open(ROOT / "pairs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for i, row in enumerate(rows, start=1):
        m = np.asarray(Image.open(ROOT / row["mask"]).convert("L")) > 128
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        ys, xs = np.nonzero(m)
        bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        images.append({"id": i, "file_name": row["image"], "height": m.shape[0], "width": m.shape[1]})
        anns.append({"id": i, "image_id": i, "category_id": 1, "segmentation": rle, "area": int(m.sum()),
                     "bbox": bbox, "iscrowd": 0})
        dets.append({"image_id": i, "category_id": 1, "bbox": bbox, "score": round(1.0 - 0.01 * (i - 1), 2)})
    data = {"info": {"description": "GrabCut (50 pairs) as COCO instances"}, "images": images,
            "annotations": anns, "categories": [{"id": 1, "name": "object"}]}
    (HERE / "instances.json").write_text(json.dumps(data))
    (HERE / "detections_gt_boxes.json").write_text(json.dumps(dets))
    print(f"{len(images)} images, {len(anns)} annotations -> {HERE}")


if __name__ == "__main__":
    main()
