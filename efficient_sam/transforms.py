"""Each family's official pre/post-processing of numpy images and original-pixel prompts, as functions of
the config (the tensor half is `modeling.processing`, shared with `Sam.forward_batched`).

SAM: longest side -> img_size (`int(x*s + 0.5)`, PIL bilinear on uint8), normalise on the 0-255
scale, zero-pad bottom/right; masks: bilinear to img_size, crop, bilinear to the original size.
EfficientSAM: [0,1] float, bilinear stretch to img_size x img_size (no antialias), normalise;
points scaled per axis; masks: bicubic straight to the original size.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .config import SamConfig
from .modeling.processing import normalize_input, stretch_coords, upscale_masks


def longest_side_size(h: int, w: int, target: int) -> tuple[int, int]:
    """The official `ResizeLongestSide.get_preprocess_shape`, except that a side it rounds to 0 (e.g. a
    1x4000 image, which the official code cannot resize) is kept at 1 pixel."""
    scale = target * 1.0 / max(h, w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def input_size(original_size: tuple[int, int], cfg: SamConfig) -> tuple[int, int]:
    """Size (h, w) of the image content inside the model's img_size x img_size input."""
    s = cfg.image_encoder.img_size
    if cfg.resize == "stretch":
        return s, s
    return longest_side_size(original_size[0], original_size[1], s)


def preprocess(image: np.ndarray, cfg: SamConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """HxWx3 uint8 RGB -> (1, 3, S, S) normalised float32 model input."""
    h, w = image.shape[:2]
    if not image.flags.writeable:  # e.g. np.asarray(PIL image); torch warns on read-only buffers
        image = image.copy()
    if cfg.resize != "stretch":  # PIL bilinear on uint8, as the official ResizeLongestSide
        nh, nw = longest_side_size(h, w, cfg.image_encoder.img_size)
        image = np.array(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    x = torch.as_tensor(image, device=device).permute(2, 0, 1).contiguous()[None]
    return normalize_input(x, cfg)


def transform_coords(coords: torch.Tensor, original_size: tuple[int, int], cfg: SamConfig) -> torch.Tensor:
    """(..., 2) (x, y) original-image pixels -> the model's input frame, float32."""
    h, w = original_size
    coords = coords.to(torch.float32)
    s = cfg.image_encoder.img_size
    if cfg.resize == "stretch":
        return stretch_coords(coords, original_size, s)
    nh, nw = longest_side_size(h, w, s)
    return torch.stack([coords[..., 0] * (nw / w), coords[..., 1] * (nh / h)], dim=-1)


def transform_boxes(boxes: torch.Tensor, original_size: tuple[int, int], cfg: SamConfig) -> torch.Tensor:
    """(B, 4) XYXY original pixels -> (B, 4) in the input frame."""
    return transform_coords(boxes.reshape(-1, 2, 2), original_size, cfg).reshape(-1, 4)


def postprocess_masks(
    low_res: torch.Tensor, original_size: tuple[int, int], cfg: SamConfig
) -> torch.Tensor:
    """(B, C, 256, 256) logits -> (B, C, H, W) logits at the original size."""
    return upscale_masks(low_res, input_size(original_size, cfg), original_size, cfg)
