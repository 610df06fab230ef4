"""Readers for the published layouts of the interactive-segmentation benchmarks (RITM's dataset zips).

| layout | folders | objects |
|---|---|---|
| `boundary_gt` (GrabCut, Berkeley) | `data_GT/` images, `boundary_GT/` masks (same stem) | one per image (below) |
| `davis` | `img/` images, `gt/` masks (same stem) | one per image: any channel > 0 = object (as RITM's reader) |
| `sbd` | `img/*.jpg`, `inst/*.mat` (`GTinst.Segmentation`), `<split>.txt` | one per instance id > 0 |
| `voc` | `JPEGImages/`, `SegmentationObject/*.png` (palette), `ImageSets/Segmentation/<split>.txt` | index k = object k; 255 = ignore |

boundary_GT values: 255 (or 1, a 0/1 file) = object, 128 = ignore band, 0 = background; any other value
is refused. `open_interactive_dataset(path, layout=None)` detects these and otherwise hands the path to
`open_dataset` (mask folders such as `assets/grabcut`, COCO, SA-1B). Masks load on demand; a mask whose
size differs from its image's, unexpected values, or a missing file raise `DatasetError` naming the file.
SBD's MATLAB files are read with `scipy.io.loadmat` (an ImportError asks for scipy if it is missing).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from ..images import IMAGE_EXTENSIONS, read_rgb
from .layout import open_dataset
from .records import DatasetError, ImageRecord, ObjectRecord

__all__ = ["INTERACTIVE_LAYOUTS", "detect_interactive_layout", "open_interactive_dataset", "read_boundary_gt",
           "read_davis", "read_sbd", "read_voc"]

# layout -> the sub-folders that identify it
INTERACTIVE_LAYOUTS = {
    "boundary_gt": ("data_GT", "boundary_GT"), "davis": ("img", "gt"), "sbd": ("img", "inst"),
    "voc": ("JPEGImages", "SegmentationObject"),
}
_ALIASES = {"grabcut": "boundary_gt", "berkeley": "boundary_gt", "pascal_voc": "voc", "pascalvoc": "voc"}


def _values(arr: np.ndarray, k: int = 8) -> str:
    u = np.unique(arr)
    return ", ".join(str(v) for v in u[:k].tolist()) + (f", ... ({u.size} values)" if u.size > k else "")


def _hw(shape) -> str:
    return "x".join(str(v) for v in shape)


def _image_size(path: Path) -> tuple[int, int]:
    """(h, w) from the file header (no decoding)."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except FileNotFoundError:
        raise DatasetError(f"image file {path} does not exist") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"cannot read image file {path}: {e}") from None


def _read_array(path: Path, image: Path | None) -> np.ndarray:
    """A mask file as an integer array (HxW, or HxWxC for colour files), its size checked against `image`."""
    try:
        with Image.open(path) as im:
            arr = np.array(im)
    except FileNotFoundError:
        raise DatasetError(f"mask file {path} does not exist") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise DatasetError(f"cannot read mask file {path}: {e}") from None
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise DatasetError(f"mask file {path} is not a 2-D image (array shape {arr.shape})")
    if image is not None and arr.shape[:2] != _image_size(image):
        h, w = _image_size(image)
        raise DatasetError(f"mask file {path} is {arr.shape[0]}x{arr.shape[1]} (HxW), its image {image} {h}x{w}")
    return arr


def _files(folder: Path, suffixes=IMAGE_EXTENSIONS) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in suffixes and p.is_file()}


def _pairs(root: Path, images: str, masks: str, suffixes=IMAGE_EXTENSIONS) -> list[tuple[str, Path, Path]]:
    """(stem, image, mask) for every image of `root/images`, matched by stem in `root/masks`."""
    imgs, msks = _files(root / images), _files(root / masks, suffixes)
    if not imgs:
        raise DatasetError(f"{root / images} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    missing = [imgs[s] for s in imgs if s not in msks]
    if missing:
        raise DatasetError(f"image {missing[0]} has no mask in {root / masks} (same file stem)"
                           + (f"; {len(missing) - 1} more images lack one" if len(missing) > 1 else ""))
    return [(s, imgs[s], msks[s]) for s in imgs]


def _record(stem: str, image: Path, objects: list[ObjectRecord]) -> ImageRecord:
    return ImageRecord(image_id=stem, path=str(image), load_image=lambda p=image: read_rgb(p), objects=objects)


# ------------------------------------------------------------------------------------------------
# GrabCut / Berkeley: boundary_GT


def _stamp(path: Path) -> int | None:
    """The file's modification time: part of the cache keys, so that an edited file is read again."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _cached(fn):
    """`fn(path, image)` cached on (path, image, mtime): the mask and ignore of an object (and the objects of
    an instance map) come from one read of the file."""
    inner = lru_cache(maxsize=8)(lambda path, image, stamp: fn(path, image))
    return lambda path, image: inner(path, image, _stamp(path))


@_cached
def _boundary_gt(path: Path, image: Path) -> tuple[np.ndarray, np.ndarray]:
    """(object, ignore band) of a boundary_GT file: 255 or 1 = object, 128 = ignore, 0 = background."""
    arr = _read_array(path, image)
    if arr.ndim == 3:
        arr = arr[..., 0]
    bad = ~np.isin(arr, (0, 1, 128, 255))
    if bad.any():
        raise DatasetError(f"mask file {path} holds values {_values(arr)}: a boundary_GT mask has only 0 "
                           f"(background), 128 (ignore band) and 255 or 1 (object)")
    return (arr == 255) | (arr == 1), arr == 128


def read_boundary_gt(root: str | os.PathLike) -> list[ImageRecord]:
    """GrabCut / Berkeley: `data_GT/` images, `boundary_GT/` masks -> one object per image."""
    root = Path(root)
    records = []
    for stem, img, msk in _pairs(root, "data_GT", "boundary_GT"):
        obj = ObjectRecord(object_id=stem, load_mask=lambda m=msk, i=img: _boundary_gt(m, i)[0].copy(),
                           load_ignore=lambda m=msk, i=img: _boundary_gt(m, i)[1].copy(),
                           meta={"mask_file": str(msk), "ignore_file": str(msk)})
        records.append(_record(stem, img, [obj]))
    return records


# ------------------------------------------------------------------------------------------------
# DAVIS


def _davis_mask(path: Path, image: Path) -> np.ndarray:
    arr = _read_array(path, image)
    return (arr.max(axis=2) if arr.ndim == 3 else arr) > 0


def read_davis(root: str | os.PathLike) -> list[ImageRecord]:
    """DAVIS (RITM's 345-frame set): `img/` images, `gt/` masks -> one object per image (value > 0)."""
    root = Path(root)
    return [_record(stem, img, [ObjectRecord(object_id=stem, load_mask=lambda m=msk, i=img: _davis_mask(m, i),
                                             meta={"mask_file": str(msk)})])
            for stem, img, msk in _pairs(root, "img", "gt")]


# ------------------------------------------------------------------------------------------------
# Instance maps: SBD (.mat) and PascalVOC (palette PNG)


def _split(root: Path, list_file: Path) -> list[str]:
    if not list_file.is_file():
        raise DatasetError(f"split file {list_file} does not exist (one image name per line)")
    names = [s.strip() for s in list_file.read_text().splitlines() if s.strip()]
    if not names:
        raise DatasetError(f"split file {list_file} lists no images")
    return names


def _find(folder: Path, stem: str, suffixes: tuple[str, ...], listed_in: Path) -> Path:
    for s in suffixes:
        if (folder / (stem + s)).is_file():
            return folder / (stem + s)
    raise DatasetError(f"{folder / (stem + suffixes[0])} does not exist (listed in {listed_in})")


def _instances(stem: str, img: Path, msk: Path, load, ignore_value: int | None) -> ImageRecord:
    """One object per instance id > 0 (other than `ignore_value`) of the map `load(msk, img)`."""
    ids = [int(v) for v in np.unique(load(msk, img)) if v != 0 and v != ignore_value]
    objs = [ObjectRecord(
        object_id=f"{stem}_{k}", load_mask=lambda k=k: load(msk, img) == k,
        load_ignore=None if ignore_value is None else (lambda: load(msk, img) == ignore_value),
        meta={"mask_file": str(msk), "object_id": k, **({"ignore_file": str(msk)} if ignore_value is not None else {})},
    ) for k in ids]
    return _record(stem, img, objs)


@_cached
def _sbd_map(path: Path, image: Path) -> np.ndarray:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise ImportError(f"reading SBD's instance maps ({path}) needs scipy: pip install scipy") from None
    try:
        seg = loadmat(str(path))["GTinst"][0][0]["Segmentation"]
    except FileNotFoundError:
        raise DatasetError(f"mask file {path} does not exist") from None
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise DatasetError(f"cannot read the GTinst.Segmentation instance map of {path}: {e}") from None
    seg = np.asarray(seg)
    if seg.shape != _image_size(image):
        h, w = _image_size(image)
        raise DatasetError(f"mask file {path} is {_hw(seg.shape)} (HxW), its image {image} {h}x{w}")
    return seg


def read_sbd(root: str | os.PathLike, split: str = "val") -> list[ImageRecord]:
    """SBD: the images of `<split>.txt`, `img/<name>.jpg`, instances of `inst/<name>.mat`."""
    root = Path(root)
    listed = root / f"{split}.txt"
    out = []
    for stem in _split(root, listed):
        img, msk = _find(root / "img", stem, (".jpg", ".png"), listed), _find(root / "inst", stem, (".mat",), listed)
        out.append(_instances(stem, img, msk, _sbd_map, None))
    return out


@_cached
def _voc_map(path: Path, image: Path) -> np.ndarray:
    arr = _read_array(path, image)
    if arr.ndim == 3:
        raise DatasetError(f"mask file {path} is a colour image: VOC's SegmentationObject masks are palette PNGs "
                           f"whose indices are the instance ids (do not convert them to RGB)")
    return arr


def read_voc(root: str | os.PathLike, split: str = "val") -> list[ImageRecord]:
    """PascalVOC: images of `ImageSets/Segmentation/<split>.txt`, instances of `SegmentationObject/`
    (index k = object k, 255 = the ignore border of every object)."""
    root = Path(root)
    listed = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    out = []
    for stem in _split(root, listed):
        img = _find(root / "JPEGImages", stem, (".jpg", ".jpeg", ".png"), listed)
        msk = _find(root / "SegmentationObject", stem, (".png",), listed)
        out.append(_instances(stem, img, msk, _voc_map, 255))
    return out


# ------------------------------------------------------------------------------------------------
# Detection


def detect_interactive_layout(path: str | os.PathLike) -> str | None:
    """'boundary_gt', 'davis', 'sbd' or 'voc' if `path` holds that layout, else None."""
    p = Path(path)
    if not p.is_dir():
        return None
    for name, folders in INTERACTIVE_LAYOUTS.items():
        if all((p / f).is_dir() for f in folders):
            return name
    return None


def open_interactive_dataset(path: str | os.PathLike, layout: str | None = None, split: str = "val",
                             **kwargs) -> list[ImageRecord]:
    """Records of an interactive-segmentation benchmark; `layout` None detects it (aliases: grabcut,
    berkeley = boundary_gt). Other layouts (masks, coco, sa1b, auto) go to `open_dataset`."""
    if not Path(path).exists():
        raise FileNotFoundError(f"dataset path {path} does not exist")
    name = _ALIASES.get(layout, layout) if layout is not None else detect_interactive_layout(path)
    known = (*INTERACTIVE_LAYOUTS, *_ALIASES, "auto", "masks", "coco", "sa1b")
    if layout is not None and layout not in known:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(known)}")
    if name == "boundary_gt":
        return read_boundary_gt(path)
    if name == "davis":
        return read_davis(path)
    if name == "sbd":
        return read_sbd(path, split)
    if name == "voc":
        return read_voc(path, split)
    return open_dataset(path, name or "auto", **kwargs)
