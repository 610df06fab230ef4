"""Prompt encoder: random-Fourier positional encoding of points and box corners, and the dense prompt.

Point labels: -1 padding, 0 negative, 1 positive, 2 box top-left, 3 box bottom-right.
SAM and EfficientSAM differ in how padding and negatives are embedded and in the dense prompt;
see `PromptEncoderConfig`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..config import PromptEncoderConfig
from .common import LayerNorm2d


class PositionEmbeddingRandom(nn.Module):
    """Fourier features of coordinates in [0, 1]: [sin(2*pi*(2c-1)G), cos(...)] with G (2, F)."""

    def __init__(self, num_pos_feats: int = 128, scale: float | None = None) -> None:
        super().__init__()
        scale = 1.0 if scale is None or scale <= 0.0 else scale
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        coords = 2 * coords - 1
        # fp32 even in a bf16/fp16 model: low-precision coordinates would scramble the sin/cos phases.
        coords = coords.float() @ self.positional_encoding_gaussian_matrix.float()
        coords = 2 * np.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Dense PE of an (h, w) grid at cell centres: (2F, h, w)."""
        h, w = size
        grid = torch.ones((h, w), device=self.positional_encoding_gaussian_matrix.device, dtype=torch.float32)
        y_embed = (grid.cumsum(dim=0) - 0.5) / h
        x_embed = (grid.cumsum(dim=1) - 0.5) / w
        return self._pe_encoding(torch.stack([x_embed, y_embed], dim=-1)).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """PE of (..., 2) pixel (x, y) coordinates in an (H, W) frame: (..., 2F)."""
        coords = torch.stack([coords[..., 0] / image_size[1], coords[..., 1] / image_size[0]], dim=-1)
        return self._pe_encoding(coords.to(torch.float))


class PromptEncoder(nn.Module):
    def __init__(
        self, cfg: PromptEncoderConfig, image_embedding_size: tuple[int, int], input_image_size: tuple[int, int]
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_dim = cfg.embed_dim
        self.image_embedding_size = image_embedding_size
        self.input_image_size = input_image_size
        self.pe_layer = PositionEmbeddingRandom(cfg.embed_dim // 2)
        # Index = label: 0 negative, 1 positive, 2 box top-left, 3 box bottom-right. EfficientSAM has no
        # negative embedding; its slot 0 is an empty module so that the key layout stays SAM's.
        self.point_embeddings = nn.ModuleList(
            [nn.Embedding(1, cfg.embed_dim) if cfg.negative_point_embed else nn.Identity()]
            + [nn.Embedding(1, cfg.embed_dim) for _ in range(3)]
        )
        self.not_a_point_embed = nn.Embedding(1, cfg.embed_dim)
        if cfg.mask_prompt:
            self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
            c = cfg.mask_in_chans
            self.mask_downscaling = nn.Sequential(
                nn.Conv2d(1, c // 4, kernel_size=2, stride=2),
                LayerNorm2d(c // 4),
                nn.GELU(),
                nn.Conv2d(c // 4, c, kernel_size=2, stride=2),
                LayerNorm2d(c),
                nn.GELU(),
                nn.Conv2d(c, cfg.embed_dim, kernel_size=1),
            )
            self.no_mask_embed = nn.Embedding(1, cfg.embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """(1, C, h, w) positional encoding of the image-embedding grid."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _label_table(self) -> torch.Tensor:
        """(5, C): row label+1 is what a point of that label adds to its PE."""
        neg = self.point_embeddings[0]
        rows = [self.not_a_point_embed.weight]
        rows.append(neg.weight if isinstance(neg, nn.Embedding) else torch.zeros_like(rows[0]))
        rows += [self.point_embeddings[i].weight for i in (1, 2, 3)]
        return torch.cat(rows, dim=0)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """coords (B, N, 2) in the input frame (pixels), labels (B, N) -> (B, N, C). One gather, no loops."""
        pe = self.pe_layer.forward_with_coords(coords + 0.5, self.input_image_size)
        labels = labels.long()
        if self.cfg.zero_padding_pe:
            pe = torch.where((labels == -1)[..., None], torch.zeros_like(pe), pe)
        return pe + self._label_table()[(labels + 1).clamp(0, 4)]

    def forward(
        self,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
        batch_size: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Sparse (B, N, C) and dense (B, C, h, w) embeddings (dense is None without a mask prompt path).

        coords (B, N, 2) / labels (B, N) and boxes (B, 4) are in the model's input frame. A box becomes
        two corner points with labels 2 and 3 after the points. SAM appends one padding point when no box
        is given; EfficientSAM pads/truncates to `max_points` with coordinate -1 and label -1.
        """
        parts_c, parts_l = [], []
        if coords is not None:
            parts_c.append(coords)
            parts_l.append(labels)
        if boxes is not None:
            parts_c.append(boxes.reshape(-1, 2, 2))
            parts_l.append(torch.tensor([2, 3], device=boxes.device).expand(boxes.shape[0], 2))
        if not parts_c:
            bs = batch_size or (masks.shape[0] if masks is not None else 1)
            device = self.not_a_point_embed.weight.device
            parts_c.append(torch.zeros(bs, 0, 2, device=device))
            parts_l.append(torch.zeros(bs, 0, dtype=torch.long, device=device))
        c = torch.cat([p.to(torch.float) for p in parts_c], dim=1)
        lab = torch.cat([p.long() for p in parts_l], dim=1)
        bs, n = lab.shape
        max_points = self.cfg.max_points
        if max_points is not None:
            if n > max_points:
                c, lab = c[:, :max_points], lab[:, :max_points]
            elif n < max_points:
                c = torch.cat([c, c.new_full((bs, max_points - n, 2), -1.0)], dim=1)
                lab = torch.cat([lab, lab.new_full((bs, max_points - n), -1)], dim=1)
        elif boxes is None and coords is not None:
            # SAM pads only point prompts without a box; a mask-only prompt has no sparse tokens at all.
            c = torch.cat([c, c.new_zeros(bs, 1, 2) - 0.5], dim=1)  # SAM's (0, 0) pad, before the +0.5 shift
            lab = torch.cat([lab, lab.new_full((bs, 1), -1)], dim=1)
        sparse = self.embed_points(c, lab)
        dense = None
        if self.cfg.mask_prompt:
            h, w = self.image_embedding_size
            if masks is not None:
                dense = self.mask_downscaling(masks)
            else:
                dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)
        elif masks is not None:
            raise ValueError("this model has no mask-prompt input (EfficientSAM decoder); pass mask_input=None")
        return sparse, dense
