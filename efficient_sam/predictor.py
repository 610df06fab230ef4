"""`SamPredictor`: set an image once, then segment it with points, boxes and masks.

A drop-in for `segment_anything.SamPredictor` that serves both families with their official pre- and
post-processing. One difference: `predict_torch` takes coordinates in original-image pixels (the
official one wants them already transformed), so `predict` and `predict_torch` agree.

Several images: `set_images([img0, img1, ...])` encodes them in one encoder call; then
`predict(..., image_index=i)` / `predict_torch(..., image_index=i)` prompt image i, with the same result
as `set_image(img_i)` + `predict(...)` (up to float noise of the batched encoder).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from . import transforms
from .images import as_rgb_uint8
from .prompt_checks import check_corner_points, flag, numeric_array
from .modeling.sam import Sam

SAM_LABELS = (-1, 0, 1)
EFFICIENT_SAM_LABELS = (-1, 0, 1, 2, 3)


def as_rgb_uint8_list(images, image_format: str = "RGB") -> list[np.ndarray]:
    """A list or tuple of what `as_rgb_uint8` takes -> HxWx3 uint8 RGB arrays; an error names the
    image it is about (`images[i]: ...`)."""
    if not isinstance(images, (list, tuple)):
        raise TypeError(
            f"images must be a list or tuple of images, got {type(images).__name__} (for one image pass [image])"
        )
    arrs = []
    for i, image in enumerate(images):
        try:
            arrs.append(as_rgb_uint8(image, image_format))
        except (TypeError, ValueError) as e:
            raise type(e)(f"images[{i}]: {e}") from None
    return arrs


class SamPredictor:
    def __init__(self, sam_model: Sam) -> None:
        self.model = sam_model
        self.reset_image()

    @property
    def device(self) -> torch.device:
        return self.model.device

    def reset_image(self) -> None:
        self.is_image_set = False
        self.features = None  # (N, 256, h, w): one row per image set
        self.hq_features = None  # HQ models: the fused early/final features of the images
        # original_size / input_size: those of the image when one is set (None after set_images of several)
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None
        self.original_sizes: list[tuple[int, int]] = []  # one per image set, in order
        self.input_sizes: list[tuple[int, int]] = []

    @torch.no_grad()
    def set_image(self, image, image_format: str = "RGB") -> None:
        """Encode an image (HxWx3 uint8 RGB array or PIL image; grayscale and RGBA are converted)."""
        self._encode([as_rgb_uint8(image, image_format)])

    @torch.no_grad()
    def set_images(self, images, image_format: str = "RGB") -> None:
        """Encode several images (a list or tuple of what `set_image` takes, of any sizes) in one encoder
        call. Each is preprocessed as `set_image` does; prompt image i with `predict(..., image_index=i)`
        or `predict_torch(..., image_index=i)`. Replaces any image set before."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        arrs = as_rgb_uint8_list(images, image_format)
        if not arrs:
            raise ValueError("images is empty: give at least one image")
        self._encode(arrs)

    def _encode(self, arrs: list[np.ndarray]) -> None:
        cfg = self.model.config
        x = torch.cat([transforms.preprocess(a, cfg, self.device) for a in arrs])
        dtype = self.model.image_encoder.patch_embed.proj.weight.dtype
        self.reset_image()
        if self.model.is_hq:
            self.features, self.hq_features = self.model.encode_image_hq(x.to(dtype))
        else:
            self.features = self.model.encode_image(x.to(dtype))
        self.original_sizes = [(a.shape[0], a.shape[1]) for a in arrs]
        self.input_sizes = [transforms.input_size(s, cfg) for s in self.original_sizes]
        if len(arrs) == 1:
            self.original_size, self.input_size = self.original_sizes[0], self.input_sizes[0]
        self.is_image_set = True

    def get_image_embedding(self, image_index: int | None = None) -> torch.Tensor:
        """(N, 256, 64, 64) embeddings of the N images set (N = 1 after `set_image`), or (1, 256, 64, 64)
        of image `image_index`."""
        self._require_image()
        if image_index is None:
            return self.features
        i = self._image_index(image_index)
        return self.features[i : i + 1]

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("no image is set: call set_image(image) (or set_images(images)) first")

    def _image_index(self, image_index) -> int:
        """The image a prediction is for: `image_index` in [0, N), or None when exactly one image is set."""
        self._require_image()
        n = len(self.original_sizes)
        if image_index is None:
            if n > 1:
                raise ValueError(f"{n} images are set (set_images): pass image_index, an int in [0, {n - 1}]")
            return 0
        if isinstance(image_index, (bool, np.bool_)) or not isinstance(image_index, (int, np.integer)):
            raise TypeError(f"image_index must be an int, got {type(image_index).__name__}")
        if not 0 <= image_index < n:
            raise IndexError(
                f"image_index {int(image_index)} is out of range: {n} image(s) set, valid 0 to {n - 1}"
            )
        return int(image_index)

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        hq_token_only: bool = False,
        image_index: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One prompt in original-image pixels -> masks (C, H, W), IoU (C,), low-res logits (C, 256, 256).

        point_coords (N, 2) XY with point_labels (N,); box (4,) XYXY; mask_input (1, 256, 256) logits
        from a previous call. C = 3 with `multimask_output`, else 1; HQ models always return C = 1
        (SAM + HQ logits, or the HQ logits alone with `hq_token_only`), as the official HQ-SAM.
        `image_index`: which image after `set_images` (required when several are set).
        """
        self._image_index(image_index)
        if (point_coords is None) != (point_labels is None):
            raise ValueError("point_coords and point_labels must be given together")
        coords = labels = boxes = masks = None
        if point_coords is not None:
            coords = numeric_array(point_coords, "point_coords", (None, 2))[None]
            labels = numeric_array(point_labels, "point_labels", (None,))[None]
        if box is not None:
            boxes = numeric_array(box, "box", None)
            if boxes.shape not in ((4,), (1, 4)):  # (1, 4) as in the official notebook
                raise ValueError(
                    f"box must have 4 numbers (x0, y0, x1, y1), shape (4,) or (1, 4), got shape {boxes.shape}"
                )
            boxes = boxes.reshape(1, 4)
        if mask_input is not None:
            masks = numeric_array(mask_input, "mask_input", (1, None, None))[None]
        out_masks, iou, low_res = self.predict_torch(
            coords, labels, boxes, masks, multimask_output=multimask_output, return_logits=return_logits,
            hq_token_only=hq_token_only, image_index=image_index,
        )
        return out_masks[0].cpu().numpy(), iou[0].float().cpu().numpy(), low_res[0].float().cpu().numpy()

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        hq_token_only: bool = False,
        image_index: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """B prompts for the set image in one decoder call, coordinates in original-image pixels.

        point_coords (B, N, 2), point_labels (B, N), boxes (B, 4), mask_input (B, 1, 256, 256)
        -> masks (B, C, H, W) bool (logits if `return_logits`), IoU (B, C), low-res logits (B, C, 256, 256).
        `image_index`: which image after `set_images` (required when several are set).
        """
        i = self._image_index(image_index)
        original_size = self.original_sizes[i]
        features = self.features[i : i + 1]
        hq_features = None if self.hq_features is None else self.hq_features[i : i + 1]
        cfg = self.model.config
        multimask_output = flag(multimask_output, "multimask_output")
        return_logits = flag(return_logits, "return_logits")
        hq_token_only = flag(hq_token_only, "hq_token_only")
        if hq_token_only and not self.model.is_hq:
            raise ValueError("hq_token_only applies to HQ models only")
        coords, labels, boxes, mask_input, batch = self._validate(
            point_coords, point_labels, boxes, mask_input, original_size
        )
        dev = self.device
        if batch == 0:  # an empty batch gives empty outputs of the usual shapes
            c = 1 if self.model.is_hq or not multimask_output else self.model.mask_decoder.num_multimask_outputs
            s = 4 * self.model.prompt_encoder.image_embedding_size[0]
            mask_dtype = torch.float32 if return_logits else torch.bool
            masks = torch.empty(0, c, *original_size, device=dev, dtype=mask_dtype)
            iou = torch.empty(0, c, device=dev, dtype=features.dtype)
            return masks, iou, torch.empty(0, c, s, s, device=dev)
        if coords is not None:
            coords = transforms.transform_coords(coords.to(dev), original_size, cfg)
            labels = labels.to(dev)
        if boxes is not None:
            boxes = transforms.transform_boxes(boxes.to(dev), original_size, cfg)
        if mask_input is not None:
            mask_input = mask_input.to(dev, features.dtype)
        hq = dict(hq_features=hq_features, hq_token_only=hq_token_only) if self.model.is_hq else {}
        low_res, iou = self.model.decode(features, coords, labels, boxes, mask_input, multimask_output, **hq)
        low_res = low_res.float()
        masks = transforms.postprocess_masks(low_res, original_size, cfg)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou, low_res

    def _validate(self, coords, labels, boxes, mask_input, original_size):
        cfg = self.model.config
        h, w = original_size
        if (coords is None) != (labels is None):
            raise ValueError("point_coords and point_labels must be given together")
        batch = []
        if coords is not None:
            coords = _tensor(coords, "point_coords")
            labels = _tensor(labels, "point_labels", "integers (1 foreground, 0 background, ...)")
            if coords.dim() != 3 or coords.shape[-1] != 2:
                raise ValueError(f"point_coords must be (B, N, 2), got {tuple(coords.shape)}")
            if labels.shape != coords.shape[:2]:
                raise ValueError(
                    f"point_labels must be (B, N) = {tuple(coords.shape[:2])} to match point_coords, "
                    f"got {tuple(labels.shape)}"
                )
            if coords.shape[1] == 0:
                raise ValueError("point_coords is empty: give at least one point, or pass None")
            if coords.is_floating_point() and not torch.isfinite(coords).all():
                raise ValueError("point_coords contain NaN or infinite values")
            if labels.is_floating_point():
                if not torch.isfinite(labels).all() or (labels != labels.round()).any():
                    raise ValueError("point_labels must be integers")
            labels = labels.long()
            allowed = SAM_LABELS if cfg.decoder_family == "sam" else EFFICIENT_SAM_LABELS
            bad = sorted(set(labels.unique().tolist()) - set(allowed))
            if bad:
                hint = " (give boxes with boxes=, not as labelled corner points)" if cfg.decoder_family == "sam" else ""
                raise ValueError(f"point labels {bad} are not valid for this model; allowed {list(allowed)}{hint}")
            real = labels != -1
            x, y = coords[..., 0], coords[..., 1]
            outside = real & ((x < 0) | (x > w) | (y < 0) | (y > h))
            if outside.any():
                i = outside.nonzero()[0].tolist()
                raise ValueError(
                    f"point {coords[i[0], i[1]].tolist()} lies outside the {w}x{h} image (x in [0, {w}], "
                    f"y in [0, {h}]); use label -1 for padding points"
                )
            if cfg.decoder_family == "efficient_sam":
                check_corner_points(coords, labels)
            if cfg.decoder_family == "efficient_sam" and (labels == 0).any():
                warnings.warn(
                    "EfficientSAM was not trained with negative points: label 0 adds only the positional "
                    "encoding, as in the official code",
                    stacklevel=4,
                )
            batch.append(coords.shape[0])
        if boxes is not None:
            boxes = _tensor(boxes, "boxes")
            if boxes.dim() == 1:
                boxes = boxes[None]
            if boxes.dim() != 2 or boxes.shape[-1] != 4:
                raise ValueError(f"boxes must be (B, 4) XYXY, got {tuple(boxes.shape)}")
            if boxes.is_floating_point() and not torch.isfinite(boxes).all():
                raise ValueError("boxes contain NaN or infinite values")
            x0, y0, x1, y1 = boxes.unbind(-1)
            if ((x1 < x0) | (y1 < y0)).any():
                raise ValueError("inverted box: boxes are (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1")
            flat = (x1 == x0) | (y1 == y0)
            if flat.any():
                raise ValueError(
                    f"zero-area box {boxes[flat.nonzero()[0, 0]].tolist()}: boxes need x0 < x1 and y0 < y1 "
                    f"(for a single spot, give a point)"
                )
            if ((x0 < 0) | (y0 < 0) | (x1 > w) | (y1 > h)).any():
                raise ValueError(f"box outside the {w}x{h} image: coordinates must lie in [0, {w}] x [0, {h}]")
            batch.append(boxes.shape[0])
        if mask_input is not None:
            if not cfg.prompt_encoder.mask_prompt:
                raise ValueError("this model has no mask-prompt input (EfficientSAM decoder); pass mask_input=None")
            mask_input = _tensor(mask_input, "mask_input", "low-res logits (e.g. a previous call's low_res output)")
            s = 4 * self.model.prompt_encoder.image_embedding_size[0]
            if mask_input.dim() != 4 or tuple(mask_input.shape[1:]) != (1, s, s):
                raise ValueError(f"mask_input must be (B, 1, {s}, {s}) low-res logits, got {tuple(mask_input.shape)}")
            if not torch.isfinite(mask_input).all():
                raise ValueError("mask_input contains NaN or infinite values")
            batch.append(mask_input.shape[0])
        if not batch:
            raise ValueError("no prompt given: pass point_coords/point_labels, boxes or mask_input")
        if len(set(batch)) > 1:
            raise ValueError(f"prompt batch sizes disagree: {batch} (points, boxes, masks)")
        if boxes is None and mask_input is None and (labels == -1).all(dim=1).any():
            raise ValueError("a prompt has only padding points (label -1): give at least one real point or a box")
        max_points = cfg.prompt_encoder.max_points
        if max_points is not None:
            n = (coords.shape[1] if coords is not None else 0) + (2 if boxes is not None else 0)
            if n > max_points:
                raise ValueError(
                    f"this model takes at most {max_points} points per prompt (a box counts as 2), got {n}"
                )
        return coords, labels, boxes, mask_input, batch[0]


def _tensor(x, name: str, want: str = "real numbers (int or float)") -> torch.Tensor:
    """An int or float tensor, or a TypeError naming the parameter (bool and complex are refused)."""
    try:
        t = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name} must be a tensor or array of {want}, got {type(x).__name__} ({e})") from None
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must be {want}, got dtype {t.dtype}")
    return t
