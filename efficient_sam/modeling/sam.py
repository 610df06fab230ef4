"""The promptable segmentation model: image encoder + prompt encoder + mask decoder."""

from __future__ import annotations

import torch
from torch import nn

from ..config import SamConfig
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder


class Sam(nn.Module):
    """SAM (ViT-H/L/B) or EfficientSAM (ViT-Ti/S), selected by `config`.

    Coordinates given to `decode` are in the model's input frame (`img_size` pixels, after the
    family's resize); `efficient_sam.transforms` maps original-image coordinates there.
    """

    def __init__(self, config: SamConfig) -> None:
        super().__init__()
        if config.family not in ("sam", "efficient_sam"):
            raise ValueError(f"unknown model family {config.family!r}; expected 'sam' or 'efficient_sam'")
        if config.resize not in ("longest_side", "stretch"):
            raise ValueError(f"unknown resize policy {config.resize!r}; expected 'longest_side' or 'stretch'")
        self.config = config
        enc = config.image_encoder
        self.image_encoder = ImageEncoderViT(enc)
        self.prompt_encoder = PromptEncoder(
            config.prompt_encoder, (enc.grid_size, enc.grid_size), (enc.img_size, enc.img_size)
        )
        self.mask_decoder = MaskDecoder(config.mask_decoder)
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def img_size(self) -> int:
        return self.config.image_encoder.img_size

    @property
    def mask_threshold(self) -> float:
        return self.config.mask_threshold

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) preprocessed images -> (B, 256, S/16, S/16) embeddings."""
        return self.image_encoder(images)

    def decode(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts for B masks over B_img embeddings (B a multiple of B_img, grouped by image), all in
        one decoder call -> low-res logits (B, 3 or 1, 4h, 4w) and IoU predictions (B, 3 or 1).

        point_coords (B, N, 2) / point_labels (B, N), boxes (B, 4) XYXY, mask_input (B, 1, 4h, 4w) logits.
        """
        batch = next((t.shape[0] for t in (point_coords, boxes, mask_input) if t is not None), None)
        sparse, dense = self.prompt_encoder(point_coords, point_labels, boxes, mask_input, batch_size=batch)
        return self.mask_decoder(
            image_embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output
        )

    def forward(
        self,
        images: torch.Tensor,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Preprocessed images (B_img, 3, S, S) + prompts in the input frame -> (low-res logits, IoU)."""
        return self.decode(
            self.encode_image(images), point_coords, point_labels, boxes, mask_input, multimask_output
        )
