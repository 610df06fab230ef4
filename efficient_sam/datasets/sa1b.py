"""SA-1B layout: `sa_<id>.jpg` + `sa_<id>.json` (COCO RLE annotations), in folders or `.tar` shards."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import Callable

import numpy as np

from ..images import read_rgb
from .records import DatasetError, ImageRecord, ObjectRecord
from .rle import segmentation_to_mask

__all__ = ["sa1b_record", "read_sa1b"]


class _TarReader:
    """Members of a tar shard, opened once per process (safe to use from DataLoader workers)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pid = None
        self._tar = None

    def read(self, name: str) -> bytes:
        if self._tar is None or self._pid != os.getpid():
            self._tar, self._pid = tarfile.open(self.path), os.getpid()
        f = self._tar.extractfile(name)
        if f is None:
            raise FileNotFoundError(f"{name} not in {self.path}")
        return f.read()

    def __getstate__(self):
        return {"path": self.path, "_pid": None, "_tar": None}


def sa1b_record(
    image_id: str, path: str, read_image: Callable[[], np.ndarray], read_json: Callable[[], dict]
) -> ImageRecord:
    """One SA-1B image from its JSON (parsed now) and a lazy image reader; masks decode on demand."""
    try:
        meta = read_json()
    except (ValueError, UnicodeDecodeError) as e:  # json.JSONDecodeError is a ValueError
        raise DatasetError(f"the SA-1B annotations of {path} are not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"the SA-1B annotations of {path} are not a JSON object")
    info = meta.get("image", {})
    h, w = info.get("height"), info.get("width")
    objs = []
    for i, a in enumerate(meta.get("annotations", [])):
        seg = a.get("segmentation") if isinstance(a, dict) else None
        if seg is None or (isinstance(seg, dict) and "size" not in seg):
            raise DatasetError(f"the SA-1B annotations of {path}: annotation {i} has no 'segmentation' "
                               f"(an RLE with 'size' and 'counts')")
        hh, ww = (int(v) for v in seg["size"]) if isinstance(seg, dict) else (h, w)
        objs.append(ObjectRecord(
            object_id=str(a.get("id", i)),
            load_mask=(lambda s=seg, hh=hh, ww=ww: segmentation_to_mask(s, hh, ww)),
            meta={k: a[k] for k in ("area", "predicted_iou", "stability_score") if k in a},
        ))
    return ImageRecord(
        image_id=image_id, path=path, load_image=read_image, objects=objs,
        size=(int(h), int(w)) if h and w else None,
    )


def read_sa1b(root: str | os.PathLike) -> list[ImageRecord]:
    """SA-1B `sa_<id>.jpg` + `sa_<id>.json` pairs in a folder tree and/or `.tar` shards (or one shard)."""
    root = Path(root)
    records: list[ImageRecord] = []
    tars = [root] if root.is_file() else sorted(root.rglob("*.tar"))
    if root.is_dir():
        for js in sorted(root.rglob("sa_*.json")):
            img = next((js.with_suffix(e) for e in (".jpg", ".jpeg", ".png") if js.with_suffix(e).exists()), None)
            if img is None:
                continue
            records.append(sa1b_record(
                js.stem, str(img), (lambda p=img: read_rgb(p)), (lambda p=js: json.loads(p.read_text()))
            ))
    for t in tars:
        reader = _TarReader(t)
        with tarfile.open(t) as tf:
            names = {m.name for m in tf.getmembers() if m.isfile()}
        for name in sorted(n for n in names if Path(n).name.startswith("sa_") and n.endswith(".json")):
            stem = name[: -len(".json")]
            img = next((stem + e for e in (".jpg", ".jpeg", ".png") if stem + e in names), None)
            if img is None:
                continue
            records.append(sa1b_record(
                Path(stem).name, f"{t}:{img}",
                (lambda r=reader, n=img: read_rgb(r.read(n))),
                (lambda r=reader, n=name: json.loads(r.read(n))),
            ))
    if not records:
        raise FileNotFoundError(f"no SA-1B pairs (sa_<id>.jpg + sa_<id>.json) found in {root}")
    return records
