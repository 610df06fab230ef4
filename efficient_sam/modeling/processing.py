"""The tensor half of each family's official pre/post-processing, shared by `Sam.forward_batched`
(the official batched API) and `efficient_sam.transforms` (the predictor's numpy/PIL path).

SAM: normalise on the 0-255 scale, zero-pad bottom/right; masks bilinear to img_size, crop, bilinear to
the original size. EfficientSAM: [0, 1], bilinear stretch to img_size x img_size, normalise; points
scaled per axis; masks bicubic straight to the original size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import SamConfig


def normalize_input(x: torch.Tensor, cfg: SamConfig) -> torch.Tensor:
    """(B, 3, H, W) RGB on the 0-255 scale (any real dtype; SAM: already resized, H, W <= S) -> (B, 3, S, S)
    float32 model input. Mean and std come from the config in fp32 (the model's buffers follow its dtype)."""
    s = cfg.image_encoder.img_size
    mean = torch.tensor(cfg.pixel_mean, device=x.device).view(-1, 1, 1)
    std = torch.tensor(cfg.pixel_std, device=x.device).view(-1, 1, 1)
    x = x.float()
    if cfg.resize == "stretch":
        x = x / 255
        if tuple(x.shape[-2:]) != (s, s):
            x = F.interpolate(x, (s, s), mode="bilinear", align_corners=False)
        return (x - mean / 255) / (std / 255)
    x = (x - mean) / std
    return F.pad(x, (0, s - x.shape[-1], 0, s - x.shape[-2]))


def stretch_coords(coords: torch.Tensor, size: tuple[int, int], img_size: int) -> torch.Tensor:
    """EfficientSAM: (..., 2) (x, y) pixels of an (h, w) image -> the stretched S x S frame, float32;
    negative (padding) coordinates -> -1."""
    coords = coords.to(torch.float32)
    h, w = size
    x = torch.where(coords[..., 0] >= 0, coords[..., 0] * img_size / w, -1.0)
    y = torch.where(coords[..., 1] >= 0, coords[..., 1] * img_size / h, -1.0)
    return torch.stack([x, y], dim=-1)


def upscale_masks(
    low_res: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int], cfg: SamConfig
) -> torch.Tensor:
    """(B, C, 256, 256) logits -> (B, C, H0, W0) logits. `input_size`: the image's (h, w) inside the
    padded S x S input (SAM only; EfficientSAM stretches, so it is unused)."""
    if cfg.resize == "stretch":
        return F.interpolate(low_res, original_size, mode="bicubic", align_corners=False)
    s = cfg.image_encoder.img_size
    masks = F.interpolate(low_res, (s, s), mode="bilinear", align_corners=False)
    masks = masks[..., : input_size[0], : input_size[1]]
    return F.interpolate(masks, original_size, mode="bilinear", align_corners=False)
