"""HQ-SAM (Ke et al., NeurIPS 2023) on any SAM or EfficientSAM backbone: `build_hq_model` from official
HQ-SAM files, our merged exports, or an adapter-only file on top of base weights; `base_view`; adapter
save/load. The decoder itself is `modeling.mask_decoder_hq.MaskDecoderHQ`; training is `hq_adapter`.

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

from .checkpoint import CheckpointError, detect_format, from_transformers_layout, load_strict, read_state_dict
from .config import SamConfig, apply_overrides
from .hub import from_pretrained
from .modeling.mask_decoder import MaskDecoder
from .modeling.mask_decoder_hq import HQ_MODULES, freeze_all_but_adapter, is_adapter_key
from .modeling.sam import Sam
from .registry import default_early_block, get_config, with_hq

__all__ = [
    "build_hq_model", "base_view", "default_early_block", "is_adapter_key", "adapter_state_dict", "save_adapter",
    "ADAPTER_FILE", "ADAPTER_CONFIG",
]

ADAPTER_FILE = "adapter.safetensors"
ADAPTER_CONFIG = "adapter.json"


def adapter_state_dict(model: Sam) -> dict[str, torch.Tensor]:
    """The 25 adapter tensors, with the official `mask_decoder.` key names."""
    return {k: v for k, v in model.state_dict().items() if is_adapter_key(k)}


def save_adapter(model: Sam, path: str | os.PathLike, base: dict[str, Any]) -> None:
    """`path/adapter.safetensors` (the adapter only) + `path/adapter.json` (how to rebuild the base)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in adapter_state_dict(model).items()}, str(path / ADAPTER_FILE))
    (path / ADAPTER_CONFIG).write_text(json.dumps({**base, "early_block": model.config.hq.early_block}, indent=2))


def _adapter_folder(checkpoint: Path, base: str | SamConfig, base_checkpoint, early_block, overrides: dict):
    """An adapter folder's `adapter.json` fills in what the caller left out: -> the same four + the file."""
    meta_path = checkpoint / ADAPTER_CONFIG
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if meta.get("base") and isinstance(base, str) and meta["base"] != base:
        raise CheckpointError(f"{checkpoint} is an adapter for {meta['base']}, not {base}")
    base_checkpoint = base_checkpoint or meta.get("base_checkpoint")
    overrides = {**meta.get("overrides", {}), **overrides}
    early_block = meta.get("early_block") if early_block is None else early_block
    return base_checkpoint, early_block, overrides, checkpoint / ADAPTER_FILE


def _load_base(model: Sam, base: str | SamConfig, base_checkpoint, overrides: dict) -> None:
    # The HQ model's architecture decides: official .pth files of small test configs carry no config.
    src = from_pretrained(base_checkpoint, **({"model": base, **overrides} if isinstance(base, str) else {}))
    if not isinstance(src, Sam) or src.is_hq:
        raise CheckpointError(f"base_checkpoint {base_checkpoint} is not a plain SAM / EfficientSAM model")
    want = {k: v for k, v in model.state_dict().items() if not is_adapter_key(k)}
    load_strict(model, src.state_dict(), f"base_checkpoint {base_checkpoint}", expected=want)


def _load_hq_checkpoint(model: Sam, checkpoint, has_base: bool) -> None:
    """An adapter-only file (on a loaded base) or a whole HQ model (official `.pth` or our merged file)."""
    sd = load_file(str(checkpoint)) if str(checkpoint).endswith(".safetensors") else read_state_dict(checkpoint)
    if detect_format(sd) == "transformers_hq":  # a transformers SamHQModel file: the official HQ-SAM names
        sd = from_transformers_layout(sd)
    if sd and all(is_adapter_key(k) for k in sd):
        if not has_base:
            raise CheckpointError(
                f"{checkpoint} holds only the HQ adapter; pass base_checkpoint= (the base model's weights)"
            )
        sd = {k if k.startswith("mask_decoder.") else f"mask_decoder.{k}": v for k, v in sd.items()}
        load_strict(model, sd, f"adapter {checkpoint}", expected=adapter_state_dict(model))
        return
    if not any(is_adapter_key(k) for k in sd):
        raise CheckpointError(
            f"{checkpoint} has no HQ adapter (none of mask_decoder.{{{','.join(HQ_MODULES)}}}): it looks like "
            "the base model's weights; pass it as base_checkpoint= (the adapter then starts untrained)"
        )
    load_strict(model, sd, str(checkpoint))


def build_hq_model(
    base: str | SamConfig,
    checkpoint: str | os.PathLike | None = None,
    base_checkpoint: str | os.PathLike | None = None,
    early_block: int | None = None,
    freeze_base: bool = True,
    **overrides: Any,
) -> Sam:
    """An HQ model on `base` (a registered name such as `sam_vit_l` or `efficient_sam_vitt`, or a
    config), in eval mode, every load strict.

    checkpoint: an official `sam_hq_vit_*.pth` (SAM keys + the 25 adapter keys), a transformers `SamHQModel`
    model.safetensors, a merged file of ours,
    or an adapter-only file / folder (`adapter.safetensors` [+ `adapter.json` naming the base]).
    base_checkpoint: any `from_pretrained` source of the base model (needed with an adapter-only
    checkpoint unless its `adapter.json` names one). With `freeze_base` only the adapter trains.
    """
    if checkpoint is not None and Path(checkpoint).is_dir() and (Path(checkpoint) / ADAPTER_FILE).is_file():
        base_checkpoint, early_block, overrides, checkpoint = _adapter_folder(
            Path(checkpoint), base, base_checkpoint, early_block, overrides
        )
    cfg = get_config(base, **overrides) if isinstance(base, str) else apply_overrides(base, **overrides)
    model = Sam(with_hq(cfg, early_block))
    if base_checkpoint is not None:
        _load_base(model, base, base_checkpoint, overrides)
    if checkpoint is not None:
        _load_hq_checkpoint(model, checkpoint, has_base=base_checkpoint is not None)
    if freeze_base:
        freeze_all_but_adapter(model)
    return model.eval()


def base_view(hq: Sam) -> Sam:
    """The base of an HQ model as a plain model with the vanilla decoder (e.g. to compare against),
    sharing the HQ model's image and prompt encoders: only SAM's 4M-parameter decoder is copied."""
    cfg = dataclasses.replace(hq.config, hq=None)
    with torch.device("meta"):  # no throw-away encoder weights
        base = Sam(cfg)
    base.image_encoder, base.prompt_encoder = hq.image_encoder, hq.prompt_encoder
    base.mask_decoder = MaskDecoder(cfg.mask_decoder).to(hq.device)
    sd = hq.mask_decoder.state_dict()
    base.mask_decoder.load_state_dict({k: v for k, v in sd.items() if not is_adapter_key(k)})
    base.mask_decoder.requires_grad_(False)
    for name in ("pixel_mean", "pixel_std"):
        base.register_buffer(name, getattr(hq, name).clone(), persistent=False)
    return base.eval()
