"""Official `segment_anything` models of any encoder size, built exactly like `build_sam._build_sam`
(used only as a test oracle)."""

from __future__ import annotations

from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer


def build_official_sam(embed_dim: int, depth: int, num_heads: int, global_attn_indexes) -> Sam:
    """`segment_anything.build_sam._build_sam` with a chosen encoder size, in eval mode, random init."""
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=depth, embed_dim=embed_dim, img_size=1024, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=num_heads, patch_size=16,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=global_attn_indexes, window_size=14,
            out_chans=256, rel_pos_zero_init=True,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()
