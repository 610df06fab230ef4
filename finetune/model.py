"""The fine-tuned model and its training forward.

`build_finetune_model` makes an EfficientSAM ViT-Ti/S whose encoder can start from a SAMI `final/`
(or any `from_pretrained` source) and whose prompt encoder + mask decoder are EfficientSAM's or
SAM's own (`decoder: sam`: negative points and mask prompts work; they can start from a SAM
checkpoint's). `InteractiveSam.forward(batch)` runs SAM's interactive training on a batch: the
image encoder once per image, then every round as one decoder call over all masks of the batch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import efficient_sam as es
from efficient_sam.build import load_encoder_weights
from efficient_sam.checkpoint import load_strict
from efficient_sam.config import MaskDecoderConfig, PromptEncoderConfig

from .losses import LossConfig, sam_loss
from .prompt_simulation import PromptConfig, round_schedule, sample_error_points


@dataclass
class ModelConfig:
    name: str = "efficient_sam_vitt"  # efficient_sam_vitt | efficient_sam_vits (any registered name works)
    overrides: dict[str, Any] = field(default_factory=dict)  # flat es.build_model overrides, e.g. {encoder_img_size: 256}
    decoder: str = "efficient_sam"  # efficient_sam (the official EfficientSAM decoder) | sam (SAM's own)
    encoder_init: str | None = None  # SAMI final/ or any es.from_pretrained source with an image encoder
    decoder_init: str | None = None  # a model whose prompt encoder + mask decoder match (e.g. sam_vit_b .pth with decoder: sam)
    init: str | None = None  # a whole model (e.g. official efficient_sam_vitt.pt) to continue from
    drop_path: float = 0.0  # stochastic depth of the image encoder


def finetune_config(cfg: ModelConfig) -> es.SamConfig:
    overrides = dict(cfg.overrides)
    if cfg.drop_path:
        overrides["encoder_drop_path_rate"] = cfg.drop_path
    sam_cfg = es.get_config(cfg.name, **overrides)
    if cfg.decoder == "sam":
        sam_cfg = dataclasses.replace(sam_cfg, prompt_encoder=PromptEncoderConfig(), mask_decoder=MaskDecoderConfig())
    elif cfg.decoder != "efficient_sam":
        raise ValueError(f"model.decoder must be efficient_sam or sam, not {cfg.decoder!r}")
    return sam_cfg


def build_finetune_model(cfg: ModelConfig) -> es.Sam:
    """A `Sam` in train mode with the requested initialisation (every load strict)."""
    model = es.Sam(finetune_config(cfg))
    if cfg.init:
        src = es.from_pretrained(cfg.init)
        load_strict(model, src.state_dict(), f"model.init {cfg.init}")
    if cfg.encoder_init:
        load_encoder_weights(model.image_encoder, cfg.encoder_init)
    if cfg.decoder_init:
        src = es.from_pretrained(cfg.decoder_init)
        for part in ("prompt_encoder", "mask_decoder"):
            sd = getattr(src, part).state_dict()
            load_strict(getattr(model, part), sd, f"{part} of model.decoder_init {cfg.decoder_init}")
    return model.train()


class InteractiveSam(nn.Module):
    """`Sam` + SAM's interactive training as `forward(batch) -> losses` (one module, so that DDP sees
    a single forward per step).

    batch: image (B, 3, S, S) preprocessed; masks (T, m, m) bool targets on a grid covering the input
    frame; image_index (T,) the image of each mask; use_box (T,) bool; boxes (T, 4) / points (T, 2)
    first prompts in input-frame pixels; seed (B,) per-image seeds for the on-device sampling.
    """

    def __init__(self, sam: es.Sam, prompt: PromptConfig, loss: LossConfig) -> None:
        super().__init__()
        self.sam, self.prompt, self.loss = sam, prompt, loss
        pcfg = sam.config.prompt_encoder
        self.mask_prompt = pcfg.mask_prompt
        negatives = prompt.negatives
        if negatives not in ("auto", "true", "false"):
            raise ValueError(f"prompt.negatives must be auto, true or false, not {prompt.negatives!r}")
        self.negatives = pcfg.negative_point_embed if negatives == "auto" else negatives == "true"
        multimask = prompt.multimask
        if multimask == "auto":
            multimask = "ambiguous" if pcfg.mask_prompt else "always"
        if multimask not in ("ambiguous", "always"):
            raise ValueError(f"prompt.multimask must be auto, ambiguous or always, not {prompt.multimask!r}")
        self.always_multimask = multimask == "always"
        # Two slots hold the first prompt (box corners, or point + padding); the rest take new points.
        slots = None if pcfg.max_points is None else pcfg.max_points - 2
        self.point_rounds = prompt.point_rounds if slots is None else min(prompt.point_rounds, slots)
        # Without a mask prompt a round with no new point would repeat the previous one exactly.
        self.no_point_rounds = prompt.no_point_rounds if self.mask_prompt else 0

    def _decode(self, emb, coords, labels, mask_input):
        sam = self.sam
        sparse, dense = sam.prompt_encoder(coords, labels, None, mask_input)
        dtype = emb.dtype
        return sam.mask_decoder.predict_masks(
            emb, sam.prompt_encoder.get_dense_pe().to(dtype), sparse.to(dtype), None if dense is None else dense.to(dtype)
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        sam, img_size = self.sam, self.sam.img_size
        target = batch["masks"]
        t = target.shape[0]
        dev = target.device
        rows = torch.arange(t, device=dev)
        seed = int(batch["seed"].sum().item()) % (2**63 - 1)
        g = torch.Generator(device=dev).manual_seed(seed)
        schedule = [True] + round_schedule(self.point_rounds, self.no_point_rounds, np.random.default_rng(seed))

        emb = sam.encode_image(batch["image"])[batch["image_index"]]  # (T, C, h, w): each mask's image
        use_box = batch["use_box"]
        pad = torch.full_like(batch["points"], -1.0)
        coords = torch.where(use_box[:, None, None], batch["boxes"].view(t, 2, 2), torch.stack([batch["points"], pad], 1))
        labels = torch.where(
            use_box[:, None], torch.tensor([2, 3], device=dev), torch.tensor([1, -1], device=dev)
        )
        first_multimask = torch.ones_like(use_box) if self.always_multimask else ~use_box
        later_multimask = torch.full_like(use_box, self.always_multimask)
        mask_input = None
        totals: dict[str, torch.Tensor] = {}
        prev = None
        for r, adds_point in enumerate(schedule):
            if r > 0 and adds_point:
                c, lab = sample_error_points(prev > 0, target, self.negatives, img_size, g)
                coords = torch.cat([coords, c[:, None]], 1)
                labels = torch.cat([labels, lab[:, None]], 1)
            multimask = first_multimask if r == 0 else later_multimask
            args = (emb, coords, labels, mask_input)
            if self.prompt.checkpoint_decoder and torch.is_grad_enabled():
                logits, iou_pred = checkpoint(self._decode, *args, use_reentrant=False)
            else:
                logits, iou_pred = self._decode(*args)
            low_res = logits
            if logits.shape[-2:] != target.shape[-2:]:  # data.mask_size above the low-res grid
                logits = F.interpolate(logits, target.shape[-2:], mode="bilinear", align_corners=False)
            losses, _ = sam_loss(logits, iou_pred, target, multimask, self.loss)
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + v
            if r == 0:
                iou_first = losses["iou"].detach()
            # The mask passed on: the most confident multimask output, or the single-mask output.
            best = iou_pred[:, 1:].argmax(dim=1) + 1
            passed = torch.where(multimask, best, torch.zeros_like(best))
            prev = logits[rows, passed].detach()
            if self.mask_prompt:  # the unthresholded low-res logits, as SAM feeds them back
                mask_input = low_res[rows, passed].detach()[:, None]
        n = len(schedule)
        out = {k: v / n for k, v in totals.items()}  # means over the rounds
        out["iou_first_round"] = iou_first
        out["iou_last_round"] = losses["iou"].detach()
        return out
