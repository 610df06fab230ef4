"""MAE-style random masking: per sample, keep a random subset of tokens, remember how to undo it."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def num_visible(num_tokens: int, mask_ratio: float) -> int:
    """Tokens each sample keeps: round((1 - mask_ratio) * N), at least one (49 of 196 at 75%)."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    return max(1, round((1.0 - mask_ratio) * num_tokens))


@dataclass
class Masking:
    """Index bookkeeping for one batch. Token order after shuffling: visible first, then masked.

    ids_shuffle: (B, N) original index of each shuffled position.
    ids_restore: (B, N) shuffled position of each original index (argsort of ids_shuffle).
    num_visible: visible tokens per sample (the same for every sample).
    """

    ids_shuffle: torch.Tensor
    ids_restore: torch.Tensor
    num_visible: int

    @property
    def ids_keep(self) -> torch.Tensor:
        """(B, n_visible) original indices of the visible tokens."""
        return self.ids_shuffle[:, : self.num_visible]

    @property
    def ids_masked(self) -> torch.Tensor:
        """(B, n_masked) original indices of the masked tokens."""
        return self.ids_shuffle[:, self.num_visible :]

    @property
    def mask(self) -> torch.Tensor:
        """(B, N) in original order: 1 = masked, 0 = visible."""
        B, N = self.ids_shuffle.shape
        shuffled = torch.ones(B, N, device=self.ids_shuffle.device)
        shuffled[:, : self.num_visible] = 0
        return torch.gather(shuffled, 1, self.ids_restore)

    def keep(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, n_visible, C) visible tokens."""
        return gather_tokens(x, self.ids_keep)

    def select_masked(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, n_masked, C) masked tokens."""
        return gather_tokens(x, self.ids_masked)

    def restore(self, visible: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """Visible (B, n_visible, C) and masked (B, n_masked, C) tokens -> (B, N, C) in original order."""
        return gather_tokens(torch.cat([visible, masked], dim=1), self.ids_restore)


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """x (B, N, C), ids (B, M) -> (B, M, C)."""
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def random_masking(
    batch_size: int,
    num_tokens: int,
    mask_ratio: float,
    noise: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Masking:
    """Per-sample random masking: the `num_visible` tokens with the smallest noise stay visible.

    noise: (B, N) uniform noise, e.g. drawn by the data loader from a per-sample seed so that the
    masks do not depend on the process count or on where a run was resumed.
    """
    if noise is None:
        noise = torch.rand(batch_size, num_tokens, device=device, generator=generator)
    if noise.shape != (batch_size, num_tokens):
        raise ValueError(f"noise must be ({batch_size}, {num_tokens}), got {tuple(noise.shape)}")
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    return Masking(ids_shuffle, ids_restore, num_visible(num_tokens, mask_ratio))
