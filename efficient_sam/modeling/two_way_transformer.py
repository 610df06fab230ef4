"""Two-way transformer of the mask decoder: tokens attend to the image and the image to the tokens.

`style="sam"`: layer 0 self-attention has no residual and no PE; later layers add the PE to q/k only.
`style="efficient_sam"`: residual in every layer; from layer 1 on the PE is added into the token
stream itself (so it also reaches v and the residual).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLPBlock, activation


class Attention(nn.Module):
    """Attention with separate q/k/v projections, optionally to an internal dim of `dim // downsample_rate`."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError("num_heads must divide embedding_dim // downsample_rate")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (B or B / G, Nq, C), k/v (B, Nk, C) -> (B, Nq, C). A smaller q batch is shared by groups of G
        consecutive k/v batches (one image's tokens queried by its G prompts): projected once."""
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        if q.shape[0] != k.shape[0]:
            q = q.repeat_interleave(k.shape[0] // q.shape[0], dim=0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class TwoWayAttentionBlock(nn.Module):
    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        act: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
        style: str = "sam",
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, act)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe
        self.style = style

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor, key_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries/query_pe (B, N, C); keys (B_k, HW, C) with B a multiple of B_k: before the first
        image-to-token update the image tokens are the same for all G = B / B_k prompts of an image, and
        are projected once (exact: attention rows are independent) -> (B, N, C), (B, HW, C)."""
        b, n, c = queries.shape
        bk = keys.shape[0]
        if self.style == "sam":
            if self.skip_first_layer_pe:
                queries = self.self_attn(queries, queries, queries)
            else:
                q = queries + query_pe
                queries = queries + self.self_attn(q, q, queries)
        else:
            if not self.skip_first_layer_pe:
                queries = queries + query_pe
            queries = queries + self.self_attn(queries, queries, queries)
        queries = self.norm1(queries)

        k = keys + key_pe
        q = (queries + query_pe).reshape(bk, -1, c)  # an image's prompts side by side against its tokens
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys).reshape(b, n, c))
        queries = self.norm3(queries + self.mlp(queries))

        out = self.cross_attn_image_to_token(k, queries + query_pe, queries)
        keys = self.norm4((keys[:, None] + out.unflatten(0, (bk, -1))).flatten(0, 1))
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation_name: str = "relu",
        attention_downsample_rate: int = 2,
        style: str = "sam",
    ) -> None:
        super().__init__()
        if style not in ("sam", "efficient_sam"):
            raise ValueError(f"unknown two-way style {style!r}; expected 'sam' or 'efficient_sam'")
        act = activation(activation_name)
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim, num_heads, mlp_dim, act, attention_downsample_rate, skip_first_layer_pe=(i == 0),
                style=style,
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embedding (B_k, C, h, w) with B_k dividing B (one per image when the prompts of an image
        share it), image_pe (1 or B_k, C, h, w), point_embedding (B, N, C)
        -> processed tokens (B, N, C) and image tokens (B, h*w, C)."""
        keys = image_embedding.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        q, k = queries + point_embedding, keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys
