"""`build_hq_model`: HQ-SAM on any SAM or EfficientSAM backbone, from official HQ-SAM files, our
merged exports, or an adapter-only file on top of base weights.

The early feature is the output of the first global-attention block for SAM ViT-B/L/H (blocks 2 / 5 /
7, as the official model). EfficientSAM's ViT-Ti/S have only global blocks; the default is block 2,
the same place as in ViT-B, which also has 12 blocks: a quarter of the depth, where every official
variant takes it (2/12, 5/24, 7/32), late enough for the features to be more than patch colours and
early enough to keep the local detail the fusion is for (`early_block=` changes it).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

import efficient_sam as es
from efficient_sam.checkpoint import CheckpointError, check_state_dict, read_state_dict
from efficient_sam.config import HQConfig, SamConfig
from efficient_sam.modeling.mask_decoder import MaskDecoder
from efficient_sam.modeling.mask_decoder_hq import HQ_MODULES

ADAPTER_FILE = "adapter.safetensors"
ADAPTER_CONFIG = "adapter.json"


def default_early_block(cfg: SamConfig) -> int:
    enc = cfg.image_encoder
    if enc.window_size > 0 and enc.global_attn_indexes:
        return min(enc.global_attn_indexes)  # SAM: the first global-attention block
    return min(2, enc.depth - 1)  # EfficientSAM (all blocks global): as ViT-B


def is_adapter_key(name: str) -> bool:
    """Whether a parameter name belongs to the HQ adapter (what trains; everything else is frozen)."""
    return any(f"mask_decoder.{m}." in f".{name}" or name.startswith(f"{m}.") for m in HQ_MODULES)


def adapter_state_dict(model: es.Sam) -> dict[str, torch.Tensor]:
    """The 25 adapter tensors, with the official `mask_decoder.` key names."""
    return {k: v for k, v in model.state_dict().items() if is_adapter_key(k)}


def save_adapter(model: es.Sam, path: str | os.PathLike, base: dict[str, Any]) -> None:
    """`path/adapter.safetensors` (the adapter only) + `path/adapter.json` (how to rebuild the base)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in adapter_state_dict(model).items()}, str(path / ADAPTER_FILE))
    (path / ADAPTER_CONFIG).write_text(json.dumps({**base, "early_block": model.config.hq.early_block}, indent=2))


def build_hq_model(
    base: str | SamConfig,
    checkpoint: str | os.PathLike | None = None,
    base_checkpoint: str | os.PathLike | None = None,
    early_block: int | None = None,
    freeze_base: bool = True,
    **overrides: Any,
) -> es.Sam:
    """An HQ model on `base` (a registered name such as `sam_vit_l` or `efficient_sam_vitt`), in eval
    mode, every load strict.

    checkpoint: an official `sam_hq_vit_*.pth` (SAM keys + the 25 adapter keys), a merged file of ours,
    or an adapter-only file / folder (`adapter.safetensors` [+ `adapter.json` naming the base]).
    base_checkpoint: any `es.from_pretrained` source of the base model (needed with an adapter-only
    checkpoint unless its `adapter.json` names one). With `freeze_base` only the adapter trains.
    """
    if checkpoint is not None and Path(checkpoint).is_dir() and (Path(checkpoint) / ADAPTER_FILE).is_file():
        meta_path = Path(checkpoint) / ADAPTER_CONFIG
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        if meta.get("base") and isinstance(base, str) and meta["base"] != base:
            raise CheckpointError(f"{checkpoint} is an adapter for {meta['base']}, not {base}")
        base_checkpoint = base_checkpoint or meta.get("base_checkpoint")
        overrides = {**meta.get("overrides", {}), **overrides}
        early_block = meta.get("early_block") if early_block is None else early_block
        checkpoint = Path(checkpoint) / ADAPTER_FILE
    cfg = es.get_config(base, **overrides) if isinstance(base, str) else base
    cfg = dataclasses.replace(cfg, hq=HQConfig(default_early_block(cfg) if early_block is None else early_block))
    model = es.Sam(cfg)
    if base_checkpoint is not None:
        # The HQ model's architecture decides: official .pth files of small test configs carry no config.
        src = es.from_pretrained(base_checkpoint, **({"model": base, **overrides} if isinstance(base, str) else {}))
        if not isinstance(src, es.Sam) or src.is_hq:
            raise CheckpointError(f"base_checkpoint {base_checkpoint} is not a plain SAM / EfficientSAM model")
        sd = src.state_dict()
        want = {k: v for k, v in model.state_dict().items() if not is_adapter_key(k)}
        check_state_dict(_Keys(want), sd, f"base_checkpoint {base_checkpoint}")
        model.load_state_dict(sd, strict=False)
    if checkpoint is not None:
        sd = load_file(str(checkpoint)) if str(checkpoint).endswith(".safetensors") else read_state_dict(checkpoint)
        if sd and all(is_adapter_key(k) for k in sd):
            if base_checkpoint is None:
                raise CheckpointError(
                    f"{checkpoint} holds only the HQ adapter; pass base_checkpoint= (the base model's weights)"
                )
            sd = {k if k.startswith("mask_decoder.") else f"mask_decoder.{k}": v for k, v in sd.items()}
            check_state_dict(_Keys(adapter_state_dict(model)), sd, f"adapter {checkpoint}")
            model.load_state_dict(sd, strict=False)
        else:
            if not any(is_adapter_key(k) for k in sd):
                raise CheckpointError(
                    f"{checkpoint} has no HQ adapter (none of mask_decoder.{{{','.join(HQ_MODULES)}}}): it looks like "
                    "the base model's weights; pass it as base_checkpoint= (the adapter then starts untrained)"
                )
            check_state_dict(model, sd, str(checkpoint))
            model.load_state_dict(sd)
    if freeze_base:
        for name, p in model.named_parameters():
            p.requires_grad_(is_adapter_key(name))
    return model.eval()


def base_view(hq: es.Sam) -> es.Sam:
    """The base of an HQ model as a plain model with the vanilla decoder (e.g. to compare against),
    sharing the HQ model's image and prompt encoders: only SAM's 4M-parameter decoder is copied."""
    cfg = dataclasses.replace(hq.config, hq=None)
    with torch.device("meta"):  # no throw-away encoder weights
        base = es.Sam(cfg)
    base.image_encoder, base.prompt_encoder = hq.image_encoder, hq.prompt_encoder
    base.mask_decoder = MaskDecoder(cfg.mask_decoder).to(hq.device)
    sd = hq.mask_decoder.state_dict()
    base.mask_decoder.load_state_dict({k: v for k, v in sd.items() if not is_adapter_key(k)})
    base.mask_decoder.requires_grad_(False)
    for name in ("pixel_mean", "pixel_std"):
        base.register_buffer(name, getattr(hq, name).clone(), persistent=False)
    return base.eval()


class _Keys(torch.nn.Module):
    """A stand-in holding a subset of a model's state dict, for `check_state_dict`'s messages."""

    def __init__(self, sd: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self._sd = sd

    def state_dict(self, *args, **kwargs):  # noqa: D102
        return self._sd
