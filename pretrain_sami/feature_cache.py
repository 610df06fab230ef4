"""Teacher-feature cache: teacher tokens for fixed views, computed once, reused every epoch.

With the cache on, every image has `views` fixed crops (seeded RandomResizedCrop + flip) instead of a
new random crop each epoch -- less augmentation for a teacher that runs once. The mask noise still
changes every epoch. Layout of `cache.dir`:

    index.json                      fingerprint (teacher, target, views, data, ...), shard list
    shard_r<rank>_<k>.safetensors   "features" (n, N, D) fp16, "rows" (n,) int64 global row ids,
                                    "boxes" (n, 4) int32 crop (left, top, w, h), "flips" (n,) uint8

Global row id = view * num_images + image index. Size: N x D x 2 bytes per view (196 x 1280 x 2 =
490 KiB for ViT-H pre-neck at 224 px; 643 GB (599 GiB) per view of ImageNet-1k).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from efficient_sam.training.data import sample_rng

from .data import (
    CACHE_STREAM, TRAIN_STREAM, decode_rgb, random_resized_crop_box, record_name, to_tensor, unreadable_skipper,
)


def weights_digest(module: torch.nn.Module) -> str:
    """Short digest of a module's weights (to tell two teachers apart)."""
    h = hashlib.sha1()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(repr(tuple(t.shape)).encode())
        h.update(np.float64(t.double().sum().item()).tobytes())
    return h.hexdigest()[:16]


class CacheMismatchError(RuntimeError):
    pass


def build_cache(
    cache_dir: Path,
    hf_dataset,
    teacher,
    fingerprint: dict[str, Any],
    *,
    views: int,
    size: int,
    seed: int,
    scale,
    ratio,
    hflip: float,
    batch_size: int,
    shard_rows: int,
    accelerator,
) -> dict[str, Any]:
    """Compute (or reuse) the cache on every process (rows rank::world); returns the index."""
    acc = accelerator
    cache_dir = Path(cache_dir)
    index_path = cache_dir / "index.json"
    if index_path.is_file():
        index = json.loads(index_path.read_text())
        if index["fingerprint"] != fingerprint:
            diff = sorted(k for k in set(index["fingerprint"]) | set(fingerprint) if index["fingerprint"].get(k) != fingerprint.get(k))
            raise CacheMismatchError(
                f"teacher cache {cache_dir} was built for a different setup (differs in: {', '.join(diff)}); "
                "delete it or point cache.dir elsewhere"
            )
        acc.print(f"teacher cache: reusing {cache_dir} ({index['valid']} views, "
                  f"{index.get('skipped', 0)} unreadable image(s) left out)")
        return index
    if acc.is_main_process:
        cache_dir.mkdir(parents=True, exist_ok=True)
        for stale in cache_dir.glob("shard_*.safetensors"):
            stale.unlink()
    acc.wait_for_everyone()
    n = len(hf_dataset)
    rows = list(range(acc.process_index, n * views, acc.num_processes))
    feats, ids, boxes, flips = [], [], [], []
    shard = 0
    pending: list[tuple[int, torch.Tensor, tuple, bool]] = []

    def flush_batch() -> None:
        if not pending:
            return
        images = torch.stack([p[1] for p in pending]).to(acc.device)
        out = teacher(images).to(torch.float16).cpu()
        for (row, _, box, flip), f in zip(pending, out):
            feats.append(f)
            ids.append(row)
            boxes.append(box)
            flips.append(flip)
        pending.clear()

    def flush_shard() -> None:
        nonlocal shard, feats, ids, boxes, flips
        if not feats:
            return
        save_file(
            {
                "features": torch.stack(feats).contiguous(),
                "rows": torch.tensor(ids, dtype=torch.int64),
                "boxes": torch.tensor(boxes, dtype=torch.int32),
                "flips": torch.tensor(flips, dtype=torch.uint8),
            },
            str(cache_dir / f"shard_r{acc.process_index}_{shard:05d}.safetensors"),
            metadata={"fingerprint": json.dumps(fingerprint)},
        )
        shard += 1
        feats, ids, boxes, flips = [], [], [], []

    # An unreadable image is warned about and counted once, at its view-0 row; its other views are dropped.
    skipper = unreadable_skipper("teacher cache: skipping unreadable image {name}: {err}")
    progress = tqdm(rows, desc="teacher cache", disable=not acc.is_local_main_process, dynamic_ncols=True)
    records = ((row, hf_dataset[row % n]["image"]) for row in progress)
    readable = skipper.usable(
        records, lambda r: (r[0], decode_rgb(r[1])), name=lambda r: record_name(r[1]), counted=lambda r: r[0] < n
    )
    for _, (row, img) in readable:
        rng = sample_rng(seed, CACHE_STREAM, 0, row)
        box = random_resized_crop_box(rng, img.width, img.height, scale, ratio)
        flip = bool(rng.random() < hflip)
        pending.append((row, to_tensor(img, box, flip, size), box, flip))
        if len(pending) == batch_size:
            flush_batch()
        if len(feats) >= shard_rows:
            flush_shard()
    flush_batch()
    flush_shard()
    counts = acc.gather(torch.tensor([skipper.total], device=acc.device)).sum().item()
    acc.wait_for_everyone()
    if acc.is_main_process:
        shards = sorted(p.name for p in cache_dir.glob("shard_*.safetensors"))
        valid = 0
        for s in shards:
            with safe_open(str(cache_dir / s), "pt") as f:
                valid += f.get_slice("rows").get_shape()[0]
        index = {"fingerprint": fingerprint, "num_images": n, "views": views, "valid": valid,
                 "skipped": int(counts), "shards": shards}
        tmp = index_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(index, indent=1))
        tmp.replace(index_path)  # the index commits the cache
    acc.wait_for_everyone()
    index = json.loads(index_path.read_text())
    acc.print(f"teacher cache: built {cache_dir} ({index['valid']} views, {index['skipped']} unreadable image(s) left out)")
    return index


class CachedViews(Dataset):
    """Item j -> {"image": the cached view re-cropped from the file, "target": (N, D) fp16 teacher
    tokens, "noise": (N,) mask noise for this epoch, "skipped": 0}. Unreadable images were left out
    when the cache was built (counted once per file in `index.json` "skipped" and printed), so
    training from the cache skips none and logs `data/skipped_images` 0."""

    def __init__(self, cache_dir: Path, hf_dataset, size: int, num_tokens: int, seed: int) -> None:
        self.dir = Path(cache_dir)
        index = json.loads((self.dir / "index.json").read_text())
        self.n, self.size, self.num_tokens, self.seed = index["num_images"], size, num_tokens, seed
        self.ds = hf_dataset
        self.epoch = 0
        self.where: list[tuple[str, int]] = []  # item -> (shard, position)
        self.meta: list[tuple[int, tuple[int, int, int, int], bool]] = []
        for s in index["shards"]:
            with safe_open(str(self.dir / s), "pt") as f:
                rows = f.get_tensor("rows").tolist()
                boxes = f.get_tensor("boxes").tolist()
                flips = f.get_tensor("flips").tolist()
            for pos, (row, box, flip) in enumerate(zip(rows, boxes, flips)):
                self.where.append((s, pos))
                self.meta.append((row, tuple(box), bool(flip)))
        self._handles: dict[str, Any] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.where)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handles": {}}  # file handles are per worker

    def __getitem__(self, j: int) -> dict[str, Any]:
        shard, pos = self.where[j]
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self.dir / shard), "pt")
        target = self._handles[shard].get_slice("features")[pos : pos + 1][0]
        row, box, flip = self.meta[j]
        img = decode_rgb(self.ds[row % self.n]["image"])
        rng = sample_rng(self.seed, TRAIN_STREAM, self.epoch, j)
        noise = torch.from_numpy(rng.random(self.num_tokens, dtype=np.float32))
        return {"image": to_tensor(img, box, flip, self.size), "target": target, "noise": noise, "skipped": 0}
