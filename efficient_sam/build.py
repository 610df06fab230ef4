"""`build_model(name, checkpoint=None, **overrides)`: a registered model, random or from a checkpoint.
The registry itself (`list_models`, `get_config`) lives in `efficient_sam.registry`."""

from __future__ import annotations

import os
from typing import Any

import torch

from .checkpoint import load_checkpoint, load_strict
from .config import SamConfig, apply_overrides
from .hub import from_pretrained
from .modeling.image_encoder import ImageEncoderViT
from .modeling.sam import Sam
from .registry import get_config, list_models

__all__ = ["build_model", "load_encoder_weights", "get_config", "list_models"]


def build_model(
    name: str | SamConfig,
    checkpoint: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    encoder_checkpoint: str | os.PathLike | None = None,
    **overrides: Any,
) -> Sam:
    """Build a registered model (random init unless `checkpoint`), in eval mode.

    `name` is a registered name or a `SamConfig`; flat `overrides` (`encoder_depth=2`) adjust either.
    `checkpoint` is an official SAM `.pth`, EfficientSAM `.pt` (`{"model": state_dict}`) or a
    `.safetensors` state dict; it is converted to our layout and loaded strictly.
    `encoder_checkpoint` loads only the image encoder, strictly, from any `from_pretrained` source
    holding an image encoder or a whole model (e.g. a SAMI run's `final/`).
    """
    if isinstance(name, SamConfig):  # overrides apply to a config object too (a copy; the object is unchanged)
        cfg = apply_overrides(name, **overrides) if overrides else name
    else:
        cfg = get_config(name, **overrides)
    model = Sam(cfg)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    if encoder_checkpoint is not None:
        load_encoder_weights(model.image_encoder, encoder_checkpoint)
    if device is not None:
        model.to(device)
    return model.eval()


def load_encoder_weights(encoder: torch.nn.Module, source: str | os.PathLike) -> None:
    """Load `source`'s image encoder into `encoder`, strictly (errors name missing/unexpected keys)."""
    net = from_pretrained(source)
    src = net if isinstance(net, ImageEncoderViT) else getattr(net, "image_encoder", None)
    if not isinstance(src, ImageEncoderViT):
        raise TypeError(f"{source}: holds no image encoder ({type(net).__name__})")
    load_strict(encoder, src.state_dict(), f"image encoder of {source}")
