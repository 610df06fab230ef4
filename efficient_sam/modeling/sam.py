"""The promptable segmentation model: image encoder + prompt encoder + mask decoder."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ..config import HQConfig, ImageEncoderConfig, MaskDecoderConfig, PromptEncoderConfig, SamConfig
from . import hub_mixin
from .hub_mixin import StrictHubMixin, hub_kwargs
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .mask_decoder_hq import MaskDecoderHQ
from .prompt_encoder import PromptEncoder


class Sam(nn.Module, StrictHubMixin, **hub_kwargs()):
    """SAM (ViT-H/L/B) or EfficientSAM (ViT-Ti/S), selected by `config`.

    Coordinates given to `decode` are in the model's input frame (`img_size` pixels, after the
    family's resize); `efficient_sam.transforms` maps original-image coordinates there.

    Hub: `save_pretrained(dir)` writes config.json (the full `SamConfig`), model.safetensors and a
    model card; `push_to_hub(repo_id)` uploads them; `Sam.from_pretrained(...)` loads strictly
    (= `efficient_sam.from_pretrained`, restricted to `Sam`).
    """

    def __init__(self, config: SamConfig) -> None:
        super().__init__()
        config = _as_sam_config(config).validate()  # TypeError / ValueError naming the bad field
        self._hub_mixin_config = config  # what save_pretrained writes to config.json
        self.config = config
        enc = config.image_encoder
        self.image_encoder = ImageEncoderViT(enc)
        self.prompt_encoder = PromptEncoder(
            config.prompt_encoder, (enc.grid_size, enc.grid_size), (enc.img_size, enc.img_size)
        )
        if config.hq is None:
            self.mask_decoder = MaskDecoder(config.mask_decoder)
        else:  # hq.early_block is a block of the encoder (checked by validate)
            self.mask_decoder = MaskDecoderHQ(config.mask_decoder, enc.embed_dim)
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def _model_card_info(self) -> dict[str, Any]:
        cfg, enc = self.config, self.config.image_encoder
        name = hub_mixin.CONFIG_NAME(dataclasses.replace(cfg, hq=None))
        family = "EfficientSAM" if cfg.family == "efficient_sam" else "SAM"
        if cfg.hq is not None:  # HQ-SAM adapter on the base
            name = f"{name} + HQ" if name else None
            family = f"HQ-{family}"
        return {
            **super()._model_card_info(),
            "title": f"{family} {name}" if name else f"{family} (custom configuration)",
            "architecture": name or f"custom {cfg.family}",
            "description": f"A promptable segmentation model ({family} architecture): ViT image encoder, "
            "prompt encoder and mask decoder.",
            "config_summary": f"family {cfg.family}, encoder embed_dim {enc.embed_dim}, depth {enc.depth}, "
            f"heads {enc.num_heads}, input {enc.img_size}px, resize {cfg.resize}",
            "usage": "predictor = es.SamPredictor(model)\npredictor.set_image(image)  # HxWx3 uint8 RGB\n"
            "masks, iou, low_res = predictor.predict(point_coords=[[500, 375]], point_labels=[1])",
        }

    @property
    def img_size(self) -> int:
        return self.config.image_encoder.img_size

    @property
    def mask_threshold(self) -> float:
        return self.config.mask_threshold

    @property
    def is_hq(self) -> bool:
        return self.config.hq is not None

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) preprocessed images -> (B, 256, S/16, S/16) embeddings."""
        return self.image_encoder(images)

    def encode_image_early(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """HQ models: -> embeddings (B, 256, h, w) and the output of encoder block `hq.early_block`
        (B, h, w, C), the two inputs of the HQ fusion."""
        if not self.is_hq:
            raise ValueError("the HQ encoding needs an HQ model (config.hq is None)")
        enc = self.image_encoder
        tokens, (early,) = enc.forward_tokens(images, (self.config.hq.early_block,))
        return enc.neck(tokens.permute(0, 3, 1, 2)), early

    def encode_image_hq(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """HQ models: -> embeddings (B, 256, h, w) and HQ features (B, 32, 4h, 4w), the fusion of the
        final embedding with the early feature (computed once per image)."""
        emb, early = self.encode_image_early(images)
        return emb, self.mask_decoder.hq_features(emb, early)

    def decode(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        hq_features: torch.Tensor | None = None,
        hq_token_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts for B masks over B_img embeddings (B a multiple of B_img, grouped by image), all in
        one decoder call -> low-res logits (B, 3 or 1, 4h, 4w) and IoU predictions (B, 3 or 1).

        point_coords (B, N, 2) / point_labels (B, N), boxes (B, 4) XYXY, mask_input (B, 1, 4h, 4w) logits.
        HQ models also take `hq_features` (from `encode_image_hq`) and return one mask per prompt: SAM +
        HQ logits, or HQ only with `hq_token_only` (the official HQ-SAM's outputs).
        """
        batch = next((t.shape[0] for t in (point_coords, boxes, mask_input) if t is not None), None)
        sparse, dense = self.prompt_encoder(point_coords, point_labels, boxes, mask_input, batch_size=batch)
        # The Fourier PE is computed in fp32; a bf16/fp16 model gets its prompt tokens in its own dtype.
        dtype = image_embeddings.dtype
        args = (
            image_embeddings, self.prompt_encoder.get_dense_pe().to(dtype), sparse.to(dtype),
            None if dense is None else dense.to(dtype), multimask_output,
        )
        if self.is_hq:
            return self.mask_decoder(*args, hq_features=hq_features, hq_token_only=hq_token_only)
        if hq_features is not None or hq_token_only:
            raise ValueError("hq_features / hq_token_only apply to HQ models only")
        return self.mask_decoder(*args)

    def forward(
        self,
        images: torch.Tensor,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        hq_token_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Preprocessed images (B_img, 3, S, S) + prompts in the input frame -> (low-res logits, IoU)."""
        if self.is_hq:
            emb, hq = self.encode_image_hq(images)
            return self.decode(emb, point_coords, point_labels, boxes, mask_input, multimask_output, hq, hq_token_only)
        return self.decode(
            self.encode_image(images), point_coords, point_labels, boxes, mask_input, multimask_output
        )


def _as_sam_config(config: SamConfig | dict) -> SamConfig:
    """Accept a `SamConfig`, its `to_dict()`, or a SamConfig whose sub-configs are still dicts (what the
    Hub mixin's dataclass decoder produces)."""
    if isinstance(config, dict):
        return SamConfig.from_dict(config)
    if not isinstance(config, SamConfig):
        raise TypeError(f"config must be a SamConfig (or its dict), got {type(config).__name__}")
    subs = (
        (config.image_encoder, ImageEncoderConfig),
        (config.prompt_encoder, PromptEncoderConfig),
        (config.mask_decoder, MaskDecoderConfig),
    )
    if all(isinstance(v, t) for v, t in subs) and (config.hq is None or isinstance(config.hq, HQConfig)):
        return config
    return SamConfig.from_dict(dataclasses.asdict(config))  # asdict also walks the sub-config dicts
