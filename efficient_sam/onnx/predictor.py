"""`OnnxSamPredictor`: `SamPredictor`'s `set_image` / `predict` on an `esam-export` folder, with only numpy,
pillow and onnxruntime (no torch: this module imports nothing else of the package but `format`).

Pre- and post-processing reproduce the torch predictor's (`efficient_sam.transforms`):
SAM: PIL bilinear resize of the uint8 image (longest side -> img_size, `int(x * s + 0.5)`), normalise on
the 0-255 scale in float32, zero-pad bottom/right; coordinates scaled by the resize. EfficientSAM:
[0, 1] float32, a bilinear stretch to img_size x img_size written here in numpy with the arithmetic
of torch's `F.interpolate(mode="bilinear", align_corners=False)` (no antialias), normalise; coordinates
scaled per axis, padding points at -1. The resize stays outside encoder.onnx so that the encoder
keeps the plain (B, 3, S, S) input of the official interface (and of our `Sam.encode_image`); the
numpy stretch matches torch's to float rounding (~1e-7), well inside the 1e-4 budget.
The masks are upscaled inside decoder.onnx (the official interface's `orig_im_size`).

Input checks and their messages are those of `efficient_sam.predictor.SamPredictor`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from ..images import as_rgb_uint8
from ..prompt_checks import check_corner_points, flag, numeric_array
from . import format as fmt

__all__ = ["OnnxSamPredictor"]

_SAM_USER_LABELS = (-1, 0, 1)
_EFFICIENT_SAM_USER_LABELS = (-1, 0, 1, 2, 3)


# ---------------------------------------------------------------------------------------------------
# Images


def longest_side_size(h: int, w: int, target: int) -> tuple[int, int]:
    """`transforms.longest_side_size`: the official ResizeLongestSide shape, sides of at least 1 pixel."""
    scale = target * 1.0 / max(h, w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def _linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """torch's bilinear (align_corners=False) source taps along one axis, in float32 as its CPU kernel."""
    scale = np.float32(in_size) / np.float32(out_size)
    src = scale * (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
    src = np.maximum(src, np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    lam = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
    i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
    return i0, i1, (np.float32(1) - lam), lam


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, H, W) float32 -> (C, h, w): `F.interpolate(x, size, mode="bilinear", align_corners=False)`."""
    c, h, w = x.shape
    oh, ow = size
    if (h, w) == (oh, ow):
        return x
    y0, y1, hy0, hy1 = _linear_taps(h, oh)
    x0, x1, wx0, wx1 = _linear_taps(w, ow)
    rows0, rows1 = x[:, y0], x[:, y1]  # (C, oh, W)
    top = wx0 * rows0[:, :, x0] + wx1 * rows0[:, :, x1]
    bottom = wx0 * rows1[:, :, x0] + wx1 * rows1[:, :, x1]
    return (hy0[:, None] * top + hy1[:, None] * bottom).astype(np.float32)


def preprocess(image: np.ndarray, cfg: dict) -> np.ndarray:
    """HxWx3 uint8 RGB -> (1, 3, S, S) float32 encoder input, by the export's resize policy."""
    s = cfg["img_size"]
    mean = np.asarray(cfg["pixel_mean"], np.float32)[:, None, None]
    std = np.asarray(cfg["pixel_std"], np.float32)[:, None, None]
    if cfg["resize"] == "stretch":
        x = image.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
        x = resize_bilinear(x, (s, s))
        return ((x - mean / np.float32(255)) / (std / np.float32(255)))[None].astype(np.float32)
    h, w = image.shape[:2]
    nh, nw = longest_side_size(h, w, s)
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    x = (resized.transpose(2, 0, 1).astype(np.float32) - mean) / std
    out = np.zeros((1, 3, s, s), np.float32)
    out[0, :, :nh, :nw] = x
    return out


def transform_coords(coords: np.ndarray, original_size: tuple[int, int], cfg: dict) -> np.ndarray:
    """(..., 2) (x, y) original pixels -> the model's input frame, float32 (`transforms.transform_coords`)."""
    h, w = original_size
    s = cfg["img_size"]
    c = coords.astype(np.float32)
    if cfg["resize"] == "stretch":
        x = np.where(c[..., 0] >= 0, c[..., 0] * np.float32(s) / np.float32(w), np.float32(-1))
        y = np.where(c[..., 1] >= 0, c[..., 1] * np.float32(s) / np.float32(h), np.float32(-1))
        return np.stack([x, y], axis=-1).astype(np.float32)
    nh, nw = longest_side_size(h, w, s)
    return np.stack([c[..., 0] * np.float32(nw / w), c[..., 1] * np.float32(nh / h)], axis=-1).astype(np.float32)


class OnnxSamPredictor:
    """`OnnxSamPredictor(folder)`: an `esam-export` folder -> `set_image(image)`, `predict(...)` as
    `efficient_sam.SamPredictor` (same arguments, outputs and errors).

    `providers`: onnxruntime execution providers (default CPU); `sess_options`: an
    `onnxruntime.SessionOptions` for both sessions.
    """

    def __init__(self, folder: str | os.PathLike, providers=None, sess_options=None) -> None:
        import onnxruntime as ort

        self.folder = Path(folder)
        self.config = cfg = fmt.read_config(self.folder)
        providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        sessions = {}
        for part in ("encoder", "decoder"):
            path = self.folder / cfg[part]["file"]
            try:
                sessions[part] = ort.InferenceSession(str(path), sess_options=sess_options, providers=providers)
            except Exception as e:  # onnxruntime's own exception types
                raise fmt.ExportFormatError(f"{path}: onnxruntime cannot load it ({e})") from None
        self.encoder, self.decoder = sessions["encoder"], sessions["decoder"]
        want = fmt.decoder_inputs(cfg["mask_input"], cfg["hq"])
        got = tuple(i.name for i in self.decoder.get_inputs())
        if sorted(got) != sorted(want):
            raise fmt.ExportFormatError(
                f"{self.folder}: decoder inputs {list(got)} do not match the export config (expected {list(want)})"
            )
        enc_in = self.encoder.get_inputs()
        if len(enc_in) != 1 or enc_in[0].name != "images":
            raise fmt.ExportFormatError(f"{self.folder}: the encoder must take one input 'images'")
        self.img_size = cfg["img_size"]
        self.mask_threshold = float(cfg["mask_threshold"])
        self.is_hq = cfg["hq"]
        self.reset_image()

    def reset_image(self) -> None:
        self.is_image_set = False
        self.features = None
        self.interm_features = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None

    def set_image(self, image, image_format: str = "RGB") -> None:
        """Encode an image (HxWx3 uint8 RGB array or PIL image; grayscale and RGBA are converted)."""
        arr = as_rgb_uint8(image, image_format)
        x = preprocess(arr, self.config)
        outs = self.encoder.run(None, {"images": x})
        self.reset_image()
        self.features = outs[0]
        self.interm_features = outs[1] if self.is_hq else None
        self.original_size = (arr.shape[0], arr.shape[1])
        s = self.img_size
        self.input_size = (s, s) if self.config["resize"] == "stretch" else longest_side_size(*self.original_size, s)
        self.is_image_set = True

    def get_image_embedding(self) -> np.ndarray:
        """(1, 256, h, w) embedding of the image set."""
        self._require_image()
        return self.features

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("no image is set: call set_image(image) first")

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        hq_token_only: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One prompt in original-image pixels -> masks (C, H, W), IoU (C,), low-res logits (C, 256, 256).

        point_coords (N, 2) XY with point_labels (N,); box (4,) XYXY; mask_input (1, 256, 256) logits from
        a previous call. C = 3 with `multimask_output`, else 1; HQ exports always return C = 1 (SAM + HQ
        logits, or the HQ logits alone with `hq_token_only`), as `SamPredictor.predict`."""
        self._require_image()
        multimask_output = flag(multimask_output, "multimask_output")
        return_logits = flag(return_logits, "return_logits")
        hq_token_only = flag(hq_token_only, "hq_token_only")
        if hq_token_only and not self.is_hq:
            raise ValueError("hq_token_only applies to HQ models only")
        coords, labels, boxes, mask = self._validate(point_coords, point_labels, box, mask_input)
        cfg, size = self.config, self.original_size
        parts_c, parts_l = [], []
        if coords is not None:
            parts_c.append(transform_coords(coords, size, cfg))
            parts_l.append(labels.astype(np.float32))
        if boxes is not None:
            parts_c.append(transform_coords(boxes.reshape(2, 2), size, cfg))
            parts_l.append(np.array([2, 3], np.float32))
        if coords is not None and boxes is None and cfg["max_points"] is None:
            parts_c.append(np.zeros((1, 2), np.float32))  # SAM's padding point (its PE is zeroed)
            parts_l.append(np.array([-1], np.float32))
        c = np.concatenate(parts_c)[None] if parts_c else np.zeros((1, 0, 2), np.float32)
        lab = np.concatenate(parts_l)[None] if parts_l else np.zeros((1, 0), np.float32)
        feeds = {"image_embeddings": self.features, "point_coords": c.astype(np.float32),
                 "point_labels": lab.astype(np.float32), "orig_im_size": np.array(size, np.float32)}
        if cfg["mask_input"]:
            low = cfg["low_res_size"]
            if mask is None:
                feeds["mask_input"] = np.zeros((1, 1, low, low), np.float32)
                feeds["has_mask_input"] = np.zeros(1, np.float32)
            else:
                feeds["mask_input"] = mask.astype(np.float32)[None]
                feeds["has_mask_input"] = np.ones(1, np.float32)
        if self.is_hq:
            feeds["interm_embeddings"] = self.interm_features
            feeds["multimask_output"] = np.array([float(multimask_output)], np.float32)
            feeds["hq_token_only"] = np.array([float(hq_token_only)], np.float32)
        masks, iou, low_res = self.decoder.run(["masks", "iou_predictions", "low_res_masks"], feeds)
        if not self.is_hq:
            sl = slice(1, None) if multimask_output else slice(0, 1)
            masks, iou, low_res = masks[:, sl], iou[:, sl], low_res[:, sl]
        masks, iou, low_res = masks[0], iou[0].astype(np.float32), low_res[0].astype(np.float32)
        if not return_logits:
            masks = masks > self.mask_threshold
        return masks, iou, low_res

    def _validate(self, coords, labels, box, mask_input):
        cfg = self.config
        h, w = self.original_size
        sam = cfg["decoder_family"] == "sam"
        if (coords is None) != (labels is None):
            raise ValueError("point_coords and point_labels must be given together")
        if coords is not None:
            coords = numeric_array(coords, "point_coords", (None, 2))
            labels = numeric_array(labels, "point_labels", (None,))
            if labels.shape[0] != coords.shape[0]:
                raise ValueError(
                    f"point_labels must be (B, N) = {(1, coords.shape[0])} to match point_coords, "
                    f"got {(1, labels.shape[0])}"
                )
            if coords.shape[0] == 0:
                raise ValueError("point_coords is empty: give at least one point, or pass None")
            if coords.dtype.kind == "f" and not np.isfinite(coords).all():
                raise ValueError("point_coords contain NaN or infinite values")
            if labels.dtype.kind == "f":
                if not np.isfinite(labels).all() or (labels != np.round(labels)).any():
                    raise ValueError("point_labels must be integers")
            labels = labels.astype(np.int64)
            allowed = _SAM_USER_LABELS if sam else _EFFICIENT_SAM_USER_LABELS
            bad = sorted(set(np.unique(labels).tolist()) - set(allowed))
            if bad:
                hint = " (give boxes with boxes=, not as labelled corner points)" if sam else ""
                raise ValueError(f"point labels {bad} are not valid for this model; allowed {list(allowed)}{hint}")
            real = labels != -1
            x, y = coords[:, 0], coords[:, 1]
            outside = real & ((x < 0) | (x > w) | (y < 0) | (y > h))
            if outside.any():
                i = int(np.flatnonzero(outside)[0])
                raise ValueError(
                    f"point {coords[i].tolist()} lies outside the {w}x{h} image (x in [0, {w}], "
                    f"y in [0, {h}]); use label -1 for padding points"
                )
            if not sam:
                check_corner_points(coords[None], labels[None])
                if (labels == 0).any():
                    warnings.warn(
                        "EfficientSAM was not trained with negative points: label 0 adds only the positional "
                        "encoding, as in the official code",
                        stacklevel=3,
                    )
        boxes = None
        if box is not None:
            boxes = numeric_array(box, "box", None)
            if boxes.shape not in ((4,), (1, 4)):
                raise ValueError(
                    f"box must have 4 numbers (x0, y0, x1, y1), shape (4,) or (1, 4), got shape {boxes.shape}"
                )
            boxes = boxes.reshape(4)
            if boxes.dtype.kind == "f" and not np.isfinite(boxes).all():
                raise ValueError("boxes contain NaN or infinite values")
            x0, y0, x1, y1 = boxes.tolist()
            if x1 < x0 or y1 < y0:
                raise ValueError("inverted box: boxes are (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1")
            if x1 == x0 or y1 == y0:
                raise ValueError(
                    f"zero-area box {boxes.tolist()}: boxes need x0 < x1 and y0 < y1 (for a single spot, give a point)"
                )
            if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
                raise ValueError(f"box outside the {w}x{h} image: coordinates must lie in [0, {w}] x [0, {h}]")
        if mask_input is not None:
            if not cfg["mask_input"]:
                raise ValueError("this model has no mask-prompt input (EfficientSAM decoder); pass mask_input=None")
            mask_input = numeric_array(mask_input, "mask_input", (1, None, None))
            s = cfg["low_res_size"]
            if tuple(mask_input.shape) != (1, s, s):
                raise ValueError(f"mask_input must be (B, 1, {s}, {s}) low-res logits, got {(1, *mask_input.shape)}")
            if not np.isfinite(mask_input).all():
                raise ValueError("mask_input contains NaN or infinite values")
        if coords is None and boxes is None and mask_input is None:
            raise ValueError("no prompt given: pass point_coords/point_labels, boxes or mask_input")
        if boxes is None and mask_input is None and (labels == -1).all():
            raise ValueError("a prompt has only padding points (label -1): give at least one real point or a box")
        max_points = cfg.get("max_points")
        if max_points is not None:
            n = (coords.shape[0] if coords is not None else 0) + (2 if boxes is not None else 0)
            if n > max_points:
                raise ValueError(
                    f"this model takes at most {max_points} points per prompt (a box counts as 2), got {n}"
                )
        return coords, labels, boxes, mask_input
