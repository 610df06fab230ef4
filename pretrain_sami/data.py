"""Image-folder data for SAMI through `datasets` (`imagefolder`, optionally streaming).

Every random choice of a sample (crop, flip, mask noise) comes from a generator seeded with
(seed, epoch, index), so a sample is the same whatever the number of processes or workers and
wherever a run was resumed. Unreadable images are skipped and counted, never fatal.
"""

from __future__ import annotations

import io
import math
import warnings
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}


def open_image_folder(path: str | Path, streaming: bool = False, cache_dir: str | None = None):
    """A folder tree of images (flat or ImageNet class sub-folders; labels dropped) as a `datasets`
    dataset whose `image` column is undecoded ({"path", "bytes"}): decoding happens in our loader so
    that a corrupt file can be skipped."""
    import datasets

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"image folder not found: {path}")
    if not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.rglob("*") if p.is_file()):
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {path}")
    ds = datasets.load_dataset(
        "imagefolder", data_dir=str(path), split="train", streaming=streaming, drop_labels=True, cache_dir=cache_dir
    )
    return ds.cast_column("image", datasets.Image(decode=False))


def decode_rgb(record: dict[str, Any]) -> Image.Image:
    """{"path", "bytes"} -> RGB PIL image (grayscale, palette, RGBA converted; alpha dropped)."""
    src = io.BytesIO(record["bytes"]) if record.get("bytes") else record["path"]
    with Image.open(src) as img:
        img.load()
        return img.convert("RGB")


def record_name(record: dict[str, Any]) -> str:
    return str(record.get("path") or "<bytes>")


TRAIN_STREAM, EVAL_STREAM, CACHE_STREAM = 0, 1, 2  # independent random streams per use


def sample_rng(seed: int, stream: int, epoch: int, key: int) -> np.random.Generator:
    """The generator of one sample: a function of (seed, use, epoch, sample key) only."""
    return np.random.default_rng([seed, stream, epoch, key])


def random_resized_crop_box(
    rng: np.random.Generator, width: int, height: int, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop sampling -> (left, top, w, h)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, w, h
    in_ratio = width / height  # fallback: central crop at the nearest allowed aspect ratio
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def center_crop_box(width: int, height: int, crop_fraction: float = 0.875) -> tuple[int, int, int, int]:
    """Evaluation view: the central square of side crop_fraction x the short side (Resize 256 + CenterCrop 224)."""
    side = max(1, int(round(min(width, height) * crop_fraction)))
    return (width - side) // 2, (height - side) // 2, side, side


def to_tensor(img: Image.Image, box: tuple[int, int, int, int], flip: bool, size: int) -> torch.Tensor:
    """Crop `box` (left, top, w, h), resize bicubic to size x size, flip, ImageNet-normalise -> (3, size, size)."""
    left, top, w, h = box
    view = img.resize((size, size), Image.BICUBIC, box=(left, top, left + w, top + h))
    if flip:
        view = view.transpose(Image.FLIP_LEFT_RIGHT)
    x = torch.from_numpy(np.asarray(view, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


class _Views:
    """Shared view logic of the train datasets."""

    def __init__(self, size: int, num_tokens: int, seed: int, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), hflip: float = 0.5):
        self.size, self.num_tokens, self.seed = size, num_tokens, seed
        self.scale, self.ratio, self.hflip = tuple(scale), tuple(ratio), hflip
        self.epoch = 0
        self._warned: set[str] = set()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def view(self, img: Image.Image, key: int) -> dict[str, torch.Tensor]:
        rng = sample_rng(self.seed, TRAIN_STREAM, self.epoch, key)
        box = random_resized_crop_box(rng, img.width, img.height, self.scale, self.ratio)
        flip = bool(rng.random() < self.hflip)
        noise = torch.from_numpy(rng.random(self.num_tokens, dtype=np.float32))
        return {"image": to_tensor(img, box, flip, self.size), "noise": noise}

    def warn_skip(self, record: dict[str, Any], err: Exception) -> None:
        name = record_name(record)
        if name not in self._warned:
            self._warned.add(name)
            warnings.warn(f"skipping unreadable image {name}: {type(err).__name__}: {err}", stacklevel=3)


class ImageFolderViews(_Views, Dataset):
    """Map-style: item i -> {"image": (3, S, S), "noise": (N,), "skipped": unreadable files met}.

    An unreadable image is replaced by the next readable one (i + 1, i + 2, ...), and counted.
    """

    def __init__(self, hf_dataset, size: int, num_tokens: int, seed: int, **kw: Any) -> None:
        super().__init__(size, num_tokens, seed, **kw)
        self.ds = hf_dataset

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> dict[str, Any]:
        skipped = 0
        for k in range(min(len(self.ds), 64)):
            i = (index + k) % len(self.ds)
            record = self.ds[i]["image"]
            try:
                img = decode_rgb(record)
            except Exception as e:  # noqa: BLE001 - any decoder error means "unreadable"
                self.warn_skip(record, e)
                skipped += 1
                continue
            return {**self.view(img, index), "skipped": skipped}
        raise RuntimeError(f"64 unreadable images in a row from index {index}: is this an image folder?")


class StreamingImageViews(_Views, IterableDataset):
    """Streaming: yields the same items as `ImageFolderViews` (keyed by the file path's CRC32),
    skipping unreadable images; a skipped image's count travels with the next yielded item."""

    def __init__(self, hf_iterable, size: int, num_tokens: int, seed: int, shuffle_buffer: int = 1000, **kw: Any):
        super().__init__(size, num_tokens, seed, **kw)
        self.ds = hf_iterable.shuffle(seed=seed, buffer_size=shuffle_buffer) if shuffle_buffer else hf_iterable

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.ds.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        skipped = 0
        for row in self.ds:
            record = row["image"]
            try:
                img = decode_rgb(record)
            except Exception as e:  # noqa: BLE001
                self.warn_skip(record, e)
                skipped += 1
                continue
            yield {**self.view(img, zlib.crc32(record_name(record).encode())), "skipped": skipped}
            skipped = 0


class EvalViews(Dataset):
    """Held-out images: centre view, fixed mask noise; unreadable images are dropped up front."""

    def __init__(self, hf_dataset, size: int, num_tokens: int, seed: int, max_images: int | None = None):
        self.items: list[dict[str, torch.Tensor]] = []
        self.skipped = 0
        n = len(hf_dataset) if max_images is None else min(len(hf_dataset), max_images)
        for i in range(n):
            record = hf_dataset[i]["image"]
            try:
                img = decode_rgb(record)
            except Exception as e:  # noqa: BLE001
                warnings.warn(f"skipping unreadable held-out image {record_name(record)}: {e}", stacklevel=2)
                self.skipped += 1
                continue
            rng = sample_rng(seed, EVAL_STREAM, 0, i)
            box = center_crop_box(img.width, img.height)
            self.items.append(
                {
                    "image": to_tensor(img, box, False, size),
                    "noise": torch.from_numpy(rng.random(num_tokens, dtype=np.float32)),
                }
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.items[i]


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors; sum the per-sample `skipped` counts."""
    out: dict[str, Any] = {}
    for k in samples[0]:
        vals = [s[k] for s in samples]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else torch.tensor(sum(vals))
    return out
