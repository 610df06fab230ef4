"""SAM's interactive prompt simulation (SAM paper App. A, "Training algorithm").

Per mask: a first prompt (with equal probability a point drawn uniformly from the mask, or its box
with noise of std 10% of the side, at most 20 px, per coordinate); then 8 rounds that each add one
point drawn uniformly from the error region of the previous prediction (positive on a false
negative, negative on a false positive); plus 2 rounds without a new point (one among the 8, one
last), where only the fed-back mask logits change. Everything here is batched over all masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class PromptConfig:
    box_prob: float = 0.5  # first prompt: box with this probability, else one point from the mask
    box_noise_std: float = 0.1  # x the box side length, per coordinate
    box_noise_max: float = 20.0  # px of the model's input frame
    point_rounds: int = 8  # rounds adding one error-region point (capped by the prompt encoder's slots)
    no_point_rounds: int = 2  # rounds with only the fed-back mask (only with a mask-prompt decoder)
    # Which prompts use the 3 multimask outputs (and back-propagate the lowest-loss one):
    # "ambiguous" = a single point (SAM), "always" (the EfficientSAM decoder, whose single-mask token
    # is never used), "auto" = always for the EfficientSAM decoder, ambiguous for SAM's.
    multimask: str = "auto"
    negatives: str = "auto"  # auto (iff the decoder has a negative embedding) | true | false
    checkpoint_decoder: bool = False  # recompute each round's decoder in backward (saves memory)


def noisy_boxes(
    boxes: np.ndarray, rng: np.random.Generator, std: float = 0.1, max_px: float = 20.0,
    bounds: tuple[float, float] | None = None,
) -> np.ndarray:
    """(M, 4) XYXY boxes -> boxes with N(0, (std x side)^2) noise per coordinate, clipped to +-max_px
    (x coordinates use the width, y the height), then clamped to `bounds` (w, h) and kept non-empty."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    side = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, axis=1)  # w, h, w, h
    noise = np.clip(rng.normal(size=boxes.shape) * std * side, -max_px, max_px)
    out = boxes + noise
    if bounds is not None:
        w, h = bounds
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    lo = np.minimum(out[:, :2], out[:, 2:])
    hi = np.maximum(out[:, :2], out[:, 2:])
    hi = np.maximum(hi, lo + 1.0)  # never a degenerate box
    return np.concatenate([lo, hi], axis=1).astype(np.float32)


def round_schedule(point_rounds: int, no_point_rounds: int, rng: np.random.Generator) -> list[bool]:
    """Whether each round after the first adds a point: `point_rounds` True, one False inserted at a
    random place among them, one False last (SAM: 8 + 2 -> 10 rounds after the first prompt)."""
    rounds = [True] * point_rounds
    if no_point_rounds >= 2:
        rounds.insert(int(rng.integers(0, point_rounds + 1)) if point_rounds else 0, False)
        rounds += [False] * (no_point_rounds - 1)
    elif no_point_rounds == 1:
        rounds.append(False)
    return rounds


def sample_error_points(
    pred: torch.Tensor, target: torch.Tensor, negatives: bool, img_size: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One point per mask, uniform over its error region.

    pred, target: (T, m, m) bool masks on a grid covering the (img_size x img_size) input frame.
    -> coords (T, 2) XY in input-frame pixels (cell centres) and labels (T,): 1 on a false negative,
    0 on a false positive (only if `negatives`; otherwise only false negatives are eligible), -1
    (a padding point) where the region is empty.
    """
    fn = target & ~pred
    region = fn | (pred & ~target) if negatives else fn
    t, h, w = region.shape
    flat = region.reshape(t, -1)
    # Uniform over the region: the argmax of i.i.d. uniforms restricted to it.
    scores = torch.rand(flat.shape, device=flat.device, generator=generator)
    idx = torch.where(flat, scores, torch.full_like(scores, -1.0)).argmax(dim=1)
    ys, xs = idx // w, idx % w
    coords = torch.stack([(xs + 0.5) * img_size / w - 0.5, (ys + 0.5) * img_size / h - 0.5], dim=1).float()
    on_fn = fn.reshape(t, -1).gather(1, idx[:, None])[:, 0]
    labels = torch.where(on_fn, 1, 0)
    empty = ~flat.any(dim=1)
    labels = torch.where(empty, -1, labels)
    coords = torch.where(empty[:, None], torch.full_like(coords, -1.0), coords)
    return coords, labels
