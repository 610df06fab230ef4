"""Reading official checkpoint files, converting their key layouts to ours, strict loading.

Our key layout is the official SAM one (`segment_anything` state dicts load unchanged).
EfficientSAM files (`{"model": state_dict}`) are renamed on load. Files are read with
`torch.load(weights_only=True)` or safetensors: no pickled code is ever executed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

import torch
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, or that does not fit the model."""


# EfficientSAM official key -> ours (regex, replacement), applied in order.
_EFFICIENT_SAM_RENAMES = [
    (r"^(image_encoder\.blocks\.\d+\.mlp)\.fc1\.", r"\1.lin1."),
    (r"^(image_encoder\.blocks\.\d+\.mlp)\.fc2\.", r"\1.lin2."),
    (r"^prompt_encoder\.invalid_points\.", "prompt_encoder.not_a_point_embed."),
    (r"^prompt_encoder\.point_embeddings\.weight$", "prompt_encoder.point_embeddings.1.weight"),
    (r"^prompt_encoder\.bbox_top_left_embeddings\.", "prompt_encoder.point_embeddings.2."),
    (r"^prompt_encoder\.bbox_bottom_right_embeddings\.", "prompt_encoder.point_embeddings.3."),
    (r"^(mask_decoder\.transformer\.layers\.\d+\.mlp)\.layers\.0\.0\.", r"\1.lin1."),
    (r"^(mask_decoder\.transformer\.layers\.\d+\.mlp)\.fc\.", r"\1.lin2."),
    (r"^mask_decoder\.final_output_upscaling_layers\.0\.0\.", "mask_decoder.output_upscaling.0."),
    (r"^mask_decoder\.final_output_upscaling_layers\.0\.1\.", "mask_decoder.output_upscaling.1."),
    (r"^mask_decoder\.final_output_upscaling_layers\.1\.0\.", "mask_decoder.output_upscaling.3."),
    (r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.(\d)\.0\.", r"\1.layers.\2."),
    (r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.fc\.", r"\1.layers.2."),
]


def _rename(state_dict: Mapping[str, torch.Tensor], rules: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    compiled = [(re.compile(p), r) for p, r in rules]
    out = {}
    for k, v in state_dict.items():
        for pattern, repl in compiled:
            k = pattern.sub(repl, k)
        out[k] = v
    return out


def from_efficient_sam_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official EfficientSAM keys -> ours."""
    return _rename(state_dict, _EFFICIENT_SAM_RENAMES)


def to_efficient_sam_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our keys -> official EfficientSAM keys (inverse of `from_efficient_sam_layout`)."""
    inverse = [
        (r"^(image_encoder\.blocks\.\d+\.mlp)\.lin1\.", r"\1.fc1."),
        (r"^(image_encoder\.blocks\.\d+\.mlp)\.lin2\.", r"\1.fc2."),
        (r"^prompt_encoder\.not_a_point_embed\.", "prompt_encoder.invalid_points."),
        (r"^prompt_encoder\.point_embeddings\.1\.weight$", "prompt_encoder.point_embeddings.weight"),
        (r"^prompt_encoder\.point_embeddings\.2\.", "prompt_encoder.bbox_top_left_embeddings."),
        (r"^prompt_encoder\.point_embeddings\.3\.", "prompt_encoder.bbox_bottom_right_embeddings."),
        (r"^(mask_decoder\.transformer\.layers\.\d+\.mlp)\.lin1\.", r"\1.layers.0.0."),
        (r"^(mask_decoder\.transformer\.layers\.\d+\.mlp)\.lin2\.", r"\1.fc."),
        (r"^mask_decoder\.output_upscaling\.0\.", "mask_decoder.final_output_upscaling_layers.0.0."),
        (r"^mask_decoder\.output_upscaling\.1\.", "mask_decoder.final_output_upscaling_layers.0.1."),
        (r"^mask_decoder\.output_upscaling\.3\.", "mask_decoder.final_output_upscaling_layers.1.0."),
        (r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.2\.", r"\1.fc."),
        (r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.([01])\.", r"\1.layers.\2.0."),
    ]
    return _rename(state_dict, inverse)


def detect_format(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Name the layout of a state dict: 'efficient_sam', 'hq_sam', 'sam' (= ours), or 'unknown'."""
    keys = set(state_dict)
    if "prompt_encoder.invalid_points.weight" in keys or any(
        k.startswith("mask_decoder.final_output_upscaling_layers.") for k in keys
    ):
        return "efficient_sam"
    if "mask_decoder.hf_token.weight" in keys:
        return "hq_sam"
    if any(k.startswith(("image_encoder.", "prompt_encoder.", "mask_decoder.")) for k in keys):
        return "sam"
    return "unknown"


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file or a `.pth/.pt` state dict (optionally under "model"/"state_dict")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad header, unpickling refused, ...
        raise CheckpointError(
            f"could not read checkpoint {path} ({type(e).__name__}: {e}). The file may be truncated or "
            f"corrupt (re-download it), or it may contain pickled code, which is never loaded "
            f"(torch.load(weights_only=True))."
        ) from e
    for key in ("model", "state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors (got {type(obj).__name__})")
    return dict(obj)


def to_our_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    fmt = detect_format(state_dict)
    if fmt == "efficient_sam":
        return from_efficient_sam_layout(state_dict)
    if fmt == "hq_sam":
        raise CheckpointError(
            "this is an HQ-SAM checkpoint (it has mask_decoder.hf_token); load it with "
            "hq_adapter.build_hq_model(..., checkpoint=...) instead of a plain SAM model"
        )
    return dict(state_dict)


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise CheckpointError naming missing keys, unexpected keys and shape conflicts, if any."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if state_dict[k].shape != expected[k].shape
    )
    if not (missing or unexpected or shapes):
        return

    def show(items: list[str]) -> str:
        head = "\n    ".join(items[:20])
        return f"\n    {head}" + (f"\n    ... and {len(items) - 20} more" if len(items) > 20 else "")

    msg = [f"{source} does not match the model ({type(model).__name__})."]
    if missing:
        msg.append(f"  missing keys ({len(missing)}):{show(missing)}")
    if unexpected:
        msg.append(f"  unexpected keys ({len(unexpected)}):{show(unexpected)}")
    if shapes:
        msg.append(f"  shape conflicts ({len(shapes)}):{show(shapes)}")
    family = getattr(getattr(model, "config", None), "family", None)
    if family is not None:
        msg.append(f"  (model family {family!r}; the file looks like the {detect_format(state_dict)!r} layout)")
    raise CheckpointError("\n".join(msg))


def load_checkpoint(model: nn.Module, checkpoint: str | os.PathLike | Mapping[str, torch.Tensor]) -> nn.Module:
    """Convert `checkpoint` (path or state dict in any supported layout) and load it strictly."""
    source = str(checkpoint) if not isinstance(checkpoint, Mapping) else "state dict"
    sd = read_state_dict(checkpoint) if not isinstance(checkpoint, Mapping) else dict(checkpoint)
    sd = to_our_layout(sd)
    check_state_dict(model, sd, source)
    model.load_state_dict(sd, strict=True)
    return model
