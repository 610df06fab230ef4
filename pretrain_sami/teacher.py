"""The frozen SAMI teacher: a SAM-family image encoder run at the student's input size.

At 224 px the ViT-H token grid is 14x14: the 64x64 absolute position table is resized (bicubic,
antialiased) to 14x14, SAM's windows of 14 cover the whole grid, and the 127-long relative-position
tables of the global blocks are linearly resized to 27 -- the same code path as inference, so the
teacher keeps all its weights (unlike implementations that drop the relative-position tables).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import efficient_sam as es
from efficient_sam.modeling.image_encoder import ImageEncoderViT

TARGETS = ("pre_neck", "neck")


class Teacher(nn.Module):
    """(B, 3, S, S) normalised images -> (B, N, D) float32 target tokens, N = (S/16)^2.

    `target="pre_neck"`: the last block's tokens (D = embed_dim, 1280 for ViT-H);
    `target="neck"`: the 256-d SAM image embedding. Always frozen, in eval mode, without autograd;
    `autocast_dtype` (bf16 on GPU) runs it in low precision.
    """

    def __init__(self, encoder: ImageEncoderViT, target: str = "pre_neck", autocast_dtype: torch.dtype | None = None):
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"teacher.target must be one of {TARGETS}, got {target!r}")
        self.encoder = encoder.eval().requires_grad_(False)
        self.target = target
        self.autocast_dtype = autocast_dtype

    @property
    def dim(self) -> int:
        cfg = self.encoder.cfg
        return cfg.embed_dim if self.target == "pre_neck" else cfg.out_chans

    def train(self, mode: bool = True) -> "Teacher":
        return super().train(False)  # never leaves eval mode

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        dtype = self.autocast_dtype
        with torch.autocast(images.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            if self.target == "pre_neck":
                x, _ = self.encoder.forward_tokens(images)
                x = x.flatten(1, 2)
            else:
                x = self.encoder(images).flatten(2).transpose(1, 2)
        return x.float()


def normalize_target(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-token standardisation over channels (MAE's norm_pix_loss applied to features)."""
    return F.layer_norm(x, x.shape[-1:], eps=eps)


def load_teacher_encoder(model: str = "sam_vit_h", checkpoint: str | None = None, overrides: dict[str, Any] | None = None) -> ImageEncoderViT:
    """The image encoder of `model` with weights from `checkpoint` (any `es.from_pretrained` source:
    official SAM `.pth`, timm `samvit_*`, transformers repo, our format), or random with a warning."""
    overrides = dict(overrides or {})
    if checkpoint:
        net = es.from_pretrained(checkpoint, model=model, **overrides)
    else:
        warnings.warn(
            f"teacher {model!r} has random weights (teacher.checkpoint is empty): fine for smoke tests, "
            "useless for real pretraining; set teacher.checkpoint=sam_vit_h_4b8939.pth or a Hub source",
            stacklevel=2,
        )
        net = es.build_model(model, **overrides)
    encoder = net if isinstance(net, ImageEncoderViT) else getattr(net, "image_encoder", None)
    if not isinstance(encoder, ImageEncoderViT):
        raise TypeError(f"{checkpoint or model}: expected a SAM-family model or image encoder, got {type(net).__name__}")
    return encoder
