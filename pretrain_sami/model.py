"""SAMI: a masked student ViT reconstructs the frozen SAM encoder's features for every token.

student encoder (visible 25% of the tokens) -> norm -> cross-attention decoder (masked positions as
queries) -> merge with the visible tokens in original order -> linear head to the teacher width.
The loss is the MSE to the teacher's tokens over all N tokens (paper Eq. 1, averaged over channels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from efficient_sam.modeling.image_encoder import ImageEncoderViT

from .cross_attention_decoder import CrossAttentionDecoder, sincos_pos_embed_2d
from .masking import Masking, random_masking


class SAMI(nn.Module):
    """Student + decoder + head. `encoder` is an EfficientSAM image encoder (global attention,
    197-slot position table) whose weights load unchanged into `efficient_sam_vitt/vits`.

    The encoder's neck is not used by SAMI; it is frozen here and fine-tuning trains it.
    """

    def __init__(
        self,
        encoder: ImageEncoderViT,
        teacher_dim: int,
        grid_size: int = 14,
        mask_ratio: float = 0.75,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 16,
        decoder_mlp_ratio: float = 4.0,
        decoder_kv: str = "visible_and_masked",
    ) -> None:
        super().__init__()
        cfg = encoder.cfg
        windowed = cfg.window_size > 0 and len(cfg.global_attn_indexes) < cfg.depth
        if windowed or cfg.use_rel_pos:
            raise ValueError("the SAMI student must be a plain ViT (global attention, no relative position)")
        self.encoder = encoder
        self.encoder.neck.requires_grad_(False)
        self.mask_ratio = mask_ratio
        self.grid_size = grid_size
        self.encoder_norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.decoder = CrossAttentionDecoder(
            cfg.embed_dim, grid_size, decoder_dim, decoder_depth, decoder_heads, decoder_mlp_ratio, decoder_kv
        )
        self.head = nn.Linear(decoder_dim, teacher_dim)
        self.reset_parameters()

    @property
    def num_tokens(self) -> int:
        return self.grid_size**2

    def reset_parameters(self) -> None:
        """MAE's init: xavier-uniform linears (patch embedding viewed as one), N(0, .02) mask token,
        sin-cos grid in the student's position table (it stays learnable)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.encoder.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.encoder.patch_embed.proj.bias)
        nn.init.normal_(self.decoder.mask_token, std=0.02)
        pos = self.encoder.pos_embed
        with torch.no_grad():
            grid = sincos_pos_embed_2d(pos.shape[-1], self.encoder.cfg.pos_embed_grid)
            if self.encoder.cfg.pos_embed == "cls_grid":
                pos[0, 0].zero_()
                pos[0, 1:].copy_(grid)
            else:
                pos.copy_(grid.reshape(pos.shape))

    def encode_visible(self, images: torch.Tensor, masking: Masking) -> torch.Tensor:
        """(B, 3, S, S) -> (B, n_visible, C): the student encoder on the visible tokens only."""
        x = self.encoder.embed(images).flatten(1, 2)
        x = masking.keep(x)
        for blk in self.encoder.blocks:
            x = blk(x)
        return self.encoder_norm(x)

    def forward(self, images: torch.Tensor, noise: torch.Tensor | None = None) -> tuple[torch.Tensor, Masking]:
        """-> predicted teacher tokens (B, N, teacher_dim) in original order, and the masking used."""
        B = images.shape[0]
        n = (images.shape[-2] // self.encoder.cfg.patch_size) * (images.shape[-1] // self.encoder.cfg.patch_size)
        if n != self.num_tokens:
            raise ValueError(f"SAMI was built for {self.num_tokens} tokens; images {tuple(images.shape[-2:])} give {n}")
        masking = random_masking(B, n, self.mask_ratio, noise=noise, device=images.device)
        visible = self.encode_visible(images, masking)
        return self.head(self.decoder(visible, masking)), masking


def sami_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE over all tokens and channels, in float32."""
    return F.mse_loss(pred.float(), target.float())
