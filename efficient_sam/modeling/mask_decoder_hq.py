"""HQ-SAM's mask decoder (Ke et al., NeurIPS 2023): SAM's decoder plus a learnable HQ output token,
its MLP, and the global-local fusion of an early encoder feature with the final embedding.

Module names (`hf_token`, `hf_mlp`, `compress_vit_feat`, `embedding_encoder`,
`embedding_maskfeature`) are the official ones, so official `sam_hq_vit_*.pth` files load strictly.
The HQ token joins SAM's two-way transformer (sequence index 5, after the IoU and 4 mask tokens),
which changes SAM's own outputs too, exactly as the official model does.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..config import MaskDecoderConfig
from .common import MLP, LayerNorm2d, activation
from .mask_decoder import MaskDecoder

HQ_MODULES = ("hf_token", "hf_mlp", "compress_vit_feat", "embedding_encoder", "embedding_maskfeature")


def is_adapter_key(name: str) -> bool:
    """Whether a parameter name belongs to the HQ adapter (what trains; everything else is frozen)."""
    return any(f"mask_decoder.{m}." in f".{name}" or name.startswith(f"{m}.") for m in HQ_MODULES)


def freeze_all_but_adapter(model: nn.Module) -> None:
    """requires_grad only on the HQ adapter's parameters (the frozen-base HQ-SAM setting)."""
    for name, p in model.named_parameters():
        p.requires_grad_(is_adapter_key(name))


def _upsample4(cin: int, mid: int, cout: int) -> nn.Sequential:
    """ConvT x2 -> LayerNorm2d -> GELU -> ConvT x2 (indices 0, 1, 2, 3 as the official keys)."""
    return nn.Sequential(
        nn.ConvTranspose2d(cin, mid, kernel_size=2, stride=2), LayerNorm2d(mid), nn.GELU(),
        nn.ConvTranspose2d(mid, cout, kernel_size=2, stride=2),
    )


class MaskDecoderHQ(MaskDecoder):
    """`vit_dim`: channels of the early encoder feature (the encoder width)."""

    def __init__(self, cfg: MaskDecoderConfig, vit_dim: int) -> None:
        super().__init__(cfg)
        dim = cfg.transformer_dim
        self.hf_token = nn.Embedding(1, dim)
        self.hf_mlp = MLP(dim, dim, dim // 8, 3, activation(cfg.activation))
        self.compress_vit_feat = _upsample4(vit_dim, dim, dim // 8)
        self.embedding_encoder = _upsample4(dim, dim // 4, dim // 8)
        self.embedding_maskfeature = nn.Sequential(
            nn.Conv2d(dim // 8, dim // 4, 3, 1, 1), LayerNorm2d(dim // 4), nn.GELU(), nn.Conv2d(dim // 4, dim // 8, 3, 1, 1)
        )

    def hq_features(self, image_embeddings: torch.Tensor, early: torch.Tensor) -> torch.Tensor:
        """Global-local fusion, once per image: embeddings (B, D, h, w) + early feature (B, h, w, C)
        channels-last -> (B, D/8, 4h, 4w)."""
        return self.embedding_encoder(image_embeddings) + self.compress_vit_feat(early.permute(0, 3, 1, 2))

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor | None,
        multimask_output: bool,
        hq_features: torch.Tensor | None = None,
        hq_token_only: bool = False,
        prompt_filter: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> masks (B, 1, 4h, 4w) and SAM's IoU prediction (B, 1), as the official HQ-SAM: the SAM mask
        is token 0 (single) or the most confident of tokens 1-3 (multimask: one mask, not three); the
        output is SAM + HQ logits, or the HQ logits alone with `hq_token_only`. `prompt_filter` as in
        `MaskDecoder.forward`."""
        if hq_features is None:
            raise ValueError("an HQ model needs hq_features (Sam.encode_image_hq) to decode")
        hs, src = self.run_transformer(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, self.hf_token.weight
        )
        iou_all = self.iou_prediction_head(hs[:, 0, :])
        if multimask_output:
            iou_pred, best = iou_all[:, 1 : self.num_mask_tokens].max(dim=1, keepdim=True)
            best = best + 1
        else:
            iou_pred, best = iou_all[:, :1], torch.zeros_like(iou_all[:, :1], dtype=torch.int64)
        image = torch.arange(hs.shape[0], device=hs.device) // (hs.shape[0] // hq_features.shape[0])
        if prompt_filter is not None:
            keep = prompt_filter(iou_pred)
            hs, src, best, image = hs[keep], src[keep], best[keep], image[keep]
        masks = self.mask_logits(hs, src, hq_features[image])
        sam = masks.gather(1, best[..., None, None].expand(-1, -1, *masks.shape[-2:]))
        hq = masks[:, self.num_mask_tokens :]
        return (hq if hq_token_only else sam + hq), iou_pred

    def mask_logits(self, hs: torch.Tensor, src: torch.Tensor, hq_features: torch.Tensor) -> torch.Tensor:
        """SAM's 4 mask tokens and the HQ token: (B, 5, 4h, 4w) logits (HQ last); `hq_features`
        (B, D/8, 4h, 4w), one per prompt."""
        upscaled = self.output_upscaling(src)
        b, c, h, w = upscaled.shape
        upscaled_hq = self.embedding_maskfeature(upscaled) + hq_features
        n = self.num_mask_tokens
        tokens = hs[:, 1 : 2 + n, :]
        hyper = torch.stack([mlp(tokens[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        masks_sam = (hyper @ upscaled.reshape(b, c, h * w)).reshape(b, n, h, w)
        masks_hq = (self.hf_mlp(tokens[:, n])[:, None] @ upscaled_hq.reshape(b, c, h * w)).reshape(b, 1, h, w)
        return torch.cat([masks_sam, masks_hq], dim=1)

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor | None,
        hq_features: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All tokens: (B, 5, 4h, 4w) logits (HQ last), (B, 4) IoU. `hq_features` (B_img, D/8, 4h, 4w)
        go to the prompts of their image like the embeddings."""
        hs, src = self.run_transformer(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, self.hf_token.weight
        )
        if hq_features.shape[0] != hs.shape[0]:
            hq_features = torch.repeat_interleave(hq_features, hs.shape[0] // hq_features.shape[0], dim=0)
        return self.mask_logits(hs, src, hq_features), self.iou_prediction_head(hs[:, 0, :])
