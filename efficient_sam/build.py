"""Model registry: `list_models()`, `get_config(name)`, `build_model(name, checkpoint=None, **overrides)`."""

from __future__ import annotations

import os
from typing import Any, Callable

import torch

from .config import ImageEncoderConfig, MaskDecoderConfig, PromptEncoderConfig, SamConfig, apply_overrides
from .modeling.sam import Sam


def _sam(embed_dim: int, depth: int, num_heads: int, global_attn_indexes: tuple[int, ...]) -> SamConfig:
    return SamConfig(
        family="sam",
        image_encoder=ImageEncoderConfig(
            embed_dim=embed_dim, depth=depth, num_heads=num_heads, global_attn_indexes=global_attn_indexes,
            window_size=14, use_rel_pos=True, pos_embed="grid",
        ),
        prompt_encoder=PromptEncoderConfig(),
        mask_decoder=MaskDecoderConfig(),
        resize="longest_side",
    )


def _efficient_sam(embed_dim: int, num_heads: int) -> SamConfig:
    return SamConfig(
        family="efficient_sam",
        image_encoder=ImageEncoderConfig(
            embed_dim=embed_dim, depth=12, num_heads=num_heads, global_attn_indexes=(), window_size=0,
            use_rel_pos=False, pos_embed="cls_grid", pos_embed_grid=14,
        ),
        prompt_encoder=PromptEncoderConfig(
            negative_point_embed=False, mask_prompt=False, zero_padding_pe=False, max_points=6
        ),
        mask_decoder=MaskDecoderConfig(activation="gelu", upscaling_norm="groupnorm", two_way_style="efficient_sam"),
        resize="stretch",
    )


_REGISTRY: dict[str, Callable[[], SamConfig]] = {
    "sam_vit_h": lambda: _sam(1280, 32, 16, (7, 15, 23, 31)),
    "sam_vit_l": lambda: _sam(1024, 24, 16, (5, 11, 17, 23)),
    "sam_vit_b": lambda: _sam(768, 12, 12, (2, 5, 8, 11)),
    "efficient_sam_vitt": lambda: _efficient_sam(192, 3),
    "efficient_sam_vits": lambda: _efficient_sam(384, 6),
}


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_config(name: str, **overrides: Any) -> SamConfig:
    """The registered config of `name`, with flat overrides (`encoder_depth=2`, `decoder_activation=...`)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return apply_overrides(_REGISTRY[name](), **overrides)


def build_model(
    name: str | SamConfig,
    checkpoint: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    encoder_checkpoint: str | os.PathLike | None = None,
    **overrides: Any,
) -> Sam:
    """Build a registered model (random init unless `checkpoint`), in eval mode.

    `checkpoint` is an official SAM `.pth`, EfficientSAM `.pt` (`{"model": state_dict}`) or a
    `.safetensors` state dict; it is converted to our layout and loaded strictly.
    `encoder_checkpoint` loads only the image encoder, strictly, from any `from_pretrained` source
    holding an image encoder or a whole model (e.g. a SAMI run's `final/`).
    """
    cfg = name if isinstance(name, SamConfig) else get_config(name, **overrides)
    model = Sam(cfg)
    if checkpoint is not None:
        from .checkpoint import load_checkpoint

        load_checkpoint(model, checkpoint)
    if encoder_checkpoint is not None:
        load_encoder_weights(model.image_encoder, encoder_checkpoint)
    if device is not None:
        model.to(device)
    return model.eval()


def load_encoder_weights(encoder: torch.nn.Module, source: str | os.PathLike) -> None:
    """Load `source`'s image encoder into `encoder`, strictly (errors name missing/unexpected keys)."""
    from .checkpoint import check_state_dict
    from .hub import from_pretrained
    from .modeling.image_encoder import ImageEncoderViT

    net = from_pretrained(source)
    src = net if isinstance(net, ImageEncoderViT) else getattr(net, "image_encoder", None)
    if not isinstance(src, ImageEncoderViT):
        raise TypeError(f"{source}: holds no image encoder ({type(net).__name__})")
    sd = src.state_dict()
    check_state_dict(encoder, sd, f"image encoder of {source}")
    encoder.load_state_dict(sd)
