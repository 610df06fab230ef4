"""The official `segment_anything` SAM with the architecture of one of our configs: the `--reference`
of `esam-bench`, the GMAC cross-check and the tests' parity oracle. `segment_anything` is a dev-only
dependency, imported when a model is built."""

from __future__ import annotations

from functools import partial

import torch

from efficient_sam.config import MaskDecoderConfig, PromptEncoderConfig

__all__ = ["ReferenceUnavailable", "check_reference", "build_official"]


class ReferenceUnavailable(RuntimeError):
    """The official SAM cannot express this config, or `segment_anything` is not installed."""


def check_reference(cfg) -> None:
    """Raise `ReferenceUnavailable` unless the official SAM can express `cfg`."""
    if cfg.family != "sam":
        raise ReferenceUnavailable(
            "no official implementation for EfficientSAM is installed; --reference covers SAM models only"
        )
    if cfg.mask_decoder != MaskDecoderConfig() or cfg.prompt_encoder != PromptEncoderConfig():
        raise ReferenceUnavailable("the official SAM has a fixed prompt encoder / mask decoder; overrides differ")
    enc = cfg.image_encoder
    if not enc.use_rel_pos or enc.pos_embed != "grid" or enc.window_size <= 0:
        raise ReferenceUnavailable("the official SAM encoder needs rel-pos, a grid pos-embed and windows")


def build_official(cfg) -> torch.nn.Module:
    """The official `segment_anything.Sam` with our config's architecture (SAM family only), in eval mode,
    with the official random init."""
    check_reference(cfg)
    enc = cfg.image_encoder
    try:
        from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
    except ImportError as e:  # pragma: no cover - a dev dependency
        raise ReferenceUnavailable(f"segment_anything is not installed ({e}); pip install segment-anything") from e
    g = enc.grid_size
    md = cfg.mask_decoder
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=enc.depth, embed_dim=enc.embed_dim, img_size=enc.img_size, mlp_ratio=enc.mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=enc.norm_eps), num_heads=enc.num_heads,
            patch_size=enc.patch_size, qkv_bias=enc.qkv_bias, use_rel_pos=True,
            global_attn_indexes=tuple(enc.global_attn_indexes), window_size=enc.window_size,
            out_chans=enc.out_chans,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=cfg.prompt_encoder.embed_dim, image_embedding_size=(g, g),
            input_image_size=(enc.img_size, enc.img_size), mask_in_chans=cfg.prompt_encoder.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=md.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=md.transformer_depth, embedding_dim=md.transformer_dim, mlp_dim=md.transformer_mlp_dim,
                num_heads=md.transformer_num_heads,
            ),
            transformer_dim=md.transformer_dim, iou_head_depth=md.iou_head_depth,
            iou_head_hidden_dim=md.iou_head_hidden_dim,
        ),
        pixel_mean=list(cfg.pixel_mean), pixel_std=list(cfg.pixel_std),
    ).eval()

