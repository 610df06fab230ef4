"""Fine-tuning data: images with object masks -> model inputs, targets and first prompts.

Sources: SA-1B (`sa_<id>.jpg` + `sa_<id>.json`, folders or `.tar` shards) streamed through
`datasets` (`IterableDataset.from_generator` over the shards, so DataLoader workers and processes
split the shards), or any layout of `efficient_sam.datasets` (mask folder, COCO JSON, SA-1B) as a
map-style dataset.

Per image: the family's own preprocessing (`efficient_sam.transforms.preprocess`, exactly what
inference uses), masks covering more than `max_mask_area` of the image dropped, up to `max_masks`
masks drawn at random, targets resized to the loss grid (`mask_size`, default the decoder's low-res
4h x 4w, covering the input frame), and each mask's first prompt: a point drawn uniformly from it,
or its box with noise. Every random choice comes from a generator seeded by (seed, epoch, image key),
so a sample does not depend on workers, processes or resumption. Unreadable records are skipped,
warned about once and counted (`efficient_sam.training.data`: `RecordSamples`, `Skipper`, `SkipRecord`,
`sample_rng`; re-exported here).
"""

from __future__ import annotations

import json
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset

from efficient_sam import transforms
from efficient_sam.config import SamConfig
from efficient_sam.datasets import ImageRecord, mask_to_box, open_dataset, sa1b_record
from efficient_sam.images import read_rgb
from efficient_sam.training.data import RecordSamples, SkipRecord, sample_rng  # noqa: F401 - re-exported
from efficient_sam.training.data import Skipper, skip_on_error, total_skipped

from .prompt_simulation import PromptConfig, noisy_boxes


@dataclass
class DataConfig:
    train: str = "data/sa1b"
    val: str | None = None  # held-out mask folder (or any layout) for eval/miou_box, eval/miou_point
    layout: str = "auto"  # auto | sa1b | masks | coco
    streaming: str = "auto"  # auto (stream SA-1B, map-style otherwise) | true | false
    num_train_examples: int | None = None  # images per epoch when streaming (default: counted)
    shuffle_buffer: int = 1000  # streaming shuffle buffer (images)
    shard_size: int = 1000  # images per stream shard of an extracted SA-1B folder
    max_images: int | None = None  # use only the first N images (sorted) of data.train
    max_masks: int = 64  # masks per image per step (SAM: up to 64)
    max_mask_area: float = 0.9  # drop masks covering more than this fraction of the image (SAM)
    mask_size: int | None = None  # loss grid; None = the decoder's low-res output (4 x embedding grid)
    max_val_images: int | None = 200
    eval_prompts: tuple[str, ...] = ("box", "point")


def _resize_mask(mask: np.ndarray, size: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """HxW bool -> bool on `grid` (h, w) with the content resized (antialiased bilinear, > 0.5) to
    `size` (h, w) at the top left and zero padding elsewhere."""
    im = Image.fromarray(mask.astype(np.uint8) * 255).resize((size[1], size[0]), Image.BILINEAR)
    out = np.zeros(grid, dtype=bool)
    out[: size[0], : size[1]] = np.asarray(im) >= 128
    return out


class SampleBuilder:
    """ImageRecord + generator -> one training sample (see the module docstring)."""

    def __init__(self, model_cfg: SamConfig, data: DataConfig, prompt: PromptConfig) -> None:
        self.cfg, self.data, self.prompt = model_cfg, data, prompt
        enc = model_cfg.image_encoder
        self.img_size = enc.img_size
        self.mask_size = data.mask_size or 4 * enc.grid_size

    def masks(self, rec: ImageRecord, h: int, w: int, rng: np.random.Generator) -> list[np.ndarray]:
        """Up to `max_masks` usable masks in random order (areas from the annotation when given, so
        that only the chosen masks are decoded)."""
        limit = self.data.max_mask_area * h * w
        order = rng.permutation(len(rec.objects))
        areas = [o.meta.get("area") for o in rec.objects]
        if all(a is not None for a in areas):
            order = [i for i in order if 0 < areas[i] <= limit]
        out = []
        for i in order:
            m = rec.objects[i].mask()
            if m.shape != (h, w):
                raise SkipRecord(f"mask {rec.objects[i].object_id} is {m.shape}, the image {(h, w)}")
            area = int(m.sum())
            if 0 < area <= limit:
                out.append(m)
                if len(out) == self.data.max_masks:
                    break
        return out

    def __call__(self, rec: ImageRecord, rng: np.random.Generator) -> dict[str, Any]:
        with skip_on_error():
            image = rec.image()
            h, w = image.shape[:2]
            masks = self.masks(rec, h, w, rng)
        if not masks:
            raise SkipRecord("no mask within the area limits")
        cfg, s, m = self.cfg, self.img_size, self.mask_size
        ih, iw = transforms.input_size((h, w), cfg)  # the content inside the S x S input
        grid_size = (round(ih * m / s), round(iw * m / s))
        targets = np.stack([_resize_mask(mk, grid_size, (m, m)) for mk in masks])
        # First prompts, in original pixels, then mapped to the input frame like at inference.
        points = np.empty((len(masks), 2), dtype=np.float32)
        for k, mk in enumerate(masks):
            ys, xs = np.nonzero(mk)
            j = rng.integers(ys.size)
            points[k] = xs[j], ys[j]
        boxes = np.array([mask_to_box(mk) for mk in masks], dtype=np.float32)
        points_in = transforms.transform_coords(torch.from_numpy(points), (h, w), cfg)
        boxes_in = transforms.transform_boxes(torch.from_numpy(boxes), (h, w), cfg).numpy()
        boxes_in = noisy_boxes(boxes_in, rng, self.prompt.box_noise_std, self.prompt.box_noise_max, (iw, ih))
        return {
            "image": transforms.preprocess(image, cfg)[0],
            "masks": torch.from_numpy(targets),
            "points": points_in,
            "boxes": torch.from_numpy(boxes_in),
            "use_box": torch.from_numpy(rng.random(len(masks)) < self.prompt.box_prob),
            "seed": int(rng.integers(2**62)),
        }


# ----------------------------------------------------------------------------------------------
# SA-1B streaming through `datasets`
# ----------------------------------------------------------------------------------------------


def _stream_features():
    import datasets

    return datasets.Features({
        "__key__": datasets.Value("string"), "__url__": datasets.Value("string"),
        "jpg": datasets.Value("binary"), "json": datasets.Value("string"),
    })


def _tar_pairs(path: str) -> Iterator[dict[str, Any]]:
    """Stream a tar front to back, yielding each `sa_<id>` once both its .jpg and .json were read."""
    pending: dict[str, dict[str, Any]] = {}
    with tarfile.open(path, mode="r|*") as tf:
        for member in tf:
            if not member.isfile():
                continue
            name = Path(member.name).name
            key, _, ext = name.partition(".")
            ext = {"jpeg": "jpg"}.get(ext.lower(), ext.lower())
            if not key.startswith("sa_") or ext not in ("jpg", "json"):
                continue
            f = tf.extractfile(member)
            data = f.read() if f is not None else b""
            entry = pending.setdefault(key, {"__key__": key, "__url__": path})
            entry[ext] = data if ext == "jpg" else data.decode("utf-8", errors="replace")
            if "jpg" in entry and "json" in entry:
                yield pending.pop(key)
    for key, entry in pending.items():  # half pairs: reported as broken records downstream
        yield {"__key__": key, "__url__": path, "jpg": entry.get("jpg", b""), "json": entry.get("json", "")}


def _sa1b_rows(shards: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for shard in shards:
        if shard["kind"] == "tar":
            yield from _tar_pairs(shard["path"])
        else:
            for js in shard["files"]:
                js = Path(js)
                img = js.with_suffix(".jpg")
                try:
                    jpg, text = img.read_bytes(), js.read_text()
                except OSError:
                    jpg, text = b"", ""
                yield {"__key__": js.stem, "__url__": str(js.parent), "jpg": jpg, "json": text}


def sa1b_shards(path: str | Path, shard_size: int = 1000) -> list[dict[str, Any]]:
    """The stream shards of SA-1B data: one per `.tar`, and chunks of `shard_size` images of folders."""
    root = Path(path)
    if root.is_file():
        return [{"kind": "tar", "path": str(root)}]
    shards = [{"kind": "tar", "path": str(t)} for t in sorted(root.rglob("*.tar"))]
    files = [str(p) for p in sorted(root.rglob("sa_*.json")) if p.with_suffix(".jpg").exists()]
    shards += [{"kind": "files", "files": files[i : i + shard_size]} for i in range(0, len(files), shard_size)]
    if not shards:
        raise FileNotFoundError(f"no SA-1B data (sa_<id>.jpg + sa_<id>.json, or .tar shards) under {root}")
    return shards


def count_sa1b_images(shards: list[dict[str, Any]]) -> int:
    n = 0
    for shard in shards:
        if shard["kind"] == "tar":
            with tarfile.open(shard["path"]) as tf:
                n += sum(1 for name in tf.getnames() if Path(name).name.startswith("sa_") and name.endswith(".json"))
        else:
            n += len(shard["files"])
    return n


def open_sa1b_stream(path: str | Path, shard_size: int = 1000):
    """SA-1B folders / tar shards as a streaming `datasets.IterableDataset` with columns `__key__`,
    `__url__`, `jpg` (bytes) and `json` (text); `n_shards` = tars + folder chunks."""
    import datasets

    shards = sa1b_shards(path, shard_size)
    return datasets.IterableDataset.from_generator(
        _sa1b_rows, gen_kwargs={"shards": shards}, features=_stream_features()
    )


def row_record(row: dict[str, Any]) -> ImageRecord:
    """A streamed SA-1B row -> ImageRecord (JSON parsed now, image and masks decoded on demand)."""
    with skip_on_error():
        return sa1b_record(
            row["__key__"], f"{row['__url__']}:{row['__key__']}", lambda: read_rgb(row["jpg"]),
            lambda: json.loads(row["json"]),
        )


class StreamingSamples(IterableDataset):
    """Streaming SA-1B: the same samples as `RecordSamples` would give (keyed by the image id's
    CRC32), shuffled with a buffer; a skipped record's count travels with the next yielded sample."""

    def __init__(self, hf_stream, builder: SampleBuilder, seed: int, shuffle_buffer: int = 1000) -> None:
        self.ds = hf_stream.shuffle(seed=seed, buffer_size=shuffle_buffer) if shuffle_buffer else hf_stream
        self.builder, self.seed = builder, seed
        self.epoch = 0
        self.skipper = Skipper()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.ds.set_epoch(epoch)

    def sample(self, row: dict[str, Any]) -> dict[str, Any]:
        rng = sample_rng(self.seed, self.epoch, zlib.crc32(row["__key__"].encode()))
        return self.builder(row_record(row), rng)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rows = self.skipper.usable(self.ds, self.sample, name=lambda row: f"{row['__url__']}:{row['__key__']}")
        for skipped, sample in rows:
            yield {**sample, "skipped": skipped}


def open_records(path: str, layout: str = "auto", max_images: int | None = None) -> list[ImageRecord]:
    records = open_dataset(path, layout)
    return records[:max_images] if max_images is not None else records


def collate(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Images stacked (B, 3, S, S); the masks of all images concatenated (T, ...) with `image_index`."""
    counts = [s["masks"].shape[0] for s in samples]
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "masks": torch.cat([s["masks"] for s in samples]),
        "points": torch.cat([s["points"] for s in samples]),
        "boxes": torch.cat([s["boxes"] for s in samples]),
        "use_box": torch.cat([s["use_box"] for s in samples]),
        "image_index": torch.repeat_interleave(torch.arange(len(samples)), torch.tensor(counts)),
        "seed": torch.tensor([s["seed"] for s in samples]),
        "skipped": total_skipped(samples),
    }
