"""The promptable segmentation model: image encoder + prompt encoder + mask decoder."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
from torch import nn

from ..config import HQConfig, ImageEncoderConfig, MaskDecoderConfig, PromptEncoderConfig, SamConfig
from . import hub_mixin
from .hub_mixin import StrictHubMixin, hub_kwargs
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .mask_decoder_hq import MaskDecoderHQ
from .processing import normalize_input, stretch_coords, upscale_masks
from .prompt_encoder import PromptEncoder


class Sam(nn.Module, StrictHubMixin, **hub_kwargs()):
    """SAM (ViT-H/L/B) or EfficientSAM (ViT-Ti/S), selected by `config`.

    Coordinates given to `decode` are in the model's input frame (`img_size` pixels, after the
    family's resize); `efficient_sam.transforms` maps original-image coordinates there.

    `model(batched_input, multimask_output)` is the official batched `Sam.forward` (`forward_batched`),
    for both families.

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
        prompt_filter: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts for B masks over B_img embeddings (B a multiple of B_img, grouped by image), all in
        one decoder call -> low-res logits (B, 3 or 1, 4h, 4w) and IoU predictions (B, 3 or 1).

        point_coords (B, N, 2) / point_labels (B, N), boxes (B, 4) XYXY, mask_input (B, 1, 4h, 4w) logits.
        HQ models also take `hq_features` (from `encode_image_hq`) and return one mask per prompt: SAM +
        HQ logits, or HQ only with `hq_token_only` (the official HQ-SAM's outputs).
        `prompt_filter` (IoU predictions (B, 3 or 1) -> indices of prompts): the logits then hold only
        the rows of those prompts (the IoU head does not see the masks, so filtering first is exact and
        skips the upscaling of the rest; the automatic mask generator's predicted-IoU filter).
        """
        batch = next((t.shape[0] for t in (point_coords, boxes, mask_input) if t is not None), None)
        sparse, dense = self.prompt_encoder(point_coords, point_labels, boxes, mask_input, batch_size=batch)
        if dense is not None and mask_input is None:
            dense = dense[:1]  # the same no-mask embedding for every prompt: the decoder shares the image side
        # The Fourier PE is computed in fp32; a bf16/fp16 model gets its prompt tokens in its own dtype.
        dtype = image_embeddings.dtype
        args = (
            image_embeddings, self.prompt_encoder.get_dense_pe().to(dtype), sparse.to(dtype),
            None if dense is None else dense.to(dtype), multimask_output,
        )
        if self.is_hq:
            return self.mask_decoder(
                *args, hq_features=hq_features, hq_token_only=hq_token_only, prompt_filter=prompt_filter
            )
        if hq_features is not None or hq_token_only:
            raise ValueError("hq_features / hq_token_only apply to HQ models only")
        return self.mask_decoder(*args, prompt_filter=prompt_filter)

    def forward(self, batched_input, *args, **kwargs):
        """Two entry points, told apart by the first argument:

        - a list of dicts: the official batched API, `forward(batched_input, multimask_output,
          hq_token_only=False)` -> a list of dicts (`forward_batched`), as `segment_anything.Sam.forward`;
        - a tensor: `forward(images, point_coords, point_labels, boxes, mask_input, multimask_output,
          hq_token_only)`, preprocessed images and prompts in the input frame -> (low-res logits, IoU)
          (`forward_preprocessed`).
        """
        if isinstance(batched_input, torch.Tensor):
            return self.forward_preprocessed(batched_input, *args, **kwargs)
        return self.forward_batched(batched_input, *args, **kwargs)

    def forward_preprocessed(
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

    @torch.no_grad()
    def forward_batched(
        self, batched_input: list[dict[str, Any]], multimask_output: bool, hq_token_only: bool = False
    ) -> list[dict[str, torch.Tensor]]:
        """The official `Sam.forward`: all images through the encoder in one call, then each image's
        prompts through the decoder in one call.

        batched_input: one dict per image, with
          'image': (3, H, W) tensor, RGB on the 0-255 scale (float or uint8). SAM family: already resized
            so that the longest side is `img_size` (as the official code expects: `ResizeLongestSide`;
            sides <= img_size), normalised and zero-padded here. EfficientSAM family: any size (e.g. the
            original image), stretched here to img_size x img_size as the official EfficientSAM does.
          'original_size': (H0, W0), the size the masks are returned at.
          'point_coords' (B, N, 2) with 'point_labels' (B, N), 'boxes' (B, 4) XYXY: optional, in the
            pixel frame of 'image' (SAM: the resized frame, as the official code; EfficientSAM: scaled
            per axis to the stretched input, padding points of label -1 kept at -1).
          'mask_inputs' (B, 1, 256, 256): optional low-res logits (SAM family only).
        multimask_output: 3 masks per prompt, else 1 (HQ models: always 1, SAM + HQ logits or HQ alone
            with `hq_token_only`, as `segment_anything_hq`).

        Returns one dict per image: 'masks' (B, C, H0, W0) bool, 'iou_predictions' (B, C),
        'low_res_logits' (B, C, 256, 256). Each family post-processes as its official code: SAM bilinear
        to img_size, crop to the image's (H, W), bilinear to the original size; EfficientSAM bicubic
        straight to the original size. Given what `SamPredictor.set_image` would feed the model, the
        outputs are those of `SamPredictor.predict_torch`.
        """
        records = self._check_batched_input(batched_input)
        dtype = self.image_encoder.patch_embed.proj.weight.dtype
        x = torch.cat([self.preprocess(r["image"]) for r in records]).to(dtype)
        if self.is_hq:
            emb, hq = self.encode_image_hq(x)
        else:
            emb, hq = self.encode_image(x), None
        outputs = []
        for i, r in enumerate(records):
            frame = tuple(r["image"].shape[-2:])
            coords, labels, boxes, masks = (r.get(k) for k in ("point_coords", "point_labels", "boxes", "mask_inputs"))
            if coords is not None:
                coords, labels = self._to_input_frame(coords, frame), labels.to(self.device)
            if boxes is not None:
                boxes = self._to_input_frame(boxes.reshape(-1, 2, 2), frame).reshape(-1, 4)
            if masks is not None:
                masks = masks.to(self.device, dtype)
            extra = dict(hq_features=hq[i : i + 1], hq_token_only=hq_token_only) if self.is_hq else {}
            low, iou = self.decode(emb[i : i + 1], coords, labels, boxes, masks, multimask_output, **extra)
            full = self.postprocess_masks(low.float(), frame, r["original_size"])
            outputs.append({"masks": full > self.mask_threshold, "iou_predictions": iou, "low_res_logits": low})
        return outputs

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) or (B, 3, H, W) RGB on the 0-255 scale -> (B, 3, S, S) normalised input, by the
        family's policy: SAM zero-pads bottom/right (H, W <= S); EfficientSAM stretches to S x S."""
        x = image.to(self.device)
        return normalize_input(x[None] if x.dim() == 3 else x, self.config)

    def postprocess_masks(
        self, masks: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
    ) -> torch.Tensor:
        """(B, C, 256, 256) low-res logits -> (B, C, H0, W0) logits. SAM: bilinear to S x S, crop to
        `input_size` (the image's size before padding), bilinear to `original_size`. EfficientSAM:
        bicubic straight to `original_size` (`input_size` is unused: the image was stretched)."""
        return upscale_masks(masks, input_size, (int(original_size[0]), int(original_size[1])), self.config)

    def _to_input_frame(self, coords: torch.Tensor, frame: tuple[int, int]) -> torch.Tensor:
        """(..., 2) (x, y) pixels of the given image -> the input frame: SAM identity (the image is already
        resized); EfficientSAM scaled per axis to S x S, negative (padding) coordinates -> -1."""
        coords = coords.to(self.device, torch.float32)
        if self.config.resize != "stretch":
            return coords
        return stretch_coords(coords, frame, self.img_size)

    def _check_batched_input(self, batched_input) -> list[dict[str, Any]]:
        """The records of `forward_batched`, or an error naming the record and key."""
        if not isinstance(batched_input, (list, tuple)):
            raise TypeError(
                f"batched_input must be a list of dicts (one per image), got {type(batched_input).__name__}"
            )
        if len(batched_input) == 0:
            raise ValueError("batched_input is empty: give at least one image record")
        known = {"image", "original_size", "point_coords", "point_labels", "boxes", "mask_inputs"}
        s = self.img_size
        for i, r in enumerate(batched_input):
            where = f"batched_input[{i}]"
            if not isinstance(r, dict):
                raise TypeError(f"{where} must be a dict, got {type(r).__name__}")
            unknown = sorted(set(r) - known)
            if unknown:
                raise ValueError(f"{where} has unknown keys {unknown}; known keys: {sorted(known)}")
            for key in ("image", "original_size"):
                if key not in r:
                    raise ValueError(f"{where} has no {key!r}")
            img = r["image"]
            if not isinstance(img, torch.Tensor):
                raise TypeError(f"{where}['image'] must be a torch tensor, got {type(img).__name__}")
            if img.dtype == torch.bool or img.is_complex():
                raise TypeError(f"{where}['image'] must be real numbers on the 0-255 scale, got dtype {img.dtype}")
            if img.dim() != 3 or img.shape[0] != 3 or img.shape[1] == 0 or img.shape[2] == 0:
                raise ValueError(
                    f"{where}['image'] must be a 3xHxW tensor, got shape {tuple(img.shape)}"
                    + ("; an HxWx3 image? permute(2, 0, 1) it first" if img.dim() == 3 and img.shape[-1] == 3 else "")
                )
            if self.config.resize != "stretch" and (img.shape[1] > s or img.shape[2] > s):
                raise ValueError(
                    f"{where}['image'] is {img.shape[1]}x{img.shape[2]}, larger than the model's {s}x{s} input: "
                    f"resize its longest side to {s} first (ResizeLongestSide({s}).apply_image)"
                )
            size = r["original_size"]
            try:
                ok = len(size) == 2 and all(int(v) == v and int(v) > 0 for v in size)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"{where}['original_size'] must be (H, W), two positive ints, got {size!r}")
            if ("point_coords" in r and r["point_coords"] is not None) != (
                "point_labels" in r and r["point_labels"] is not None
            ):
                raise ValueError(f"{where}: 'point_coords' and 'point_labels' must be given together")
            batch = []
            for key, shape in (("point_coords", "(B, N, 2)"), ("boxes", "(B, 4)"), ("mask_inputs", "(B, 1, 256, 256)")):
                t = r.get(key)
                if t is None:
                    continue
                if not isinstance(t, torch.Tensor) or t.dtype == torch.bool or t.is_complex():
                    raise TypeError(f"{where}[{key!r}] must be a real-valued torch tensor {shape}")
                batch.append(t.shape[0] if t.dim() else None)
            c = r.get("point_coords")
            if c is not None:
                lab = r["point_labels"]
                if c.dim() != 3 or c.shape[-1] != 2:
                    raise ValueError(f"{where}['point_coords'] must be (B, N, 2), got {tuple(c.shape)}")
                if not isinstance(lab, torch.Tensor) or tuple(lab.shape) != tuple(c.shape[:2]):
                    got = tuple(lab.shape) if isinstance(lab, torch.Tensor) else type(lab).__name__
                    raise ValueError(f"{where}['point_labels'] must be a (B, N) = {tuple(c.shape[:2])} tensor, got {got}")
            b = r.get("boxes")
            if b is not None and (b.dim() != 2 or b.shape[-1] != 4):
                raise ValueError(f"{where}['boxes'] must be (B, 4) XYXY, got {tuple(b.shape)}")
            m = r.get("mask_inputs")
            if m is not None:
                if not self.config.prompt_encoder.mask_prompt:
                    raise ValueError(f"{where}['mask_inputs']: this model has no mask-prompt input (EfficientSAM decoder)")
                ms = 4 * self.prompt_encoder.image_embedding_size[0]
                if m.dim() != 4 or tuple(m.shape[1:]) != (1, ms, ms):
                    raise ValueError(f"{where}['mask_inputs'] must be (B, 1, {ms}, {ms}), got {tuple(m.shape)}")
            if len(set(batch)) > 1:
                raise ValueError(f"{where}: prompt batch sizes disagree: {batch} (point_coords, boxes, mask_inputs)")
        return list(batched_input)


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
