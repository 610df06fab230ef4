"""`SamAutomaticMaskGenerator`: segment everything in an image with a grid of point prompts.

Same arguments, defaults, records and masks as `segment_anything.SamAutomaticMaskGenerator` (and, for
HQ models, `segment_anything_hq`'s, which gets one SAM + HQ mask per point), computed so that the
work scales with the masks kept rather than with the prompts:

- one encoder call per crop and one decoder call per batch of `points_per_batch` points (on a CPU,
  4 prompts per call: see `_decode`), everything on the model's device until the final records;
- the predicted-IoU filter runs on the decoder's output, before any upsampling (the IoU head does not
  see the masks, so this is exact); only the survivors are upsampled, then the stability score,
  thresholding and boxes run on them in one vectorised pass;
- NMS with `torchvision.ops.batched_nms`; masks stay on the device (crop-sized) until the end, and
  only the final masks are encoded (RLE boundaries found in torch, one transfer to the host).

EfficientSAM models use the point rules of EfficientSAM's "segment everything" notebook: single
positive points and, of the 3 multimask outputs (unsorted, token 0 untrained), only the one with the
best predicted IoU (`best_of_multimask`, on by default for EfficientSAM, off for SAM).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torchvision.ops import batched_nms

from . import amg, transforms
from .modeling.sam import Sam
from .predictor import SamPredictor, as_rgb_uint8_list

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
CPU_DECODE_CHUNK = 4  # prompts per decoder call on a CPU (see `_decode`)


class SamAutomaticMaskGenerator:
    def __init__(
        self,
        model: Sam,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        best_of_multimask: bool | None = None,
        fast: bool = False,
    ) -> None:
        """Arguments as the official generator's; `best_of_multimask` (None: True for EfficientSAM, False
        for SAM) keeps only the best of the 3 multimask outputs of each point.

        `fast=True` trades exactness for speed (opt-in; `esam-bench --amg --fast` reports the agreement):
        encoder and decoder under bf16 autocast, and the stability score on the low-res logits (the
        image region of the 256 x 256 output), so that only the masks it keeps are upsampled, with one
        bilinear interpolation instead of two. On a CPU bf16 pays off only with AVX512-BF16 / AMX."""
        if not isinstance(model, Sam):
            raise TypeError(f"model must be an efficient_sam Sam model, got {type(model).__name__}")
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        if not isinstance(crop_n_layers, int) or isinstance(crop_n_layers, bool) or crop_n_layers < 0:
            raise ValueError(f"crop_n_layers must be an int >= 0, got {crop_n_layers!r}")
        if points_per_side is not None:
            if not isinstance(points_per_side, int) or isinstance(points_per_side, bool) or points_per_side < 1:
                raise ValueError(f"points_per_side must be an int >= 1, got {points_per_side!r}")
            if not isinstance(crop_n_points_downscale_factor, int) or crop_n_points_downscale_factor < 1:
                raise ValueError(
                    f"crop_n_points_downscale_factor must be an int >= 1, got {crop_n_points_downscale_factor!r}"
                )
            if int(points_per_side / crop_n_points_downscale_factor**crop_n_layers) < 1:
                raise ValueError(
                    f"points_per_side={points_per_side} leaves no points in crop layer {crop_n_layers} with "
                    f"crop_n_points_downscale_factor={crop_n_points_downscale_factor}"
                )
            self.point_grids = amg.build_all_layer_point_grids(
                points_per_side, crop_n_layers, crop_n_points_downscale_factor
            )
        else:
            grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
            if len(grids) != crop_n_layers + 1:
                raise ValueError(
                    f"point_grids needs one grid per crop layer ({crop_n_layers + 1}), got {len(grids)}"
                )
            for g in grids:
                if g.ndim != 2 or g.shape[1] != 2 or len(g) == 0:
                    raise ValueError(f"each point grid must be a non-empty (N, 2) array, got shape {g.shape}")
                if not np.isfinite(g).all() or (g < 0).any() or (g > 1).any():
                    raise ValueError("point grids hold XY coordinates normalised to [0, 1]")
            self.point_grids = grids
        if not isinstance(points_per_batch, int) or isinstance(points_per_batch, bool) or points_per_batch < 1:
            raise ValueError(f"points_per_batch must be an int >= 1, got {points_per_batch!r}")
        for name, v in (("box_nms_thresh", box_nms_thresh), ("crop_nms_thresh", crop_nms_thresh)):
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {v!r}")
        if not 0.0 <= float(crop_overlap_ratio) < 1.0:
            raise ValueError(f"crop_overlap_ratio must lie in [0, 1), got {crop_overlap_ratio!r}")
        if float(stability_score_offset) < 0:
            raise ValueError(f"stability_score_offset must be >= 0, got {stability_score_offset!r}")
        if min_mask_region_area < 0:
            raise ValueError(f"min_mask_region_area must be >= 0, got {min_mask_region_area!r}")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {list(OUTPUT_MODES)}, got {output_mode!r}")
        if output_mode == "coco_rle":
            amg._pycocotools_mask()  # fail now, not after the model ran
        if min_mask_region_area > 0:
            amg._cv2()
        self.model = model
        self.predictor = SamPredictor(model)
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.box_nms_thresh = float(box_nms_thresh)
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = float(crop_nms_thresh)
        self.crop_overlap_ratio = float(crop_overlap_ratio)
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        efficient = model.config.decoder_family == "efficient_sam"
        self.best_of_multimask = efficient if best_of_multimask is None else bool(best_of_multimask)
        self.fast = bool(fast)

    def _autocast(self):
        """bf16 autocast in fast mode, nothing otherwise."""
        if not self.fast:
            return nullcontext()
        return torch.autocast(self.predictor.device.type, dtype=torch.bfloat16)

    @torch.no_grad()
    def generate(self, image, multimask_output: bool = True, image_format: str = "RGB") -> list[dict[str, Any]]:
        """HxWx3 uint8 image (or PIL image) -> one record per mask, as the official generator:
        `segmentation` (HxW bool array, or RLE dict per `output_mode`), `area` (int), `bbox` [x, y, w, h],
        `predicted_iou`, `point_coords` [[x, y]], `stability_score`, `crop_box` [x, y, w, h].
        `multimask_output=False` uses the single-mask output (as `segment_anything_hq`'s `generate`)."""
        return self.generate_batch([image], multimask_output, image_format)[0]

    @torch.no_grad()
    def generate_batch(
        self, images, multimask_output: bool = True, image_format: str = "RGB", crops_per_batch: int | None = None
    ) -> list[list[dict[str, Any]]]:
        """Several images (a list of what `generate` takes, any sizes) -> one record list per image, each
        equal to `generate(image)`. The crops of all images go through the encoder `crops_per_batch` at a
        time (one encoder call each; default 8 on a GPU, 1 on a CPU, where batching only adds memory and
        time); `last_stats` counts the candidates of the whole call."""
        if crops_per_batch is None:
            crops_per_batch = 1 if self.predictor.device.type == "cpu" else 8
        if not isinstance(crops_per_batch, int) or isinstance(crops_per_batch, bool) or crops_per_batch < 1:
            raise ValueError(f"crops_per_batch must be an int >= 1, got {crops_per_batch!r}")
        arrs = as_rgb_uint8_list(images, image_format)
        self.last_stats = {"prompts": 0, "outputs": 0, "iou_kept": 0, "stability_kept": 0, "edge_kept": 0}
        crops = [amg.generate_crop_boxes(a.shape[:2], self.crop_n_layers, self.crop_overlap_ratio) for a in arrs]
        jobs = [(i, cb, layer) for i, (boxes, layers) in enumerate(crops) for cb, layer in zip(boxes, layers)]
        parts: list[list[dict[str, Any]]] = [[] for _ in arrs]
        pred = self.predictor
        for start in range(0, len(jobs), crops_per_batch):
            chunk = jobs[start : start + crops_per_batch]
            with self._autocast():
                pred.set_images([arrs[i][y0:y1, x0:x1] for i, (x0, y0, x1, y1), _ in chunk])
            for j, (i, cb, layer) in enumerate(chunk):
                parts[i].append(self._process_crop(j, cb, layer, arrs[i].shape[:2], bool(multimask_output)))
        pred.reset_image()
        return [self._records(self._merge_crops(p, c[0]), a.shape[:2]) for p, c, a in zip(parts, crops, arrs)]

    # -- internals -------------------------------------------------------------------------------------

    def _records(self, data: dict[str, Any], size: tuple[int, int]) -> list[dict[str, Any]]:
        h, w = size
        masks = data["masks"]  # list of (h_c, w_c) bool tensors on the device, crop frame
        if masks:
            full_masks = torch.stack([amg.uncrop_masks(m[None], cb, h, w)[0] for m, cb in zip(masks, data["crop_boxes"])])
            if self.min_mask_region_area > 0:
                data = self._postprocess_small_regions(data, full_masks)
                full_masks = data.pop("full_masks")
        else:
            full_masks = torch.zeros(0, h, w, dtype=torch.bool)
        areas = full_masks.sum((1, 2)).cpu().tolist()
        if self.output_mode == "binary_mask":
            segs = list(full_masks.cpu().numpy())
        else:
            segs = amg.masks_to_rle(full_masks)
            if self.output_mode == "coco_rle":
                segs = [amg.coco_encode_rle(r) for r in segs]
        boxes = data["boxes"].cpu()
        boxes_xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        iou = data["iou_preds"].float().cpu().tolist()
        stab = data["stability_score"].float().cpu().tolist()
        points = data["points"].cpu().tolist()
        return [
            {
                "segmentation": segs[i],
                "area": int(areas[i]),
                "bbox": boxes_xywh[i],
                "predicted_iou": iou[i],
                "point_coords": [points[i]],
                "stability_score": stab[i],
                "crop_box": [cb[0], cb[1], cb[2] - cb[0], cb[3] - cb[1]],
            }
            for i, cb in enumerate(data["crop_boxes"])
        ]

    def _merge_crops(self, parts: list[dict[str, Any]], crop_boxes: list[list[int]]) -> dict[str, Any]:
        """The crops' masks of one image, then NMS between crops preferring smaller crops."""
        data = {
            "masks": [m for p in parts for m in p["masks"]],
            "crop_boxes": [cb for p, cb in zip(parts, crop_boxes) for _ in p["masks"]],
        }
        for key in ("boxes", "iou_preds", "stability_score", "points"):
            data[key] = torch.cat([p[key] for p in parts])
        if len(crop_boxes) > 1 and len(data["masks"]):
            cbs = torch.tensor(data["crop_boxes"], device=data["boxes"].device)
            scores = 1 / amg.box_area(cbs)
            keep = batched_nms(
                data["boxes"].float(), scores, torch.zeros_like(scores, dtype=torch.int64), self.crop_nms_thresh
            )
            data = _select(data, keep)
        return data

    def _keep_prompts(self, iou: torch.Tensor) -> torch.Tensor:
        """IoU predictions (B, k) -> prompts with at least one output above `pred_iou_thresh`."""
        if self.pred_iou_thresh <= 0.0:
            return torch.arange(iou.shape[0], device=iou.device)
        return (iou.amax(dim=1) > self.pred_iou_thresh).nonzero().flatten()

    def _decode(self, feats, coords, labels, multimask_output: bool, hq: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """One points batch -> low-res logits of the prompts the IoU filter can keep, and all IoU
        predictions. On a CPU the decoder takes `CPU_DECODE_CHUNK` prompts at a time: glibc hands blocks
        over 32 MB back to the OS when freed, so the per-prompt image tokens of a 64-prompt call
        page-fault afresh in every layer (about 25% of decoder + post time on SAM ViT-B)."""
        step = CPU_DECODE_CHUNK if feats.device.type == "cpu" else len(coords)
        lows, ious = [], []
        with self._autocast():
            for i in range(0, len(coords), step):
                low, iou = self.model.decode(
                    feats, coords[i : i + step], labels[i : i + step], None, None, multimask_output,
                    prompt_filter=self._keep_prompts, **hq,
                )
                lows.append(low)
                ious.append(iou)
        return torch.cat(lows), torch.cat(ious)

    def _upsample_and_score(self, low_res: torch.Tensor, size: tuple[int, int]):
        """(N, 256, 256) logits -> the indices kept by the stability filter, their (n, h, w) logits at
        the crop's `size`, and their stability scores. Exact: upsample, then score; fast: score on the
        low-res image region, then upsample the survivors only."""
        cfg, thr, off = self.model.config, self.model.mask_threshold, self.stability_score_offset
        if self.fast:
            stab = amg.stability_score(amg.low_res_image_region(low_res, size, cfg), thr, off)
        else:
            logits = transforms.postprocess_masks(low_res[None], size, cfg)[0]
            stab = amg.stability_score(logits, thr, off)
        if self.stability_score_thresh > 0.0:
            sel = (stab >= self.stability_score_thresh).nonzero().flatten()
        else:
            sel = torch.arange(len(stab), device=stab.device)
        if self.fast:
            return sel, amg.upscale_once(low_res[sel], size, cfg), stab[sel]
        return sel, logits[sel], stab[sel]

    def _process_crop(self, j, crop_box, layer, orig_size, multimask_output) -> dict[str, Any]:
        """Crop `j` of the predictor's image set, at `crop_box` (XYXY) of an image of `orig_size`."""
        x0, y0, x1, y1 = crop_box
        ch, cw = y1 - y0, x1 - x0
        pred = self.predictor
        dev = pred.device
        points = torch.as_tensor(self.point_grids[layer] * np.array([[cw, ch]]), device=dev)  # float64
        cfg = self.model.config
        feats = pred.features[j : j + 1]
        hq = dict(hq_features=pred.hq_features[j : j + 1]) if self.model.is_hq else {}
        orig_box = [0, 0, orig_size[1], orig_size[0]]
        got = {k: [] for k in ("masks", "boxes", "iou_preds", "stability_score", "points")}
        st = self.last_stats
        for start in range(0, len(points), self.points_per_batch):
            pts = points[start : start + self.points_per_batch]
            coords = transforms.transform_coords(pts[:, None, :], (ch, cw), cfg)
            labels = torch.ones(len(pts), 1, dtype=torch.int64, device=dev)
            low_res, iou = self._decode(feats, coords, labels, multimask_output, hq)
            st["prompts"] += len(pts)
            st["outputs"] += iou.shape[0] * (1 if self.best_of_multimask else iou.shape[1])
            kept = self._keep_prompts(iou)
            low_res, iou = low_res.float(), iou[kept].float()
            k = iou.shape[1]
            if self.best_of_multimask and k > 1:
                best = iou.argmax(dim=1, keepdim=True)
                iou = iou.gather(1, best)
                low_res = low_res.gather(1, best[:, :, None, None].expand(-1, -1, *low_res.shape[-2:]))
                k = 1
            iou = iou.flatten()
            low_res = low_res.flatten(0, 1)
            pt_idx = kept.repeat_interleave(k)
            if self.pred_iou_thresh > 0.0:
                idx = (iou > self.pred_iou_thresh).nonzero().flatten()
            else:
                idx = torch.arange(len(iou), device=dev)
            st["iou_kept"] += idx.numel()
            if idx.numel() == 0:
                continue
            sel, logits, stab = self._upsample_and_score(low_res[idx], (ch, cw))  # IoU survivors only
            idx = idx[sel]
            masks = logits > self.model.mask_threshold
            del logits
            st["stability_kept"] += len(idx)
            boxes = amg.masks_to_boxes(masks)
            sel = (~amg.box_near_crop_edge(boxes, crop_box, orig_box)).nonzero().flatten()
            st["edge_kept"] += len(sel)
            got["masks"].append(masks[sel])
            got["boxes"].append(boxes[sel])
            got["iou_preds"].append(iou[idx[sel]])
            got["stability_score"].append(stab[sel])
            got["points"].append(pts[pt_idx[idx[sel]]])
        if not got["masks"]:
            empty = torch.zeros(0, device=dev)
            return {
                "masks": [], "boxes": torch.zeros(0, 4, dtype=torch.int64, device=dev), "iou_preds": empty,
                "stability_score": empty, "points": torch.zeros(0, 2, dtype=torch.float64, device=dev),
            }
        masks = torch.cat(got["masks"])
        data = {k: torch.cat(v) for k, v in got.items() if k != "masks"}
        keep = batched_nms(
            data["boxes"].float(), data["iou_preds"], torch.zeros_like(data["iou_preds"], dtype=torch.int64),
            self.box_nms_thresh,
        )
        masks = masks[keep]
        data = {k: v[keep] for k, v in data.items()}
        off = torch.tensor([x0, y0], device=dev)
        data["boxes"] = data["boxes"] + off.repeat(2)
        data["points"] = data["points"] + off
        data["masks"] = list(masks.unbind(0))
        return data

    def _postprocess_small_regions(self, data: dict[str, Any], full: torch.Tensor) -> dict[str, Any]:
        """Fill holes and drop islands smaller than `min_mask_region_area`, then NMS once more, preferring
        unchanged masks (the official order of operations)."""
        host = full.cpu().numpy()
        new, scores = [], []
        for m in host:
            m2, changed_h = amg.remove_small_regions(m, self.min_mask_region_area, "holes")
            m2, changed_i = amg.remove_small_regions(m2, self.min_mask_region_area, "islands")
            new.append(m2)
            scores.append(0.0 if (changed_h or changed_i) else 1.0)
        new_masks = torch.from_numpy(np.stack(new)).to(full.device)
        boxes = amg.masks_to_boxes(new_masks)
        scores_t = torch.tensor(scores, device=full.device)
        keep = batched_nms(
            boxes.float(), scores_t, torch.zeros_like(scores_t, dtype=torch.int64),
            max(self.box_nms_thresh, self.crop_nms_thresh),
        )
        out = _select(data, keep)
        out["boxes"] = boxes[keep]  # equal to the old boxes for unchanged masks
        out["full_masks"] = new_masks[keep]
        return out


def _select(data: dict[str, Any], keep: torch.Tensor) -> dict[str, Any]:
    ids = keep.tolist()
    out = {}
    for k, v in data.items():
        out[k] = [v[i] for i in ids] if isinstance(v, list) else v[keep]
    return out
