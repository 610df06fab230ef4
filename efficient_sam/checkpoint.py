"""Reading official checkpoint files, converting their key layouts to ours, strict loading.

Our key layout is the official SAM one (`segment_anything` state dicts load unchanged).
EfficientSAM files (`{"model": state_dict}`), transformers `SamModel` / `SamHQModel` files
(`facebook/sam-vit-*`, `syscv-community/sam-hq-vit-*`) and timm `samvit_*` image encoders are renamed on load (`detect_format` tells them apart by their
keys). Files are read with `torch.load(weights_only=True)` or safetensors: no pickled code is ever
executed. Hub repos, directories and architecture inference: `efficient_sam.hub`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

import torch
from torch import nn


from .errors import CheckpointError

__all__ = [
    "CheckpointError", "read_state_dict", "detect_format", "to_our_layout", "check_state_dict", "check_finite",
    "load_strict",
    "load_checkpoint", "from_efficient_sam_layout", "to_efficient_sam_layout", "from_transformers_layout",
    "to_transformers_layout", "from_timm_samvit_layout", "to_timm_samvit_layout", "KNOWN_FORMATS",
]


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


# Layouts `detect_format` recognises, with how to recognise them (shown in "unknown format" errors).
KNOWN_FORMATS: dict[str, str] = {
    "sam": "official segment_anything state dict (.pth; image_encoder.*, prompt_encoder.*, mask_decoder.*) "
    "- also our own model.safetensors",
    "efficient_sam": "official EfficientSAM checkpoint (.pt, {'model': state_dict}; "
    "mask_decoder.final_output_upscaling_layers.*, prompt_encoder.invalid_points.*)",
    "hq_sam": "HQ-SAM checkpoint (.pth; SAM keys + mask_decoder.hf_token/hf_mlp/compress_vit_feat/...)",
    "transformers": "Hugging Face transformers SamModel (facebook/sam-vit-*; vision_encoder.*, "
    "prompt_encoder.shared_embedding.*, mask_decoder.upscale_conv1.*)",
    "transformers_hq": "Hugging Face transformers SamHQModel (syscv-community/sam-hq-vit-*; SamModel keys + "
    "mask_decoder.hq_token/hq_mask_mlp/compress_vit_conv1/...)",
    "timm_samvit": "timm samvit_* image encoder (timm/samvit_*_patch16.sa1b; blocks.*.mlp.fc1, neck.*, "
    "no image_encoder. prefix)",
    "image_encoder": "our image encoder alone (ImageEncoderViT.save_pretrained; blocks.*.mlp.lin1, neck.*)",
}


def detect_format(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Name the layout of a state dict: one of `KNOWN_FORMATS` ('sam' = ours) or 'unknown'."""
    keys = set(state_dict)
    if "prompt_encoder.invalid_points.weight" in keys or any(
        k.startswith("mask_decoder.final_output_upscaling_layers.") for k in keys
    ):
        return "efficient_sam"
    if "mask_decoder.hf_token.weight" in keys:
        return "hq_sam"
    if any(k.startswith("vision_encoder.") for k in keys) or any(
        k.startswith(("prompt_encoder.shared_embedding.", "mask_decoder.upscale_conv1.")) for k in keys
    ):
        return "transformers_hq" if "mask_decoder.hq_token.weight" in keys else "transformers"
    if any(k.startswith(("image_encoder.", "prompt_encoder.", "mask_decoder.")) for k in keys):
        return "sam"
    if any(k.startswith("blocks.") for k in keys) and "neck.0.weight" in keys:
        if any(re.match(r"^blocks\.\d+\.mlp\.fc1\.", k) for k in keys):
            return "timm_samvit"
        if any(re.match(r"^blocks\.\d+\.mlp\.lin1\.", k) for k in keys):
            return "image_encoder"
    return "unknown"


# ---- Hugging Face transformers `SamModel` <-> ours (= official SAM), after convert_sam_to_hf.py ----
# HQ fusion blocks (ours = official HQ-SAM: Sequential indices 0 / 1 / 3) -> transformers SamHQModel names.
_HQ_FUSION = {
    "compress_vit_feat": ("compress_vit_conv1", "compress_vit_norm", "compress_vit_conv2"),
    "embedding_encoder": ("encoder_conv1", "encoder_norm", "encoder_conv2"),
    "embedding_maskfeature": ("mask_conv1", "mask_norm", "mask_conv2"),
}
# Ours -> transformers, applied in order to every key (substring rules as in the transformers script,
# then the hypernetwork-MLP indices). Inverse below.
_TO_TRANSFORMERS = [
    (r"iou_prediction_head\.layers\.0\.", "iou_prediction_head.proj_in."),
    (r"iou_prediction_head\.layers\.1\.", "iou_prediction_head.layers.0."),
    (r"iou_prediction_head\.layers\.2\.", "iou_prediction_head.proj_out."),
    (r"(output_hypernetworks_mlps\.\d+)\.layers\.0\.", r"\1.proj_in."),
    (r"(output_hypernetworks_mlps\.\d+)\.layers\.1\.", r"\1.layers.0."),
    (r"(output_hypernetworks_mlps\.\d+)\.layers\.2\.", r"\1.proj_out."),
    (r"^mask_decoder\.output_upscaling\.0\.", "mask_decoder.upscale_conv1."),
    (r"^mask_decoder\.output_upscaling\.1\.", "mask_decoder.upscale_layer_norm."),
    (r"^mask_decoder\.output_upscaling\.3\.", "mask_decoder.upscale_conv2."),
    (r"mask_downscaling\.0\.", "mask_embed.conv1."),
    (r"mask_downscaling\.1\.", "mask_embed.layer_norm1."),
    (r"mask_downscaling\.3\.", "mask_embed.conv2."),
    (r"mask_downscaling\.4\.", "mask_embed.layer_norm2."),
    (r"mask_downscaling\.6\.", "mask_embed.conv3."),
    (r"\.point_embeddings\.", ".point_embed."),
    (r"pe_layer\.positional_encoding_gaussian_matrix$", "shared_embedding.positional_embedding"),
    (r"^image_encoder\.", "vision_encoder."),
    (r"\.neck\.0\.", ".neck.conv1."),
    (r"\.neck\.1\.", ".neck.layer_norm1."),
    (r"\.neck\.2\.", ".neck.conv2."),
    (r"\.neck\.3\.", ".neck.layer_norm2."),
    (r"patch_embed\.proj\.", "patch_embed.projection."),
    (r"\.norm", ".layer_norm"),  # norm1/norm2 (encoder, two-way layers), norm_final_attn
    (r"^vision_encoder\.blocks\.", "vision_encoder.layers."),
    # HQ-SAM adapter (transformers SamHQModel, after convert_samhq_to_hf.py)
    (r"^mask_decoder\.hf_token\.", "mask_decoder.hq_token."),
    (r"^mask_decoder\.hf_mlp\.layers\.0\.", "mask_decoder.hq_mask_mlp.proj_in."),
    (r"^mask_decoder\.hf_mlp\.layers\.1\.", "mask_decoder.hq_mask_mlp.layers.0."),
    (r"^mask_decoder\.hf_mlp\.layers\.2\.", "mask_decoder.hq_mask_mlp.proj_out."),
    *[(rf"^mask_decoder\.{ours}\.{i}\.", f"mask_decoder.{theirs}.")
      for ours, names in _HQ_FUSION.items() for i, theirs in zip((0, 1, 3), names)],
]
_FROM_TRANSFORMERS = [
    (r"iou_prediction_head\.layers\.0\.", "iou_prediction_head.layers.1."),
    (r"iou_prediction_head\.proj_in\.", "iou_prediction_head.layers.0."),
    (r"iou_prediction_head\.proj_out\.", "iou_prediction_head.layers.2."),
    (r"(output_hypernetworks_mlps\.\d+)\.layers\.0\.", r"\1.layers.1."),
    (r"(output_hypernetworks_mlps\.\d+)\.proj_in\.", r"\1.layers.0."),
    (r"(output_hypernetworks_mlps\.\d+)\.proj_out\.", r"\1.layers.2."),
    (r"^mask_decoder\.upscale_conv1\.", "mask_decoder.output_upscaling.0."),
    (r"^mask_decoder\.upscale_layer_norm\.", "mask_decoder.output_upscaling.1."),
    (r"^mask_decoder\.upscale_conv2\.", "mask_decoder.output_upscaling.3."),
    (r"mask_embed\.conv1\.", "mask_downscaling.0."),
    (r"mask_embed\.layer_norm1\.", "mask_downscaling.1."),
    (r"mask_embed\.conv2\.", "mask_downscaling.3."),
    (r"mask_embed\.layer_norm2\.", "mask_downscaling.4."),
    (r"mask_embed\.conv3\.", "mask_downscaling.6."),
    (r"\.point_embed\.", ".point_embeddings."),
    (r"shared_embedding\.positional_embedding$", "pe_layer.positional_encoding_gaussian_matrix"),
    (r"^vision_encoder\.layers\.", "image_encoder.blocks."),
    (r"^vision_encoder\.", "image_encoder."),
    (r"\.neck\.conv1\.", ".neck.0."),
    (r"\.neck\.layer_norm1\.", ".neck.1."),
    (r"\.neck\.conv2\.", ".neck.2."),
    (r"\.neck\.layer_norm2\.", ".neck.3."),
    (r"patch_embed\.projection\.", "patch_embed.proj."),
    (r"\.layer_norm", ".norm"),
    (r"^mask_decoder\.hq_token\.", "mask_decoder.hf_token."),
    (r"^mask_decoder\.hq_mask_mlp\.layers\.0\.", "mask_decoder.hf_mlp.layers.1."),
    (r"^mask_decoder\.hq_mask_mlp\.proj_in\.", "mask_decoder.hf_mlp.layers.0."),
    (r"^mask_decoder\.hq_mask_mlp\.proj_out\.", "mask_decoder.hf_mlp.layers.2."),
    *[(rf"^mask_decoder\.{theirs}\.", f"mask_decoder.{ours}.{i}.")
      for ours, names in _HQ_FUSION.items() for i, theirs in zip((0, 1, 3), names)],
]
# transformers keeps the prompt encoder's Fourier matrix twice (tied): this top-level copy is dropped.
TRANSFORMERS_SHARED_PE = "shared_image_embedding.positional_embedding"
_OUR_PE = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"


def to_transformers_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our (official SAM / HQ-SAM) keys -> transformers `SamModel` (`SamHQModel`) keys, incl. the duplicated
    shared embedding (a model.safetensors for transformers keeps only `TRANSFORMERS_SHARED_PE`, as
    transformers' own `save_pretrained` does: safetensors stores no tensor twice)."""
    out = _rename(state_dict, _TO_TRANSFORMERS)
    if _OUR_PE in state_dict:
        out[TRANSFORMERS_SHARED_PE] = state_dict[_OUR_PE]
    return out


def from_transformers_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers `SamModel` / `SamHQModel` keys -> ours (HQ: the official HQ-SAM adapter names). The tied `shared_image_embedding` copy is dropped (it
    stands in for the prompt encoder's matrix when a file only kept that copy)."""
    sd = dict(state_dict)
    shared = sd.pop(TRANSFORMERS_SHARED_PE, None)
    out = _rename(sd, _FROM_TRANSFORMERS)
    if shared is not None:
        mine = out.get(_OUR_PE)
        if mine is None:
            out[_OUR_PE] = shared
        elif mine.shape != shared.shape or not torch.equal(mine, shared):
            raise CheckpointError(
                f"inconsistent transformers checkpoint: {TRANSFORMERS_SHARED_PE} differs from "
                f"prompt_encoder.shared_embedding.positional_embedding (they are tied in SamModel)"
            )
    return out


def from_timm_samvit_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm `samvit_*` keys -> our image-encoder keys (no `image_encoder.` prefix; mlp.fc* -> mlp.lin*)."""
    return _rename(state_dict, [(r"^(blocks\.\d+\.mlp)\.fc([12])\.", r"\1.lin\2.")])


def to_timm_samvit_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our image-encoder keys (with or without `image_encoder.`) -> timm `samvit_*` keys."""
    sd = {k[len("image_encoder."):]: v for k, v in state_dict.items() if k.startswith("image_encoder.")} or dict(
        state_dict
    )
    return _rename(sd, [(r"^(blocks\.\d+\.mlp)\.lin([12])\.", r"\1.fc\2.")])


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
    """Convert a whole-model state dict (official SAM, EfficientSAM or transformers layout) to ours."""
    fmt = detect_format(state_dict)
    if fmt == "efficient_sam":
        return from_efficient_sam_layout(state_dict)
    if fmt == "transformers":
        return from_transformers_layout(state_dict)
    if fmt in ("hq_sam", "transformers_hq"):
        raise CheckpointError(
            f"this is an HQ-SAM checkpoint ({fmt} layout: it has mask_decoder.{'hf' if fmt == 'hq_sam' else 'hq'}_token); "
            "load it with "
            "efficient_sam.from_pretrained(...) or efficient_sam.build_hq_model(..., checkpoint=...) instead of a "
            "plain SAM model"
        )
    return dict(state_dict)


def check_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str = "checkpoint",
    layout: str | None = None,
    expected: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Raise CheckpointError naming missing keys, unexpected keys and shape conflicts, if any.

    `layout`: the file's original format, for the message (default: detected from `state_dict`).
    `expected`: the part of `model.state_dict()` the file must match exactly (default: all of it)."""
    expected = model.state_dict() if expected is None else expected
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
        msg.append(f"  (model family {family!r}; the file looks like the {layout or detect_format(state_dict)!r} layout)")
    raise CheckpointError("\n".join(msg))


def load_strict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str = "checkpoint",
    layout: str | None = None,
    expected: Mapping[str, torch.Tensor] | None = None,
) -> nn.Module:
    """`check_state_dict` then `load_state_dict`: the one strict load. With `expected` (a subset of the
    model's state dict, e.g. an adapter) exactly that subset is loaded and the rest is left as it is."""
    check_state_dict(model, state_dict, source, layout=layout, expected=expected)
    check_finite(state_dict, source, keys=None if expected is None else expected.keys())
    model.load_state_dict(state_dict, strict=expected is None)
    return model


def check_finite(state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint", keys=None) -> None:
    """Raise CheckpointError naming the tensors that hold NaN or inf (one `isfinite(t).all()` per
    floating-point tensor; `keys`: only these). Such weights load but every output is NaN."""
    bad = sorted(
        k for k in (state_dict if keys is None else keys)
        if (t := state_dict[k]).is_floating_point() or t.is_complex()
        if t.device.type != "meta" and not bool(torch.isfinite(t).all())
    )
    if bad:
        shown = "\n    ".join(bad[:20]) + (f"\n    ... and {len(bad) - 20} more" if len(bad) > 20 else "")
        raise CheckpointError(
            f"{source} holds non-finite values (NaN or inf) in {len(bad)} tensor(s); it is not loaded, since "
            f"every prediction would be NaN (a diverged run or a corrupt file):\n    {shown}"
        )


def load_checkpoint(model: nn.Module, checkpoint: str | os.PathLike | Mapping[str, torch.Tensor]) -> nn.Module:
    """Convert `checkpoint` (path or state dict in any supported layout) and load it strictly."""
    source = str(checkpoint) if not isinstance(checkpoint, Mapping) else "state dict"
    sd = read_state_dict(checkpoint) if not isinstance(checkpoint, Mapping) else dict(checkpoint)
    return load_strict(model, to_our_layout(sd), source)
