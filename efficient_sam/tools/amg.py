"""`esam-amg`: segment everything in an image or a folder of images, with the outputs of the official
`scripts/amg.py`: per image a folder `<output>/<stem>/` holding `0.png, 1.png, ...` (masks, 0/255) and
`metadata.csv`, or with `--convert-to-rle` one `<output>/<stem>.json` (the records, COCO RLE). Also an
overlay `<output>/<stem>_overlay.png` with every mask in its own colour (largest drawn first)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

import efficient_sam as es
from efficient_sam.images import IMAGE_EXTENSIONS, read_rgb

METADATA_HEADER = (
    "id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,predicted_iou,stability_score,"
    "crop_box_x0,crop_box_y0,crop_box_w,crop_box_h"
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="esam-amg", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="efficient_sam_vitt", help=f"one of {', '.join(es.list_models())}")
    p.add_argument("--checkpoint", help="weights for --model (official .pth/.pt or .safetensors)")
    p.add_argument("--input", required=True, help="an image, or a folder of images")
    p.add_argument("--output", required=True, help="output folder (created)")
    p.add_argument("--convert-to-rle", action="store_true", help="one COCO-RLE JSON per image instead of PNGs")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_generator_arguments(p)
    return p


GENERATOR_OPTIONS = {  # name: (type, official default)
    "points_per_side": (int, 32), "points_per_batch": (int, 64), "pred_iou_thresh": (float, 0.88),
    "stability_score_thresh": (float, 0.95), "stability_score_offset": (float, 1.0), "box_nms_thresh": (float, 0.7),
    "crop_n_layers": (int, 0), "crop_nms_thresh": (float, 0.7), "crop_overlap_ratio": (float, 512 / 1500),
    "crop_n_points_downscale_factor": (int, 1), "min_mask_region_area": (int, 0),
}


def add_generator_arguments(p: argparse.ArgumentParser) -> None:
    """The `SamAutomaticMaskGenerator` options (official names and defaults) and `--fast`."""
    g = p.add_argument_group("generator options (official names and defaults)")
    for name, (typ, default) in GENERATOR_OPTIONS.items():
        g.add_argument("--" + name.replace("_", "-"), type=typ, default=default)
    g.add_argument("--fast", action="store_true",
                   help="the generator's opt-in fast mode (bf16 autocast, stability on low-res logits): not exact")


def generator_kwargs(args: argparse.Namespace) -> dict:
    """The parsed generator options -> `SamAutomaticMaskGenerator` keyword arguments."""
    return {name: getattr(args, name) for name in GENERATOR_OPTIONS} | {"fast": args.fast}


def find_images(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
    return [path]


def overlay(image: np.ndarray, records: list[dict], alpha: float = 0.5, seed: int = 0) -> Image.Image:
    """The image with every mask blended in its own random colour, largest first (small masks on top)."""
    out = image.astype(np.float32)
    rng = np.random.default_rng(seed)
    for r in sorted(records, key=lambda r: r["area"], reverse=True):
        m = _mask(r["segmentation"])
        colour = rng.integers(0, 256, 3).astype(np.float32)
        out[m] = (1 - alpha) * out[m] + alpha * colour
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


def _mask(seg) -> np.ndarray:
    if isinstance(seg, np.ndarray):
        return seg
    from pycocotools import mask as mask_utils

    return mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)


def write_masks(records: list[dict], folder: Path) -> None:
    """The official `write_masks_to_folder`: `<i>.png` per mask and `metadata.csv`."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [METADATA_HEADER]
    for i, r in enumerate(records):
        Image.fromarray(r["segmentation"].astype(np.uint8) * 255).save(folder / f"{i}.png")
        row = [i, r["area"], *r["bbox"], *r["point_coords"][0], r["predicted_iou"], r["stability_score"], *r["crop_box"]]
        lines.append(",".join(str(x) for x in row))
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")


def _progress(items, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with the hub dependencies
        return items
    return tqdm(items, desc=desc, unit="image")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.model not in es.list_models():
        parser.error(f"--model: unknown model {args.model!r}; one of {', '.join(es.list_models())}")
    if args.checkpoint is not None and not os.path.isfile(args.checkpoint):
        parser.error(f"--checkpoint: {args.checkpoint!r} is not a file")
    src = Path(args.input)
    if not src.exists():
        parser.error(f"--input: no such file or folder {args.input!r}")
    images = find_images(src)
    if not images:
        parser.error(f"--input: no image found in {args.input!r} (suffixes {', '.join(IMAGE_EXTENSIONS)})")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        parser.error(f"--output: {args.output!r} exists and is not a folder")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here (use --device cpu)")
    if args.checkpoint is None:
        warnings.warn(f"no --checkpoint: {args.model} has random weights", stacklevel=1)
    model = es.build_model(args.model, checkpoint=args.checkpoint, device=args.device).eval()
    try:
        generator = es.SamAutomaticMaskGenerator(
            model, output_mode="coco_rle" if args.convert_to_rle else "binary_mask", **generator_kwargs(args)
        )
    except (ValueError, ImportError) as e:
        parser.error(str(e))
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for path in _progress(images, "esam-amg"):
        try:
            image = read_rgb(path)
        except (UnidentifiedImageError, OSError) as e:
            print(f"esam-amg: skipping {path}: not a readable image ({e})", file=sys.stderr)
            continue
        records = generator.generate(image)
        total += len(records)
        if args.convert_to_rle:
            (out / f"{path.stem}.json").write_text(json.dumps(records))
        else:
            write_masks(records, out / path.stem)
        overlay(image, records).save(out / f"{path.stem}_overlay.png")
    print(f"{total} masks from {len(images)} image(s) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
