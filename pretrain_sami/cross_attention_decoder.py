"""SAMI's cross-attention decoder: only the masked positions are queries.

Keys/values are the (projected) visible encoder tokens and, by default, the current masked-token
features too (`kv="visible_and_masked"`, the paper's "both unmasked features from encoder and
masked features"); `kv="visible"` attends to the visible tokens only. Positions enter through fixed
2-D sin-cos embeddings, as in MAE's decoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

from .masking import Masking

KV_MODES = ("visible_and_masked", "visible")


def sincos_pos_embed_2d(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding (MAE): (grid*grid, dim), row-major tokens.

    The first half of the channels encodes the row (y), the second half the column (x).
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4.0))
    coords = torch.arange(grid, dtype=torch.float64)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")

    def embed_1d(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    return torch.cat([embed_1d(ys), embed_1d(xs)], dim=1).float()


class CrossAttention(nn.Module):
    """Multi-head attention of queries (B, Nq, C) over keys/values (B, Nk, C), through SDPA."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        B, Nq, C = x.shape
        h = self.num_heads
        q = self.q(x).reshape(B, Nq, h, C // h).transpose(1, 2)
        k, v = self.kv(context).reshape(B, -1, 2, h, C // h).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, Nq, C))


class CrossAttentionBlock(nn.Module):
    """Pre-norm block: q = q + attn(norm(q), kv); q = q + mlp(norm(q))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, kv: str = "visible_and_masked") -> None:
        super().__init__()
        if kv not in KV_MODES:
            raise ValueError(f"decoder kv must be one of {KV_MODES}, got {kv!r}")
        self.kv_mode = kv
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.norm_context = nn.LayerNorm(dim, eps=1e-6)
        self.attn = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, queries: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """queries: (B, n_masked, C) masked positions; visible: (B, n_visible, C) encoder tokens."""
        x = self.norm1(queries)
        context = self.norm_context(visible)
        if self.kv_mode == "visible_and_masked":
            context = torch.cat([context, x], dim=1)
        queries = queries + self.attn(x, context)
        return queries + self.mlp(self.norm2(queries))


class CrossAttentionDecoder(nn.Module):
    """Visible encoder tokens (B, n_visible, encoder_dim) -> all tokens (B, N, dim) in original order.

    Masked positions are a learned mask token plus their position embedding and pass through the
    blocks; visible positions keep their projected encoder features. Both are merged, unshuffled and
    normalised for the projection head.
    """

    def __init__(
        self,
        encoder_dim: int,
        grid_size: int,
        dim: int = 512,
        depth: int = 8,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        kv: str = "visible_and_masked",
    ) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_pos_embed_2d(dim, grid_size)[None], persistent=False)
        self.blocks = nn.ModuleList(CrossAttentionBlock(dim, num_heads, mlp_ratio, kv) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, visible: torch.Tensor, masking: Masking) -> torch.Tensor:
        B, n_visible, _ = visible.shape
        if masking.ids_shuffle.shape[1] != self.pos_embed.shape[1]:
            raise ValueError(
                f"decoder built for a {self.grid_size}x{self.grid_size} grid ({self.pos_embed.shape[1]} tokens), "
                f"got {masking.ids_shuffle.shape[1]} tokens"
            )
        v = self.embed(visible)
        pos = self.pos_embed.to(v.dtype).expand(B, -1, -1)
        memory = v + masking.keep(pos)
        queries = self.mask_token.to(v.dtype) + masking.select_masked(pos)
        for blk in self.blocks:
            queries = blk(queries, memory)
        return self.norm(masking.restore(v, queries))
