"""Image-folder data for SAMI through `datasets` (`imagefolder`, optionally streaming).

Every random choice of a sample (crop, flip, mask noise) comes from a generator seeded with
(seed, epoch, index), so a sample is the same whatever the number of processes or workers and
wherever a run was resumed. Unreadable images are skipped and counted, never fatal
(`efficient_sam.training.data.Skipper`); images are read with `efficient_sam.images`.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset

from efficient_sam.images import IMAGE_EXTENSIONS, open_rgb
from efficient_sam.training.data import Skipper, sample_rng

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    return open_rgb(record["bytes"] if record.get("bytes") else record["path"])


def record_name(record: dict[str, Any]) -> str:
    return str(record.get("path") or "<bytes>")


# Independent random streams per use: a sample's generator is `sample_rng(seed, stream, epoch, key)`.
TRAIN_STREAM, EVAL_STREAM, CACHE_STREAM = 0, 1, 2


def unreadable_skipper(message: str = "skipping unreadable image {name}: {kind}: {err}") -> Skipper:
    """A Skipper for image decoding: any decoder error means "unreadable"."""
    return Skipper(message, errors=(Exception,))


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
        self.skipper = unreadable_skipper()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def view(self, img: Image.Image, key: int) -> dict[str, torch.Tensor]:
        rng = sample_rng(self.seed, TRAIN_STREAM, self.epoch, key)
        box = random_resized_crop_box(rng, img.width, img.height, self.scale, self.ratio)
        flip = bool(rng.random() < self.hflip)
        noise = torch.from_numpy(rng.random(self.num_tokens, dtype=np.float32))
        return {"image": to_tensor(img, box, flip, self.size), "noise": noise}


class ImageFolderViews(_Views, Dataset):
    """Map-style: item i -> {"image": (3, S, S), "noise": (N,), "skipped": 1 if image i is unreadable}.

    An unreadable image is replaced by the next readable one (i + 1, i + 2, ...); it is counted by
    its own index only, so `data/skipped_images` grows by the number of unreadable files per epoch.
    """

    def __init__(self, hf_dataset, size: int, num_tokens: int, seed: int, **kw: Any) -> None:
        super().__init__(size, num_tokens, seed, **kw)
        self.ds = hf_dataset

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> dict[str, Any]:
        skipped, img = self.skipper.first_usable(
            self.ds, index, lambda row, _: decode_rgb(row["image"]), name=lambda row: record_name(row["image"]),
            error="{tries} unreadable images in a row from index {index}: is data.train an image folder?",
        )
        return {**self.view(img, index), "skipped": skipped}


class StreamingImageViews(_Views, IterableDataset):
    """Streaming: yields the same items as `ImageFolderViews` (keyed by the file path's CRC32),
    skipping unreadable images; a skipped image's count travels with the next yielded item (each
    unreadable file counts once per pass)."""

    def __init__(self, hf_iterable, size: int, num_tokens: int, seed: int, shuffle_buffer: int = 1000, **kw: Any):
        super().__init__(size, num_tokens, seed, **kw)
        self.ds = hf_iterable.shuffle(seed=seed, buffer_size=shuffle_buffer) if shuffle_buffer else hf_iterable

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.ds.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        records = (row["image"] for row in self.ds)
        for skipped, (record, img) in self.skipper.usable(records, lambda r: (r, decode_rgb(r)), record_name):
            yield {**self.view(img, zlib.crc32(record_name(record).encode())), "skipped": skipped}


class EvalViews(Dataset):
    """Held-out images: centre view, fixed mask noise; unreadable images are dropped up front."""

    def __init__(self, hf_dataset, size: int, num_tokens: int, seed: int, max_images: int | None = None):
        self.items: list[dict[str, torch.Tensor]] = []
        n = len(hf_dataset) if max_images is None else min(len(hf_dataset), max_images)
        skipper = unreadable_skipper("skipping unreadable held-out image {name}: {err}")
        records = ((i, hf_dataset[i]["image"]) for i in range(n))
        for _, (i, img) in skipper.usable(records, lambda r: (r[0], decode_rgb(r[1])), lambda r: record_name(r[1])):
            rng = sample_rng(seed, EVAL_STREAM, 0, i)
            box = center_crop_box(img.width, img.height)
            self.items.append(
                {
                    "image": to_tensor(img, box, False, size),
                    "noise": torch.from_numpy(rng.random(num_tokens, dtype=np.float32)),
                }
            )
        self.skipped = skipper.total

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
