"""Official `segment_anything` models of any encoder size (used only as a test oracle), built by the one
`benchmarks.official.build_official` from our `sam_vit_b` config with the encoder size changed: the
official `build_sam._build_sam` architecture (1024 px, windows of 14, rel-pos, 256-d prompt encoder
and mask decoder)."""

from __future__ import annotations

import efficient_sam as es
from benchmarks.official import build_official


def build_official_sam(embed_dim: int, depth: int, num_heads: int, global_attn_indexes):
    """`segment_anything.build_sam._build_sam` with a chosen encoder size, in eval mode, random init."""
    cfg = es.get_config(
        "sam_vit_b", encoder_embed_dim=embed_dim, encoder_depth=depth, encoder_num_heads=num_heads,
        encoder_global_attn_indexes=tuple(global_attn_indexes),
    )
    return build_official(cfg)
