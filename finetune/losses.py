"""SAM's training losses (paper §3, App. A): focal + dice at 20:1 on the masks, MSE between the
predicted IoU and the IoU of the predicted mask, and the minimum over the multimask outputs.

Focal alpha/gamma and the dice smoothing are not given by the paper; we use DETR/MaskFormer's
(alpha 0.25, gamma 2, dice +1), the losses SAM cites. Every loss is per (mask, output token) so that
the caller can take the minimum over the candidates before averaging.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LossConfig:
    focal_weight: float = 20.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    focal_alpha: float = 0.25  # [OPEN] DETR's; < 0 disables the alpha balancing
    focal_gamma: float = 2.0
    # Supervise the IoU prediction of every multimask candidate (the next round passes on the most
    # confident one, so all three must be ranked), or only of the chosen one.
    iou_all_masks: bool = True


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss averaged over pixels: logits (..., H, W), target in {0, 1} -> (...)."""
    logits, target = logits.float(), target.float()
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    return loss.flatten(-2).mean(-1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - (2|P.G| + 1) / (|P| + |G| + 1) with P = sigmoid(logits): (..., H, W) -> (...)."""
    p = torch.sigmoid(logits.float()).flatten(-2)
    g = target.float().flatten(-2)
    return 1 - (2 * (p * g).sum(-1) + smooth) / (p.sum(-1) + g.sum(-1) + smooth)


def mask_iou(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """IoU of (logits > threshold) with the target: (..., H, W) -> (...). An empty union counts as 1."""
    pred = (logits > threshold).flatten(-2)
    g = target.bool().flatten(-2)
    inter = (pred & g).sum(-1).float()
    union = (pred | g).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def mask_losses(logits: torch.Tensor, target: torch.Tensor, cfg: LossConfig) -> dict[str, torch.Tensor]:
    """logits (T, K, H, W) for K candidate outputs, target (T, H, W) -> focal, dice, weighted mask loss
    and the actual IoU, each (T, K). The target is broadcast over the candidates."""
    tgt = target[:, None].expand_as(logits)
    focal = focal_loss(logits, tgt, cfg.focal_alpha, cfg.focal_gamma)
    dice = dice_loss(logits, tgt)
    with torch.no_grad():
        iou = mask_iou(logits, tgt)
    return {"focal": focal, "dice": dice, "mask": cfg.focal_weight * focal + cfg.dice_weight * dice, "iou": iou}


def select_outputs(per_token: torch.Tensor, multimask: torch.Tensor) -> torch.Tensor:
    """Index (T,) of the supervised output token per mask: the lowest-loss one of tokens 1..K-1 where
    `multimask` (ambiguous prompts), token 0 (the single-mask output) elsewhere.

    per_token: (T, K) mask losses of all K = 1 + num_multimask tokens.
    """
    best_multi = per_token[:, 1:].detach().argmin(dim=1) + 1
    return torch.where(multimask, best_multi, torch.zeros_like(best_multi))


def sam_loss(
    logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor, multimask: torch.Tensor, cfg: LossConfig
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The loss of one decoder round.

    logits (T, K, H, W) and iou_pred (T, K) of all K output tokens (token 0 = single mask), target
    (T, H, W), multimask (T,) bool. -> (losses averaged over the T masks: loss, focal, dice, iou_mse,
    iou; the chosen token per mask (T,)).
    """
    parts = mask_losses(logits, target, cfg)
    chosen = select_outputs(parts["mask"], multimask)
    rows = torch.arange(logits.shape[0], device=logits.device)
    iou_err = (iou_pred.float() - parts["iou"]) ** 2  # (T, K)
    if cfg.iou_all_masks:
        k = logits.shape[1]
        cand = torch.zeros_like(iou_err, dtype=torch.bool)
        cand[:, 1:] = multimask[:, None].expand(-1, k - 1)
        cand[rows, chosen] = True
        iou_mse = (iou_err * cand).sum(1) / cand.sum(1)
    else:
        iou_mse = iou_err[rows, chosen]
    mask = parts["mask"][rows, chosen]
    out = {
        "loss": (mask + cfg.iou_weight * iou_mse).mean(),
        "focal": parts["focal"][rows, chosen].mean(),
        "dice": parts["dice"][rows, chosen].mean(),
        "iou_mse": iou_mse.mean(),
        "iou": parts["iou"][rows, chosen].mean(),
    }
    return out, chosen
