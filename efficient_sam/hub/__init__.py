"""`from_pretrained`: one call for every published SAM-family checkpoint and our own saved models.

Sources (`name_or_path`):
- a local file (`.safetensors`, `.pth`, `.pt`, `.bin`);
- a local directory: our `save_pretrained` folder (config.json + model.safetensors), or any folder
  with `model.safetensors` / `pytorch_model.bin` / a single checkpoint file, or `filename=` inside it;
- a Hub repo id (`org/name`, optionally `org/name:path/in/repo`), downloaded through
  `huggingface_hub` (its cache, `HF_HUB_OFFLINE`, `revision=`). Without `filename=` the repo's
  `model.safetensors` is used, else `pytorch_model.bin`, with its `config.json` when that is ours.

Formats are recognised from the keys (`checkpoint.KNOWN_FORMATS`): ours / official SAM `.pth`,
EfficientSAM `{"model": sd}` `.pt`, HQ-SAM `.pth`, transformers `SamModel` (`facebook/sam-vit-*`) and
`SamHQModel` (`syscv-community/sam-hq-vit-*`; `SamVisionModel`: image encoder only), timm `samvit_*`
(image encoder only). The architecture comes from our config.json when there is one (`model=NAME` must
then describe the same architecture, else CheckpointError listing the fields that differ), else from
`model=NAME`, else from a transformers config.json beside the weights (`hub.interop`), else it is
inferred from the shapes (image-encoder width and
position-embedding layout); flat overrides (`encoder_depth=2`, ...) adjust it, and the result is
validated (`SamConfig.validate`). Loading is strict, and tensors holding NaN / inf are refused. Files are
read with `torch.load(weights_only=True)` or safetensors, never by unpickling code. Without a network a
file that is not cached fails after the first connection error (`resolve._Hub`).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
from torch import nn

from ..checkpoint import CheckpointError, read_state_dict
from ..errors import CheckpointNotFoundError, NotCachedError, UnsupportedCheckpointError
from ..modeling import hub_mixin
from ..registry import config_name, infer_model_name, list_models
from .formats import build_and_load
from .resolve import KNOWN_REPOS, resolve

__all__ = [
    "from_pretrained",
    "load_with_info",
    "infer_model_name",
    "config_name",
    "KNOWN_REPOS",
    "CheckpointNotFoundError",
    "NotCachedError",
    "UnsupportedCheckpointError",
]


def from_pretrained(
    name_or_path: str | os.PathLike,
    *,
    filename: str | None = None,
    revision: str | None = None,
    device: torch.device | str | None = None,
    model: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    force_download: bool = False,
    **overrides: Any,
) -> nn.Module:
    """Load any supported checkpoint as a model in eval mode (strict: every key and shape must fit).

    name_or_path: Hub repo id (`"facebook/sam-vit-base"`, `"org/name:file.pth"`), local directory or
        local file.
    filename: file inside the repo/directory (e.g. `"checkpoints/sam_vit_b_01ec64.pth"`).
    revision: Hub branch, tag or commit (default: main).
    model: registry name (`list_models()`) to build instead of the inferred architecture; with our
        config.json it must agree with it (after `overrides`), else CheckpointError.
    overrides: flat config overrides (`encoder_depth=2`, `encoder_embed_dim=64`, ...), e.g. for small
        test models or files whose architecture is not a registered one.
    Returns `Sam` (an HQ model, `model.is_hq`, for HQ-SAM and transformers SamHQModel files) or
    `ImageEncoderViT` (timm `samvit_*` files, transformers SamVisionModel files and saved encoders).
    """
    net, _ = load_with_info(
        name_or_path,
        filename=filename,
        revision=revision,
        device=device,
        model=model,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        token=token,
        force_download=force_download,
        **overrides,
    )
    return net


def load_with_info(
    name_or_path: str | os.PathLike,
    *,
    filename: str | None = None,
    revision: str | None = None,
    device: torch.device | str | None = None,
    model: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    force_download: bool = False,
    **overrides: Any,
) -> tuple[nn.Module, dict[str, Any]]:
    """`from_pretrained`, also returning what was loaded: {"source", "file", "format", "architecture"}."""
    if model is not None and model not in list_models():
        raise ValueError(f"unknown model {model!r}; available: {', '.join(list_models())}")
    src = resolve(
        name_or_path,
        filename=filename,
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        token=token,
        force_download=force_download,
    )
    for note in src.notes:
        warnings.warn(note, stacklevel=3)
    try:
        sd = read_state_dict(src.weights)
    except CheckpointError as e:
        if src.label == str(src.weights):
            raise
        hint = " (Hub file: force a fresh copy with force_download=True)" if "@" in src.label else ""
        raise CheckpointError(f"{src.label}: {e}{hint}") from e.__cause__
    net, fmt, arch = build_and_load(sd, src, model, overrides)
    if device is not None:
        net.to(device)
    net.eval()
    return net, {"source": src.label, "file": str(src.weights), "format": fmt, "architecture": arch}


def load_as(cls: type, name_or_path: str | os.PathLike, **kwargs: Any) -> nn.Module:
    """`from_pretrained`, requiring an instance of `cls` (`Sam.from_pretrained`, `ImageEncoderViT.from_pretrained`)."""
    net = from_pretrained(name_or_path, **kwargs)
    if not isinstance(net, cls):
        raise CheckpointError(
            f"{name_or_path} holds a {type(net).__name__}, not a {cls.__name__}; "
            f"load it with efficient_sam.from_pretrained(...)"
        )
    return net


hub_mixin.wire(load_as, config_name)
