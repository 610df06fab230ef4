"""Random weights with realistic scale for any SAM-family module tree (ours and the official ones): what
the parity tests and the mask-generator benchmark run on, since no pretrained weights are available."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["randomize_"]


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every tensor of `model` random values with spatial structure, by module type.

    Linear/conv weights N(0, 1/fan_in) (so activations keep unit scale), norm weights 1 + 0.1 N,
    biases 0.1 N, embeddings 0.5 N, position tables 0.1 N, Fourier matrix N(0, 1). Works on the
    official `segment_anything` modules and ours alike, so identical seeds on identical key layouts
    are not needed: generate once, copy the state dict.
    """
    g = torch.Generator().manual_seed(seed)

    def rand(t: torch.Tensor) -> torch.Tensor:
        return torch.randn(t.shape, generator=g, dtype=torch.float32)

    done = set()
    for mod in model.modules():
        for name, p in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
            if id(p) in done or not p.is_floating_point():
                continue
            done.add(id(p))
            r = rand(p)
            if isinstance(mod, (nn.Linear, nn.Conv2d)) and name == "weight":
                fan_in = p[0].numel()
                v = r / math.sqrt(fan_in)
            elif isinstance(mod, nn.ConvTranspose2d) and name == "weight":
                v = r / math.sqrt(p.shape[0])  # stride == kernel: each output sees in_channels inputs
            elif name == "weight" and p.dim() == 1:  # LayerNorm, LayerNorm2d, GroupNorm
                v = 1 + 0.1 * r
            elif isinstance(mod, nn.Embedding):
                v = 0.5 * r
            elif "gaussian" in name:
                v = r
            elif name in ("pixel_mean", "pixel_std"):
                continue
            else:  # biases, pos_embed, rel_pos tables
                v = 0.1 * r
            p.copy_(v)
    return model
