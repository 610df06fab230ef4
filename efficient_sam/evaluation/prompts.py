"""The prompt protocol of the evaluation (EfficientSAM paper §4 / Tab. 4; DESIGN.md).

- `box`: the tight box of the ground-truth mask (x1/y1 exclusive, COCO's continuous box);
  `point` / `points3`: 1 or 3 positive points sampled uniformly inside the mask (without
  replacement, avoiding ignore pixels when possible), seeded per object so that every model sees the
  same points.
- Scored mask: box and multi-point prompts use the single-mask output on SAM-decoder models; a single
  point, and every prompt on EfficientSAM-decoder models (whose single-mask token is untrained),
  takes the most confident of the 3 masks.
"""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np

from efficient_sam.datasets import mask_to_box

__all__ = ["PROMPTS", "use_multimask", "object_rng", "sample_points", "make_prompts"]

PROMPTS = ("box", "point", "points3")


def use_multimask(family: str, prompt: str) -> bool:
    """Whether the scored mask is the most confident of the multimask outputs (DESIGN.md)."""
    if family == "efficient_sam":
        return True  # its single-mask token is untrained
    return prompt == "point"


def object_rng(seed: int, image_id: str, object_id: str) -> np.random.Generator:
    """Per-object generator: the same points for an object whatever else is evaluated."""
    return np.random.default_rng([seed, zlib.crc32(f"{image_id}/{object_id}".encode())])


def sample_points(mask: np.ndarray, ignore: np.ndarray | None, k: int, rng: np.random.Generator) -> np.ndarray:
    """k (x, y) pixel positions drawn uniformly from the mask (outside the ignore band when possible)."""
    region = mask & ~ignore if ignore is not None else mask
    ys, xs = np.nonzero(region)
    if ys.size == 0:
        ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise ValueError("cannot sample points from an empty mask")
    idx = rng.choice(ys.size, size=k, replace=ys.size < k)
    return np.stack([xs[idx], ys[idx]], axis=1).astype(np.float32)


def make_prompts(
    masks: Sequence[np.ndarray], ignores: Sequence[np.ndarray | None], prompt: str, rngs: Sequence[np.random.Generator]
) -> dict[str, np.ndarray]:
    """Prompts for a batch of objects: {"boxes": (K, 4)} or {"points": (K, N, 2), "labels": (K, N)}."""
    if prompt == "box":
        return {"boxes": np.array([mask_to_box(m) for m in masks], dtype=np.float32)}
    k = {"point": 1, "points3": 3}.get(prompt)
    if k is None:
        raise ValueError(f"unknown prompt {prompt!r}; expected one of {PROMPTS}")
    pts = np.stack([sample_points(m, ig, k, r) for m, ig, r in zip(masks, ignores, rngs)])
    return {"points": pts, "labels": np.ones(pts.shape[:2], dtype=np.int64)}
