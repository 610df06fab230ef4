"""The layout of an `esam-export` folder, shared by the exporter and the torch-free predictor (this module
imports only the standard library).

    encoder.onnx   (+ encoder.onnx.data when the weights are stored as ONNX external data)
    decoder.onnx   (+ decoder.onnx.data)
    config.json    what a consumer needs to pre/post-process: `read_config` checks it

Decoder interface (the official `segment_anything` ONNX decoder, `SamOnnxModel` with
`return_single_mask=False`, plus a dynamic prompt batch):

    image_embeddings (1 or B, 256, h, w)   from encoder.onnx
    point_coords     (B, N, 2) float32     in the model's input frame (after the family's resize)
    point_labels     (B, N)    float32     -1 padding, 0 negative, 1 positive, 2/3 box corners
    mask_input       (1 or B, 1, 4h, 4w)   low-res logits            } SAM decoders only
    has_mask_input   (1,)      float32     1 = use mask_input        }
    orig_im_size     (2,)      float32     (H, W) of the original image
 -> masks (B, C, H, W) logits at the original size, iou_predictions (B, C'), low_res_masks (B, C, 4h, 4w).

SAM / EfficientSAM decoders return every mask token (C = C' = 4: token 0 is the single-mask output,
tokens 1-3 the multimask ones). HQ decoders also take `interm_embeddings` (K, 1 or B, h, w, C_vit)
after `image_embeddings` (the official HQ-SAM input; only entry 0, the early block, is used) and two
float32 (1,) flags, `multimask_output` and `hq_token_only` (0 or 1), and return one mask per prompt
(C = C' = 1), as the official HQ-SAM export does for its export-time flags.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FORMAT = "efficient_sam.onnx"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
ENCODER_INPUTS = ("images",)
ENCODER_OUTPUTS = ("image_embeddings",)
HQ_ENCODER_OUTPUTS = ("image_embeddings", "interm_embeddings")
DECODER_OUTPUTS = ("masks", "iou_predictions", "low_res_masks")
SAM_DECODER_INPUTS = (
    "image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size",
)
NO_MASK_DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "orig_im_size")
HQ_EXTRA_INPUTS = ("multimask_output", "hq_token_only")
SAM_LABELS = (-1, 0, 1, 2, 3)  # what the decoder file takes (boxes are corner points 2/3)

# config.json keys every export has, with the type each must be
REQUIRED = {
    "format": str, "format_version": int, "model": str, "family": str, "decoder_family": str, "img_size": int,
    "resize": str, "pixel_mean": list, "pixel_std": list, "mask_threshold": (int, float), "mask_input": bool,
    "hq": bool, "low_res_size": int, "num_mask_tokens": int, "opset": int, "dtype": str, "encoder": dict,
    "decoder": dict,
}


class ExportFormatError(ValueError):
    """A folder that is not a (complete, readable) `esam-export` output."""


def decoder_inputs(mask_input: bool, hq: bool) -> tuple[str, ...]:
    names = list(SAM_DECODER_INPUTS if mask_input else NO_MASK_DECODER_INPUTS)
    if hq:
        names.insert(1, "interm_embeddings")
        names += HQ_EXTRA_INPUTS
    return tuple(names)


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The checked config.json of an export folder, or ExportFormatError saying what is wrong."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportFormatError(f"{folder} is not a folder (expected an esam-export output folder)")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ExportFormatError(
            f"{folder} is not an esam-export folder: it has no {CONFIG_FILE} (export one with "
            f"`esam-export --model NAME --out DIR`)"
        )
    try:
        cfg = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportFormatError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise ExportFormatError(
            f"{path} is not an esam-export config (no \"format\": \"{FORMAT}\"); is this a model folder of "
            f"another kind (e.g. save_pretrained)? Export it with esam-export first"
        )
    for key, kind in REQUIRED.items():
        if key not in cfg:
            raise ExportFormatError(f"{path}: missing key {key!r}")
        if not isinstance(cfg[key], kind) or (kind is int and isinstance(cfg[key], bool)):
            raise ExportFormatError(f"{path}: {key!r} has the wrong type ({type(cfg[key]).__name__})")
    if cfg["format_version"] > FORMAT_VERSION:
        raise ExportFormatError(
            f"{path}: format_version {cfg['format_version']} is newer than this library reads ({FORMAT_VERSION})"
        )
    if cfg["resize"] not in ("longest_side", "stretch"):
        raise ExportFormatError(f"{path}: unknown resize policy {cfg['resize']!r}")
    for part in ("encoder", "decoder"):
        name = cfg[part].get("file")
        if not isinstance(name, str) or not (folder / name).is_file():
            raise ExportFormatError(f"{folder} is an incomplete export: {part} file {name!r} is missing")
    return cfg
