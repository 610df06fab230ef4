"""Mask-folder layout: `images/`, `masks/` (one file per object), optional `ignore/` (pixels excluded
from the metrics) and optional `pairs.csv` (columns `image`, `mask`, `ignore`, optionally `name`,
`object_id`; paths relative to the folder), as `assets/grabcut/`.

How a mask file is read (`read_binary_mask`; ignore files alike): the first channel of an RGB(A)
file; with an `object_id` (other than 255) the object is the pixels equal to it (an instance-label
map); otherwise the file is a binary mask: 0/255 (anti-aliased: > 128 is the object), or 0/1 (a
file whose largest value is 1, e.g. a palette or L image with index 1, or a 1-bit image: 1 is the
object). A file whose values are all in 2..128 is neither and is refused (it reads as an instance
map without an `object_id`). An `object_id` that selects no pixel gives an empty mask and a warning
naming the file and id (the evaluation counts it as skipped). Unreadable files, missing files,
columns or values raise `DatasetError` naming the file (and the row and column of `pairs.csv`).
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from ..images import IMAGE_EXTENSIONS, read_rgb
from .records import DatasetError, ImageRecord, ObjectRecord

__all__ = ["read_mask_folder", "read_binary_mask"]

_COLUMNS = "needed: image, mask; optional: ignore, name, object_id"


def _values(arr: np.ndarray, k: int = 8) -> str:
    u = np.unique(arr)
    return ", ".join(str(v) for v in u[:k].tolist()) + (f", ... ({u.size} values)" if u.size > k else "")


def read_binary_mask(path: str | os.PathLike, object_id: int | None = None) -> np.ndarray:
    """A mask (or ignore) file -> HxW bool, by the rule of the module docstring."""
    try:
        with Image.open(path) as im:
            arr = np.array(im)
    except FileNotFoundError:
        raise DatasetError(f"mask file {path} does not exist") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # PIL's errors for corrupt / truncated files
        raise DatasetError(f"cannot read mask file {path}: {e}") from None
    if arr.ndim == 3:  # RGB(A) mask image: the first channel
        arr = arr[..., 0]
    if arr.ndim != 2 or arr.size == 0:
        raise DatasetError(f"mask file {path} is not a 2-D image (array shape {arr.shape})")
    if arr.dtype == bool:  # 1-bit images
        arr = arr.astype(np.uint8)
    if object_id is not None and object_id != 255:
        m = arr == object_id
        if not m.any():
            warnings.warn(f"{path}: object_id {object_id} selects no pixels (the file holds {_values(arr)}); "
                          f"the object is empty", stacklevel=2)
        return m
    top = arr.max()
    if top <= 1:  # a 0/1 mask (palette / L index 1, 1-bit): 1 is the object
        return arr > 0.5
    if top <= 128:
        raise DatasetError(
            f"mask file {path} holds values {_values(arr)}, none above 128: not a 0/255 or 0/1 binary mask; "
            f"for an instance-label map give the label in pairs.csv's object_id column"
        )
    return arr > 128


_read_binary = read_binary_mask  # the former private name


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _read_pairs(root: Path, pairs: Path) -> list[dict]:
    rows: list[dict] = []
    try:
        with open(pairs, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None:
                raise DatasetError(f"{pairs} is empty: it needs a header line ({_COLUMNS})")
            reader.fieldnames = [c.strip() for c in reader.fieldnames]
            missing = [c for c in ("image", "mask") if c not in reader.fieldnames]
            if missing:
                raise DatasetError(
                    f"{pairs}: no {' / '.join(repr(c) for c in missing)} column (the header has "
                    f"{', '.join(reader.fieldnames)}; {_COLUMNS})"
                )
            for i, r in enumerate(reader, start=1):
                where = f"{pairs}, row {i} (line {reader.line_num})"
                r = {k: (v.strip() if isinstance(v, str) else v) for k, v in r.items() if k is not None}
                for col in ("image", "mask", "ignore"):
                    v = r.get(col)
                    if not v:
                        if col != "ignore":
                            raise DatasetError(f"{where}, column {col!r}: empty (every row needs an image and a mask)")
                        continue
                    if not (root / v).is_file():
                        raise DatasetError(f"{where}, column {col!r}: {root / v} does not exist")
                oid = r.get("object_id") or ""
                if oid:
                    try:
                        oid = int(oid)
                    except ValueError:
                        raise DatasetError(
                            f"{where}, column 'object_id': {oid!r} is not an integer (the label value of the "
                            f"object in its mask file; leave it empty for a binary mask)"
                        ) from None
                    if oid < 0:
                        raise DatasetError(f"{where}, column 'object_id': {oid} is negative (a label value is >= 0)")
                r["object_id"] = oid if oid != "" else None
                rows.append(r)
    except UnicodeDecodeError as e:
        raise DatasetError(f"{pairs} is not UTF-8 text: {e}") from None
    except csv.Error as e:
        raise DatasetError(f"{pairs} is not a valid CSV file: {e}") from None
    if not rows:
        raise DatasetError(f"{pairs} has a header but no rows: no objects to read")
    return rows


def read_mask_folder(root: str | os.PathLike) -> list[ImageRecord]:
    """`images/`, `masks/`, optional `ignore/` and `pairs.csv` -> one record per image (objects grouped)."""
    root = Path(root)
    if not (root / "images").is_dir() or not (root / "masks").is_dir():
        raise FileNotFoundError(f"{root} is not a mask folder: it needs images/ and masks/ subfolders")
    pairs = root / "pairs.csv"
    if pairs.exists():
        rows = _read_pairs(root, pairs)
    else:
        rows = []
        images = _files(root / "images")
        by_stem = {p.stem: p for p in images}
        stems = sorted(by_stem, key=len, reverse=True)
        masks = _files(root / "masks")
        if not masks:
            raise DatasetError(
                f"{root / 'masks'} holds no mask files ({', '.join(IMAGE_EXTENSIONS)}) and there is no pairs.csv: "
                f"no objects to read"
            )
        for m in masks:
            img = by_stem.get(m.stem)
            if img is None:  # <image stem>_<k>.png / <image stem>-<k>.png, longest stem first
                img = next((by_stem[s] for s in stems if m.stem.startswith(s) and m.stem[len(s)] in "_-"), None)
            if img is None:
                raise DatasetError(f"mask {m} matches no image in {root / 'images'} (by file stem)")
            ign = next((p for p in (root / "ignore" / m.name, root / "ignore" / (m.stem + ".png")) if p.exists()), None)
            rows.append({
                "name": m.stem, "image": str(img.relative_to(root)), "mask": str(m.relative_to(root)),
                "ignore": str(ign.relative_to(root)) if ign else "", "object_id": None,
            })
    records: dict[str, ImageRecord] = {}
    for r in rows:
        img_rel = r["image"]
        if img_rel not in records:
            path = root / img_rel
            records[img_rel] = ImageRecord(
                image_id=Path(img_rel).stem, path=str(path), load_image=(lambda p=path: read_rgb(p)), objects=[]
            )
        rec = records[img_rel]
        oid = r["object_id"]
        mpath = root / r["mask"]
        ipath = root / r["ignore"] if r.get("ignore") else None
        name = r.get("name") or Path(r["mask"]).stem
        meta = {"mask": r["mask"], "mask_file": str(mpath),
                **({"ignore": r["ignore"], "ignore_file": str(ipath)} if ipath is not None else {})}
        if oid is not None and oid != 255:
            meta["object_id"] = oid
        rec.objects.append(ObjectRecord(
            object_id=name,
            load_mask=(lambda p=mpath, o=oid: read_binary_mask(p, o)),
            load_ignore=(lambda p=ipath: read_binary_mask(p)) if ipath is not None else None,
            meta=meta,
        ))
    return list(records.values())
