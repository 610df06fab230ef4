"""FLOP/MAC counting: `FlopCounterMode` on the meta device (primary), fvcore (cross-check), analytic.

Conventions (`../shared/reference/performance.md` §0, §5): FlopCounterMode counts 2 FLOPs per
multiply-accumulate and only matmuls/convolutions/attention; papers quote MACs, so we report
GMACs = FLOPs / 2. fvcore counts 1 per MAC (plus norms) and silently skips
`aten::scaled_dot_product_attention` unless a handle is registered (`SDPA_HANDLE` here).

On the meta device nothing is computed (ViT-H counts in well under a second) and SDPA is counted
through its math decomposition. On a real CPU tensor, torch 2.14's FlopCounterMode misses the fused
CPU flash-attention kernel (no mask) - another reason to count on meta. fvcore needs real tensors
(it traces with `torch.jit.trace`, which fails on meta convolutions).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from efficient_sam.config import ImageEncoderConfig, MaskDecoderConfig, SamConfig

__all__ = [
    "count_flops", "meta_model", "encoder_flops", "decoder_flops", "encoder_inputs", "decoder_inputs",
    "DecoderCall", "fvcore_macs", "sdpa_flop_jit", "analytic_encoder_flops", "analytic_decoder_flops",
    "num_prompt_tokens", "param_counts", "meta_hq_model", "HQEncoderCall", "HQDecoderCall", "hq_decoder_inputs",
    "hq_encoder_flops", "hq_decoder_flops",
]


# ----------------------------------------------------------------------------------------------
# FlopCounterMode
# ----------------------------------------------------------------------------------------------


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
    """Run `fn(*args, **kwargs)` under FlopCounterMode -> (total FLOPs, FLOPs per aten op)."""
    counter = FlopCounterMode(display=False)
    # Not under no_grad: FlopCounterMode's module tracker trips over views of parameters made in
    # no-grad mode. Give it models without trainable parameters (`meta_model` does) or meta tensors.
    with counter:
        fn(*args, **kwargs)
    per_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), per_op


def meta_model(name: str | SamConfig, **overrides: Any) -> nn.Module:
    """Our model built on the meta device (no memory, no init cost)."""
    import efficient_sam as es

    with torch.device("meta"):
        model = es.build_model(name, **overrides)
    return model.requires_grad_(False)


def meta_hq_model(name: str | SamConfig, **overrides: Any) -> nn.Module:
    """The HQ-SAM model on `name` (`efficient_sam.hq.build_hq_model`) built on the meta device."""
    from efficient_sam.hq import build_hq_model

    with torch.device("meta"):
        model = build_hq_model(name, **overrides)
    return model.requires_grad_(False)


def encoder_inputs(model: nn.Module, batch: int = 1, device: str | torch.device | None = None) -> torch.Tensor:
    s = model.config.image_encoder.img_size
    dev = device if device is not None else next(model.parameters()).device
    return torch.randn(batch, 3, s, s, device=dev)


class DecoderCall(nn.Module):
    """Prompt encoder + mask decoder as one module of tensors (for fvcore's tracer and for timing)."""

    def __init__(self, model: nn.Module, multimask_output: bool = True) -> None:
        super().__init__()
        self.model = model
        self.multimask_output = multimask_output

    def forward(self, embeddings: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.decode(embeddings, boxes=boxes, multimask_output=self.multimask_output)


class HQEncoderCall(nn.Module):
    """`Sam.encode_image_hq` as a module: images -> (embeddings, HQ features) (encoder + the once-per-image
    global-local fusion of HQ-SAM)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode_image_hq(images)


class HQDecoderCall(nn.Module):
    """Prompt encoder + HQ mask decoder (SAM + HQ logits, one mask per prompt) with precomputed HQ features."""

    def __init__(self, model: nn.Module, multimask_output: bool = True, hq_token_only: bool = False) -> None:
        super().__init__()
        self.model = model
        self.multimask_output = multimask_output
        self.hq_token_only = hq_token_only

    def forward(
        self, embeddings: torch.Tensor, boxes: torch.Tensor, hq_features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.decode(
            embeddings, boxes=boxes, multimask_output=self.multimask_output, hq_features=hq_features,
            hq_token_only=self.hq_token_only,
        )


def decoder_inputs(
    model: nn.Module | SamConfig, num_prompts: int = 1, device: str | torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One image embedding and `num_prompts` box prompts in the input frame (model or its config)."""
    cfg = model if isinstance(model, SamConfig) else model.config
    dev = device if device is not None else next(model.parameters()).device
    g = cfg.image_encoder.grid_size
    s = cfg.image_encoder.img_size
    emb = torch.randn(1, cfg.mask_decoder.transformer_dim, g, g, device=dev)
    base = torch.tensor([0.2, 0.25, 0.7, 0.8], device=dev) * s
    boxes = base.expand(num_prompts, 4) + (torch.arange(num_prompts, device=dev)[:, None] % 7)
    return emb, boxes


def encoder_flops(model: nn.Module, batch: int = 1) -> tuple[int, dict[str, int]]:
    """FLOPs of the image encoder for `batch` images (use a meta model: nothing is computed)."""
    return count_flops(model.image_encoder, encoder_inputs(model, batch))


def decoder_flops(model: nn.Module, num_prompts: int = 1) -> tuple[int, dict[str, int]]:
    """FLOPs of prompt encoder + mask decoder for `num_prompts` box prompts on one image embedding."""
    return count_flops(DecoderCall(model), *decoder_inputs(model, num_prompts))


def hq_decoder_inputs(
    model: nn.Module, num_prompts: int = 1, device: str | torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`decoder_inputs` plus HQ features (1, D/8, 4h, 4w) for one image (an HQ model)."""
    emb, boxes = decoder_inputs(model, num_prompts, device)
    d, g = emb.shape[1], emb.shape[-1]
    return emb, boxes, torch.randn(1, d // 8, 4 * g, 4 * g, device=emb.device)


def hq_encoder_flops(model: nn.Module, batch: int = 1) -> tuple[int, dict[str, int]]:
    """FLOPs of `encode_image_hq` (image encoder + HQ fusion) for `batch` images (an HQ meta model)."""
    return count_flops(HQEncoderCall(model), encoder_inputs(model, batch))


def hq_decoder_flops(model: nn.Module, num_prompts: int = 1) -> tuple[int, dict[str, int]]:
    """FLOPs of prompt encoder + HQ mask decoder for `num_prompts` box prompts on one image's embedding
    and HQ features (the fusion itself is in `hq_encoder_flops`)."""
    return count_flops(HQDecoderCall(model), *hq_decoder_inputs(model, num_prompts))


def param_counts(model: nn.Module) -> dict[str, int]:
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    out = {
        "total": n(model),
        "image_encoder": n(model.image_encoder),
        "prompt_encoder": n(model.prompt_encoder),
        "mask_decoder": n(model.mask_decoder),
    }
    if getattr(model, "is_hq", False):  # HQ-SAM: the adapter's share (inside mask_decoder)
        from efficient_sam.hq import is_adapter_key

        out["hq_adapter"] = sum(p.numel() for k, p in model.named_parameters() if is_adapter_key(k))
    return out


# ----------------------------------------------------------------------------------------------
# fvcore
# ----------------------------------------------------------------------------------------------


def sdpa_flop_jit(inputs: list, outputs: list) -> int:
    """fvcore handle for `aten::scaled_dot_product_attention` in MACs: q (..., Lq, d), k (..., Lk, d),
    v (..., Lk, dv) -> prod(batch dims) * Lq * Lk * (d + dv)  (QK^T and AV; softmax/mask not counted)."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    return int(np.prod(q[:-2], dtype=np.int64)) * q[-2] * k[-2] * (q[-1] + v[-1])


def fvcore_macs(module: nn.Module, inputs: tuple, sdpa_handle: bool = True) -> tuple[int, dict[str, int], dict]:
    """fvcore FlopCountAnalysis -> (total MACs, MACs per operator, unsupported op counts).

    Runs a real forward (jit trace) on the module's device; fvcore counts 1 per MAC.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

        fca = FlopCountAnalysis(module, inputs).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        if sdpa_handle:
            fca.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
        with torch.no_grad():
            total = int(fca.total())
        return total, {k: int(v) for k, v in fca.by_operator().items()}, dict(fca.unsupported_ops())


# ----------------------------------------------------------------------------------------------
# Analytic formulas (what FlopCounterMode counts: matmuls, convs, attention; 2 FLOPs per MAC)
# ----------------------------------------------------------------------------------------------


def analytic_encoder_flops(cfg: ImageEncoderConfig, batch: int = 1) -> dict[str, int]:
    """Encoder FLOPs by part, for `batch` images.

    N = (S/p)^2 tokens of width C, MLP hidden Hm. Per block, with T tokens through attention
    (N for global blocks; windowed blocks zero-pad the grid to a multiple of the window, so
    T = ceil(g/ws)^2 * ws^2) and W tokens attended (N or ws^2):
      qkv 6*T*C^2 + proj 2*T*C^2 + MLP 4*N*C*Hm, attention (QK^T, AV) 4*T*W*C,
      decomposed rel-pos 2*T*(kh + kw)*C (kh = kw = side of the attended grid).
    Patch embed 2*N*(3 p^2)*C; neck 2*N*C*256 + 2*N*256^2*9.
    """
    g = cfg.grid_size
    n = g * g
    c = cfg.embed_dim
    hm = int(c * cfg.mlp_ratio)
    out = cfg.out_chans
    parts = {"patch_embed": 2 * n * cfg.in_chans * cfg.patch_size**2 * c, "linear": 0, "attention": 0, "rel_pos": 0}
    for i in range(cfg.depth):
        windowed = cfg.window_size > 0 and i not in cfg.global_attn_indexes
        if windowed:
            ws = cfg.window_size
            side = math.ceil(g / ws) * ws
            t, w_tokens, k_side = side * side, ws * ws, ws
        else:
            t, w_tokens, k_side = n, n, g
        parts["linear"] += 8 * t * c * c + 4 * n * c * hm
        parts["attention"] += 4 * t * w_tokens * c
        if cfg.use_rel_pos:
            parts["rel_pos"] += 2 * t * (2 * k_side) * c
    parts["neck"] = 2 * n * c * out + 2 * n * out * out * 9
    parts = {k: v * batch for k, v in parts.items()}
    parts["total"] = sum(parts.values())
    return parts


def num_prompt_tokens(cfg: SamConfig, num_points: int = 0, box: bool = True) -> int:
    """Sparse prompt tokens the prompt encoder emits for one prompt."""
    n = num_points + (2 if box else 0)
    if cfg.prompt_encoder.max_points is not None:
        return cfg.prompt_encoder.max_points
    return n if box else n + 1  # SAM pads one point when no box is given


def analytic_decoder_flops(cfg: SamConfig, num_prompts: int = 1, sparse_tokens: int | None = None) -> dict[str, int]:
    """Prompt encoder + mask decoder FLOPs for `num_prompts` prompts on one image embedding.

    D = transformer dim, Di = D / attention downsample rate, M = MLP dim, Ni = h*w image tokens,
    Nt = 1 + mask tokens + sparse tokens. Per two-way layer: self-attention 8*Nt*D^2 + 4*Nt^2*D;
    token->image 4*Nt*D*Di + 4*Ni*D*Di + 4*Nt*Ni*Di; MLP 4*Nt*D*M; image->token the same as
    token->image with the roles swapped; plus a final token->image attention. In layer 0 the image
    side of the token->image k/v and the image->token q projections (6*Ni*D*Di) is the same for
    every prompt without a mask prompt, and is computed once per call. Upscaling
    transposed convs, hypernetwork MLPs, IoU head and the mask product per prompt; the Fourier PE
    of the dense grid once per call (no mask prompt: SAM adds `no_mask_embed`, no FLOPs).
    """
    md: MaskDecoderConfig = cfg.mask_decoder
    b = num_prompts
    d = md.transformer_dim
    di = d // md.attention_downsample_rate
    m = md.transformer_mlp_dim
    g = cfg.image_encoder.grid_size
    ni = g * g
    t = md.num_multimask_outputs + 1
    s = num_prompt_tokens(cfg) if sparse_tokens is None else sparse_tokens
    nt = 1 + t + s
    f = cfg.prompt_encoder.embed_dim // 2  # Fourier features
    cross = 4 * nt * d * di + 4 * ni * d * di + 4 * nt * ni * di
    layer = (8 * nt * d * d + 4 * nt * nt * d) + cross + 4 * nt * d * m + cross
    shared = 6 * ni * d * di
    up1 = 2 * ni * d * (d // 4) * 4
    up2 = 2 * (4 * ni) * (d // 4) * (d // 8) * 4
    hyper = t * 2 * (d * d + d * d + d * (d // 8))
    iou_dims = [d] + [md.iou_head_hidden_dim] * (md.iou_head_depth - 1) + [t]
    iou = 2 * sum(a * c for a, c in zip(iou_dims[:-1], iou_dims[1:]))
    mask_product = 2 * t * (d // 8) * (16 * ni)
    parts = {
        "dense_pe": 2 * ni * 2 * f,
        "sparse_pe": b * 2 * s * 2 * f,
        "transformer": b * (md.transformer_depth * layer + cross - shared) + shared,
        "upscaling": b * (up1 + up2),
        "heads": b * (hyper + iou),
        "mask_product": b * mask_product,
    }
    parts["total"] = sum(parts.values())
    return parts
