"""The registered architectures: names, configs, the name of a config, and the name a checkpoint's
shapes imply. A leaf of the package: it imports only `config` (and the error classes)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Mapping

from .config import HQConfig, ImageEncoderConfig, MaskDecoderConfig, PromptEncoderConfig, SamConfig, apply_overrides
from .errors import CheckpointError, UnsupportedCheckpointError


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


def config_name(cfg: SamConfig) -> str | None:
    """The registry name whose config equals `cfg` exactly, if any."""
    d = cfg.to_dict()
    return next((n for n in list_models() if get_config(n).to_dict() == d), None)


def default_early_block(cfg: SamConfig) -> int:
    """The HQ fusion's early encoder block: the first global-attention block for SAM ViT-B/L/H (2 / 5 / 7,
    as the official HQ-SAM); block 2 for EfficientSAM's all-global ViT-Ti/S (a quarter of the depth, as
    in ViT-B, which also has 12 blocks)."""
    enc = cfg.image_encoder
    if enc.window_size > 0 and enc.global_attn_indexes:
        return min(enc.global_attn_indexes)
    return min(2, enc.depth - 1)


def with_hq(cfg: SamConfig, early_block: int | None = None) -> SamConfig:
    """`cfg` with the HQ-SAM decoder (`hq.early_block` defaults to `default_early_block`)."""
    return dataclasses.replace(cfg, hq=HQConfig(default_early_block(cfg) if early_block is None else early_block))


def registry_table() -> str:
    """'name (family width W), ...': what a message lists as the supported encoders."""
    return ", ".join(
        f"{n} ({'SAM' if (c := get_config(n)).family == 'sam' else 'EfficientSAM'} width {c.image_encoder.embed_dim})"
        for n in list_models()
    )


def infer_model_name(state_dict: Mapping[str, Any], prefix: str = "image_encoder.") -> str:
    """Registry name whose image encoder fits the file: position-embedding layout and width
    (SAM (1, 64, 64, C): 768/1024/1280 -> sam_vit_b/l/h; EfficientSAM (1, 197, C): 192/384 -> vitt/vits)."""
    pe = state_dict.get(prefix + "pos_embed")
    if pe is None:
        if any(k.startswith(prefix + "layers.") for k in state_dict):
            raise UnsupportedCheckpointError(
                "this checkpoint has a TinyViT image encoder (MobileSAM / HQ-SAM vit_tiny: "
                f"{prefix}layers.*), which is not supported; supported encoders: {registry_table()}"
            )
        raise CheckpointError(
            f"cannot infer the architecture: the file has no {prefix}pos_embed; pass model=NAME "
            f"(one of {', '.join(list_models())})"
        )
    layout = "grid" if pe.dim() == 4 else "cls_grid"
    width = int(pe.shape[-1])
    names = [
        n for n in list_models()
        if get_config(n).image_encoder.pos_embed == layout and get_config(n).image_encoder.embed_dim == width
    ]
    if len(names) == 1:
        return names[0]
    depth = len({m.group(1) for k in state_dict if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k))})
    family = "SAM-style (1, H, W, C)" if layout == "grid" else "EfficientSAM-style (1, 1+P*P, C)"
    raise CheckpointError(
        f"cannot infer the architecture: image encoder with {family} pos_embed of width {width} and depth "
        f"{depth} is not a registered model ({registry_table()}). Pass model=NAME plus the overrides that "
        f"describe it (e.g. encoder_embed_dim={width}, encoder_depth={depth}, encoder_num_heads=..., "
        f"encoder_global_attn_indexes=...), or save it with save_pretrained so config.json records it."
    )
