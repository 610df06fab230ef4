"""ViT image encoder for SAM (windowed + global blocks, decomposed relative position) and
EfficientSAM (plain global ViT, 197-slot learned position embedding). Both end in SAM's neck.

Tokens are channels-last: (B, H, W, C) on the 2-D grid, or (B, N, C) for token subsets
(SAMI feeds only the visible tokens of a global-attention encoder).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import DropPath

from ..config import ImageEncoderConfig
from .common import LayerNorm2d, MLPBlock
from .hub_mixin import StrictHubMixin, hub_kwargs


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative-position rows for every (query, key) pair: (q_size, k_size, head_dim).

    The table is linearly resized when its length is not 2 * max(q_size, k_size) - 1.
    """
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:
        rel_pos = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=max_rel_dist, mode="linear"
        )
        rel_pos = rel_pos.reshape(-1, max_rel_dist).permute(1, 0)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative_coords = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative_coords.long()]


def decomposed_rel_pos_bias(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """Additive attention bias Rh[q_h, k_h] + Rw[q_w, k_w] from the unscaled queries.

    q: (B, heads, h*w, head_dim) -> bias (B, heads, h*w, h*w), for `scaled_dot_product_attention`.
    """
    h, w = size
    Rh = get_rel_pos(h, h, rel_pos_h).to(q.dtype)
    Rw = get_rel_pos(w, w, rel_pos_w).to(q.dtype)
    B, nh, _, dim = q.shape
    r_q = q.reshape(B, nh, h, w, dim)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, Rh)
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, Rw)
    return (rel_h[..., :, None] + rel_w[..., None, :]).reshape(B, nh, h * w, h * w)


class Attention(nn.Module):
    """Multi-head self-attention through SDPA; relative position enters as an additive bias."""

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool = True, use_rel_pos: bool = False, rel_pos_size: int = 0
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * rel_pos_size - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * rel_pos_size - 1, self.head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) or, without relative position, (B, N, C)."""
        shape = x.shape
        B = shape[0]
        qkv = self.qkv(x).reshape(B, -1, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, N, head_dim)
        bias = None
        if self.use_rel_pos:
            if x.dim() != 4:
                raise ValueError("relative position needs (B, H, W, C) tokens")
            bias = decomposed_rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, (shape[1], shape[2]))
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = x.transpose(1, 2).reshape(shape)
        return self.proj(x)


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * windows, ws, ws, C), zero-padding H, W up to multiples of ws."""
    B, H, W, C = x.shape
    pad_h = (window_size - H % window_size) % window_size
    pad_w = (window_size - W % window_size) % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    Hp, Wp = H + pad_h, W + pad_w
    x = x.view(B, Hp // window_size, window_size, Wp // window_size, window_size, C)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, C)
    return windows, (Hp, Wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, pad_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of `window_partition`, dropping the padding."""
    Hp, Wp = pad_hw
    H, W = hw
    B = windows.shape[0] // (Hp * Wp // window_size // window_size)
    x = windows.view(B, Hp // window_size, Wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, -1)
    return x[:, :H, :W, :].contiguous() if (Hp > H or Wp > W) else x


class Block(nn.Module):
    """Pre-norm transformer block; `window_size > 0` attends within zero-padded windows."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        use_rel_pos: bool = False,
        window_size: int = 0,
        grid_size: int = 64,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(
            dim, num_heads, qkv_bias, use_rel_pos, rel_pos_size=window_size if window_size > 0 else grid_size
        )
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), act=nn.GELU)
        self.window_size = window_size
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            H, W = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)
            x = window_unpartition(self.attn(x), self.window_size, pad_hw, (H, W))
        else:
            x = self.attn(x)
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Conv patchify to channels-last tokens (B, H/p, W/p, C)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


def resize_pos_embed_grid(pos: torch.Tensor, size: tuple[int, int], antialias: bool = False) -> torch.Tensor:
    """(1, h, w, C) -> (1, H, W, C), bicubic, align_corners=False."""
    if tuple(pos.shape[1:3]) == tuple(size):
        return pos
    out = F.interpolate(
        pos.permute(0, 3, 1, 2), size=size, mode="bicubic", align_corners=False, antialias=antialias
    )
    return out.permute(0, 2, 3, 1)


class ImageEncoderViT(nn.Module, StrictHubMixin, **hub_kwargs()):
    """(B, 3, S, S) normalised image -> (B, out_chans, S/16, S/16) embedding.

    Also a model on its own (e.g. a SAMI teacher loaded from `timm/samvit_*`): `save_pretrained(dir)`
    writes config.json (the `ImageEncoderConfig`) + model.safetensors, loaded back by
    `efficient_sam.from_pretrained(dir)`.
    """

    def __init__(self, cfg: ImageEncoderConfig) -> None:
        super().__init__()
        if isinstance(cfg, dict):
            cfg = ImageEncoderConfig.from_dict(cfg)
        cfg = cfg.validate()  # TypeError / ValueError naming the bad field
        self._hub_mixin_config = cfg  # what save_pretrained writes to config.json
        self.cfg = cfg
        self.img_size = cfg.img_size
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, cfg.embed_dim)
        g = cfg.grid_size
        if cfg.pos_embed == "grid":
            self.pos_embed = nn.Parameter(torch.zeros(1, g, g, cfg.embed_dim))
        elif cfg.pos_embed == "cls_grid":
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.pos_embed_grid**2, cfg.embed_dim))
        else:
            raise ValueError(f"unknown pos_embed layout {cfg.pos_embed!r}; expected 'grid' or 'cls_grid'")
        dpr = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]  # linear, as timm
        self.blocks = nn.ModuleList(
            Block(
                cfg.embed_dim,
                cfg.num_heads,
                cfg.mlp_ratio,
                cfg.qkv_bias,
                cfg.norm_eps,
                use_rel_pos=cfg.use_rel_pos,
                window_size=0 if i in cfg.global_attn_indexes else cfg.window_size,
                grid_size=g,
                drop_path=dpr[i],
            )
            for i in range(cfg.depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(cfg.embed_dim, cfg.out_chans, kernel_size=1, bias=False),
            LayerNorm2d(cfg.out_chans),
            nn.Conv2d(cfg.out_chans, cfg.out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(cfg.out_chans),
        )

    def _model_card_info(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            **super()._model_card_info(),
            "title": "SAM-style ViT image encoder",
            "architecture": "image encoder (ImageEncoderViT)",
            "description": "The image encoder of a Segment Anything model alone (patch embedding, ViT blocks, "
            "256-channel neck), e.g. a frozen SAMI distillation teacher.",
            "config_summary": f"embed_dim {cfg.embed_dim}, depth {cfg.depth}, heads {cfg.num_heads}, "
            f"window {cfg.window_size}, global blocks {list(cfg.global_attn_indexes)}, input {cfg.img_size}px",
            "usage": "embedding = model(images)  # (B, 3, 1024, 1024) normalised -> (B, 256, 64, 64)",
        }

    def pos_embed_at(self, size: tuple[int, int]) -> torch.Tensor:
        """Absolute position embedding for an (h, w) token grid: (1, h, w, C)."""
        if self.cfg.pos_embed == "cls_grid":
            p = self.cfg.pos_embed_grid
            grid = self.pos_embed[:, 1:].reshape(1, p, p, -1)
            # EfficientSAM resizes without antialias, also when shrinking; keep that for all sizes.
            return resize_pos_embed_grid(grid, size, antialias=False)
        g = self.pos_embed.shape[1]
        return resize_pos_embed_grid(self.pos_embed, size, antialias=size[0] < g)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patchify + absolute position embedding: (B, 3, H, W) -> (B, H/16, W/16, C) tokens."""
        x = self.patch_embed(x)
        return x + self.pos_embed_at((x.shape[1], x.shape[2]))

    def forward_tokens(self, x: torch.Tensor, return_indices: tuple[int, ...] = ()) -> tuple[torch.Tensor, list]:
        """Patchify + blocks: (B, h, w, C) pre-neck tokens and the outputs of blocks in `return_indices`."""
        x = self.embed(x)
        intermediates = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i in return_indices:
                intermediates.append(x)
        return x, intermediates

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.forward_tokens(x)
        return self.neck(x.permute(0, 3, 1, 2))
