"""Readers for the segmentation data layouts of DESIGN.md, and COCO RLE / polygon masks in numpy.

Layouts (`open_dataset(path)` detects them):
- **mask folder** (`mask_folder.py`): `images/`, `masks/` (0/255 or 0/1, one file per object), optional
  `ignore/` (255 or 1 = pixels excluded from the metrics), optional `pairs.csv` (columns `image`, `mask`,
  `ignore`, optionally `name`, `object_id`; paths relative to the folder), as `assets/grabcut/`;
  the mask rule (0/255, 0/1, instance labels with `object_id`) is `read_binary_mask`'s.
- **COCO** instances JSON (`coco.py`; `images`, `annotations`): a `.json` file, or a folder holding one
  in `annotations/`; crowd annotations are skipped unless asked for.
- **SA-1B** (`sa1b.py`): `sa_<id>.jpg` + `sa_<id>.json` (COCO RLE annotations), in folders or `.tar` shards.

Every reader returns `ImageRecord`s (`records.py`) whose image and object masks are loaded on demand,
so a whole SA-1B shard can be listed cheaply. A malformed dataset file (unreadable, a missing file or
column, a value that is not a number, an empty dataset) raises `DatasetError` (a `ValueError`) naming
the file, and the row and column of a `pairs.csv`. The RLE functions (`rle.py`) are standalone numpy ports
of pycocotools' `maskApi.c` (`rle_decode`, `rle_encode`, `polygons_to_mask`) and give identical masks.
Images are read with `efficient_sam.images.read_rgb` (re-exported here with `IMAGE_EXTENSIONS`).
"""

from __future__ import annotations

from ..images import IMAGE_EXTENSIONS, read_rgb
from .coco import read_coco
from .layout import detect_layout, open_dataset
from .mask_folder import read_binary_mask, read_mask_folder
from .records import DatasetError, ImageRecord, ObjectRecord, iter_objects, mask_to_box
from .rle import (
    _mask_counts, polygons_to_mask, rle_decode, rle_encode, rle_from_string, rle_to_string, segmentation_to_mask,
)
from .sa1b import read_sa1b, sa1b_record

__all__ = [
    "rle_decode", "rle_encode", "rle_from_string", "rle_to_string", "polygons_to_mask", "segmentation_to_mask",
    "mask_to_box", "ObjectRecord", "ImageRecord", "read_mask_folder", "read_coco", "read_sa1b", "sa1b_record",
    "detect_layout", "open_dataset", "read_rgb", "IMAGE_EXTENSIONS", "DatasetError", "read_binary_mask",
]
