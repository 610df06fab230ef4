"""Mask decoder: output tokens + prompt tokens through the two-way transformer, upscaled image
features and per-token hypernetwork MLPs -> low-res mask logits, plus an IoU head."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..config import MaskDecoderConfig
from .common import MLP, LayerNorm2d, activation
from .two_way_transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    def __init__(self, cfg: MaskDecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.transformer_dim
        self.transformer_dim = dim
        self.num_multimask_outputs = cfg.num_multimask_outputs
        self.num_mask_tokens = cfg.num_multimask_outputs + 1
        self.transformer = TwoWayTransformer(
            cfg.transformer_depth, dim, cfg.transformer_num_heads, cfg.transformer_mlp_dim,
            cfg.activation, cfg.attention_downsample_rate, cfg.two_way_style,
        )
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        if cfg.upscaling_norm == "layernorm2d":
            norm = LayerNorm2d(dim // 4)
        elif cfg.upscaling_norm == "groupnorm":
            norm = nn.GroupNorm(1, dim // 4)
        else:
            raise ValueError(f"unknown upscaling_norm {cfg.upscaling_norm!r}; expected 'layernorm2d' or 'groupnorm'")
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            norm,
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        act = activation(cfg.activation)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3, act) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(dim, cfg.iou_head_hidden_dim, self.num_mask_tokens, cfg.iou_head_depth, act)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor | None,
        multimask_output: bool,
        prompt_filter: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embeddings (B_img, C, h, w); prompts (B, N, C) with B a multiple of B_img, grouped by
        image -> masks (B, 3 or 1, 4h, 4w) logits and IoU predictions (B, 3 or 1).

        `prompt_filter` (IoU (B, k) -> indices of prompts) computes the masks of those prompts only: the
        IoU head does not see the masks, so filtering on it before the upscaling is exact."""
        hs, src = self.run_transformer(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        sl = slice(1, None) if multimask_output else slice(0, 1)
        iou_pred = self.iou_prediction_head(hs[:, 0, :])[:, sl]
        if prompt_filter is not None:
            keep = prompt_filter(iou_pred)
            hs, src = hs[keep], src[keep]
        return self.mask_logits(hs, src)[:, sl], iou_pred

    def run_transformer(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor | None,
        extra_tokens: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[IoU token, mask tokens, extra tokens (e.g. HQ-SAM's), prompts] through the two-way
        transformer -> token outputs (B, T, D) and the image features (B, D, h, w)."""
        b = sparse_prompt_embeddings.shape[0]
        parts = [self.iou_token.weight, self.mask_tokens.weight]
        if extra_tokens is not None:
            parts.append(extra_tokens)
        output_tokens = torch.cat(parts, dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(b, -1, -1).to(sparse_prompt_embeddings.dtype)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)

        if b % image_embeddings.shape[0]:
            raise ValueError(f"{b} prompts cannot be split evenly over {image_embeddings.shape[0]} image embeddings")
        if dense_prompt_embeddings is not None and dense_prompt_embeddings.shape[0] not in (1, image_embeddings.shape[0]):
            # per-prompt dense prompts (mask inputs): every prompt gets its own copy of its image
            image_embeddings = torch.repeat_interleave(image_embeddings, b // image_embeddings.shape[0], dim=0)
        # one dense prompt for all (no mask input): the image side stays one per image until the
        # transformer's first image-to-token update
        src = image_embeddings if dense_prompt_embeddings is None else image_embeddings + dense_prompt_embeddings
        _, c, h, w = src.shape
        hs, src = self.transformer(src, image_pe, tokens)
        return hs, src.transpose(1, 2).reshape(b, c, h, w)

    def mask_logits(self, hs: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        """Token outputs (B, T, D) and image features (B, D, h, w) -> logits of all mask tokens
        (B, num_mask_tokens, 4h, 4w): the upscaled features times each token's hypernetwork output."""
        upscaled = self.output_upscaling(src)
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        b, c, h, w = upscaled.shape
        return (hyper_in @ upscaled.reshape(b, c, h * w)).reshape(b, self.num_mask_tokens, h, w)

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All mask tokens: (B, num_mask_tokens, 4h, 4w) logits and (B, num_mask_tokens) IoU."""
        hs, src = self.run_transformer(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        return self.mask_logits(hs, src), self.iou_prediction_head(hs[:, 0, :])
