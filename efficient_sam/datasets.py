"""Readers for the segmentation data layouts of DESIGN.md, and COCO RLE / polygon masks in numpy.

Layouts (`open_dataset(path)` detects them):
- **mask folder**: `images/`, `masks/` (0/255, one file per object), optional `ignore/` (255 = pixels
  excluded from the metrics), optional `pairs.csv` (columns `image`, `mask`, `ignore`, optionally
  `name`, `object_id`; paths relative to the folder), as `../shared/data/grabcut/`.
- **COCO** instances JSON (`images`, `annotations`): a `.json` file, or a folder holding one in
  `annotations/`; crowd annotations are skipped unless asked for.
- **SA-1B**: `sa_<id>.jpg` + `sa_<id>.json` (COCO RLE annotations), in folders or `.tar` shards.

Every reader returns `ImageRecord`s whose image and object masks are loaded on demand, so a whole
SA-1B shard can be listed cheaply. The RLE functions are standalone numpy ports of pycocotools'
`maskApi.c` (`rle_decode`, `rle_encode`, `polygons_to_mask`) and give identical masks.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from PIL import Image

__all__ = [
    "rle_decode", "rle_encode", "rle_from_string", "rle_to_string", "polygons_to_mask", "segmentation_to_mask",
    "mask_to_box", "ObjectRecord", "ImageRecord", "read_mask_folder", "read_coco", "read_sa1b", "sa1b_record",
    "detect_layout", "open_dataset", "read_rgb", "IMAGE_EXTENSIONS",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


# ----------------------------------------------------------------------------------------------
# COCO run-length encoding (column-major runs, starting with a run of zeros)
# ----------------------------------------------------------------------------------------------


def rle_from_string(s: str | bytes) -> list[int]:
    """Counts of a compressed COCO RLE string (LEB128-like, 5 bits per char, deltas from the 3rd on)."""
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_to_string(counts: Sequence[int]) -> str:
    """Compressed COCO RLE string of run counts (inverse of `rle_from_string`)."""
    out = []
    for i, c in enumerate(counts):
        x = int(c) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = (x != -1) if (ch & 0x10) else (x != 0)
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def _counts_to_mask(counts: Sequence[int], h: int, w: int) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, expected {h}x{w} = {h * w}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    return np.repeat(values, counts).reshape(w, h).T


def rle_decode(rle: dict) -> np.ndarray:
    """COCO RLE `{"size": [h, w], "counts": str | bytes | list[int]}` -> HxW bool mask."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = rle_from_string(counts)
    return _counts_to_mask(counts, h, w)


def _mask_counts(mask: np.ndarray) -> list[int]:
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)  # column-major
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return counts


def rle_encode(mask: np.ndarray) -> dict:
    """HxW mask -> compressed COCO RLE `{"size": [h, w], "counts": str}` (as pycocotools, str not bytes)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected an HxW mask, got shape {mask.shape}")
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle_to_string(_mask_counts(mask))}


def _polygon_counts(xy: Sequence[float], h: int, w: int) -> list[int]:
    """pycocotools `rleFrPoly`: rasterise one polygon exactly as the COCO API does."""
    scale = 5.0
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    k = len(xy)
    # C casts truncate toward zero.
    x = np.trunc(scale * xy[:, 0] + 0.5).astype(np.int64)
    y = np.trunc(scale * xy[:, 1] + 0.5).astype(np.int64)
    x, y = np.append(x, x[0]), np.append(y, y[0])
    us, vs = [], []
    for j in range(k):
        xs, xe, ys, ye = int(x[j]), int(x[j + 1]), int(y[j]), int(y[j + 1])
        dx, dy = abs(xe - xs), abs(ys - ye)
        flip = (dx >= dy and xs > xe) or (dx < dy and ys > ye)
        if flip:
            xs, xe, ys, ye = xe, xs, ye, ys
        if dx == 0 and dy == 0:  # repeated vertex: C divides 0/0, the point is never used below
            us.append(np.array([xs]))
            vs.append(np.array([ys]))
            continue
        if dx >= dy:
            s = (ye - ys) / dx
            d = np.arange(dx + 1)
            t = dx - d if flip else d
            us.append(t + xs)
            vs.append(np.trunc(ys + s * t + 0.5).astype(np.int64))
        else:
            s = (xe - xs) / dy
            d = np.arange(dy + 1)
            t = dy - d if flip else d
            vs.append(t + ys)
            us.append(np.trunc(xs + s * t + 0.5).astype(np.int64))
    u = np.concatenate(us) if us else np.zeros(0, np.int64)
    v = np.concatenate(vs) if vs else np.zeros(0, np.int64)
    # Points where the boundary crosses a column, downsampled to the pixel grid.
    j = np.flatnonzero(u[1:] != u[:-1]) + 1
    xd = np.where(u[j] < u[j - 1], u[j], u[j] - 1).astype(np.float64)
    xd = (xd + 0.5) / scale - 0.5
    keep = (np.floor(xd) == xd) & (xd >= 0) & (xd <= w - 1)
    yd = np.minimum(v[j], v[j - 1]).astype(np.float64)
    yd = (yd + 0.5) / scale - 0.5
    yd = np.ceil(np.clip(yd, 0, h))
    xi, yi = xd[keep].astype(np.int64), yd[keep].astype(np.int64)
    a = np.sort(np.append(xi * h + yi, h * w))
    a = np.diff(a, prepend=0).tolist()
    b = [a[0]]
    i = 1
    while i < len(a):
        if a[i] > 0:
            b.append(a[i])
            i += 1
        else:
            i += 1
            if i < len(a):
                b[-1] += a[i]
                i += 1
    return b


def polygons_to_mask(polygons: Sequence[Sequence[float]], h: int, w: int) -> np.ndarray:
    """COCO polygons `[[x0, y0, x1, y1, ...], ...]` -> HxW bool mask (union; pycocotools' rasteriser)."""
    mask = np.zeros((h, w), dtype=bool)
    for poly in polygons:
        if len(poly) < 6:  # pycocotools needs >= 3 points
            continue
        mask |= _counts_to_mask(_polygon_counts(poly, h, w), h, w)
    return mask


def segmentation_to_mask(segmentation: Any, h: int, w: int) -> np.ndarray:
    """A COCO `segmentation` (polygon list, uncompressed or compressed RLE) -> HxW bool mask."""
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, h, w)
    if isinstance(segmentation, dict):
        mask = rle_decode(segmentation)
        if mask.shape != (h, w):
            raise ValueError(f"RLE size {mask.shape} differs from the image size {(h, w)}")
        return mask
    raise TypeError(f"unknown COCO segmentation of type {type(segmentation).__name__}")


def mask_to_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight box (x0, y0, x1, y1) of a mask, x1/y1 exclusive (COCO's continuous box); None if empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


# ----------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------


@dataclass
class ObjectRecord:
    """One annotated object; `mask()` / `ignore()` load on demand (bool HxW)."""

    object_id: str
    load_mask: Callable[[], np.ndarray]
    load_ignore: Callable[[], np.ndarray | None] | None = None
    meta: dict = field(default_factory=dict)

    def mask(self) -> np.ndarray:
        return self.load_mask()

    def ignore(self) -> np.ndarray | None:
        return self.load_ignore() if self.load_ignore is not None else None


@dataclass
class ImageRecord:
    """One image and its objects; `image()` loads HxWx3 uint8 RGB."""

    image_id: str
    path: str
    load_image: Callable[[], np.ndarray]
    objects: list[ObjectRecord]
    size: tuple[int, int] | None = None  # (h, w) when known without decoding
    meta: dict = field(default_factory=dict)

    def image(self) -> np.ndarray:
        return self.load_image()


def read_rgb(path: str | os.PathLike | io.IOBase) -> np.ndarray:
    """An image file -> HxWx3 uint8 RGB (grayscale, palette and RGBA converted)."""
    with Image.open(path) as im:
        return np.array(im.convert("RGB"))


_read_rgb = read_rgb


def _read_binary(path: str | os.PathLike, object_id: int | None = None) -> np.ndarray:
    with Image.open(path) as im:
        arr = np.array(im)
    if arr.ndim == 3:  # RGB(A) mask image: the first channel
        arr = arr[..., 0]
    if object_id is None or object_id == 255:
        return arr > 128
    return arr == object_id


# ----------------------------------------------------------------------------------------------
# Mask folder
# ----------------------------------------------------------------------------------------------


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def read_mask_folder(root: str | os.PathLike) -> list[ImageRecord]:
    """`images/`, `masks/`, optional `ignore/` and `pairs.csv` -> one record per image (objects grouped)."""
    root = Path(root)
    if not (root / "images").is_dir() or not (root / "masks").is_dir():
        raise FileNotFoundError(f"{root} is not a mask folder: it needs images/ and masks/ subfolders")
    rows: list[dict] = []
    pairs = root / "pairs.csv"
    if pairs.exists():
        with open(pairs, newline="") as f:
            for r in csv.DictReader(f):
                if not r.get("image") or not r.get("mask"):
                    raise ValueError(f"{pairs}: every row needs 'image' and 'mask' columns")
                rows.append(r)
    else:
        images = _files(root / "images")
        by_stem = {p.stem: p for p in images}
        stems = sorted(by_stem, key=len, reverse=True)
        for m in _files(root / "masks"):
            img = by_stem.get(m.stem)
            if img is None:  # <image stem>_<k>.png / <image stem>-<k>.png, longest stem first
                img = next((by_stem[s] for s in stems if m.stem.startswith(s) and m.stem[len(s)] in "_-"), None)
            if img is None:
                raise ValueError(f"mask {m} matches no image in {root / 'images'} (by file stem)")
            ign = next((p for p in (root / "ignore" / m.name, root / "ignore" / (m.stem + ".png")) if p.exists()), None)
            rows.append({
                "name": m.stem, "image": str(img.relative_to(root)), "mask": str(m.relative_to(root)),
                "ignore": str(ign.relative_to(root)) if ign else "",
            })
    records: dict[str, ImageRecord] = {}
    for r in rows:
        img_rel = r["image"]
        if img_rel not in records:
            path = root / img_rel
            records[img_rel] = ImageRecord(
                image_id=Path(img_rel).stem, path=str(path), load_image=(lambda p=path: _read_rgb(p)), objects=[]
            )
        rec = records[img_rel]
        oid = r.get("object_id") or None
        oid = int(oid) if oid not in (None, "") else None
        mpath = root / r["mask"]
        ipath = root / r["ignore"] if r.get("ignore") else None
        name = r.get("name") or Path(r["mask"]).stem
        rec.objects.append(ObjectRecord(
            object_id=name,
            load_mask=(lambda p=mpath, o=oid: _read_binary(p, o)),
            load_ignore=(lambda p=ipath: _read_binary(p)) if ipath is not None else None,
            meta={"mask": r["mask"], **({"ignore": r["ignore"]} if ipath is not None else {})},
        ))
    return list(records.values())


# ----------------------------------------------------------------------------------------------
# COCO instances JSON
# ----------------------------------------------------------------------------------------------


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
    with open(json_path) as f:
        coco = json.load(f)
    if "images" not in coco or "annotations" not in coco:
        raise ValueError(f"{json_path} is not a COCO instances file (needs 'images' and 'annotations')")
    anns: dict[Any, list[dict]] = {}
    for a in coco["annotations"]:
        if a.get("iscrowd", 0) and not include_crowd:
            continue
        anns.setdefault(a["image_id"], []).append(a)
    records = []
    img_dir = None
    for im in coco["images"]:
        objs = anns.get(im["id"], [])
        if not objs:
            continue
        if img_dir is None:
            img_dir = _coco_image_dir(json_path, im["file_name"], image_dir)
        h, w = int(im["height"]), int(im["width"])
        path_i = img_dir / im["file_name"]
        records.append(ImageRecord(
            image_id=str(im["id"]), path=str(path_i), load_image=(lambda p=path_i: _read_rgb(p)), size=(h, w),
            objects=[
                ObjectRecord(
                    object_id=str(a.get("id", i)),
                    load_mask=(lambda s=a["segmentation"], h=h, w=w: segmentation_to_mask(s, h, w)),
                    meta={"category_id": a.get("category_id"), "iscrowd": int(a.get("iscrowd", 0))},
                )
                for i, a in enumerate(objs)
            ],
        ))
    return records


# ----------------------------------------------------------------------------------------------
# SA-1B
# ----------------------------------------------------------------------------------------------


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
    meta = read_json()
    info = meta.get("image", {})
    h, w = info.get("height"), info.get("width")
    objs = []
    for i, a in enumerate(meta.get("annotations", [])):
        seg = a["segmentation"]
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
                js.stem, str(img), (lambda p=img: _read_rgb(p)), (lambda p=js: json.loads(p.read_text()))
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
                (lambda r=reader, n=img: _read_rgb(io.BytesIO(r.read(n)))),
                (lambda r=reader, n=name: json.loads(r.read(n))),
            ))
    if not records:
        raise FileNotFoundError(f"no SA-1B pairs (sa_<id>.jpg + sa_<id>.json) found in {root}")
    return records


# ----------------------------------------------------------------------------------------------
# Detection
# ----------------------------------------------------------------------------------------------


def detect_layout(path: str | os.PathLike) -> str:
    """'masks', 'coco' or 'sa1b' for a dataset path."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"dataset path {p} does not exist")
    if p.is_file():
        if p.suffix == ".json":
            return "coco"
        if p.suffix == ".tar":
            return "sa1b"
        raise ValueError(f"cannot tell the layout of file {p} (expected a COCO .json or an SA-1B .tar)")
    if (p / "images").is_dir() and (p / "masks").is_dir():
        return "masks"
    if (p / "annotations").is_dir() and any((p / "annotations").glob("*.json")):
        return "coco"
    if next(p.rglob("sa_*.json"), None) is not None or next(p.rglob("*.tar"), None) is not None:
        return "sa1b"
    if any(p.glob("*.json")):
        return "coco"
    raise ValueError(
        f"cannot tell the layout of {p}: expected images/ + masks/ (mask folder), annotations/*.json (COCO) "
        f"or sa_<id>.jpg + sa_<id>.json / .tar shards (SA-1B)"
    )


def open_dataset(path: str | os.PathLike, layout: str = "auto", **kwargs: Any) -> list[ImageRecord]:
    """Records of a dataset in any supported layout ('auto' detects it)."""
    layout = detect_layout(path) if layout == "auto" else layout
    if layout == "masks":
        return read_mask_folder(path)
    if layout == "coco":
        return read_coco(path, **kwargs)
    if layout == "sa1b":
        return read_sa1b(path)
    raise ValueError(f"unknown layout {layout!r}; expected auto, masks, coco or sa1b")


def iter_objects(records: Sequence[ImageRecord]) -> Iterator[tuple[ImageRecord, ObjectRecord]]:
    for rec in records:
        for obj in rec.objects:
            yield rec, obj
