"""HQ-SAM's mask loss (hq_sam.md §4.5): BCE + dice on points sampled PointRend/Mask2Former style.

The low-res logits (N, 1, h, w) and the full-resolution soft target (N, 1, H, W) are both sampled at
the same normalised coordinates, so neither needs resizing: `num_points` points, of which
`importance_sample_ratio` are the most uncertain (|logit| smallest) of `oversample_ratio` x as many
uniform candidates and the rest fresh uniform points. Points are chosen without gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["LossConfig", "point_sample", "uncertain_points", "point_sampled_loss"]


@dataclass
class LossConfig:
    num_points: int = 112 * 112
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75


def point_sample(x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """x (N, C, H, W), coords (N, P, 2) (x, y) in [0, 1] -> (N, C, P): bilinear, align_corners=False,
    zeros outside (a point within half a pixel of the border blends with 0, as in Mask2Former)."""
    return F.grid_sample(x, 2 * coords[:, :, None].to(x.dtype) - 1, align_corners=False)[..., 0]


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    device = generator.device if generator is not None else like.device
    return torch.rand(shape, generator=generator, device=device).to(like.device, like.dtype)


@torch.no_grad()
def uncertain_points(
    logits: torch.Tensor, num_points: int, oversample_ratio: float = 3.0, importance_sample_ratio: float = 0.75,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """logits (N, 1, h, w) -> coords (N, num_points, 2) in [0, 1]: the round(importance x num_points)
    candidates with the smallest |logit| among num_points x oversample uniform ones, then fresh uniform."""
    n = logits.shape[0]
    num_cand = max(num_points, int(num_points * oversample_ratio))
    num_unc = min(num_points, round(importance_sample_ratio * num_points))
    cand = _rand((n, num_cand, 2), generator, logits)
    uncertainty = -point_sample(logits, cand)[:, 0].abs()  # (N, num_cand)
    idx = uncertainty.topk(num_unc, dim=1).indices
    chosen = cand.gather(1, idx[..., None].expand(-1, -1, 2))
    return torch.cat([chosen, _rand((n, num_points - num_unc, 2), generator, logits)], dim=1)


def point_sampled_loss(
    logits: torch.Tensor, target: torch.Tensor, num_points: int = 112 * 112, oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75, generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """logits (N, 1, h, w), target (N, 1, H, W) soft in [0, 1] (uint8 is read as 0..255) -> dict of 0-d
    `bce` (mean over points), `dice` (1 - (2 sum pt + 1) / (sum p + sum t + 1)), `loss` = bce + dice;
    each the mean over the N masks (HQ-SAM: sum / num_masks)."""
    if target.dtype == torch.uint8:
        target = target.float() / 255
    coords = uncertain_points(logits.detach(), num_points, oversample_ratio, importance_sample_ratio, generator)
    with torch.no_grad():
        t = point_sample(target.to(logits.dtype), coords)[:, 0]  # (N, P)
    x = point_sample(logits, coords)[:, 0]
    n = max(logits.shape[0], 1)
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none").mean(1).sum() / n
    p = x.sigmoid()
    dice = (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).sum() / n
    return {"bce": bce, "dice": dice, "loss": bce + dice}
