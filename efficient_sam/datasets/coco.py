"""COCO instances JSON (`images`, `annotations`): a `.json` file, or a folder holding one in
`annotations/`; crowd annotations are skipped unless asked for."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..images import read_rgb
from .records import DatasetError, ImageRecord, ObjectRecord
from .rle import segmentation_to_mask

__all__ = ["read_coco"]


def _find_coco_json(path: Path) -> Path:
    if path.is_file():
        return path
    cands = sorted((path / "annotations").glob("*.json")) if (path / "annotations").is_dir() else []
    cands = cands or sorted(path.glob("*.json"))
    inst = [c for c in cands if c.name.startswith("instances")]
    cands = inst or cands
    if len(cands) != 1:
        raise FileNotFoundError(
            f"{path}: expected one COCO instances JSON in annotations/ (found {[c.name for c in cands]}); "
            f"pass the JSON file itself"
        )
    return cands[0]


def _coco_image_dir(json_path: Path, file_name: str, image_dir: str | os.PathLike | None) -> Path:
    if image_dir is not None:
        if not Path(image_dir).is_dir():
            raise FileNotFoundError(f"COCO image folder {image_dir} (image_dir / --images) does not exist")
        return Path(image_dir)
    stem = json_path.stem.split("_", 1)[1] if json_path.stem.startswith("instances_") else json_path.stem
    for d in (json_path.parent, json_path.parent.parent / stem, json_path.parent / "images",
              json_path.parent.parent / "images", json_path.parent.parent):
        if (d / file_name).exists():
            return d
    raise FileNotFoundError(
        f"cannot find image {file_name!r} for {json_path}; looked next to it, in ../{stem}/ and images/ "
        f"(pass image_dir=... / --images DIR)"
    )


def read_coco(
    path: str | os.PathLike, image_dir: str | os.PathLike | None = None, include_crowd: bool = False
) -> list[ImageRecord]:
    """COCO instances JSON (file or folder with `annotations/`) -> records of images with objects."""
    json_path = _find_coco_json(Path(path))
    try:
        with open(json_path, encoding="utf-8") as f:
            coco = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:  # json.JSONDecodeError is a ValueError
        raise DatasetError(f"{json_path} is not valid JSON: {e}") from None
    if not isinstance(coco, dict) or "images" not in coco or "annotations" not in coco:
        raise DatasetError(f"{json_path} is not a COCO instances file (needs 'images' and 'annotations')")
    anns: dict[Any, list[dict]] = {}
    n_crowd = 0
    for i, a in enumerate(coco["annotations"]):
        missing = [k for k in ("image_id", "segmentation") if not isinstance(a, dict) or k not in a]
        if missing:
            raise DatasetError(f"{json_path}: annotation {i} (id {a.get('id') if isinstance(a, dict) else None}) "
                               f"has no {' / '.join(repr(k) for k in missing)}")
        if a.get("iscrowd", 0) and not include_crowd:
            n_crowd += 1
            continue
        anns.setdefault(a["image_id"], []).append(a)
    records = []
    img_dir = None
    for i, im in enumerate(coco["images"]):
        missing = [k for k in ("id", "file_name", "height", "width") if not isinstance(im, dict) or k not in im]
        if missing:
            raise DatasetError(f"{json_path}: image {i} has no {' / '.join(repr(k) for k in missing)}")
        objs = anns.get(im["id"], [])
        if not objs:
            continue
        if img_dir is None:
            img_dir = _coco_image_dir(json_path, im["file_name"], image_dir)
        try:
            h, w = int(im["height"]), int(im["width"])
        except (TypeError, ValueError):
            raise DatasetError(f"{json_path}: image {im['id']}: height / width {im['height']!r} / {im['width']!r} "
                               f"are not integers") from None
        path_i = img_dir / im["file_name"]
        records.append(ImageRecord(
            image_id=str(im["id"]), path=str(path_i), load_image=(lambda p=path_i: read_rgb(p)), size=(h, w),
            objects=[
                ObjectRecord(
                    object_id=str(a.get("id", i)),
                    load_mask=(lambda s=a["segmentation"], h=h, w=w: segmentation_to_mask(s, h, w)),
                    meta={"category_id": a.get("category_id"), "iscrowd": int(a.get("iscrowd", 0))},
                )
                for i, a in enumerate(objs)
            ],
        ))
    if not records:
        crowd = (f" ({n_crowd} crowd annotations are skipped; include_crowd / --include-crowd keeps them)"
                 if n_crowd else "")
        raise DatasetError(f"{json_path}: no image has an annotation{crowd}: no objects to read")
    return records
